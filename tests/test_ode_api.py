"""The public ODE API: return values, stats, estimates, errors."""
import math
import threading

import pytest
import torch
import torch.nn as nn
import torchdiffeq

from torchdiffeq_localreg import LocalRegStats, odeint_adjoint_reg, odeint_reg
from problems import Linear, MLPField, state

T = torch.linspace(0, 1, 4, dtype=torch.float64)


class Counting(nn.Module):
    """Wraps a field, counting calls and logging the times it was called at."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.times = []

    def forward(self, t, y):
        self.times.append(float(t.detach()))
        return self.base(t, y)


def test_returns_solution_and_scalar_reg_with_grad():
    func = MLPField()
    out = odeint_reg(func, state(), T)
    assert len(out) == 2
    solution, reg = out
    assert solution.shape == (4, 4, 3) and reg.shape == () and reg.requires_grad
    reg.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in func.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reg_has_state_dtype_and_device(dtype):
    y0 = state(dtype=dtype)
    _, reg = odeint_reg(MLPField(dtype=dtype), y0, T.to(dtype), rtol=1e-4, atol=1e-6)
    assert reg.dtype == dtype and reg.device == y0.device


def test_stats_count_evaluations_exactly():
    counted = Counting(MLPField())
    torchdiffeq.odeint(counted, state(), T)
    plain_nfe = len(counted.times)
    counted.times.clear()
    _, _, stats = odeint_reg(counted, state(), T, num_samples=2, return_stats=True)
    assert isinstance(stats, LocalRegStats)
    assert stats.nfe_forward == plain_nfe
    assert stats.nfe_reg == 2 * 7  # dopri5: f0 plus 6 stages, per sample
    assert stats.nfe_forward + stats.nfe_reg == len(counted.times)
    assert stats.nfe_backward == 0
    assert stats.num_accepted > 0 and len(stats.t_samples) == len(stats.dt_samples) == 2
    assert len(stats.error_estimates) == 2 and stats.stiffness_estimates == []


def test_adjoint_backward_evaluations_counted():
    counted = Counting(MLPField())
    solution, reg, stats = odeint_adjoint_reg(counted, state(), T, return_stats=True)
    before = len(counted.times)
    (solution.sum() + reg).backward()
    assert stats.nfe_backward == len(counted.times) - before > 0
    assert stats.nfe_total == len(counted.times)


def test_none_costs_zero_extra_evaluations():
    counted = Counting(MLPField())
    expected = torchdiffeq.odeint(counted, state(), T)
    plain_nfe = len(counted.times)
    counted.times.clear()
    solution, reg, stats = odeint_reg(counted, state(), T, strategy="none", return_stats=True)
    assert torch.equal(solution, expected)
    assert len(counted.times) == plain_nfe == stats.nfe_forward and stats.nfe_reg == 0
    assert float(reg) == 0.0 and stats.t_samples == []


def test_extra_step_sees_true_sample_time():
    counted = Counting(MLPField())
    _, _, stats = odeint_reg(counted, state(), torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64),
                             return_stats=True, generator=torch.Generator().manual_seed(3))
    t_s, dt_s = stats.t_samples[0], stats.dt_samples[0]
    reg_times = counted.times[stats.nfe_forward:]
    assert 1.0 <= t_s <= 3.0 and dt_s < 0
    assert reg_times[0] == pytest.approx(t_s, abs=1e-12)
    assert min(reg_times) == pytest.approx(t_s + dt_s, abs=1e-9)  # decreasing time: the step ends below t_s


class Logged:
    """A norm that logs every value it returns, and callbacks that log accept / reject."""

    def __init__(self):
        self.values, self.events = [], []

    def norm(self, x):
        value = x.pow(2).mean().sqrt()
        self.values.append(float(value.detach()))
        return value


# fehlberg2 and adaptive_heun reuse their last stage's derivative as the next step's f0, but that
# stage is not at y1, so their f0 is not f(y1); our extra step evaluates f(t_s, y_s) afresh and
# agrees with the solver's ratio to within the tolerance-level difference this makes.
EXACT_RTOL = {"dopri5": 1e-12, "bosh3": 1e-12, "dopri8": 1e-12, "fehlberg2": 1e-3, "adaptive_heun": 1e-3}
# The agreement is tolerance-level, so the tolerance stays tight; adaptive_heun (second order) takes
# about 1000 steps per unit time at it, so it solves a shorter span (still hundreds of steps).
END_TIME = {"adaptive_heun": 0.5}


@pytest.mark.parametrize("strategy", ["biased", "global"])
@pytest.mark.parametrize("method", list(EXACT_RTOL))
def test_error_estimate_equals_solvers_own_ratio(strategy, method):
    """On y' = a y, E at a sampled step is the error ratio the solver computed for that step."""
    log = Logged()
    func = Linear(torch.tensor([[-1.3]], dtype=torch.float64))
    func.callback_accept_step = lambda t0, y0, dt: log.events.append("A")
    func.callback_reject_step = lambda t0, y0, dt: log.events.append("R")
    y0 = torch.tensor([[1.0]], dtype=torch.float64)
    t = torch.tensor([0.0, END_TIME.get(method, 3.0)], dtype=torch.float64)
    _, _, stats = odeint_reg(func, y0, t, rtol=1e-6, atol=1e-8,
                             method=method, options={"norm": log.norm}, strategy=strategy, num_samples=3,
                             generator=torch.Generator().manual_seed(0), return_stats=True)
    # norm calls: 3 by the initial step selection, then one per attempted step (followed, with
    # "global", by ours on each accepted step), then ours on the samples.
    values = iter(log.values[3:])
    accepted, ours = [], []
    for event in log.events:
        ratio = next(values)
        if event == "A":
            accepted.append(ratio)
            if strategy == "global":
                ours.append(next(values))
    assert len(accepted) == stats.num_accepted > 3
    if strategy == "global":
        assert ours == accepted
        assert stats.error_estimates == pytest.approx(accepted, rel=1e-12)
    else:
        expected = [accepted[i] for i in stats.sample_steps]
        assert stats.error_estimates == pytest.approx(expected, rel=EXACT_RTOL[method])


