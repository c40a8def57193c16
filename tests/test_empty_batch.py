"""A batch of 0 rows (a masked or filtered sub-batch): upstream's solution, and reg = 0 with gradient 0.

Upstream's adaptive ODE solvers cannot solve an empty state (their first-step heuristic divides by
its RMS norm, NaN); the fixed-grid ones and torchsde's fixed-step methods can.
"""
import pytest
import torch
import torchdiffeq
import torchsde

import torchdiffeq_localreg as localreg
from problems import FIXED_GRID_METHODS, MLPField, SmallSDE, TupleField, brownian, options_for

T = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
EMPTY = torch.zeros(0, 3, dtype=torch.float64)
CASES = [(method, strategy, adjoint) for method in FIXED_GRID_METHODS
         for strategy in ("unbiased", "biased", "global", "none") for adjoint in (False, True)
         if not (adjoint and strategy == "global")]


def _assert_zero_with_zero_gradient(solution, reg, params):
    assert reg.shape == () and reg.item() == 0.0
    loss = solution.square().sum() + reg
    for grad in torch.autograd.grad(loss, params, allow_unused=True):
        assert grad is None or torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("method, strategy, adjoint", CASES)
def test_ode_empty_batch(method, strategy, adjoint):
    func = MLPField()
    upstream = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    ours = localreg.odeint_adjoint_reg if adjoint else localreg.odeint_reg
    options = options_for(method)
    expected = upstream(func, EMPTY, T, method=method, options=options)
    solution, reg, stats = ours(func, EMPTY, T, method=method, options=options, strategy=strategy,
                                stiffness_weight=0.5, return_stats=True)
    assert torch.equal(solution, expected) and solution.shape == (3, 0, 3)
    assert stats.nfe_reg == 0 and stats.reg == 0.0
    _assert_zero_with_zero_gradient(solution, reg, tuple(func.parameters()))


def test_ode_empty_batch_with_reg_batch_size_and_tuple_state():
    func = TupleField()
    y0 = (EMPTY, torch.zeros(0, 1, dtype=torch.float64))
    expected = torchdiffeq.odeint(func, y0, T, method="rk4", options={"step_size": 0.1})
    solution, reg = localreg.odeint_reg(func, y0, T, method="rk4", options={"step_size": 0.1}, reg_batch_size=4)
    assert all(torch.equal(a, b) for a, b in zip(solution, expected))
    _assert_zero_with_zero_gradient(solution[0], reg, tuple(func.parameters()))


def test_ode_empty_batch_adaptive_fails_as_upstream_does():
    with pytest.raises(AssertionError, match="underflow in dt") as theirs:
        torchdiffeq.odeint(MLPField(), EMPTY, T)
    with pytest.raises(AssertionError, match="underflow in dt") as ours:
        localreg.odeint_reg(MLPField(), EMPTY, T)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("adjoint", [False, True])
def test_one_import_odeint_inside_regularize(adjoint):
    func = MLPField()
    theirs = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    ours = localreg.odeint_adjoint if adjoint else localreg.odeint
    expected = theirs(func, EMPTY, T, method="rk4", options={"step_size": 0.1})
    with localreg.regularize() as r:
        solution = ours(func, EMPTY, T, method="rk4", options={"step_size": 0.1})
    assert torch.equal(solution, expected) and len(r.stats) == 1
    _assert_zero_with_zero_gradient(solution, r.reg, tuple(func.parameters()))


@pytest.mark.parametrize("strategy, adjoint", [(s, a) for s in ("unbiased", "biased", "global", "none")
                                               for a in (False, True) if not (a and s == "global")])
def test_sde_empty_batch(strategy, adjoint):
    sde = SmallSDE()
    y0 = torch.zeros(0, 2, dtype=torch.float64)

    def bm():
        return brownian(batch=0)

    upstream = torchsde.sdeint_adjoint if adjoint else torchsde.sdeint
    ours = localreg.sdeint_adjoint_reg if adjoint else localreg.sdeint_reg
    expected = upstream(sde, y0, T, bm=bm(), dt=0.1, method="euler")
    ys, reg = ours(sde, y0, T, bm=bm(), dt=0.1, method="euler", strategy=strategy, stiffness_weight=0.5)
    assert torch.equal(ys, expected) and ys.shape == (3, 0, 2)
    _assert_zero_with_zero_gradient(ys, reg, tuple(sde.parameters()))
    with localreg.regularize(strategy=strategy) as r:
        ys = (localreg.sdeint_adjoint if adjoint else localreg.sdeint)(sde, y0, T, bm=bm(), dt=0.1, method="euler")
    assert torch.equal(ys, expected) and len(r.stats) == 1 and r.reg.item() == 0.0
