"""Gradients of reg: gradcheck in float64, and direct == adjoint."""
import pytest
import torch

from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg
from torchdiffeq_localreg._estimates import rk_step_estimates, step_doubling_estimates
from torchdiffeq_localreg._ode_solvers import SOLVER_TABLE, WRAPPED
from problems import (ALL_METHODS, FIXED_GRID_METHODS, MLPField, as_function_of_params, options_for, state,
                      tolerances)


def _step_for(method):
    # dopri8's last two stages are so close that the stiffness quotient ||dk|| / ||dy|| is
    # ill-conditioned for finite differences at small steps; a longer step separates them.
    return 1.0 if method == "dopri8" else 0.2


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("strategy", ["biased", "global"])
def test_gradcheck_reg_public_api(method, strategy):
    """With a single accepted step the sampled point is (t0, y0, dt) for every parameter value, so
    reg is a smooth function of the parameters and finite differences must match autograd."""
    func = MLPField(dim=2, hidden=3)
    y0 = state(batch=1, dim=2)
    h = _step_for(method)
    t = torch.tensor([0.0, h], dtype=torch.float64)
    options = {"step_size": h} if method in FIXED_GRID_METHODS else {"first_step": h}
    params = tuple(p.detach().clone().requires_grad_(True) for p in func.parameters())

    def run():
        _, reg, stats = odeint_reg(func, y0, t, method=method, options=options, rtol=1e-2, atol=1e-2,
                                   strategy=strategy, stiffness_weight=0.3, return_stats=True)
        assert stats.num_accepted == 1 and stats.num_rejected == 0
        return reg

    assert torch.autograd.gradcheck(as_function_of_params(func, run), params, eps=1e-4, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("stiffness", [False, True])
def test_gradcheck_step_estimates(method, stiffness):
    """The extra step itself, from an arbitrary interior point, for every supported tableau."""
    func = MLPField(dim=2, hidden=3)
    t0 = torch.tensor(0.37, dtype=torch.float64)
    dt = torch.tensor(_step_for(method), dtype=torch.float64)
    y0 = state(batch=2, dim=2)
    params = tuple(p.detach().clone().requires_grad_(True) for p in func.parameters())
    rtol, atol = torch.tensor(1e-3, dtype=torch.float64), torch.tensor(1e-4, dtype=torch.float64)
    norm = lambda x: x.pow(2).mean().sqrt()
    wrapped = lambda t, y, perturb=None: func(t, y)

    def run():
        if method in FIXED_GRID_METHODS:
            solver = WRAPPED[method](func=wrapped, y0=y0, rtol=rtol, atol=atol, norm=norm, step_size=0.1)
            e, s = step_doubling_estimates(solver._lr_plain_step, wrapped, t0, y0, dt, rtol, atol, norm, stiffness)
        else:
            solver = SOLVER_TABLE[method](func=wrapped, y0=y0, rtol=rtol, atol=atol, norm=norm)
            e, s = rk_step_estimates(wrapped, solver.tableau, t0, y0, dt, rtol, atol, norm, stiffness)
        return e if s is None else e + s

    assert torch.autograd.gradcheck(as_function_of_params(func, run), params, eps=1e-4, atol=1e-6, rtol=1e-3)


ADJOINT_VARIANTS = {
    "defaults": {},
    "seminorm": {"adjoint_options": {"norm": "seminorm"}},
    "tolerances": {"adjoint_rtol": 1e-4, "adjoint_atol": 1e-6},
    "other_method": {"adjoint_method": "rk4", "adjoint_options": {"step_size": 0.1}},
    "params": {"adjoint_params": "all"},
}


@pytest.mark.parametrize("variant", ADJOINT_VARIANTS, ids=list(ADJOINT_VARIANTS))
@pytest.mark.parametrize("strategy", ["unbiased", "biased"])
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4"])
def test_reg_and_gradient_identical_direct_and_adjoint(variant, strategy, method):
    func, y0 = MLPField(), state()
    t = torch.tensor([1.0, 0.4, 0.0], dtype=torch.float64)
    adjoint_kwargs = dict(ADJOINT_VARIANTS[variant])
    if adjoint_kwargs.get("adjoint_params") == "all":
        adjoint_kwargs["adjoint_params"] = tuple(func.parameters())
    common = dict(method=method, options=options_for(method), strategy=strategy, num_samples=3,
                  stiffness_weight=0.2, **tolerances(method))
    params = tuple(func.parameters())

    _, reg_direct = odeint_reg(func, y0, t, generator=torch.Generator().manual_seed(7), **common)
    grads_direct = torch.autograd.grad(reg_direct, params)
    _, reg_adjoint = odeint_adjoint_reg(func, y0, t, generator=torch.Generator().manual_seed(7), **common,
                                        **adjoint_kwargs)
    grads_adjoint = torch.autograd.grad(reg_adjoint, params)
    assert torch.equal(reg_direct, reg_adjoint)
    for a, b in zip(grads_direct, grads_adjoint):
        assert torch.equal(a, b)
    assert any(g.abs().sum() > 0 for g in grads_direct)


def test_reg_gradient_flows_only_through_extra_step():
    """y0 reaches reg only through the detached sample, so reg has no gradient w.r.t. y0."""
    func = MLPField()
    y0 = state().requires_grad_(True)
    _, reg = odeint_reg(func, y0, torch.linspace(0, 1, 3, dtype=torch.float64), strategy="unbiased")
    (grad_y0,) = torch.autograd.grad(reg, y0, allow_unused=True)
    assert grad_y0 is None
    _, reg_global = odeint_reg(func, y0, torch.linspace(0, 1, 3, dtype=torch.float64), strategy="global")
    (grad_y0,) = torch.autograd.grad(reg_global, y0)
    assert grad_y0.abs().sum() > 0