def test_stiffness_estimates_spectral_radius_on_linear_system():
    """For y' = A y (A symmetric), dopri5's last two stages give ||A v|| / ||v||, a quotient of A
    between its smallest and largest |eigenvalue|, which is the spectral radius while the stiff
    component is active (the initial transient, t < 0.1 here)."""
    eigenvalues = torch.tensor([-1.0, -4.0, -60.0], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    func = Linear(q @ torch.diag(eigenvalues) @ q.T)
    _, _, stats = odeint_reg(func, torch.ones(1, 3, dtype=torch.float64), torch.tensor([0.0, 0.1],
                             dtype=torch.float64), rtol=1e-6, atol=1e-9, strategy="biased", num_samples=20,
                             stiffness_weight=1.0, generator=torch.Generator().manual_seed(1), return_stats=True)
    rho = torch.tensor(stats.stiffness_estimates) / torch.tensor(stats.dt_samples).abs()
    assert (rho <= 60.0 * (1 + 1e-6)).all() and (rho >= 1.0).all()
    assert rho.median() == pytest.approx(60.0, rel=0.05)


def test_generator_reproducible_and_default_generator_used():
    runs = [odeint_reg(MLPField(), state(), T, return_stats=True, generator=torch.Generator().manual_seed(s))[2]
            for s in (5, 5, 6)]
    assert runs[0].t_samples == runs[1].t_samples != runs[2].t_samples

    def run(seed):
        torch.manual_seed(seed)
        return odeint_reg(MLPField(), state(), T, return_stats=True)[2].t_samples

    # Without a generator the package's private one restarts when torch.initial_seed() changed
    # since the previous solve (12 then 11: the last two runs restart, the first may not).
    _, a, _, b = run(12), run(11), run(12), run(11)
    assert a == b


def test_single_time_point_gives_zero_reg():
    solution, reg, stats = odeint_reg(MLPField(), state(), T[:1], return_stats=True)
    assert solution.shape[0] == 1 and float(reg) == 0.0 and stats.num_accepted == 0


def test_callbacks_on_func_still_called():
    func = MLPField()
    seen = []
    func.callback_accept_step = lambda t0, y0, dt: seen.append(float(t0.detach()))
    _, _, stats = odeint_reg(func, state(), T, return_stats=True)
    assert len(seen) == stats.num_accepted > 0


def test_nested_calls_do_not_share_state():
    inner = MLPField(dim=2)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = MLPField()
            self.inner = []

        def forward(self, t, y):
            _, reg = odeint_reg(inner, y[:, :2], torch.tensor([0.0, 0.1], dtype=torch.float64),
                                generator=torch.Generator().manual_seed(0))
            self.inner.append((y[:, :2].detach().clone(), reg.detach()))
            return self.f(t, y)

    outer = Outer()
    g = torch.Generator().manual_seed(1)
    _, _, stats = odeint_reg(outer, state(), T, return_stats=True, generator=g)
    _, _, plain_stats = odeint_reg(MLPField(), state(), T, return_stats=True,
                                   generator=torch.Generator().manual_seed(1))
    assert stats.t_samples == plain_stats.t_samples
    y_inner, reg_inner = outer.inner[len(outer.inner) // 2]
    _, alone = odeint_reg(inner, y_inner, torch.tensor([0.0, 0.1], dtype=torch.float64),
                          generator=torch.Generator().manual_seed(0))
    assert torch.equal(alone.detach(), reg_inner)


def test_concurrent_threads_match_sequential():
    def solve(seed):
        return odeint_reg(MLPField(seed=seed), state(seed=seed), T, return_stats=True,
                          generator=torch.Generator().manual_seed(seed))[2].t_samples

    expected = {s: solve(s) for s in range(4)}
    results = {}
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, solve(s))) for s in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == expected


