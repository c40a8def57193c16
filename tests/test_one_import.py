"""One-import mode: localreg.odeint & co. are upstream's solve, regularized inside regularize()."""
import threading
import warnings

import pytest
import torch
import torch.nn as nn
import torchdiffeq
import torchsde

import torchdiffeq_localreg as localreg
from problems import MLPField, TupleField, as_function_of_params, state


class Counted(nn.Module):
    def __init__(self, func):
        super().__init__()
        self.func, self.count = func, 0

    def forward(self, t, y):
        self.count += 1
        return self.func(t, y)


class TwoBlockModel(nn.Module):
    """A model that calls odeint twice inside forward, as stacked ODE blocks do."""

    def __init__(self, adjoint=False):
        super().__init__()
        self.f1, self.f2 = MLPField(seed=0), MLPField(seed=1)
        self.solve = localreg.odeint_adjoint if adjoint else localreg.odeint
        self.t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def forward(self, y):
        y = self.solve(self.f1, y, self.t, rtol=1e-6, atol=1e-8)[-1]
        return self.solve(self.f2, y, self.t, rtol=1e-6, atol=1e-8)[-1]


T = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4"])
@pytest.mark.parametrize("adjoint", [False, True])
@pytest.mark.parametrize("inside", [False, True])
def test_bit_identical_to_upstream(method, adjoint, inside):
    func, y0 = MLPField(), state()
    options = {"step_size": 0.1} if method == "rk4" else None
    ours = localreg.odeint_adjoint if adjoint else localreg.odeint
    theirs = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    expected = theirs(func, y0, T, method=method, options=options)
    if inside:
        with localreg.regularize() as r:
            got = ours(func, y0, T, method=method, options=options)
        assert len(r.stats) == 1 and r.reg.requires_grad
    else:
        got = ours(func, y0, T, method=method, options=options)
    assert torch.equal(got, expected)


def test_tuple_state_inside_and_outside():
    func = TupleField()
    y0 = (state(), torch.ones(4, 1, dtype=torch.float64))
    expected = torchdiffeq.odeint(func, y0, T)
    with localreg.regularize() as r:
        y, z = localreg.odeint(func, y0, T)  # unpacks as upstream's result does
    assert torch.equal(y, expected[0]) and torch.equal(z, expected[1]) and len(r.stats) == 1
    y, z = localreg.odeint(func, y0, T)
    assert torch.equal(y, expected[0]) and torch.equal(z, expected[1])


@pytest.mark.parametrize("adjoint", [False, True])
def test_reg_is_the_sum_over_the_solves_with_the_same_generator(adjoint):
    model, y0 = TwoBlockModel(adjoint), state()
    with localreg.regularize(strategy="biased", generator=torch.Generator().manual_seed(3)) as r:
        out = model(y0)
    gen = torch.Generator().manual_seed(3)
    solve = localreg.odeint_adjoint_reg if adjoint else localreg.odeint_reg
    y1, reg1 = solve(model.f1, y0, model.t, rtol=1e-6, atol=1e-8, strategy="biased", generator=gen)
    y2, reg2 = solve(model.f2, y1[-1], model.t, rtol=1e-6, atol=1e-8, strategy="biased", generator=gen)
    assert torch.equal(out, y2[-1])
    assert len(r.stats) == 2
    assert torch.equal(r.reg, reg1 + reg2)
    assert r.nfe_forward == sum(s.nfe_forward for s in r.stats) > 0
    assert r.nfe_reg == 2 * 7  # one dopri5 step per solve
    (out.sum() + r.reg).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_empty_block_has_zero_reg():
    with pytest.warns(UserWarning, match="without seeing a solve") as caught:
        with localreg.regularize() as r:
            pass
    assert caught[0].filename == __file__   # the user's with line
    assert r.reg.shape == () and r.reg.item() == 0.0 and r.stats == []


def test_nested_blocks_do_not_leak():
    func, y0 = MLPField(), state()
    with localreg.regularize() as outer:
        localreg.odeint(func, y0, T)
        with localreg.regularize() as inner:
            localreg.odeint(func, y0, T)
            localreg.odeint(func, y0, T)
        localreg.odeint(func, y0, T)
    assert len(outer.stats) == 2 and len(inner.stats) == 2
    localreg.odeint(func, y0, T)  # after the block: nothing recorded anywhere
    assert len(outer.stats) == 2
    with pytest.raises(RuntimeError, match="already active"):
        with outer:
            with outer:
                pass


