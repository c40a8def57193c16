"""reg_batch_size: the regularization step on a random subset of the batch rows."""
import pytest
import torch
import torch.nn as nn
import torchsde

import torchdiffeq_localreg as localreg
from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg, sdeint_adjoint_reg, sdeint_reg
from problems import MLPField

BATCH, SUB = 7, 3
T = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)


def rows_state(batch=BATCH, dim=3, seed=1):
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class RowTupleField(nn.Module):
    """A tuple state (y, z) whose rows evolve independently: dy/dt = f(y), dz/dt = -z * mean_j y_j^2."""

    def __init__(self):
        super().__init__()
        self.f = MLPField()

    def forward(self, t, state):
        y, z = state
        return self.f(t, y), -z * (y ** 2).mean(dim=-1, keepdim=True)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def grads(func, value):
    params = [p for p in func.parameters()]
    return torch.autograd.grad(value, params)


def assert_close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-14)


def take_rows(y0, rows):
    return tuple(part[rows] for part in y0) if isinstance(y0, tuple) else y0[rows]


# The sampled point does not depend on the batch for fixed grids (same grid, same draws of the
# step and t_s), and for a single adaptive step from t[0] with the biased strategy (the step start,
# y0 itself): so reg on a sub-batch must equal reg of a solve of those rows alone.
CASES = [
    ("rk4", "unbiased", T, {"step_size": 0.1}),
    ("rk4", "biased", T, {"step_size": 0.1}),
    ("euler", "unbiased", T, {"step_size": 0.05}),
    ("dopri5", "biased", torch.tensor([0.0, 0.1], dtype=torch.float64), {"first_step": 0.1}),
]


@pytest.mark.parametrize("method,strategy,t,options", CASES)
@pytest.mark.parametrize("tuple_state", [False, True])
def test_sub_batch_reg_equals_reg_of_those_rows(method, strategy, t, options, tuple_state):
    func = RowTupleField() if tuple_state else MLPField()
    y0 = (rows_state(), rows_state(dim=2, seed=2)) if tuple_state else rows_state()
    kwargs = dict(method=method, options=options, strategy=strategy, stiffness_weight=0.5, rtol=1e-3, atol=1e-3,
                  return_stats=True)
    _, reg, stats = odeint_reg(func, y0, t, reg_batch_size=SUB, generator=gen(), **kwargs)
    assert len(stats.reg_rows) == 1 and len(stats.reg_rows[0]) == SUB
    rows = stats.reg_rows[0]
    assert rows == sorted(set(rows)) and all(0 <= r < BATCH for r in rows)
    _, by_hand, hand_stats = odeint_reg(func, take_rows(y0, rows), t, generator=gen(), **kwargs)
    assert hand_stats.sample_steps == stats.sample_steps and hand_stats.t_samples == stats.t_samples
    if method == "dopri5":
        assert stats.num_accepted == hand_stats.num_accepted == 1
    assert_close(reg, by_hand)
    for g, h in zip(grads(func, reg), grads(func, by_hand)):
        assert_close(g, h)
    # The step ran on SUB rows: for rk4, 4 evaluations per step, three steps of step doubling.
    if method == "rk4":
        assert stats.nfe_reg == hand_stats.nfe_reg == 3 * 4 + 2


def test_rows_vary_and_cover_the_batch():
    func, y0 = MLPField(), rows_state()
    g = gen(3)
    seen = set()
    for _ in range(20):
        _, _, stats = odeint_reg(func, y0, T, method="rk4", options={"step_size": 0.25}, reg_batch_size=2,
                                 num_samples=2, generator=g, return_stats=True)
        assert len(stats.reg_rows) == 2
        seen.update(stats.reg_rows[0] + stats.reg_rows[1])
    assert seen == set(range(BATCH))


def test_adaptive_sub_batch_uses_the_estimator_on_the_recorded_rows():
    """dopri5 over several steps: the step from the recorded (t_s, y_s[rows]) by hand."""
    from torchdiffeq._impl.dopri5 import Dopri5Solver
    from torchdiffeq._impl.misc import _PerturbFunc, _rms_norm
    from torchdiffeq_localreg._estimates import rk_step_estimates
    func, y0 = MLPField(), rows_state()
    _, reg, stats = odeint_reg(func, y0, T, strategy="biased", rtol=1e-6, atol=1e-8, reg_batch_size=SUB,
                               generator=gen(5), return_stats=True)
    t_s, dt_s = stats.t_samples[0], stats.dt_samples[0]
    # y_s is the solve's state at the start of the sampled step: solve to t_s on the same steps.
    with torch.no_grad():
        y_full = odeint_reg(func, y0, torch.tensor([0.0, t_s, 1.0], dtype=torch.float64), strategy="none",
                            rtol=1e-6, atol=1e-8)[0][1]
    rows = torch.tensor(stats.reg_rows[0])
    e, _ = rk_step_estimates(_PerturbFunc(func), Dopri5Solver.tableau, torch.tensor(t_s, dtype=torch.float64), y_full[rows],
                             torch.tensor(dt_s, dtype=torch.float64), 1e-6, 1e-8, _rms_norm, False)
    torch.testing.assert_close(reg, e * abs(dt_s), rtol=1e-6, atol=0)