BAD_ARGS = [
    (dict(strategy="random"), ValueError, "strategy"),
    (dict(strategy=None), ValueError, "strategy"),
    (dict(num_samples=0), ValueError, "num_samples"),
    (dict(num_samples=1.5), TypeError, "num_samples"),
    (dict(num_samples=True), TypeError, "num_samples"),
    (dict(error_weight=-1.0), ValueError, "error_weight"),
    (dict(error_weight=math.nan), ValueError, "error_weight"),
    (dict(stiffness_weight=-0.1), ValueError, "stiffness_weight"),
    (dict(stiffness_weight="1"), TypeError, "stiffness_weight"),
    (dict(generator=0), TypeError, "generator"),
    (dict(return_stats="yes"), TypeError, "return_stats"),
    (dict(method="implicit_adams"), ValueError, "dopri5"),
    (dict(method="scipy_solver"), ValueError, "method"),
    (dict(method="rk45"), ValueError, "method"),
]


@pytest.mark.parametrize("kwargs,error,word", BAD_ARGS, ids=[f"{list(k)[0]}={k[list(k)[0]]!r}" for k, _, _ in BAD_ARGS])
@pytest.mark.parametrize("entry", [odeint_reg, odeint_adjoint_reg], ids=["direct", "adjoint"])
def test_bad_input_raises_naming_argument(entry, kwargs, error, word):
    with pytest.raises(error, match=word):
        entry(MLPField(), state(), T, **kwargs)


def test_global_with_adjoint_raises():
    with pytest.raises(ValueError, match="global"):
        odeint_adjoint_reg(MLPField(), state(), T, strategy="global")


def test_adjoint_needs_module_or_params():
    with pytest.raises(ValueError, match="adjoint_params"):
        odeint_adjoint_reg(lambda t, y: -y, state(), T)
    solution, reg = odeint_adjoint_reg(lambda t, y: -y, state(), T, adjoint_params=())
    assert torch.isfinite(reg)


def test_non_finite_reg_raises():
    class Poisoned(nn.Module):
        """Fine during the solve, NaN afterwards (on the regularization step)."""

        def __init__(self, budget):
            super().__init__()
            self.f, self.budget = MLPField(), budget

        def forward(self, t, y):
            self.budget -= 1
            out = self.f(t, y)
            return out if self.budget >= 0 else out * math.nan

    probe = Counting(MLPField())
    torchdiffeq.odeint(probe, state(), T)
    with pytest.raises(FloatingPointError, match="not finite"):
        odeint_reg(Poisoned(len(probe.times)), state(), T)
