"""sdeint_reg and sdeint_adjoint_reg: exactness against torchsde, gradients, estimates, stats, errors."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchsde
from torchsde._core import methods
from torchsde._core.adaptive_stepping import compute_error
from torchsde._core.sdeint import check_contract
from torchsde.settings import LEVY_AREA_APPROXIMATIONS, METHODS, SDE_TYPES

from torchdiffeq_localreg import LocalRegStats, sdeint_adjoint_reg, sdeint_reg
from torchdiffeq_localreg._estimates import sde_step_doubling_estimates
from torchdiffeq_localreg._sde_solvers import WRAPPERS
from problems import as_function_of_params, upstream_after_import

BATCH, DIM, NOISE = 2, 2, 2
TS = torch.tensor([0.0, 0.35, 1.0], dtype=torch.float64)


class NeuralSDE(nn.Module):
    """A small SDE of the given type and noise type: tanh-MLP drift, a diffusion of the right shape
    (constant for additive noise), and a prior drift h for logqp."""

    def __init__(self, sde_type="ito", noise_type="diagonal", seed=0):
        super().__init__()
        self.sde_type, self.noise_type = sde_type, noise_type
        gen = torch.Generator().manual_seed(seed)
        rand = lambda *shape: nn.Parameter(torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5)
        self.w1, self.w2, self.tb = rand(DIM, DIM), rand(DIM, DIM), rand(DIM)
        out = {"diagonal": DIM, "scalar": DIM, "general": DIM * NOISE, "additive": DIM * NOISE}[noise_type]
        self.gw, self.gb = rand(out, DIM), rand(out)

    def f(self, t, y):
        return torch.tanh(y @ self.w1 + t * self.tb) @ self.w2 - 0.5 * y

    def h(self, t, y):
        return -y

    def g(self, t, y):
        if self.noise_type == "additive":
            return (0.3 * torch.tanh(self.gb)).view(1, DIM, NOISE).expand(y.size(0), DIM, NOISE)
        g = 0.3 * torch.sigmoid(y @ self.gw.T + self.gb)
        return {"diagonal": g, "scalar": g.unsqueeze(-1), "general": g.view(-1, DIM, NOISE)}[self.noise_type]


class CountingSDE(NeuralSDE):
    """Counts its own drift and diffusion calls."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = {"f": 0, "g": 0}

    def f(self, t, y):
        self.calls["f"] += 1
        return super().f(t, y)

    def g(self, t, y):
        self.calls["g"] += 1
        return super().g(t, y)


def noise_channels(noise_type):
    return {"diagonal": DIM, "scalar": 1, "general": NOISE, "additive": NOISE}[noise_type]


def levy_area(method):
    # What torchsde's own default Brownian motion would carry for the method.
    return {METHODS.srk: LEVY_AREA_APPROXIMATIONS.space_time,
            METHODS.log_ode_midpoint: LEVY_AREA_APPROXIMATIONS.foster}.get(method, LEVY_AREA_APPROXIMATIONS.none)


def brownian(method="euler", noise_type="diagonal", entropy=11, order_free=False):
    """A Brownian interval with fixed entropy; with ``order_free`` one whose values do not depend on
    the order of queries (a BrownianTree where the method needs no Levy area)."""
    size, levy = (BATCH, noise_channels(noise_type)), levy_area(method)
    if order_free and levy == LEVY_AREA_APPROXIMATIONS.none:
        return torchsde.BrownianTree(t0=0.0, t1=1.0, w0=torch.zeros(size, dtype=torch.float64), entropy=entropy)
    return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=size, dtype=torch.float64, entropy=entropy,
                                     levy_area_approximation=levy, halfway_tree=order_free,
                                     tol=1e-6 if order_free else 0.0)


def y0_state(seed=1):
    return torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _combinations():
    """Every (method, sde_type, noise_type) torchsde can run forward, read off torchsde itself."""
    combos = []
    for method in METHODS.all():
        if method == METHODS.adjoint_reversible_heun:
            continue
        for sde_type in SDE_TYPES.all():
            cls = methods.select(method=method, sde_type=sde_type)
            if cls.sde_type == sde_type:
                combos += [(method, sde_type, noise) for noise in cls.noise_types]
    return combos