@pytest.mark.parametrize("strategy", ["unbiased", "biased"])
def test_default_is_the_full_batch_and_draws_nothing_extra(strategy):
    func, y0 = MLPField(), rows_state()
    g1, g2, g3 = gen(), gen(), gen()
    _, reg0, s0 = odeint_reg(func, y0, T, strategy=strategy, generator=g1, return_stats=True)
    _, reg1, s1 = odeint_reg(func, y0, T, strategy=strategy, generator=g2, reg_batch_size=None, return_stats=True)
    _, reg2, s2 = odeint_reg(func, y0, T, strategy=strategy, generator=g3, reg_batch_size=BATCH, return_stats=True)
    assert torch.equal(reg0, reg1) and torch.equal(reg0, reg2)
    assert s0.reg_rows == s1.reg_rows == [] and s2.reg_rows == [list(range(BATCH))]
    assert torch.equal(g1.get_state(), g2.get_state()) and torch.equal(g1.get_state(), g3.get_state())


@pytest.mark.parametrize("value,error", [(0, ValueError), (-2, ValueError), (BATCH + 1, ValueError),
                                         (2.0, TypeError), (True, TypeError), ("3", TypeError)])
@pytest.mark.parametrize("entry", ["ode", "sde"])
def test_bad_values(value, error, entry):
    with pytest.raises(error, match="reg_batch_size"):
        if entry == "ode":
            odeint_reg(MLPField(), rows_state(), T, reg_batch_size=value)
        else:
            sdeint_reg(RowSDE(), rows_state(dim=2), T, dt=0.1, reg_batch_size=value)


def test_no_batch_dimension_and_mismatched_tuples():
    f = lambda t, y: -y
    with pytest.raises(ValueError, match="batch dimension"):
        odeint_reg(f, torch.tensor(1.0, dtype=torch.float64), T, reg_batch_size=1)
    with pytest.raises(ValueError, match="same first dimension"):
        odeint_reg(lambda t, s: (-s[0], -s[1]), (rows_state(), rows_state(batch=4)), T, reg_batch_size=2)
    with pytest.raises(ValueError, match="at most the batch size"):
        odeint_reg(f, torch.ones(3, dtype=torch.float64), T, reg_batch_size=4)
    with pytest.raises(ValueError, match="per-row atol"):
        odeint_reg(f, rows_state(), T, atol=torch.full((BATCH, 3), 1e-8, dtype=torch.float64), reg_batch_size=2)
    with pytest.raises(ValueError, match="global"):
        odeint_reg(MLPField(), rows_state(), T, strategy="global", reg_batch_size=2)
    # strategy="none" has no step to run: the value is checked, the batch is not needed.
    odeint_reg(f, torch.tensor(1.0, dtype=torch.float64), T, strategy="none", reg_batch_size=2)


@pytest.mark.parametrize("strategy", ["unbiased", "biased"])
def test_adjoint_matches_direct(strategy):
    func, y0 = MLPField(), rows_state()
    kwargs = dict(strategy=strategy, reg_batch_size=SUB, rtol=1e-6, atol=1e-8, return_stats=True)
    _, reg, stats = odeint_reg(func, y0, T, generator=gen(1), **kwargs)
    _, reg_a, stats_a = odeint_adjoint_reg(func, y0, T, generator=gen(1), **kwargs)
    assert stats.reg_rows == stats_a.reg_rows
    assert torch.equal(reg, reg_a)
    for g, h in zip(grads(func, reg), grads(func, reg_a)):
        assert torch.equal(g, h)


def test_decreasing_time_and_tuple_state_adjoint():
    func, y0 = RowTupleField(), (rows_state(), rows_state(dim=2, seed=2))
    t = torch.tensor([1.0, 0.0], dtype=torch.float64)
    kwargs = dict(method="rk4", options={"step_size": 0.1}, strategy="unbiased", reg_batch_size=2, return_stats=True)
    _, reg, stats = odeint_adjoint_reg(func, y0, t, generator=gen(2), **kwargs)
    kwargs.pop("reg_batch_size")
    _, by_hand, _ = odeint_reg(func, take_rows(y0, stats.reg_rows[0]), t, generator=gen(2), **kwargs)
    assert_close(reg, by_hand)


# SDEs


