"""NFEBudget: the weight follows the NFE, checkpoints round-trip, bad arguments are refused."""
import copy
import math

import pytest
import torch
import torchsde

from torchdiffeq_localreg import LocalRegStats, NFEBudget, odeint_adjoint_reg, odeint_reg, sdeint_reg


def stats(nfe):
    return LocalRegStats(strategy="unbiased", method="dopri5", nfe_forward=nfe)


def test_weight_rises_above_target_and_falls_below():
    budget = NFEBudget(target_nfe=30, initial_weight=0.1)
    weights = [budget.update(stats(60)) for _ in range(20)]
    assert all(b > a for a, b in zip(weights, weights[1:]))
    assert weights[-1] > 0.1
    high = weights[-1]
    falling = [budget.update(stats(10)) for _ in range(60)]
    assert falling[-1] < high
    # the EMA lags: the weight keeps rising for a few steps, then falls monotonically
    tail = falling[20:]
    assert all(b < a for a, b in zip(tail, tail[1:]))


def test_weight_is_held_until_the_nfe_first_exceeds_the_target():
    budget = NFEBudget(target_nfe=30, initial_weight=0.2, smoothing=0.0)
    for _ in range(50):
        assert budget.update(stats(10)) == pytest.approx(0.2)  # a young, cheap model: nothing moves
    assert budget.update(stats(45)) > 0.2
    high = budget.weight
    assert budget.update(stats(10)) < high  # once active, it decays within budget
    free = NFEBudget(target_nfe=30, initial_weight=0.2, smoothing=0.0, hold=False)
    assert free.update(stats(10)) < 0.2


def test_without_leak_the_weight_is_stationary_at_target():
    budget = NFEBudget(target_nfe=30, initial_weight=0.5, leak=0.0)
    for _ in range(50):
        budget.update(stats(30))
    assert budget.weight == pytest.approx(0.5)
    assert budget.nfe == pytest.approx(30.0)


def test_leak_decays_the_weight_within_budget():
    """At or just under the target the weight keeps decaying by at least rate * leak per step."""
    budget = NFEBudget(target_nfe=30, initial_weight=0.5, rate=0.05, leak=0.1, smoothing=0.0, anticipation=0.0)
    budget.update(stats(60))  # activate: +0.05
    for _ in range(100):
        budget.update(stats(29))
    assert budget.weight == pytest.approx(0.5 * math.exp(0.05 - 100 * 0.05 * 0.1))
    budget.update(stats(15))  # larger deficits count fully
    assert budget.weight == pytest.approx(0.5 * math.exp(0.05 - 100 * 0.05 * 0.1 - 0.05 * 0.5))


def test_step_size_is_rate_times_clipped_excess():
    budget = NFEBudget(target_nfe=10, initial_weight=1.0, rate=0.1, smoothing=0.0, anticipation=0.0)
    assert budget.update(stats(15)) == pytest.approx(math.exp(0.1 * 0.5))
    budget = NFEBudget(target_nfe=10, initial_weight=1.0, rate=0.1, smoothing=0.0, anticipation=0.0)
    assert budget.update(stats(1000)) == pytest.approx(math.exp(0.1))  # excess clipped at +1
    budget = NFEBudget(target_nfe=10, initial_weight=1.0, rate=0.1, smoothing=0.0, anticipation=0.0)
    budget.update(stats(20))  # activate (+0.1)
    assert budget.update(stats(0)) == pytest.approx(1.0)  # excess clipped at -1: -0.1


def test_anticipation_extrapolates_the_trend():
    """The excess is measured at nfe + anticipation * (fast - slow average), both bias-corrected."""
    budget = NFEBudget(target_nfe=40, initial_weight=1.0, rate=0.1, smoothing=0.0, trend_smoothing=0.5,
                       anticipation=2.0)
    budget.update(stats(60))  # first step: both averages are 60, no trend; excess 0.5
    assert budget.weight == pytest.approx(math.exp(0.1 * 0.5))
    assert budget.nfe_trend == 0.0
    budget.update(stats(48))  # slow: (0.5*0.5*60 + 0.5*48) / 0.75 = 52; trend -4; heading 40: excess 0 -> -leak
    assert budget.nfe_trend == pytest.approx(-4.0)
    assert budget.weight == pytest.approx(math.exp(0.1 * 0.5 - 0.1 * 0.1))


