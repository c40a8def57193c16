"""AutoWeight: the weight against its closed form, the projection, the ceiling and its warning, the
plain-sum mode, checkpoints, and real solves. (Shared input checks: tests/test_controls.py.)"""
import asyncio
import copy
import itertools
import math
import threading
import warnings

import pytest
import torch
import torchsde

from torchdiffeq_localreg import AutoWeight, odeint_adjoint_reg, odeint_reg, regularize, sdeint_adjoint_reg, sdeint_reg
from torchdiffeq_localreg import odeint as odeint_one_import
from torchdiffeq_localreg import _stats
from torchdiffeq_localreg._weight_control import _project_cone

D = torch.float64


@pytest.fixture(autouse=True)
def no_solve_seen():
    """Each test starts as if this context had taken no regularized solve (AutoWeight's first
    backward reads the kind of the last one)."""
    token = _stats._LAST_SOLVE_SDE.set(None)
    yield
    _stats._LAST_SOLVE_SDE.reset(token)


def linear_losses(task_grad, reg_grad, other_grad=None):
    """A parameter w with task gradient ``task_grad`` and reg gradient ``reg_grad`` (linear losses), and
    optionally a parameter ``other`` that only the task reaches."""
    w = torch.nn.Parameter(torch.zeros(len(task_grad), dtype=D))
    params = [w]
    task = (w * torch.tensor(task_grad, dtype=D)).sum()
    if other_grad is not None:
        other = torch.nn.Parameter(torch.zeros(len(other_grad), dtype=D))
        task = task + (other * torch.tensor(other_grad, dtype=D)).sum()
        params.append(other)
    reg = (w * torch.tensor(reg_grad, dtype=D)).sum()
    return params, task, reg


def step(control, task_grad, reg_grad, other_grad=None):
    params, task, reg = linear_losses(task_grad, reg_grad, other_grad)
    control.backward(task, reg, params)
    return [p.grad for p in params]


class Plain(AutoWeight):
    """AutoWeight without the momentum projection, to check the weight alone."""
    MOMENTUM = 0.0


def test_weight_is_the_share_of_the_averaged_gradient_norms():
    auto = Plain()
    c, beta = Plain.FRACTION, Plain.NORM_SMOOTHING
    seen = [([3.0, 4.0], [1.0, 0.0]), ([0.0, 1.0], [0.0, 2.0]), ([6.0, 8.0], [0.0, 0.5])]
    task_sq = reg_sq = 0.0
    for task_grad, reg_grad in seen:
        grads = step(auto, task_grad, reg_grad)
        task_sq = beta * task_sq + (1 - beta) * sum(x * x for x in task_grad)
        reg_sq = beta * reg_sq + (1 - beta) * sum(x * x for x in reg_grad)
        expected = c * math.sqrt(task_sq) / math.sqrt(reg_sq)
        assert auto.weight == pytest.approx(expected, rel=1e-12)
        dot = sum(a * b for a, b in zip(task_grad, reg_grad))
        assert dot >= 0  # no conflict: the plain sum
        torch.testing.assert_close(grads[0], torch.tensor(task_grad, dtype=D) + expected * torch.tensor(reg_grad, dtype=D))
    assert auto.steps == 3


def test_first_step_acts_already():
    auto = Plain()
    step(auto, [1.0, 0.0], [0.0, 1.0])
    assert auto.weight == pytest.approx(Plain.FRACTION)  # share c of the task's pull, from step 1


def test_norm_of_the_task_gradient_is_taken_where_reg_reaches():
    auto = Plain()
    step(auto, [3.0, 4.0], [0.0, 1.0], other_grad=[100.0])
    assert auto.weight == pytest.approx(Plain.FRACTION * 5.0)

    class Everywhere(Plain):
        RESTRICT_NORM = False

    auto = Everywhere()
    step(auto, [3.0, 4.0], [0.0, 1.0], other_grad=[100.0])
    assert auto.weight == pytest.approx(Plain.FRACTION * math.hypot(5.0, 100.0))