def test_threads_start_outside_any_block():
    func, y0 = MLPField(), state()
    seen = []

    def work():
        with localreg.regularize() as mine:
            localreg.odeint(func, y0, T)
        localreg.odeint(func, y0, T)
        seen.append(len(mine.stats))

    with pytest.warns(UserWarning, match="without seeing a solve"):   # the solves ran in the other threads
        with localreg.regularize() as r:
            threads = [threading.Thread(target=work) for _ in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
    assert r.stats == [] and seen == [1, 1, 1, 1]


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_no_grad_skips_the_regularization_step(mode):
    func, y0 = Counted(MLPField()), state()
    torchdiffeq.odeint(func, y0, T)
    plain = func.count
    func.count = 0
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with localreg.regularize() as r, ctx:
        localreg.odeint(func, y0, T)
    assert func.count == plain and r.stats == [] and r.skipped == 1
    func.count = 0
    with localreg.regularize(when_no_grad="regularize") as r, torch.no_grad():
        localreg.odeint(func, y0, T)
    assert func.count == plain + 7 and len(r.stats) == 1


def test_default_sampling_leaves_the_global_random_stream_alone():
    func, y0 = MLPField(), state()
    torch.manual_seed(0)
    expected = torch.rand(5)
    torch.manual_seed(0)
    with localreg.regularize(strategy="unbiased") as r:
        localreg.odeint(func, y0, T)
    assert len(r.stats) == 1
    assert torch.equal(torch.rand(5), expected)


def test_default_sampling_is_reproducible_under_manual_seed():
    func, y0 = MLPField(), state()

    def run(seed):
        torch.manual_seed(seed)
        with localreg.regularize() as r:
            localreg.odeint(func, y0, T)
        return r.stats[0].t_samples

    # The private generator restarts when torch.initial_seed() changed since the previous solve:
    # the runs after seed 1 that follow a run after seed 2 draw the same samples.
    _, a, other, b = run(2), run(1), run(2), run(1)
    assert a == b != other


def test_gradcheck_of_reg_through_the_block():
    func = MLPField(dim=2, hidden=3)
    y0 = state(batch=1, dim=2)
    t = torch.tensor([0.0, 0.2], dtype=torch.float64)
    params = tuple(p.detach().clone().requires_grad_(True) for p in func.parameters())

    def run():
        with localreg.regularize(strategy="biased", stiffness_weight=0.3) as r:
            localreg.odeint(func, y0, t, rtol=1e-2, atol=1e-2, options={"first_step": 0.2})
        assert r.stats[0].num_accepted == 1
        return r.reg

    assert torch.autograd.gradcheck(as_function_of_params(func, run), params, eps=1e-4, atol=1e-6, rtol=1e-3)


def test_budget_takes_the_blocks_stats():
    model, y0 = TwoBlockModel(), state()
    with localreg.regularize() as r:
        model(y0)
    budget = localreg.NFEBudget(target_nfe=r.nfe_forward / 2, initial_weight=1.0, smoothing=0.0)
    assert budget.update(r.stats) > 1.0 and budget.nfe == r.nfe_forward


def test_bad_arguments():
    with pytest.raises(ValueError, match="strategy"):
        localreg.regularize(strategy="everywhere")
    with pytest.raises(ValueError, match="when_no_grad"):
        localreg.regularize(when_no_grad="sometimes")
    with pytest.raises(ValueError, match="global"):
        with localreg.regularize(strategy="global"):
            localreg.odeint_adjoint(MLPField(), state(), T)


class Ball(nn.Module):
    """A falling ball: y = (height, velocity), gravity g; the event is height = 0."""

    def __init__(self):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(9.81, dtype=torch.float64))

    def forward(self, t, y):
        return torch.stack([y[1], -self.g * torch.ones_like(y[0])])


def _event(t, y):
    return y[0]


def test_event_time_and_gradient_equal_upstream():
    """The bouncing-ball idea: the time to reach the ground and its gradient wrt gravity and the start."""
    results = []
    for use_reg in (False, True):
        ball = Ball()
        y0 = torch.tensor([10.0, 0.0], dtype=torch.float64, requires_grad=True)
        t0 = torch.tensor(0.0, dtype=torch.float64)
        if use_reg:
            event_t, sol, reg = localreg.odeint_event_reg(ball, y0, t0, event_fn=_event, strategy="biased",
                                                          generator=torch.Generator().manual_seed(0))
            assert reg.requires_grad
        else:
            event_t, sol = torchdiffeq.odeint_event(ball, y0, t0, event_fn=_event)
        g_grad, y0_grad = torch.autograd.grad(event_t, (ball.g, y0))
        results.append((event_t.detach(), sol.detach(), g_grad, y0_grad))
    (t_a, s_a, g_a, y_a), (t_b, s_b, g_b, y_b) = results
    assert torch.equal(t_a, t_b) and torch.equal(s_a, s_b)  # bit-identical
    assert torch.equal(g_a, g_b) and torch.equal(y_a, y_b)
    assert t_a.item() == pytest.approx((2 * 10.0 / 9.81) ** 0.5, rel=1e-5)
    assert g_a.item() == pytest.approx(-0.5 * t_a.item() / 9.81, rel=1e-4)  # d/dg sqrt(2h/g)


