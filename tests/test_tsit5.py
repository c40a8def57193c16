"""method="tsit5" on every torchdiffeq: upstream's where it has one, our Tsitouras 5(4) otherwise."""
import math

import numpy as np
import pytest
import torch
import torchdiffeq
from torchdiffeq._impl.misc import _PerturbFunc
from torchdiffeq._impl.odeint import SOLVERS

from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg
from torchdiffeq_localreg import _tsit5
from torchdiffeq_localreg._ode_solvers import OWN_METHODS, SOLVER_TABLE
from problems import Linear, MLPField, state

UPSTREAM_HAS_TSIT5 = "tsit5" in SOLVERS
T = torch.tensor([0.0, 0.3, 0.7, 1.2], dtype=torch.float64)
MATRIX = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)


def _order_conditions(b, A, c, order):
    """max |residual| of the Runge-Kutta order conditions up to ``order`` (Butcher trees <= 5)."""
    lhs_rhs = [(b.sum(), 1.0), (b @ c, 1 / 2), (b @ c ** 2, 1 / 3), (b @ A @ c, 1 / 6),
               (b @ c ** 3, 1 / 4), (b @ (c * (A @ c)), 1 / 8), (b @ A @ c ** 2, 1 / 12), (b @ A @ A @ c, 1 / 24),
               (b @ c ** 4, 1 / 5), (b @ (c ** 2 * (A @ c)), 1 / 10), (b @ (A @ c) ** 2, 1 / 20),
               (b @ (c * (A @ c ** 2)), 1 / 15), (b @ (c * (A @ A @ c)), 1 / 30), (b @ A @ c ** 3, 1 / 20),
               (b @ A @ (c * (A @ c)), 1 / 40), (b @ A @ A @ c ** 2, 1 / 60), (b @ A @ A @ A @ c, 1 / 120)]
    count = {1: 1, 2: 2, 3: 4, 4: 8, 5: 17}[order]
    return max(abs(x - y) for x, y in lhs_rhs[:count])


def _tableau_arrays():
    tab = _tsit5.TSITOURAS_TABLEAU
    s = len(tab.alpha) + 1
    A = np.zeros((s, s))
    for i, row in enumerate(tab.beta):
        A[i + 1, :len(row)] = row.numpy()
    c = np.concatenate([[0.0], tab.alpha.numpy()])
    return A, c, tab.c_sol.numpy(), tab.c_error.numpy()


def test_our_tableau_has_orders_5_and_4():
    A, c, b, b_error = _tableau_arrays()
    assert np.abs(A.sum(axis=1) - c).max() < 1e-14          # rows sum to the nodes
    assert _order_conditions(b, A, c, 5) < 1e-14             # the solution: order 5
    assert _order_conditions(b - b_error, A, c, 4) < 1e-14   # the embedded one: order 4 ...
    assert _order_conditions(b - b_error, A, c, 5) > 1e-4    # ... and not 5
    assert np.array_equal(b[:-1], A[-1, :-1]) and b[-1] == 0  # first same as last
    # The midpoint weights: the continuous extension at 1/2, of order 4 there; at 1 it is b.
    mid = _tsit5.TSIT_C_MID.numpy()
    th = 0.5
    dense = [(mid.sum(), th), (mid @ c, th ** 2 / 2), (mid @ c ** 2, th ** 3 / 3), (mid @ A @ c, th ** 3 / 6),
             (mid @ c ** 3, th ** 4 / 4), (mid @ (c * (A @ c)), th ** 4 / 8), (mid @ A @ c ** 2, th ** 4 / 12),
             (mid @ A @ A @ c, th ** 4 / 24)]
    assert max(abs(x - y) for x, y in dense) < 1e-14
    assert np.abs(np.array(_tsit5._dense_weights(1.0)) - b).max() < 1e-14


def _fixed_step_error(h):
    """Global error at t = 2 of y' = M y with constant steps h (huge tolerances, max_step = h)."""
    y0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    sol, _, stats = odeint_reg(Linear(MATRIX), y0, t, method="tsit5", rtol=1e3, atol=1e3, strategy="biased",
                               options={"first_step": h, "max_step": h}, return_stats=True)
    exact = y0 @ torch.linalg.matrix_exp(2.0 * MATRIX).T
    return (sol[-1] - exact).abs().max().item(), stats.num_accepted


