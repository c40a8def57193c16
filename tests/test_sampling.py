"""The samplers draw what they promise: t_s uniform on the span, or a uniform accepted step."""
import pytest
import torch
from scipy import stats as scipy_stats

from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg
from torchdiffeq_localreg._sampling import StepSampler
from problems import MLPField, state

P_MIN = 1e-3  # a correct sampler fails this with probability 1e-3 per test, at a fixed seed: never


def _steps(n=25, seed=3):
    """Steps of very unequal lengths covering [0, total]."""
    lengths = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) ** 3 + 1e-3
    edges = torch.cat([torch.zeros(1, dtype=torch.float64), lengths.cumsum(0)]).tolist()
    return list(zip(edges[:-1], edges[1:]))


def _run(strategy, steps, n_samples, t_end, seed=0, t_start=0.0):
    sampler = StepSampler(strategy, n_samples, torch.Generator().manual_seed(seed))
    sampler.start(t_start)
    for index, (t0, t1) in enumerate(steps):
        sampler.observe(t0, t1, payload=index)
    return sampler.finish(t_end)


def test_unbiased_times_are_uniform_on_span():
    steps = _steps()
    t_end = steps[-1][1] - 0.5 * (steps[-1][1] - steps[-1][0])  # the last step overshoots the span
    samples = _run("unbiased", steps, 20_000, t_end)
    times = torch.tensor([s.t for s in samples])
    assert times.min() >= 0.0 and times.max() <= t_end
    assert scipy_stats.kstest(times.numpy() / t_end, "uniform").pvalue > P_MIN
    for s in samples[:200]:
        assert s.t0 <= s.t <= s.t1 and steps[s.payload] == (s.t0, s.t1)


def test_unbiased_respects_span_start():
    steps = _steps()
    t_start = 0.5 * (steps[0][0] + steps[0][1])
    samples = _run("unbiased", steps, 5_000, steps[-1][1], t_start=t_start)
    times = torch.tensor([s.t for s in samples]).numpy()
    assert times.min() >= t_start
    assert scipy_stats.kstest((times - t_start) / (steps[-1][1] - t_start), "uniform").pvalue > P_MIN


def test_biased_step_index_is_uniform():
    steps = _steps()
    samples = _run("biased", steps, 20_000, steps[-1][1])
    counts = torch.bincount(torch.tensor([s.index for s in samples]), minlength=len(steps))
    assert scipy_stats.chisquare(counts.numpy()).pvalue > P_MIN
    assert all(s.t == s.t0 for s in samples)


def test_sampler_is_reproducible_and_seed_dependent():
    steps = _steps()
    a = [s.t for s in _run("unbiased", steps, 50, steps[-1][1], seed=1)]
    b = [s.t for s in _run("unbiased", steps, 50, steps[-1][1], seed=1)]
    c = [s.t for s in _run("unbiased", steps, 50, steps[-1][1], seed=2)]
    assert a == b and a != c


def test_no_steps_no_samples():
    assert _run("unbiased", [], 3, 1.0) == []


@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
@pytest.mark.parametrize("reverse", [False, True], ids=["increasing", "decreasing"])
def test_unbiased_t_samples_uniform_in_real_solve(adjoint, reverse):
    t = torch.tensor([0.2, 0.5, 1.4], dtype=torch.float64)
    t = t.flip(0) if reverse else t
    entry = odeint_adjoint_reg if adjoint else odeint_reg
    # Each sample costs an extra step. 200 samples over this solve's 4 accepted steps reject a sampler
    # that picks steps with equal weights instead of by length (power 1.0 at P_MIN; 0.83 at 100).
    _, _, stats = entry(MLPField(), state(), t, rtol=1e-4, atol=1e-6, num_samples=200, strategy="unbiased",
                        generator=torch.Generator().manual_seed(0), return_stats=True)
    times = torch.tensor(stats.t_samples)
    assert len(times) == 200 and times.min() >= 0.2 and times.max() <= 1.4
    assert scipy_stats.kstest(((times - 0.2) / 1.2).numpy(), "uniform").pvalue > P_MIN
    # Each dt_s is the size of a real accepted step, signed like t.
    assert all((dt < 0) == reverse for dt in stats.dt_samples)


def test_biased_step_index_uniform_in_real_solve():
    # 300 samples over 10 accepted steps (one of them 20x shorter than the others) reject a sampler that
    # weights steps by length (power 1.0 at P_MIN; 0.92 at 200).
    _, _, stats = odeint_reg(MLPField(), state(), torch.linspace(0, 2, 3, dtype=torch.float64), rtol=1e-6,
                             atol=1e-8, num_samples=300, strategy="biased",
                             generator=torch.Generator().manual_seed(0), return_stats=True)
    assert stats.num_accepted >= 8
    counts = torch.bincount(torch.tensor(stats.sample_steps), minlength=stats.num_accepted)
    assert len(counts) == stats.num_accepted
    assert scipy_stats.chisquare(counts.numpy()).pvalue > P_MIN