def test_ceiling_holds_after_calibration_and_warns_once():
    class Quick(Plain):
        NORM_SMOOTHING = 0.0
        BOUND_PATIENCE = 5

    auto = Quick()
    for _ in range(Quick.CALIBRATION_STEPS):
        step(auto, [1.0, 0.0], [0.0, 1.0])
    assert auto.ceiling == pytest.approx(Quick.CEILING * Quick.FRACTION)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(Quick.BOUND_PATIENCE - 1):
            step(auto, [1.0, 0.0], [0.0, 1e-6])  # reg's gradient vanishes: lambda* = 1e5 c
            assert auto.weight == pytest.approx(auto.ceiling)
    with pytest.warns(RuntimeWarning, match="ceiling") as record:
        step(auto, [1.0, 0.0], [0.0, 1e-6])
    assert record[0].filename == __file__  # the user's line, not the package's, however deep the warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(auto, [1.0, 0.0], [0.0, 1e-6])
    step(auto, [1.0, 0.0], [0.0, 1.0])
    assert auto.weight == pytest.approx(Quick.FRACTION)


def test_calibration_is_the_geometric_mean_of_the_first_weights():
    class Quick(Plain):
        NORM_SMOOTHING = 0.0
        CALIBRATION_STEPS = 2

    auto = Quick()
    step(auto, [1.0, 0.0], [0.0, 1.0])
    assert auto.ceiling == math.inf
    step(auto, [4.0, 0.0], [0.0, 1.0])
    assert auto.ceiling == pytest.approx(Quick.CEILING * Quick.FRACTION * 2.0)


def test_ceiling_rises_with_the_task_gradient_and_no_further():
    class Quick(Plain):
        NORM_SMOOTHING = 0.0
        CALIBRATION_STEPS = 2

    auto = Quick()
    for _ in range(2):
        step(auto, [1.0, 0.0], [0.0, 1.0])  # calibrated: lambda_0 = c, T_0 = 1
    assert auto.ceiling == pytest.approx(Quick.CEILING * Quick.FRACTION)
    step(auto, [3.0, 4.0], [0.0, 1e-9])     # the task's gradient grew 5x (T 25x): the ceiling 5x
    assert auto.weight == pytest.approx(5.0 * Quick.CEILING * Quick.FRACTION, rel=1e-12)
    restored = Quick()
    restored.load_state_dict(copy.deepcopy(auto.state_dict()))
    assert restored.ceiling == auto.ceiling
    step(auto, [0.5, 0.0], [0.0, 1e-9])     # below its calibrated size: K lambda_0, not lower
    assert auto.weight == pytest.approx(Quick.CEILING * Quick.FRACTION, rel=1e-12)


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def test_pull_is_projected_against_the_task_gradient():
    auto = Plain()
    grads = step(auto, [1.0, 0.0], [-1.0, 1.0])  # conflict: reg's pull has a component against the task
    lam = auto.weight
    pull = lam * torch.tensor([-1.0, 1.0], dtype=D)
    expected = torch.tensor([1.0, 0.0], dtype=D) + pull - (pull @ torch.tensor([1.0, 0.0], dtype=D)) * torch.tensor(
        [1.0, 0.0], dtype=D)
    torch.testing.assert_close(grads[0], expected)


def test_pull_is_projected_against_the_tasks_moving_average_too():
    class Fast(AutoWeight):
        MOMENTUM = 0.9

    auto = Fast()
    step(auto, [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])  # m = 0.1 * (1, 0, 0)
    # This batch's task gradient does not oppose the pull, the task's moving average does.
    task_grad, reg_grad = [0.0, 1.0, 0.0], [-1.0, 0.1, 0.0]
    m = 0.9 * 0.1 * torch.tensor([1.0, 0.0, 0.0], dtype=D) + 0.1 * torch.tensor(task_grad, dtype=D)
    assert float(torch.tensor(reg_grad, dtype=D) @ m) < 0 < float(torch.tensor(reg_grad, dtype=D) @ torch.tensor(task_grad, dtype=D))
    grads = step(auto, task_grad, reg_grad)
    pull = flat(grads) - torch.tensor(task_grad, dtype=D)
    assert float(pull @ m) == pytest.approx(0.0, abs=1e-12)  # the constraint is active
    assert float(pull @ torch.tensor(task_grad, dtype=D)) >= 0
    expected = _project_cone([auto.weight * torch.tensor(reg_grad, dtype=D)], [[torch.tensor(task_grad, dtype=D)], [m]])
    torch.testing.assert_close(pull, expected[0])
    assert float(pull @ torch.tensor(reg_grad, dtype=D)) > 0  # what is left still makes reg smaller