def test_convergence_order_5():
    errors = []
    for n in (20, 40, 80):
        error, steps = _fixed_step_error(2.0 / n)
        assert steps in (n, n + 1)
        errors.append(error)
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(4.8 < p < 5.3 for p in orders), orders   # 5.20, 5.15 (5.10 at 160 steps)


def test_adaptive_solve_meets_its_tolerance():
    y0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    sol, reg = odeint_reg(Linear(MATRIX), y0, t, method="tsit5", rtol=1e-9, atol=1e-11)
    exact = torch.stack([y0 @ torch.linalg.matrix_exp(s * MATRIX).T for s in t])
    assert (sol - exact).abs().max() < 1e-7
    assert torch.isfinite(reg) and reg > 0


def test_which_tsit5_is_used_and_upstream_table_untouched():
    assert "tsit5" in SOLVER_TABLE
    if UPSTREAM_HAS_TSIT5:
        assert SOLVER_TABLE["tsit5"] is SOLVERS["tsit5"] and OWN_METHODS == ()
    else:
        assert SOLVER_TABLE["tsit5"] is _tsit5.Tsit5Solver and OWN_METHODS == ("tsit5",)
        assert "tsit5" not in SOLVERS
        # plain torchdiffeq stays as it is: no tsit5 there.
        with pytest.raises(ValueError, match="Invalid method"):
            torchdiffeq.odeint(MLPField(), state(), T, method="tsit5")


@pytest.mark.skipif(not UPSTREAM_HAS_TSIT5, reason="the installed torchdiffeq has no tsit5 to compare with")
def test_agrees_with_upstream_tsit5():
    upstream = SOLVERS["tsit5"].tableau
    ours = _tsit5.TSITOURAS_TABLEAU
    torch.testing.assert_close(upstream.alpha.double(), ours.alpha, rtol=0, atol=1e-14)
    for a, b in zip(upstream.beta, ours.beta):
        torch.testing.assert_close(a.double(), b, rtol=0, atol=1e-14)
    torch.testing.assert_close(upstream.c_sol.double(), ours.c_sol, rtol=0, atol=1e-14)
    torch.testing.assert_close(upstream.c_error.double().abs(), ours.c_error.abs(), rtol=0, atol=1e-14)
    # The solves: our class against upstream's odeint, on the same steps.
    func, y0 = MLPField(), state()
    expected = torchdiffeq.odeint(func, y0, T, method="tsit5", rtol=1e-8, atol=1e-10)
    ours_solver = _tsit5.Tsit5Solver(func=_PerturbFunc(func), y0=y0, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(ours_solver.integrate(T), expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("strategy", ["unbiased", "biased", "global"])
@pytest.mark.parametrize("reverse", [False, True], ids=["increasing", "decreasing"])
def test_solution_bit_identical_to_the_plain_solve(strategy, reverse):
    func, y0 = MLPField(), state()
    t = T.flip(0) if reverse else T
    expected, _ = odeint_reg(func, y0, t, method="tsit5", strategy="none")
    if UPSTREAM_HAS_TSIT5:
        assert torch.equal(expected, torchdiffeq.odeint(func, y0, t, method="tsit5"))
    solution, reg, stats = odeint_reg(func, y0, t, method="tsit5", strategy=strategy, stiffness_weight=0.5,
                                      return_stats=True)
    assert torch.equal(solution, expected)
    assert torch.isfinite(reg) and stats.method == "tsit5"
    if strategy != "global":
        assert stats.nfe_reg == 7   # one step: f0 and 6 stages (the 7th at y1)


@pytest.mark.parametrize("strategy", ["unbiased", "biased", "none"])
def test_adjoint_bit_identical_to_direct(strategy):
    func, y0 = MLPField(), state().requires_grad_(True)
    kwargs = dict(method="tsit5", adjoint_method="dopri5", strategy=strategy)
    solution, reg = odeint_adjoint_reg(func, y0, T, generator=torch.Generator().manual_seed(0), **kwargs)
    direct, reg_direct = odeint_reg(func, y0, T, method="tsit5", strategy=strategy,
                                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(solution.detach(), direct.detach()) and torch.equal(reg, reg_direct)
    grads = torch.autograd.grad(solution.square().sum() + reg, (y0, *func.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.skipif(UPSTREAM_HAS_TSIT5, reason="upstream's tsit5 runs the adjoint's backward solve too")
def test_adjoint_needs_an_upstream_adjoint_method():
    with pytest.raises(ValueError, match="adjoint_method"):
        odeint_adjoint_reg(MLPField(), state(), T, method="tsit5")