def test_anticipation_stops_the_rise_while_the_nfe_falls_toward_the_target():
    """Above the target but falling fast: the trend-following weight stops rising, the plain one does not."""
    falling = [100 - 0.5 * k for k in range(100)]  # 100 -> 50.5, target 40
    plain = NFEBudget(target_nfe=40, anticipation=0.0)
    ahead = NFEBudget(target_nfe=40)
    for n in [100] * 200 + falling:
        plain.update(stats(round(n)))
        ahead.update(stats(round(n)))
    assert plain.nfe > 40 and ahead.nfe > 40
    assert ahead.nfe_trend < 0
    assert ahead.weight < plain.weight
    before = ahead.weight
    ahead.update(stats(50))
    assert ahead.weight < before  # heading below the target: the weight decays already


def test_anticipation_raises_the_weight_faster_while_the_nfe_grows():
    growing = [30 + 0.2 * k for k in range(200)]  # plain training: 30 -> 70, target 35
    plain = NFEBudget(target_nfe=35, anticipation=0.0)
    ahead = NFEBudget(target_nfe=35)
    for n in growing:
        plain.update(stats(round(n)))
        ahead.update(stats(round(n)))
    assert ahead.nfe_trend > 0
    assert ahead.weight > plain.weight > 0.01


def test_bias_corrected_average():
    budget = NFEBudget(target_nfe=10, smoothing=0.9)
    budget.update(stats(40))
    assert budget.nfe == pytest.approx(40.0)  # not 4.0: corrected as in Adam
    budget.update(stats(20))
    assert budget.nfe == pytest.approx((0.9 * 0.1 * 40 + 0.1 * 20) / (1 - 0.81))


def test_bounds_hold():
    budget = NFEBudget(target_nfe=5, initial_weight=1.0, min_weight=0.5, max_weight=2.0, rate=1.0)
    for _ in range(20):
        budget.update(stats(100))
    assert budget.weight == pytest.approx(2.0)
    for _ in range(40):
        budget.update(stats(0))
    assert budget.weight == pytest.approx(0.5)


def test_warmup_gives_zero_weight_and_no_movement():
    budget = NFEBudget(target_nfe=10, initial_weight=0.2, warmup_steps=3)
    assert budget.weight == 0.0  # steps 1-3 train without reg
    assert budget.update(stats(100)) == 0.0
    assert budget.update(stats(100)) == 0.0
    assert budget.update(stats(100)) == pytest.approx(0.2)  # the weight for step 4, not yet moved
    assert budget.update(stats(100)) > 0.2
    assert budget.steps == 4


def test_several_solves_per_step_are_summed():
    a = NFEBudget(target_nfe=10, smoothing=0.0)
    a.update([stats(8), stats(12)])
    assert a.nfe == 20