COMBINATIONS = _combinations()
SOLVE = dict(dt=0.125, rtol=1e-3, atol=1e-3)  # 0.125: torchsde's accumulated grid is exact


@pytest.fixture(autouse=True)
def _quiet_upstream_warnings():
    # torchsde warns about adaptive Euler with non-additive noise and reversible Heun with the adjoint.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def test_combinations_cover_every_method_and_wrapper():
    assert len(COMBINATIONS) == 33
    assert {m for m, _, _ in COMBINATIONS} == set(METHODS.all()) - {METHODS.adjoint_reversible_heun}
    assert {methods.select(method=m, sde_type=s) for m, s, _ in COMBINATIONS} == set(WRAPPERS)


@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed", "adaptive"])
@pytest.mark.parametrize("method,sde_type,noise_type", COMBINATIONS)
def test_outputs_bit_identical_to_torchsde(method, sde_type, noise_type, adaptive):
    sde, y0 = NeuralSDE(sde_type, noise_type), y0_state()
    common = dict(method=method, adaptive=adaptive, **SOLVE)
    bm = lambda: brownian(method, noise_type)
    expected = torchsde.sdeint(sde, y0, TS, bm=bm(), **common)
    expected_adjoint = torchsde.sdeint_adjoint(sde, y0, TS, bm=bm(), **common)

    for strategy in ("unbiased", "global"):
        ys, reg, stats = sdeint_reg(sde, y0, TS, bm=bm(), strategy=strategy, stiffness_weight=0.1,
                                    return_stats=True, **common)
        assert torch.equal(ys, expected), strategy
        assert torch.isfinite(reg) and reg > 0 and stats.num_accepted > 0
    ys, reg = sdeint_adjoint_reg(sde, y0, TS, bm=bm(), strategy="biased", **common)
    assert torch.equal(ys, expected_adjoint)
    assert torch.isfinite(reg) and reg > 0


@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed", "adaptive"])
@pytest.mark.parametrize("method,sde_type,adjoint_method", [
    ("euler", "ito", "euler"), ("milstein", "ito", "milstein"), ("srk", "ito", None),
    ("midpoint", "stratonovich", "midpoint"), ("reversible_heun", "stratonovich", None)])
def test_adjoint_gradients_bit_identical_with_order_independent_brownian(method, sde_type, adjoint_method, adaptive):
    """With a BrownianTree the backward pass sees the same increments whatever reg queried."""
    sde, y0 = NeuralSDE(sde_type), y0_state().requires_grad_(True)
    common = dict(method=method, adjoint_method=adjoint_method, adaptive=adaptive, dt=0.125, rtol=1e-3, atol=1e-3)
    inputs = (y0, *sde.parameters())

    expected = torchsde.sdeint_adjoint(sde, y0, TS, bm=brownian(method, order_free=True), **common)
    expected_grads = torch.autograd.grad(expected.square().sum(), inputs)
    ys, reg = sdeint_adjoint_reg(sde, y0, TS, bm=brownian(method, order_free=True), strategy="unbiased", **common)
    grads = torch.autograd.grad(ys.square().sum(), inputs)
    assert torch.equal(ys, expected)
    for a, b in zip(grads, expected_grads):
        assert torch.equal(a, b)


def test_default_brownian_motion_and_method_as_upstream():
    """bm=None and method=None: torchsde's defaults (entropy from numpy's global generator)."""
    sde, y0 = NeuralSDE("ito", "diagonal"), y0_state()
    np.random.seed(5)
    expected = torchsde.sdeint(sde, y0, TS, dt=0.1)
    np.random.seed(5)
    ys, _, stats = sdeint_reg(sde, y0, TS, dt=0.1, return_stats=True)
    assert torch.equal(ys, expected) and stats.method == "srk"