class RowSDE(nn.Module):
    """Diagonal-noise SDE whose rows evolve independently."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, dim=2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(dim, dim, generator=g, dtype=torch.float64) * 0.5)
        self.s = nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64) * 0.5)

    def f(self, t, y):
        return torch.tanh(y @ self.w) - 0.5 * y

    def g(self, t, y):
        return 0.3 * torch.sigmoid(y * self.s)


class RowsOf(torchsde.BaseBrownian):
    """The rows ``rows`` of a Brownian motion ``bm``, as a Brownian motion of its own."""

    def __init__(self, bm, rows):
        self.bm, self.rows = bm, torch.tensor(rows)

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        out = self.bm(ta, tb, return_U=return_U, return_A=return_A)
        return tuple(o[self.rows] for o in out) if isinstance(out, tuple) else out[self.rows]

    def __repr__(self):
        return f"RowsOf({self.bm!r})"

    dtype = property(lambda self: self.bm.dtype)
    device = property(lambda self: self.bm.device)
    shape = property(lambda self: (len(self.rows), *self.bm.shape[1:]))
    levy_area_approximation = property(lambda self: self.bm.levy_area_approximation)


def brownian(levy="none"):
    return torchsde.BrownianInterval(0.0, 1.0, size=(BATCH, 2), dtype=torch.float64, entropy=7,
                                     levy_area_approximation=levy)


@pytest.mark.parametrize("method,levy,adaptive", [("euler", "none", False), ("srk", "space-time", False),
                                                  ("euler", "none", True)])
@pytest.mark.parametrize("strategy", ["unbiased", "biased"])
@pytest.mark.filterwarnings("ignore:Numerical solution is not guaranteed")
def test_sde_sub_batch_equals_those_rows(method, levy, adaptive, strategy):
    sde, y0 = RowSDE(), rows_state(dim=2)
    kwargs = dict(method=method, dt=0.1, strategy=strategy, stiffness_weight=0.3, return_stats=True)
    if adaptive:
        # Adaptive steps depend on the whole batch; a loose tolerance accepts every 0.1 step.
        kwargs.update(adaptive=True, rtol=10.0, atol=10.0)
    _, reg, stats = sdeint_reg(sde, y0, T, bm=brownian(levy), reg_batch_size=SUB, generator=gen(4), **kwargs)
    rows = stats.reg_rows[0]
    assert len(rows) == SUB
    _, by_hand, hand_stats = sdeint_reg(sde, y0[rows], T, bm=RowsOf(brownian(levy), rows), generator=gen(4),
                                        **kwargs)
    assert hand_stats.sample_steps == stats.sample_steps and hand_stats.t_samples == stats.t_samples
    assert_close(reg, by_hand)
    for g, h in zip(grads(sde, reg), grads(sde, by_hand)):
        assert_close(g, h)


def test_sde_adjoint_and_full_batch_default():
    sde, y0 = RowSDE(), rows_state(dim=2)
    kwargs = dict(method="euler", dt=0.1, return_stats=True)
    _, reg, stats = sdeint_reg(sde, y0, T, bm=brownian(), reg_batch_size=SUB, generator=gen(6), **kwargs)
    _, reg_a, stats_a = sdeint_adjoint_reg(sde, y0, T, bm=brownian(), reg_batch_size=SUB, generator=gen(6), **kwargs)
    assert stats.reg_rows == stats_a.reg_rows and torch.equal(reg, reg_a)
    g1, g2 = gen(6), gen(6)
    _, full, s_full = sdeint_reg(sde, y0, T, bm=brownian(), generator=g1, **kwargs)
    _, full_b, s_b = sdeint_reg(sde, y0, T, bm=brownian(), generator=g2, reg_batch_size=BATCH, **kwargs)
    assert torch.equal(full, full_b) and s_full.reg_rows == [] and s_b.reg_rows == [list(range(BATCH))]
    assert torch.equal(g1.get_state(), g2.get_state())


def test_sde_logqp_and_reversible_heun_run_on_rows():
    sde, y0 = RowSDE(), rows_state(dim=2)
    sde.h = lambda t, y: -y
    out = sdeint_reg(sde, y0, T, dt=0.1, logqp=True, reg_batch_size=2, generator=gen(),
                     return_stats=True)
    assert len(out[-1].reg_rows[0]) == 2 and torch.isfinite(out[-2])
    sde2 = RowSDE()
    sde2.sde_type = "stratonovich"
    _, reg, stats = sdeint_reg(sde2, y0, T, bm=brownian(), dt=0.1, method="reversible_heun", reg_batch_size=2,
                               generator=gen(), return_stats=True)
    assert len(stats.reg_rows[0]) == 2 and torch.isfinite(reg)


# One-import mode


def test_regularize_passes_reg_batch_size_on():
    func, y0 = MLPField(), rows_state()
    with localreg.regularize(reg_batch_size=2, generator=gen(8)) as r:
        localreg.odeint(func, y0, T, method="rk4", options={"step_size": 0.1})
    _, reg, stats = odeint_reg(func, y0, T, method="rk4", options={"step_size": 0.1}, reg_batch_size=2,
                               generator=gen(8), return_stats=True)
    assert r.stats[0].reg_rows == stats.reg_rows and len(stats.reg_rows[0]) == 2
    assert torch.equal(r.reg, reg)
    with pytest.raises(ValueError, match="reg_batch_size"):
        localreg.regularize(reg_batch_size=0)
    with pytest.raises(ValueError, match="at most the batch size"):
        with localreg.regularize(reg_batch_size=BATCH + 1):
            localreg.odeint(func, y0, T)
