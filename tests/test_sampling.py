"""The samplers draw what they promise: t_s uniform on the span, or a uniform accepted step."""
import pytest
import torch
import torchsde
from scipy import stats as scipy_stats

from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg, sdeint_adjoint_reg, sdeint_reg
from torchdiffeq_localreg._sampling import StepSampler, private_generator
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


class _SmallSDE(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(-0.7, dtype=torch.float64))

    def f(self, t, y):
        return self.a * torch.sin(y)

    def g(self, t, y):
        return 0.2 * torch.ones_like(y)


def _solve_with(entry, func, **kwargs):
    """stats.t_samples of one regularized solve through ``entry``, from ``func``'s own draws of nothing."""
    y0 = state(batch=3, dim=2)
    if entry in (sdeint_reg, sdeint_adjoint_reg):
        ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
        bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(3, 2), dtype=torch.float64, entropy=5)
        return entry(func, y0, ts, bm=bm, dt=0.1, method="euler", num_samples=4, return_stats=True,
                     **kwargs)[-1].t_samples
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64)
    return entry(func, y0, t, rtol=1e-5, atol=1e-7, num_samples=4, return_stats=True, **kwargs)[-1].t_samples


ENTRIES = {"odeint_reg": odeint_reg, "odeint_adjoint_reg": odeint_adjoint_reg, "sdeint_reg": sdeint_reg,
           "sdeint_adjoint_reg": sdeint_adjoint_reg}


def _field(name):
    return _SmallSDE() if name.startswith("sde") else MLPField(dim=2)


@pytest.mark.parametrize("name", ENTRIES)
def test_default_generator_leaves_the_global_stream_alone(name):
    func = _field(name)
    torch.manual_seed(123)
    expected = torch.rand(6)
    torch.manual_seed(123)
    _solve_with(ENTRIES[name], func)
    assert torch.equal(torch.rand(6), expected)


@pytest.mark.parametrize("name", ENTRIES)
def test_default_generator_follows_manual_seed(name):
    func = _field(name)

    def run(seed):
        torch.manual_seed(seed)
        return _solve_with(ENTRIES[name], func)

    # The private generator restarts when torch.initial_seed() changes: seed 21 again after 22
    # replays the run after 21, as a new process calling torch.manual_seed(21) would. (A run with
    # seed 20 first: an earlier test may have left 21 in force at its last solve, and re-seeding
    # with it restarts nothing.)
    run(20)
    first, other, again = run(21), run(22), run(21)
    assert len(first) == 4 and first == again and first != other
    # Without a re-seed the stream goes on: the next solve draws new samples.
    assert _solve_with(ENTRIES[name], func) != again


def test_default_generator_is_private_and_seeded_from_initial_seed():
    torch.manual_seed(5)
    gen = private_generator()
    assert gen is private_generator() and gen.device.type == "cpu"
    assert not torch.equal(torch.rand(8, generator=gen), torch.rand(8))  # not the user's stream
    torch.manual_seed(6)
    assert private_generator() is not gen


@pytest.mark.parametrize("name", ENTRIES)
def test_explicit_generator_is_used_instead(name):
    func = _field(name)
    torch.manual_seed(3)
    private_state = private_generator().get_state()
    gen = torch.Generator().manual_seed(9)
    a = _solve_with(ENTRIES[name], func, generator=gen)
    assert not torch.equal(gen.get_state(), torch.Generator().manual_seed(9).get_state())  # gen advanced
    assert torch.equal(private_generator().get_state(), private_state)  # the private one did not
    assert a == _solve_with(ENTRIES[name], func, generator=torch.Generator().manual_seed(9))
    assert a != _solve_with(ENTRIES[name], func, generator=torch.Generator().manual_seed(10))