def test_logqp_extra_and_names_return_like_upstream():
    sde, y0 = NeuralSDE("ito", "diagonal"), y0_state()
    kwargs = dict(method="euler", dt=0.125, logqp=True, extra=True)
    # With logqp the diagonal noise also drives the log-ratio channel.
    bm = lambda: torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(BATCH, DIM + 1), dtype=torch.float64, entropy=3)
    ys, log_ratio, extra = torchsde.sdeint(sde, y0, TS, bm=bm(), **kwargs)
    out = sdeint_reg(sde, y0, TS, bm=bm(), return_stats=True, **kwargs)
    assert len(out) == 5 and isinstance(out[4], LocalRegStats) and out[3].shape == ()
    assert torch.equal(out[0], ys) and torch.equal(out[1], log_ratio) and out[2] == extra

    class Renamed(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def __init__(self):
            super().__init__()
            self.inner = NeuralSDE("ito", "diagonal")

        def drift(self, t, y):
            return self.inner.f(t, y)

        def diffusion(self, t, y):
            return self.inner.g(t, y)

    names = {"drift": "drift", "diffusion": "diffusion"}
    expected = torchsde.sdeint(Renamed(), y0, TS, bm=brownian(), method="euler", dt=0.125, names=names)
    ys, reg, stats = sdeint_reg(Renamed(), y0, TS, bm=brownian(), method="euler", dt=0.125, names=names,
                                strategy="biased", return_stats=True)
    assert torch.equal(ys, expected) and reg > 0
    assert stats.nfe_reg == 3 and stats.nfe_diffusion_reg == 3


@pytest.mark.parametrize("defines", ["f_and_g", "f_and_g_prod"])
def test_stiffness_needs_only_the_functions_the_sde_defines(defines):
    """S needs the drift alone; an SDE without ``f`` gives it through f_and_g or f_and_g_prod."""
    class Combined(nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def __init__(self):
            super().__init__()
            self.inner = NeuralSDE()

        def f_and_g(self, t, y):
            return self.inner.f(t, y), self.inner.g(t, y)

        def f_and_g_prod(self, t, y, v):
            return self.inner.f(t, y), self.inner.g(t, y) * v

    if defines == "f_and_g":
        del Combined.f_and_g_prod
    else:
        del Combined.f_and_g
    common = dict(method="euler", dt=0.125, strategy="biased", stiffness_weight=1.0, return_stats=True)
    combined = Combined()
    _, reg, stats = sdeint_reg(combined, y0_state(), TS, bm=brownian(), generator=torch.Generator().manual_seed(2),
                               **common)
    _, expected, _ = sdeint_reg(combined.inner, y0_state(), TS, bm=brownian(),
                                generator=torch.Generator().manual_seed(2), **common)
    assert torch.equal(reg, expected) and stats.stiffness_estimates[0] > 0


# Gradients ------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["biased", "global"])
@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed", "adaptive"])
@pytest.mark.parametrize("method,sde_type", [("euler", "ito"), ("milstein", "ito"), ("srk", "ito"),
                                             ("midpoint", "stratonovich"), ("reversible_heun", "stratonovich")])
def test_gradcheck_reg_public_api(method, sde_type, adaptive, strategy):
    """One step over a fixed Brownian path: the sampled point is (ts[0], y0, dt) for every
    parameter value, so reg is smooth in the parameters and finite differences must match."""
    sde, y0 = NeuralSDE(sde_type), y0_state()
    ts = torch.tensor([0.0, 0.5], dtype=torch.float64)
    bm = brownian(method)
    params = tuple(p.detach().clone().requires_grad_(True) for p in sde.parameters())

    def run():
        _, reg, stats = sdeint_reg(sde, y0, ts, bm=bm, method=method, dt=0.5, adaptive=adaptive, rtol=1.0,
                                   atol=1.0, strategy=strategy, stiffness_weight=0.3, return_stats=True)
        assert stats.num_accepted == 1 and stats.num_rejected == 0
        return reg

    assert torch.autograd.gradcheck(as_function_of_params(sde, run), params, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("cls", list(WRAPPERS), ids=lambda c: c.__name__)
def test_gradcheck_step_doubling_estimate(cls):
    """The regularization window itself, from an interior point, for every torchsde solver."""
    sde_type = cls.sde_type
    method = {"SRK": "srk", "LogODEMidpoint": "log_ode"}.get(cls.__name__, "euler")
    user_sde, y0, bm = NeuralSDE(sde_type, "diagonal"), y0_state(), brownian(method)
    sde = check_contract(user_sde, y0, TS, bm, method, False, None, None, False)[0]
    solver = WRAPPERS[cls](sde=sde, bm=bm, dt=0.1, adaptive=False, rtol=1e-2, atol=1e-3, dt_min=1e-5, options={})
    t0, t1 = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.55, dtype=torch.float64)
    params = tuple(p.detach().clone().requires_grad_(True) for p in user_sde.parameters())

    def run():
        extra0 = solver.init_extra_solver_state(t0, y0)
        e, s = sde_step_doubling_estimates(solver._lr_upstream_step, sde.f, t0, t1, y0, extra0,
                                           solver.rtol, solver.atol, True)
        return e + s

    assert torch.autograd.gradcheck(as_function_of_params(user_sde, run), params, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed", "adaptive"])
@pytest.mark.parametrize("strategy", ["unbiased", "biased"])
@pytest.mark.parametrize("method,sde_type", [("euler", "ito"), ("srk", "ito"), ("milstein", "stratonovich"),
                                             ("reversible_heun", "stratonovich"), ("log_ode", "stratonovich")])
def test_reg_and_gradient_identical_direct_and_adjoint(method, sde_type, strategy, adaptive):
    sde, y0 = NeuralSDE(sde_type), y0_state()
    common = dict(method=method, adaptive=adaptive, strategy=strategy, num_samples=3, stiffness_weight=0.2, **SOLVE)
    params = tuple(sde.parameters())

    _, reg_direct = sdeint_reg(sde, y0, TS, bm=brownian(method), generator=torch.Generator().manual_seed(4), **common)
    grads_direct = torch.autograd.grad(reg_direct, params)
    _, reg_adjoint = sdeint_adjoint_reg(sde, y0, TS, bm=brownian(method), generator=torch.Generator().manual_seed(4),
                                        **common)
    grads_adjoint = torch.autograd.grad(reg_adjoint, params)
    assert torch.equal(reg_direct, reg_adjoint)
    for a, b in zip(grads_direct, grads_adjoint):
        assert torch.equal(a, b)
    assert all(g.abs().sum() > 0 for g in grads_direct)


@pytest.mark.parametrize("strategy", ["unbiased", "biased"])
def test_reg_gradient_flows_only_through_the_window(strategy):
    sde, y0 = NeuralSDE(), y0_state().requires_grad_(True)
    _, reg = sdeint_reg(sde, y0, TS, bm=brownian(), method="euler", dt=0.125, strategy=strategy, num_samples=4)
    assert torch.autograd.grad(reg, y0, allow_unused=True) == (None,)
    _, reg_global = sdeint_reg(sde, y0, TS, bm=brownian(), method="euler", dt=0.125, strategy="global")
    assert torch.autograd.grad(reg_global, y0)[0].abs().sum() > 0


# The estimate ---------------------------------------------------------------------------------

def controller_errors(sde, y0, ts, bm, method, rtol, atol, dt):
    """Runs torchsde's own adaptive solve and returns compute_error of every attempt, in order.

    A plain upstream solver subclass that only records what its step returns: attempts are the
    three calls (full, half, half) of torchsde's loop."""
    sde, y0, ts, bm, method, options = check_contract(sde, y0, ts, bm, method, True, None, None, False)
    outputs = []

    class Recording(methods.select(method=method, sde_type=sde.sde_type)):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            inner = self.__dict__.get("step") or super().step
            self.step = lambda *args: outputs.append(inner(*args)) or outputs[-1]

    solver = Recording(sde=sde, bm=bm, dt=dt, adaptive=True, rtol=rtol, atol=atol, dt_min=1e-5, options=options)
    solver.integrate(y0, ts, solver.init_extra_solver_state(ts[0], y0))
    return [compute_error(outputs[i][0], outputs[i + 2][0], rtol, atol) for i in range(0, len(outputs), 3)]


@pytest.mark.parametrize("method,sde_type,noise_type", [
    ("euler", "ito", "additive"), ("milstein", "ito", "diagonal"), ("srk", "ito", "diagonal"),
    ("heun", "stratonovich", "general"), ("reversible_heun", "stratonovich", "diagonal")])
def test_error_estimate_equals_torchsdes_compute_error(method, sde_type, noise_type):
    sde, y0 = NeuralSDE(sde_type, noise_type), y0_state()
    kwargs = dict(rtol=1e-4, atol=1e-4, dt=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a step forced through at dt_min would be accepted with E > 1
        errors = controller_errors(sde, y0, TS, brownian(method, noise_type), method, **kwargs)
    accepted = [e for e in errors if e <= 1]
    assert len(accepted) < len(errors)  # some rejections, so that acceptance is really tested

    common = dict(method=method, adaptive=True, return_stats=True, **kwargs)
    *_, stats = sdeint_reg(sde, y0, TS, bm=brownian(method, noise_type), strategy="global", **common)
    assert stats.num_accepted == len(accepted) and stats.num_rejected == len(errors) - len(accepted)
    assert stats.error_estimates == accepted

    *_, stats = sdeint_reg(sde, y0, TS, bm=brownian(method, noise_type), strategy="biased", num_samples=4, **common)
    assert stats.error_estimates == [accepted[k] for k in stats.sample_steps]


def test_step_too_short_to_halve_contributes_nothing():
    """dt=0.1 accumulates to 0.9999999999999999 after ten steps: torchsde takes an 11th step of
    1.1e-16, which no step doubling can halve (SRK would divide by zero)."""
    sde, y0 = NeuralSDE(), y0_state()
    ys, reg, stats = sdeint_reg(sde, y0, TS, bm=brownian("srk"), method="srk", dt=0.1, strategy="global",
                                stiffness_weight=0.1, return_stats=True)
    assert stats.num_accepted == 11 and torch.isfinite(reg)
    assert stats.error_estimates[-1] == stats.stiffness_estimates[-1] == 0.0 < min(stats.error_estimates[:-1])


def test_step_too_short_to_halve_does_not_hide_a_non_finite_state():
    sde, y0 = NeuralSDE(), y0_state()
    y0[0, 0] = math.nan
    # biased with many samples: every one of them lands on the 11th step, the sliver, only with
    # probability (1/11)^50; samples on it and elsewhere must both report y0.
    for num_samples in (1, 50):
        for seed in range(12):
            with pytest.raises(FloatingPointError, match="y0 is not finite"):
                sdeint_reg(sde, y0, TS, bm=brownian(), method="euler", dt=0.1, strategy="biased",
                           num_samples=num_samples, generator=torch.Generator().manual_seed(seed))


def test_unbiased_windows_stay_inside_the_span():
    sde, y0 = NeuralSDE(), y0_state()
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    _, _, stats = sdeint_reg(sde, y0, ts, bm=brownian(), method="euler", dt=0.3, num_samples=200,
                             generator=torch.Generator().manual_seed(0), return_stats=True)
    starts, sizes = torch.tensor(stats.t_samples), torch.tensor(stats.dt_samples)
    assert starts.min() >= 0.0 and (starts + sizes).max() <= 1.0 + 1e-12
    assert starts.min() < 0.1 and starts.max() > 0.6  # spread over the span
    assert sizes.max() == pytest.approx(0.3) and sizes.min() == pytest.approx(0.1)  # the last step is 0.1 long


# Stats and cost -------------------------------------------------------------------------------

@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
def test_none_costs_zero_extra_evaluations(adjoint):
    solve, plain = (sdeint_adjoint_reg, torchsde.sdeint_adjoint) if adjoint else (sdeint_reg, torchsde.sdeint)
    sde, y0 = CountingSDE(), y0_state()
    expected = plain(sde, y0, TS, bm=brownian("srk"), method="srk", dt=0.1)
    plain_calls = dict(sde.calls)
    sde.calls.update(f=0, g=0)
    ys, reg, stats = solve(sde, y0, TS, bm=brownian("srk"), method="srk", dt=0.1, strategy="none", return_stats=True)
    assert torch.equal(ys, expected) and sde.calls == plain_calls
    assert float(reg) == 0.0 and stats.nfe_reg == stats.nfe_diffusion_reg == 0 and stats.t_samples == []
    assert (stats.nfe_forward, stats.nfe_diffusion_forward) == (plain_calls["f"], plain_calls["g"])


def test_stats_count_drift_and_diffusion_by_phase():
    sde, y0 = CountingSDE(), y0_state()
    ys, reg, stats = sdeint_adjoint_reg(sde, y0, TS, bm=brownian(), method="euler", dt=0.125, strategy="biased",
                                        num_samples=2, stiffness_weight=0.1, return_stats=True)
    # Euler evaluates f and g once per step; torchsde's shape checks once more each.
    assert stats.nfe_forward == stats.nfe_diffusion_forward == stats.num_accepted + 1 == 9
    # Per sample: three Euler steps (full and two halves), and two drift evaluations for S.
    assert (stats.nfe_reg, stats.nfe_diffusion_reg) == (2 * 5, 2 * 3)
    assert (sde.calls["f"], sde.calls["g"]) == (stats.nfe_forward + stats.nfe_reg,
                                                stats.nfe_diffusion_forward + stats.nfe_diffusion_reg)
    assert len(stats.t_samples) == len(stats.error_estimates) == len(stats.stiffness_estimates) == 2
    assert stats.reg == pytest.approx(float(reg))
    (ys.sum() + reg).backward()
    assert stats.nfe_backward > 0 and stats.nfe_diffusion_backward > 0
    assert stats.nfe_total == sde.calls["f"]


# Bad input ------------------------------------------------------------------------------------

class PlainSDE:
    """Not an nn.Module."""
    noise_type, sde_type = "diagonal", "ito"
    f = staticmethod(lambda t, y: -y)
    g = staticmethod(lambda t, y: 0.1 * torch.ones_like(y))


BAD_INPUTS = {
    "strategy": (ValueError, dict(strategy="lcoal"), "strategy"),
    "num_samples_zero": (ValueError, dict(num_samples=0), "num_samples"),
    "num_samples_float": (TypeError, dict(num_samples=1.5), "num_samples"),
    "error_weight": (ValueError, dict(error_weight=-1.0), "error_weight"),
    "stiffness_weight": (ValueError, dict(stiffness_weight=float("nan")), "stiffness_weight"),
    "generator": (TypeError, dict(generator=3), "generator"),
    "return_stats": (TypeError, dict(return_stats="yes"), "return_stats"),
    "method_unknown": (ValueError, dict(method="rk4"), "method"),
    "method_backward_only": (ValueError, dict(method="adjoint_reversible_heun"), "method"),
    "method_for_other_sde_type": (ValueError, dict(method="midpoint"), "method 'midpoint'"),
    "ts_not_increasing": (ValueError, dict(ts=torch.tensor([0.0, 0.5, 0.2])), "ts"),
    "y0_1d": (ValueError, dict(y0=torch.zeros(2)), "y0"),
}


@pytest.mark.parametrize("adjoint", [False, True], ids=["direct", "adjoint"])
@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_raises_naming_the_argument(case, adjoint):
    error, kwargs, named = BAD_INPUTS[case]
    args = dict(sde=NeuralSDE(), y0=y0_state(), ts=TS, dt=0.1)
    args.update(kwargs)
    with pytest.raises(error, match=named):
        (sdeint_adjoint_reg if adjoint else sdeint_reg)(**args)


def test_adjoint_rejects_global_and_plain_objects_without_params():
    with pytest.raises(ValueError, match="global"):
        sdeint_adjoint_reg(NeuralSDE(), y0_state(), TS, dt=0.1, strategy="global")
    with pytest.raises(ValueError, match="adjoint_params"):
        sdeint_adjoint_reg(PlainSDE(), y0_state(), TS, dt=0.1)
    ys, reg = sdeint_adjoint_reg(PlainSDE(), y0_state(), TS, dt=0.1, adjoint_params=())
    assert ys.shape == (3, BATCH, DIM) and reg.shape == ()


def test_non_finite_reg_raises():
    class Exploding(CountingSDE):
        """Finite for the 4 drift evaluations of the solve (3 steps and torchsde's shape check)."""

        def f(self, t, y):
            out = super().f(t, y)
            return out if self.calls["f"] <= 4 else torch.full_like(y, float("inf"))

    with pytest.raises(FloatingPointError, match="not finite"):
        sdeint_reg(Exploding(), y0_state(), torch.tensor([0.0, 0.3], dtype=torch.float64), bm=brownian(),
                   method="euler", dt=0.1, strategy="biased", stiffness_weight=0.1)


# Upstream stays untouched ---------------------------------------------------------------------

def test_import_and_use_leave_torchsde_unchanged():
    """No module attribute or class member of torchsde changes on our import or on a use of both entry
    points (see ``problems.UPSTREAM_IMPORT_CHECK``)."""
    assert upstream_after_import()["torchsde_changed"] == []