def brute_force_cone(p, dirs, samples=20000, seed=0):
    """The nearest feasible point among the analytic candidates, checked against random feasible points."""
    gen = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(samples):
        d = p + torch.randn(p.shape, generator=gen, dtype=D) * float(p.norm())
        if all(float(d @ a) >= 0 for a in dirs):
            if best is None or float((d - p).norm()) < float((best - p).norm()):
                best = d
    return best


@pytest.mark.parametrize("seed", range(6))
def test_project_cone_is_the_nearest_feasible_point(seed):
    gen = torch.Generator().manual_seed(seed)
    p, a, b = (torch.randn(4, generator=gen, dtype=D) for _ in range(3))
    d = _project_cone([p], [[a], [b]])[0]
    assert float(d @ a) >= -1e-10 and float(d @ b) >= -1e-10
    # KKT: d = p + mu_a a + mu_b b with mu >= 0, and mu_i > 0 only where the constraint is active.
    basis = torch.stack([a, b], dim=1)
    mu = torch.linalg.lstsq(basis, d - p).solution
    torch.testing.assert_close(basis @ mu, d - p)
    assert all(float(x) >= -1e-10 for x in mu)
    for x, direction in zip(mu, (a, b)):
        assert float(x) < 1e-10 or abs(float(d @ direction)) < 1e-10
    sampled = brute_force_cone(p, [a, b], seed=seed)
    assert float((d - p).norm()) <= float((sampled - p).norm()) + 1e-12


def test_project_cone_with_parallel_directions_and_no_conflict():
    p, a = torch.tensor([-1.0, 2.0], dtype=D), torch.tensor([1.0, 0.0], dtype=D)
    d = _project_cone([p], [[a], [2.0 * a]])[0]
    torch.testing.assert_close(d, torch.tensor([0.0, 2.0], dtype=D))
    q = torch.tensor([1.0, 2.0], dtype=D)
    assert _project_cone([q], [[a], [2.0 * a]])[0] is q or torch.equal(_project_cone([q], [[a], [a]])[0], q)
    zero = torch.zeros(2, dtype=D)
    torch.testing.assert_close(_project_cone([p], [[zero]])[0], p)  # a zero direction constrains nothing


def test_sum_mode_uses_the_previous_weight_and_measures_the_task_gradient():
    auto, ref = AutoWeight(combine="sum"), Plain()
    assert auto.weight == 0.0
    grads = step(auto, [3.0, 4.0], [1.0, -1.0])
    torch.testing.assert_close(grads[0], torch.tensor([3.0, 4.0], dtype=D))  # weight 0 before any measurement
    assert auto.weight == 0.0  # the weight this step used
    step(ref, [3.0, 4.0], [1.0, -1.0])
    grads = step(auto, [0.0, 2.0], [2.0, 2.0])
    lam = ref.weight  # measured at the first step, used by the second
    assert auto.weight == pytest.approx(lam)
    torch.testing.assert_close(grads[0], torch.tensor([0.0, 2.0], dtype=D) + lam * torch.tensor([2.0, 2.0], dtype=D))
    step(ref, [0.0, 2.0], [2.0, 2.0])
    step(auto, [1.0, 1.0], [0.0, 1.0])
    assert auto.weight == pytest.approx(ref.weight, rel=1e-12)  # the task's gradient was recovered from the sum