def test_state_dict_round_trip_continues_identically():
    budget = NFEBudget(target_nfe=25, initial_weight=0.03, rate=0.07, smoothing=0.8, warmup_steps=2, leak=0.2, hold=False,
                       anticipation=3.0, trend_smoothing=0.95)
    for n in (40, 35, 50, 20, 33):
        budget.update(stats(n))
    state = copy.deepcopy(budget.state_dict())
    restored = NFEBudget(target_nfe=1)
    restored.load_state_dict(state)
    assert restored.state_dict() == budget.state_dict()
    for n in (41, 12, 30):
        assert restored.update(stats(n)) == budget.update(stats(n))
    assert restored.nfe == budget.nfe


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(target_nfe=0), ValueError, "target_nfe"),
    (dict(target_nfe=-3), ValueError, "target_nfe"),
    (dict(target_nfe=float("nan")), ValueError, "target_nfe"),
    (dict(target_nfe="30"), TypeError, "target_nfe"),
    (dict(target_nfe=True), TypeError, "target_nfe"),
    (dict(target_nfe=10 ** 400), ValueError, "target_nfe"),
    (dict(target_nfe=30, rate=0), ValueError, "rate"),
    (dict(target_nfe=30, smoothing=1.0), ValueError, "smoothing"),
    (dict(target_nfe=30, smoothing=-0.1), ValueError, "smoothing"),
    (dict(target_nfe=30, initial_weight=0), ValueError, "initial_weight"),
    (dict(target_nfe=30, initial_weight=1e-6), ValueError, "min_weight <= initial_weight"),
    (dict(target_nfe=30, min_weight=float("inf")), ValueError, "min_weight"),
    (dict(target_nfe=30, warmup_steps=-1), ValueError, "warmup_steps"),
    (dict(target_nfe=30, warmup_steps=2.0), TypeError, "warmup_steps"),
    (dict(target_nfe=30, leak=1.5), ValueError, "leak"),
    (dict(target_nfe=30, leak=-0.1), ValueError, "leak"),
    (dict(target_nfe=30, hold=1), TypeError, "hold"),
    (dict(target_nfe=30, anticipation=-1.0), ValueError, "anticipation"),
    (dict(target_nfe=30, anticipation=float("inf")), ValueError, "anticipation"),
    (dict(target_nfe=30, trend_smoothing=1.0), ValueError, "trend_smoothing"),
    (dict(target_nfe=30, trend_smoothing=0.5), ValueError, "trend_smoothing must be larger than smoothing"),
])
def test_bad_arguments_name_the_argument(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        NFEBudget(**kwargs)


def test_update_refuses_what_is_not_stats():
    budget = NFEBudget(target_nfe=30)
    for bad in (30, "stats", [stats(3), 4], None):
        with pytest.raises(TypeError, match="LocalRegStats"):
            budget.update(bad)
    assert budget.steps == 0


def test_load_state_dict_validates_before_changing_anything():
    budget = NFEBudget(target_nfe=30)
    budget.update(stats(40))
    before = budget.state_dict()
    bad = dict(before, steps=-1)
    with pytest.raises(ValueError, match="steps"):
        budget.load_state_dict(bad)
    with pytest.raises(ValueError, match="wrong keys"):
        budget.load_state_dict({k: v for k, v in before.items() if k != "nfe_avg"})
    with pytest.raises(ValueError, match="log_weight"):
        budget.load_state_dict(dict(before, log_weight=100.0))
    with pytest.raises(ValueError, match="rate"):
        budget.load_state_dict(dict(before, rate=-1.0))
    with pytest.raises(TypeError, match="dict"):
        budget.load_state_dict([1, 2])
    assert budget.state_dict() == before


def test_works_with_ode_stats():
    func = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    y0 = torch.randn(8, 2)
    t = torch.linspace(0, 1, 3)
    _, reg, st = odeint_reg(lambda t, y: func(y), y0, t, rtol=1e-6, atol=1e-6, return_stats=True,
                            generator=torch.Generator().manual_seed(0))
    budget = NFEBudget(target_nfe=st.nfe_forward / 2, initial_weight=1.0, smoothing=0.0)
    assert budget.update(st) > 1.0
    budget = NFEBudget(target_nfe=st.nfe_forward * 2, initial_weight=1.0, smoothing=0.0)
    budget.update(stats(st.nfe_forward * 4))
    assert budget.update(st) < math.exp(0.05)


class _SDE(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        self.drift = torch.nn.Linear(2, 2)

    def f(self, t, y):
        return self.drift(y)

    def g(self, t, y):
        return 0.1 * torch.ones_like(y)


def test_works_with_sde_stats_counting_drift_evaluations():
    sde = _SDE()
    y0 = torch.zeros(4, 2)
    ts = torch.tensor([0.0, 1.0])
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(4, 2), entropy=0)
    _, reg, st = sdeint_reg(sde, y0, ts, bm=bm, dt=0.1, method="euler", return_stats=True,
                            generator=torch.Generator().manual_seed(0))
    assert st.nfe_forward > 0
    budget = NFEBudget(target_nfe=st.nfe_forward / 2, initial_weight=1.0, smoothing=0.0)
    assert budget.update(st) > 1.0
    assert budget.nfe == st.nfe_forward


def _conflicting_losses():
    """A task loss and a weighted penalty of the same parameters whose gradients conflict."""
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))
    other = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))  # reached by the task only
    task = ((w - torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)) ** 2).sum() + other ** 2  # grad w: (-2, 4, -2)
    reg = (w * torch.tensor([2.0, -1.0, 3.0], dtype=torch.float64)).sum()  # grad: (2, -1, 3), conflicts
    return w, other, task, reg


