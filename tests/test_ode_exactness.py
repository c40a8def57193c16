"""The wrappers observe the solve and never change it: solutions are bit-identical to upstream's."""
import pytest
import torch
import torchdiffeq
from torchdiffeq._impl.odeint import SOLVERS

from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg
from problems import ALL_METHODS, MLPField, TupleField, options_for, state, tolerances, upstream_after_import

STRATEGIES = ("unbiased", "biased", "global", "none")
# The methods plain torchdiffeq has, to compare with (our own tsit5 is compared in test_tsit5.py).
UPSTREAM_METHODS = tuple(m for m in ALL_METHODS if m in SOLVERS)
T_FORWARD = torch.tensor([0.0, 0.3, 0.7, 1.2], dtype=torch.float64)


def _assert_identical(a, b):
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_identical(x, y)
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b), f"max abs difference {(a - b).abs().max().item()}"


@pytest.mark.parametrize("method", UPSTREAM_METHODS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("reverse", [False, True], ids=["increasing", "decreasing"])
def test_direct_solution_bit_identical(method, strategy, reverse):
    func, y0 = MLPField(), state()
    t = T_FORWARD.flip(0) if reverse else T_FORWARD
    kwargs = dict(method=method, options=options_for(method), **tolerances(method))
    expected = torchdiffeq.odeint(func, y0, t, **kwargs)
    solution, reg = odeint_reg(func, y0, t, strategy=strategy, stiffness_weight=0.5, **kwargs)
    _assert_identical(solution, expected)
    assert reg.shape == () and torch.isfinite(reg)


@pytest.mark.parametrize("method", UPSTREAM_METHODS)
@pytest.mark.parametrize("strategy", ["unbiased", "biased", "none"])
def test_adjoint_solution_and_gradient_bit_identical(method, strategy):
    func, y0 = MLPField(), state().requires_grad_(True)
    t = T_FORWARD.flip(0)
    kwargs = dict(method=method, options=options_for(method), **tolerances(method))
    expected = torchdiffeq.odeint_adjoint(func, y0, t, **kwargs)
    expected_grads = torch.autograd.grad(expected.square().sum(), (y0, *func.parameters()))
    solution, _ = odeint_adjoint_reg(func, y0, t, strategy=strategy, **kwargs)
    grads = torch.autograd.grad(solution.square().sum(), (y0, *func.parameters()))
    _assert_identical(solution, expected)
    _assert_identical(grads, expected_grads)


@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4"])
def test_tuple_state_bit_identical(adjoint, method):
    func = TupleField()
    y0 = (state(), torch.ones(2, dtype=torch.float64))
    t = T_FORWARD
    kwargs = dict(method=method, options=options_for(method), **tolerances(method))
    upstream = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    ours = odeint_adjoint_reg if adjoint else odeint_reg
    expected = upstream(func, y0, t, **kwargs)
    solution, reg = ours(func, y0, t, strategy="unbiased", stiffness_weight=1.0, **kwargs)
    _assert_identical(solution, expected)
    assert torch.isfinite(reg)


@pytest.mark.parametrize("options", [
    {"first_step": 0.05},
    {"step_t": torch.tensor([0.45, 0.9])},
    {"jump_t": torch.tensor([0.5])},
    {"max_num_steps": 10_000, "safety": 0.8, "ifactor": 5.0},
    {"norm": lambda x: x.abs().max()},
], ids=["first_step", "step_t", "jump_t", "controller", "norm"])
@pytest.mark.parametrize("strategy", ["unbiased", "biased", "global"])
def test_options_bit_identical(options, strategy):
    func, y0 = MLPField(), state()
    expected = torchdiffeq.odeint(func, y0, T_FORWARD, method="dopri5", options=options)
    solution, reg = odeint_reg(func, y0, T_FORWARD, method="dopri5", options=options, strategy=strategy)
    _assert_identical(solution, expected)
    assert torch.isfinite(reg)


@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
@pytest.mark.parametrize("method,options", [("dopri5", None), ("rk4", {"step_size": 0.05})])
def test_event_fn_bit_identical(adjoint, method, options):
    func = MLPField()
    y0 = state(batch=1)
    t = torch.tensor([0.0, 5.0], dtype=torch.float64)

    def event_fn(t, y):
        return y[0, 0] - 1.5 * y0[0, 0] - 0.2

    upstream = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    ours = odeint_adjoint_reg if adjoint else odeint_reg
    event_t, expected = upstream(func, y0, t, method=method, options=options, event_fn=event_fn)
    out = ours(func, y0, t, method=method, options=options, event_fn=event_fn, return_stats=True)
    assert len(out) == 4
    our_event_t, solution, reg, stats = out
    _assert_identical(our_event_t, event_t)
    _assert_identical(solution, expected)
    # The unbiased sample lies inside the span that was actually solved, [t0, event_t].
    assert 0.0 <= stats.t_samples[0] <= float(event_t.detach())
    assert torch.isfinite(reg)


def test_float32_bit_identical():
    func, y0 = MLPField(dtype=torch.float32), state(dtype=torch.float32)
    t = T_FORWARD.float()
    expected = torchdiffeq.odeint(func, y0, t, rtol=1e-5, atol=1e-6)
    solution, reg = odeint_reg(func, y0, t, rtol=1e-5, atol=1e-6)
    _assert_identical(solution, expected)
    assert reg.dtype == torch.float32


def test_import_leaves_torchdiffeq_unchanged():
    """Solutions, entry points and the solver table are the same before and after our import."""
    report = upstream_after_import()["torchdiffeq"]
    assert report == "OK", report