def test_sum_mode_accumulates_like_backward():
    auto, ref = AutoWeight(combine="sum"), Plain()
    step(auto, [1.0, 0.0], [0.0, 1.0])
    step(ref, [1.0, 0.0], [0.0, 1.0])
    params, task, reg = linear_losses([1.0, 2.0], [0.5, 0.0])
    params[0].grad = torch.ones(2, dtype=D)
    lam = ref.weight
    auto.backward(task, reg, params)
    torch.testing.assert_close(params[0].grad, torch.tensor([2.0, 3.0], dtype=D) + lam * torch.tensor([0.5, 0.0], dtype=D))
    assert auto.steps == 2


def test_state_dict_round_trip_continues_identically():
    auto = AutoWeight()
    gen = torch.Generator().manual_seed(0)
    draws = [(torch.randn(3, generator=gen).tolist(), torch.randn(3, generator=gen).tolist()) for _ in range(16)]
    for task_grad, reg_grad in draws[:12]:
        step(auto, task_grad, reg_grad)
    restored = AutoWeight()
    restored.load_state_dict(copy.deepcopy(auto.state_dict()))
    for task_grad, reg_grad in draws[12:]:
        torch.testing.assert_close(step(restored, task_grad, reg_grad), step(auto, task_grad, reg_grad), rtol=0, atol=0)
        assert restored.weight == auto.weight
    assert restored.ceiling == auto.ceiling


def test_load_state_dict_refuses_a_bad_momentum_before_changing_anything():
    auto = AutoWeight()
    step(auto, [1.0, 2.0], [0.5, 0.5])
    good = auto.state_dict()
    for bad, exc in (([torch.tensor([float("nan"), 0.0])], ValueError), ("m", TypeError), ([3.0], TypeError)):
        with pytest.raises(exc, match="momentum"):
            auto.load_state_dict(dict(good, momentum=bad))
    assert auto.steps == 1 and torch.equal(auto.state_dict()["momentum"][0], good["momentum"][0])


def test_changed_parameters_restart_the_moving_average_with_a_warning():
    auto = AutoWeight()
    step(auto, [1.0, 2.0], [0.5, 0.5])
    with pytest.warns(RuntimeWarning, match="parameters passed to backward"):
        step(auto, [1.0, 2.0, 3.0], [0.5, 0.5, 0.5])
    assert auto.state_dict()["momentum"][0].shape == (3,)


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()

    def forward(self, t, y):
        return self.net(y)


class SDE(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.drift = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()

    def f(self, t, y):
        return self.drift(y)

    def g(self, t, y):
        return 0.2 * torch.ones_like(y)


def solve(kind, model):
    y0 = torch.linspace(-1.0, 1.0, 16, dtype=D).reshape(8, 2)
    t = torch.tensor([0.0, 1.0], dtype=D)
    gen = torch.Generator().manual_seed(3)
    if kind == "direct":
        ys, reg = odeint_reg(model, y0, t, rtol=1e-6, atol=1e-6, generator=gen)
    elif kind == "adjoint":
        ys, reg = odeint_adjoint_reg(model, y0, t, rtol=1e-6, atol=1e-6, generator=gen)
    elif kind == "one-import":
        with regularize(generator=gen) as r:
            ys = odeint_one_import(model, y0, t, rtol=1e-6, atol=1e-6)
        reg = r.reg
    else:
        bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(8, 2), dtype=D, entropy=0)
        sdeint = sdeint_adjoint_reg if kind == "sde-adjoint" else sdeint_reg
        ys, reg = sdeint(model, y0, t, bm=bm, dt=0.1, method="euler", adaptive=True, rtol=1e-2, atol=1e-2,
                         generator=gen)
    return ((ys[-1] - 0.5) ** 2).mean(), reg