def test_backward_project_removes_the_conflicting_component():
    budget = NFEBudget(target_nfe=10, initial_weight=2.0)
    assert budget.combine == "project"
    w, other, task, reg = _conflicting_losses()
    g_t = torch.autograd.grad(task, w, retain_graph=True)[0]
    g_r = 2.0 * torch.autograd.grad(reg, w, retain_graph=True)[0]
    assert float(g_t @ g_r) < 0
    g_other = torch.tensor(1.0, dtype=torch.float64)  # d task / d other; reg does not reach `other`
    budget.backward(task, reg, [w, other])
    # The projection is taken over all parameters as one vector, `other` included.
    coef = (g_t @ g_r) / (g_t @ g_t + g_other ** 2)
    torch.testing.assert_close(w.grad, g_t + g_r - coef * g_t)
    torch.testing.assert_close(other.grad, g_other - coef * g_other)
    reg_part = torch.cat([w.grad - g_t, (other.grad - g_other).reshape(1)])
    assert float(reg_part @ torch.cat([g_t, g_other.reshape(1)])) == pytest.approx(0.0, abs=1e-12)


def test_backward_sum_and_agreeing_gradients_are_the_plain_backward():
    w, other, task, reg = _conflicting_losses()
    NFEBudget(target_nfe=10, initial_weight=2.0, combine="sum").backward(task, reg, [w, other])
    plain_w, plain_other, task2, reg2 = _conflicting_losses()
    (task2 + 2.0 * reg2).backward()
    torch.testing.assert_close(w.grad, plain_w.grad)
    torch.testing.assert_close(other.grad, plain_other.grad)
    # No conflict: "project" changes nothing either.
    v = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    NFEBudget(target_nfe=10, initial_weight=0.5).backward((v ** 2).sum(), (v ** 2).sum(), [v])
    torch.testing.assert_close(v.grad, 3.0 * v.detach())


def test_backward_accumulates_like_backward():
    budget = NFEBudget(target_nfe=10, initial_weight=2.0)
    w, other, task, reg = _conflicting_losses()
    w.grad = torch.ones(3, dtype=torch.float64)
    budget.backward(task, reg, iter([w, other]))  # a generator, as model.parameters() is
    first = w.grad.clone()
    w2, other2, task2, reg2 = _conflicting_losses()
    budget.backward(task2, reg2, [w2, other2])
    torch.testing.assert_close(first, 1.0 + w2.grad)


@pytest.mark.parametrize("solve", ["direct", "adjoint"])
def test_backward_on_a_real_solve_never_opposes_the_task(solve):
    torch.manual_seed(0)
    func = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    y0 = torch.randn(8, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    if solve == "direct":
        ys, reg = odeint_reg(lambda t, y: func(y), y0, t, rtol=1e-6, atol=1e-6, generator=gen)
    else:
        class Field(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = func

            def forward(self, t, y):
                return self.net(y)
        ys, reg = odeint_adjoint_reg(Field(), y0, t, rtol=1e-6, atol=1e-6, generator=gen)
    task = ((ys[-1] - 1.0) ** 2).mean()
    params = list(func.parameters())
    g_t = torch.autograd.grad(task, params, retain_graph=True)
    g_r = torch.autograd.grad(100.0 * reg, params, retain_graph=True)
    budget = NFEBudget(target_nfe=10, initial_weight=100.0)
    budget.backward(task, reg, params)
    flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])  # noqa: E731
    reg_part = flat([q.grad for q in params]) - flat(g_t)
    dot = float(flat(g_t) @ flat(g_r))
    assert float(reg_part @ flat(g_t)) >= -1e-12 * float(flat(g_t).norm() * reg_part.norm())
    if dot >= 0:  # no conflict: the plain sum
        torch.testing.assert_close(reg_part, flat(g_r))
    else:
        torch.testing.assert_close(reg_part, flat(g_r) - dot / float(flat(g_t) @ flat(g_t)) * flat(g_t))


def test_backward_refuses_bad_input_and_several_processes(monkeypatch):
    with pytest.raises(ValueError, match="combine"):
        NFEBudget(target_nfe=10, combine="average")
    budget = NFEBudget(target_nfe=10)
    w, other, task, reg = _conflicting_losses()
    with pytest.raises(TypeError, match="task_loss"):
        budget.backward(torch.stack([task, task]), reg, [w])
    with pytest.raises(TypeError, match="reg"):
        budget.backward(task, 3.0, [w])
    with pytest.raises(TypeError, match="parameters"):
        budget.backward(task, reg, [w, "bias"])
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    with pytest.raises(RuntimeError, match="combine='sum'"):
        budget.backward(task, reg, [w])
    NFEBudget(target_nfe=10, combine="sum").backward(task, reg, [w])  # the plain sum works there