def test_upstream_odeint_event_through_the_one_import_interface():
    ball = Ball()
    y0 = torch.tensor([10.0, 0.0], dtype=torch.float64)
    t0 = torch.tensor(0.0, dtype=torch.float64)
    expected, _ = torchdiffeq.odeint_event(ball, y0, t0, event_fn=_event)
    with localreg.regularize() as r:
        event_t, _ = torchdiffeq.odeint_event(ball, y0, t0, event_fn=_event, odeint_interface=localreg.odeint)
    assert torch.equal(event_t, expected) and len(r.stats) == 1
    event_t, _, reg, stats = localreg.odeint_event_reg(ball, y0, t0, event_fn=_event, return_stats=True,
                                                       odeint_interface=localreg.odeint_adjoint_reg)
    assert torch.equal(event_t, expected) and stats.nfe_reg > 0


class SDE(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2).double()

    def f(self, t, y):
        return torch.tanh(self.lin(y))

    def g(self, t, y):
        return 0.2 * torch.ones_like(y)


@pytest.mark.parametrize("adjoint", [False, True])
def test_sdeint_bit_identical_and_recorded(adjoint):
    sde = SDE()
    y0 = torch.zeros(3, 2, dtype=torch.float64)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def bm():
        return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(3, 2), dtype=torch.float64, entropy=5)

    theirs = torchsde.sdeint_adjoint if adjoint else torchsde.sdeint
    ours = localreg.sdeint_adjoint if adjoint else localreg.sdeint
    expected = theirs(sde, y0, ts, bm=bm(), dt=0.1, method="euler")
    assert torch.equal(ours(sde, y0, ts, bm=bm(), dt=0.1, method="euler"), expected)
    with localreg.regularize(generator=torch.Generator().manual_seed(0)) as r:
        got = ours(sde, y0, ts, bm=bm(), dt=0.1, method="euler")
    assert torch.equal(got, expected) and len(r.stats) == 1
    solve = localreg.sdeint_adjoint_reg if adjoint else localreg.sdeint_reg
    _, reg = solve(sde, y0, ts, bm=bm(), dt=0.1, method="euler", generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.reg, reg)


def test_sdeint_unknown_keyword_warns_like_torchsde():
    sde = SDE()
    y0 = torch.zeros(3, 2, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    bm = torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(3, 2), dtype=torch.float64, entropy=5)
    with localreg.regularize(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        localreg.sdeint(sde, y0, ts, bm=bm, dt=0.5, method="euler", bogus=1)
    assert any("Unexpected arguments {'bogus': 1}" in str(w.message) for w in caught)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("strategy", ["unbiased", "biased", "global"])
def test_odeint_reg_skips_the_regularization_step_without_gradients(mode, strategy):
    func, y0 = Counted(MLPField()), state()
    expected = torchdiffeq.odeint(func, y0, T)
    plain = func.count
    func.count = 0
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with ctx:
        y, reg, st = localreg.odeint_reg(func, y0, T, strategy=strategy, return_stats=True)
    assert torch.equal(y, expected) and reg.item() == 0.0
    assert st.skipped and st.nfe_reg == 0 and st.strategy == strategy
    assert func.count == plain == st.nfe_forward
    _, reg, st = localreg.odeint_reg(func, y0, T, strategy=strategy, return_stats=True)
    assert not st.skipped and reg.requires_grad


def test_sdeint_reg_skips_the_regularization_step_without_gradients():
    sde = SDE()
    y0 = torch.zeros(3, 2, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def bm():
        return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(3, 2), dtype=torch.float64, entropy=5)

    expected = torchsde.sdeint(sde, y0, ts, bm=bm(), dt=0.1, method="euler")
    with torch.no_grad():
        ys, reg, st = localreg.sdeint_reg(sde, y0, ts, bm=bm(), dt=0.1, method="euler", return_stats=True)
    assert torch.equal(ys, expected) and reg.item() == 0.0 and st.skipped and st.nfe_reg == 0


def test_bad_method_is_refused_even_without_gradients():
    with torch.no_grad(), pytest.raises(ValueError, match="not supported"):
        localreg.odeint_reg(MLPField(), state(), T, method="explicit_adams")