@pytest.mark.parametrize("kind", ["direct", "adjoint", "one-import", "sde", "sde-adjoint"])
def test_real_solves_get_the_closed_form_gradient(kind):
    model = SDE() if kind.startswith("sde") else Field()
    params = list(model.parameters())
    auto = AutoWeight()
    for _ in range(3):  # a few steps, so that the moving average and the norms have history
        task, reg = solve(kind, model)
        g_t = list(torch.autograd.grad(task, params, retain_graph=True))
        g_r = list(torch.autograd.grad(reg, params, retain_graph=True))
        m_before = [None if m is None else m.clone() for m in auto.state_dict()["momentum"]] or [None] * len(params)
        for p in params:
            p.grad = None
        auto.backward(task, reg, params)
        m = [(1 - AutoWeight.MOMENTUM) * a if old is None else AutoWeight.MOMENTUM * old + (1 - AutoWeight.MOMENTUM) * a
             for old, a in zip(m_before, g_t)]
        pull = _project_cone([auto.weight * b for b in g_r], [g_t, m])
        for p, a, d in zip(params, g_t, pull):
            torch.testing.assert_close(p.grad, a + d)
        assert auto.weight > 0
        with torch.no_grad():
            for p in params:
                p -= 0.05 * p.grad
    assert auto.steps == 3


@pytest.mark.parametrize("a, b", list(itertools.product([0.5, 2.0], [0.1, 3.0])))
def test_weight_does_not_depend_on_the_scale_of_either_loss(a, b):
    """Scaling the task loss by a and reg by b scales the weight by a / b: the pull is the same."""
    base, scaled = Plain(), Plain()
    for task_grad, reg_grad in (([1.0, 2.0], [0.3, 0.1]), ([0.5, -1.0], [1.0, 0.2]), ([2.0, 0.0], [0.0, 0.7])):
        g1 = step(base, task_grad, reg_grad)
        g2 = step(scaled, [a * x for x in task_grad], [b * x for x in reg_grad])
        torch.testing.assert_close(g2[0], a * g1[0])


def sde_stats(nfe=12):
    from torchdiffeq_localreg import LocalRegStats
    return LocalRegStats(strategy="unbiased", method="milstein", nfe_forward=nfe, nfe_diffusion_forward=nfe)


def test_sde_solves_get_the_sde_share_from_the_first_update_on():
    ode, sde = Plain(), Plain()
    assert ode.share == Plain.FRACTION and sde.share == Plain.FRACTION
    draws = [([1.0, 2.0], [0.5, 0.1]), ([0.3, 1.0], [1.0, 0.2]), ([2.0, 0.5], [0.1, 0.7])]
    from torchdiffeq_localreg import LocalRegStats
    for k, (task_grad, reg_grad) in enumerate(draws):
        step(ode, task_grad, reg_grad)
        step(sde, task_grad, reg_grad)
        ode.update(LocalRegStats(strategy="unbiased", method="dopri5", nfe_forward=20))
        sde.update(sde_stats())
        if k == 0:  # the first step's weight was measured with the ODE share
            assert sde.weight == pytest.approx(ode.weight)
    assert sde.share == Plain.FRACTION_SDE
    assert sde.weight == pytest.approx(ode.weight * Plain.FRACTION_SDE / Plain.FRACTION, rel=1e-12)
    assert sde.state_dict()["sde"] is True and ode.state_dict()["sde"] is False


@pytest.mark.parametrize("kind", ["direct", "sde"])
def test_first_backward_takes_the_share_of_the_solve_just_taken(kind):
    """Before any update, the first backward after a real solve uses that solve's share: the weight
    is then the share c times the ratio of the two gradients' norms (one step: no averaging)."""
    model = SDE() if kind == "sde" else Field()
    params = list(model.parameters())
    auto = AutoWeight()
    task, reg = solve(kind, model)
    g_t = torch.autograd.grad(task, params, retain_graph=True)
    g_r = torch.autograd.grad(reg, params, retain_graph=True)
    auto.backward(task, reg, params)
    share = AutoWeight.FRACTION_SDE if kind == "sde" else AutoWeight.FRACTION
    ratio = math.sqrt(sum(float((a * a).sum()) for a in g_t)) / math.sqrt(sum(float((b * b).sum()) for b in g_r))
    assert auto.share == share
    assert auto.weight == pytest.approx(share * ratio, rel=1e-10)


