"""Numbers as users pass them: numpy scalars and 0-d tensors wherever our arguments take an int or a float."""
from fractions import Fraction

import numpy as np
import pytest
import torch
import torchdiffeq

import torchdiffeq_localreg as localreg
from problems import MLPField, SmallSDE, brownian, state

T = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
INTEGERS = {"numpy int64": np.int64(2), "numpy int32": np.int32(2), "0-d int tensor": torch.tensor(2)}
REALS = {"numpy float32": np.float32(0.5), "numpy float64": np.float64(0.5), "0-d float tensor": torch.tensor(0.5),
         "0-d int tensor": torch.tensor(1), "numpy int64": np.int64(1), "Fraction": Fraction(1, 2)}
NOT_INTEGERS = {"bool": True, "numpy bool": np.bool_(True), "0-d bool tensor": torch.tensor(True), "float": 2.0,
                "numpy float": np.float64(2.0), "0-d float tensor": torch.tensor(2.0), "1-d tensor": torch.tensor([2]),
                "string": "2"}
NOT_REALS = {"bool": True, "numpy bool": np.bool_(False), "0-d bool tensor": torch.tensor(True),
             "complex": 1j, "1-d tensor": torch.tensor([0.5]), "string": "0.5",
             "tensor requiring grad": torch.tensor(0.5, requires_grad=True)}


def _ode_reg(**kwargs):
    _, reg, stats = localreg.odeint_reg(MLPField(), state(), T, generator=torch.Generator().manual_seed(0),
                                        return_stats=True, **kwargs)
    return reg, stats


@pytest.mark.parametrize("name", ["num_samples", "reg_batch_size"])
@pytest.mark.parametrize("kind", list(INTEGERS))
def test_integers(name, kind):
    expected, expected_stats = _ode_reg(**{name: 2})
    reg, stats = _ode_reg(**{name: INTEGERS[kind]})
    assert torch.equal(reg, expected) and stats.t_samples == expected_stats.t_samples
    block = localreg.regularize(**{name: INTEGERS[kind]})
    assert type(getattr(block, name)) is int and getattr(block, name) == 2


@pytest.mark.parametrize("name", ["error_weight", "stiffness_weight"])
@pytest.mark.parametrize("kind", list(REALS))
def test_reals(name, kind):
    expected, _ = _ode_reg(**{name: float(REALS[kind])})
    reg, _ = _ode_reg(**{name: REALS[kind]})
    assert torch.equal(reg, expected)
    block = localreg.regularize(**{name: REALS[kind]})
    assert type(getattr(block, name)) is float


@pytest.mark.parametrize("name", ["num_samples", "reg_batch_size"])
@pytest.mark.parametrize("kind", list(NOT_INTEGERS))
def test_non_integers_are_refused_naming_the_argument(name, kind):
    with pytest.raises(TypeError, match=f"{name} must be an int"):
        localreg.odeint_reg(MLPField(), state(), T, **{name: NOT_INTEGERS[kind]})
    with pytest.raises(TypeError, match=name):
        localreg.regularize(**{name: NOT_INTEGERS[kind]})


@pytest.mark.parametrize("name", ["error_weight", "stiffness_weight"])
@pytest.mark.parametrize("kind", list(NOT_REALS))
def test_non_reals_are_refused_naming_the_argument(name, kind):
    with pytest.raises(TypeError, match=f"{name} must be a finite float"):
        localreg.odeint_reg(MLPField(), state(), T, **{name: NOT_REALS[kind]})


@pytest.mark.parametrize("value, message", [(np.float64(-1.0), "got -1.0"), (np.float32(np.inf), "got inf"),
                                            (torch.tensor(float("nan")), "got nan")])
def test_bad_real_values_are_refused(value, message):
    with pytest.raises(ValueError, match=f"error_weight must be a finite float >= 0, {message}"):
        localreg.odeint_reg(MLPField(), state(), T, error_weight=value)


def test_numbers_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"num_samples must be an int in \[1, 1024\]"):
        localreg.odeint_reg(MLPField(), state(), T, num_samples=np.int64(0))
    with pytest.raises(ValueError, match="reg_batch_size must be at most the batch size"):
        localreg.odeint_reg(MLPField(), state(), T, reg_batch_size=torch.tensor(5))


def test_sde_numbers():
    sde, y0 = SmallSDE(), torch.full((3, 2), 0.1, dtype=torch.float64)

    def run(**kwargs):
        return localreg.sdeint_reg(sde, y0, T, bm=brownian(), dt=0.1, method="euler",
                                   generator=torch.Generator().manual_seed(0), **kwargs)[1]

    expected = run(num_samples=2, error_weight=0.5, reg_batch_size=2)
    got = run(num_samples=np.int64(2), error_weight=np.float32(0.5), reg_batch_size=torch.tensor(2))
    assert torch.equal(got, expected)
    with pytest.raises(TypeError, match="num_samples must be an int"):
        run(num_samples=np.bool_(True))


def test_upstreams_own_arguments_behave_as_upstream():
    """rtol, atol and a fixed-grid step_size as numpy scalars: passed to upstream as given."""
    func, y0 = MLPField(), state()
    for kwargs in (dict(rtol=np.float64(1e-5), atol=np.float32(1e-7)),
                   dict(method="rk4", options={"step_size": np.float64(0.25)})):
        expected = torchdiffeq.odeint(func, y0, T, **kwargs)
        solution, reg = localreg.odeint_reg(func, y0, T, **kwargs)
        assert torch.equal(solution, expected) and reg.requires_grad