def test_the_last_solve_kind_is_seen_in_its_own_context_only():
    """A solve noted in another asyncio task or thread does not decide this context's first share."""
    async def solve_in_a_task():
        async def sde_solve():
            _stats.note_regularized_solve(sde=True)
            return _stats.last_regularized_solve_is_sde()

        seen_inside = await asyncio.create_task(sde_solve())
        return seen_inside, _stats.last_regularized_solve_is_sde()

    assert asyncio.run(solve_in_a_task()) == (True, None)
    thread = threading.Thread(target=_stats.note_regularized_solve, kwargs={"sde": True})
    thread.start()
    thread.join()
    assert _stats.last_regularized_solve_is_sde() is None
    _stats.note_regularized_solve(sde=False)
    assert _stats.last_regularized_solve_is_sde() is False


def test_without_a_solve_seen_the_first_backward_uses_the_ode_share():
    auto = Plain()
    step(auto, [1.0, 0.0], [0.0, 1.0])
    assert auto.share == Plain.FRACTION and auto.weight == pytest.approx(Plain.FRACTION)


def test_the_sde_share_rescales_the_calibration():
    class Quick(Plain):
        NORM_SMOOTHING = 0.0
        CALIBRATION_STEPS = 3

    ode, sde = Quick(), Quick()
    for k in range(5):
        step(ode, [1.0, 0.0], [0.0, 1.0])
        step(sde, [1.0, 0.0], [0.0, 1.0])
        if k == 1:
            sde.update(sde_stats())
    assert sde.ceiling == pytest.approx(ode.ceiling * Quick.FRACTION_SDE / Quick.FRACTION)


def test_a_float32_moving_average_loaded_into_a_float64_run_continues_in_float64():
    """A state whose moving average has another dtype (or device) than the gradients is moved to
    theirs at the next step instead of failing in the in-place update."""
    model = Field()
    params = list(model.parameters())
    auto = AutoWeight()
    for _ in range(2):
        task, reg = solve("direct", model)
        auto.backward(task, reg, params)
    state = auto.state_dict()
    state["momentum"] = [None if m is None else m.float() for m in state["momentum"]]
    resumed = AutoWeight()
    resumed.load_state_dict(state)
    task, reg = solve("direct", model)
    resumed.backward(task, reg, params)
    assert all(m.dtype == D for m in resumed.state_dict()["momentum"] if m is not None)
    assert resumed.weight > 0


class Instant(AutoWeight):
    """AutoWeight whose averages are each step's own values (no smoothing), to check the conflict factor."""
    NORM_SMOOTHING = 0.0


def angled(cos):
    """A task gradient and a reg gradient of unit norm at the cosine ``cos``."""
    return [1.0, 0.0], [cos, math.sqrt(1.0 - cos * cos)]


@pytest.mark.parametrize("cos, factor", [(1.0, 1.0), (0.0, 1.0), (-0.5, 1.0), (-0.75, 0.25), (-0.9, 0.04), (-1.0, 0.0)])
def test_conflict_factor_is_its_closed_form(cos, factor):
    """One step: C is the cosine of reg's gradient with m = (1 - beta_m) g_t, and the weight is the
    share times min(1, (1 + C) / 0.5) ** 2; the pull that goes in is that weight's, projected."""
    auto = Instant()
    task_grad, reg_grad = angled(cos)
    grads = step(auto, task_grad, reg_grad)
    assert auto.conflict == pytest.approx(cos, abs=1e-12)
    assert auto.conflict_factor == pytest.approx(factor, abs=1e-12)
    assert auto.weight == pytest.approx(Instant.FRACTION * factor, abs=1e-12)
    g_t, g_r = torch.tensor(task_grad, dtype=D), torch.tensor(reg_grad, dtype=D)
    pull = _project_cone([auto.weight * g_r], [[g_t], [(1 - Instant.MOMENTUM) * g_t]])[0]
    torch.testing.assert_close(grads[0], g_t + pull)


def test_conflict_is_a_bias_corrected_average_of_the_cosines_with_the_moving_average():
    auto = AutoWeight()
    beta, beta_m = AutoWeight.NORM_SMOOTHING, AutoWeight.MOMENTUM
    draws = [([1.0, 0.0], [-0.6, 0.8]), ([0.0, 2.0], [1.0, -1.0]), ([1.0, 1.0], [-2.0, -0.5])]
    m, cos_sum = torch.zeros(2, dtype=D), 0.0
    for k, (task_grad, reg_grad) in enumerate(draws, start=1):
        step(auto, task_grad, reg_grad)
        m = beta_m * m + (1 - beta_m) * torch.tensor(task_grad, dtype=D)
        g_r = torch.tensor(reg_grad, dtype=D)
        cos_sum = beta * cos_sum + (1 - beta) * float(g_r @ m / (g_r.norm() * m.norm()))
        assert auto.conflict == pytest.approx(cos_sum / (1 - beta ** k), rel=1e-12)
    assert auto.conflict < AutoWeight.CONFLICT_FREE  # the last two draws oppose the task's average
    expected = min(1.0, (1 + auto.conflict) / (1 + AutoWeight.CONFLICT_FREE)) ** 2
    assert auto.conflict_factor == pytest.approx(expected, rel=1e-12) and 0 < expected < 1


def test_without_the_moving_average_there_is_no_conflict_factor():
    auto = Plain()  # MOMENTUM = 0: no m to compare with
    step(auto, *angled(-1.0))
    assert auto.conflict == 0.0 and auto.conflict_factor == 1.0
    assert auto.weight == pytest.approx(Plain.FRACTION)


def test_sde_solves_get_no_conflict_factor():
    ode, sde = Instant(), Instant()
    sde.update(sde_stats())
    step(ode, *angled(-0.9))
    step(sde, *angled(-0.9))
    assert ode.conflict == sde.conflict == pytest.approx(-0.9)  # measured either way
    assert sde.conflict_factor == 1.0 and sde.weight == pytest.approx(Instant.FRACTION_SDE)
    assert ode.weight == pytest.approx(Instant.FRACTION * 0.04)


def test_sum_mode_uses_the_factor_from_the_next_step_on():
    auto, ref = Instant(combine="sum"), Instant()
    step(auto, *angled(-0.75))
    step(ref, *angled(-0.75))
    assert auto.weight == 0.0
    grads = step(auto, [1.0, 0.0], [0.0, 1.0])
    assert auto.weight == pytest.approx(ref.weight) and ref.weight == pytest.approx(Instant.FRACTION * 0.25)
    torch.testing.assert_close(grads[0], torch.tensor([1.0, auto.weight], dtype=D))


def test_a_step_that_measures_nothing_keeps_the_weight_without_applying_the_factor_again():
    auto = Instant()
    step(auto, *angled(-0.75))
    weight = auto.weight
    step(auto, [1.0, 0.0], [0.0, 0.0])  # reg's gradient is zero: nothing to measure
    assert auto.weight == weight and auto.steps == 1


def test_state_dict_carries_the_conflict_and_refuses_a_bad_one():
    auto = AutoWeight()
    for task_grad, reg_grad in (([1.0, 0.0], [-0.9, 0.2]), ([0.5, 0.1], [-1.0, 0.0])):
        step(auto, task_grad, reg_grad)
    restored = AutoWeight()
    restored.load_state_dict(copy.deepcopy(auto.state_dict()))
    assert restored.conflict == auto.conflict < 0 and restored.conflict_factor == auto.conflict_factor
    good = auto.state_dict()
    for bad, exc in ((1.5, ValueError), (float("nan"), ValueError), ("-0.5", TypeError)):
        with pytest.raises(exc, match="cos_sum"):
            auto.load_state_dict(dict(good, cos_sum=bad))
    assert auto.state_dict()["cos_sum"] == good["cos_sum"]
