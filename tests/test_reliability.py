"""Reliability against careless and hostile use (issue 11): no reference cycles, import isolation,
the SDE counting wrapper under any ``names``, complex states, bounded ``num_samples``, errors that
name the argument, and upstream's behaviour for upstream's arguments."""
import gc
import math

import pytest
import torch
import torch.nn as nn
import torchsde

from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg, sdeint_reg
from torchdiffeq_localreg._validate import STRATEGIES

from problems import MLPField, state

PACKAGE = "torchdiffeq_localreg"


class DiagonalSDE(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, dim=3):
        super().__init__()
        self.drift = nn.Linear(dim, dim).double()

    def f(self, t, y):
        return torch.tanh(self.drift(y))

    def g(self, t, y):
        return 0.1 * torch.ones_like(y)


# --- no reference cycles ---------------------------------------------------------------------------

def _ours_and_tensors():
    """This package's objects and the tensors, in one pass over the GC's objects (a few hundred
    thousand in a full test session: each pass takes a noticeable fraction of a second)."""
    ours, tensors = [], []
    for o in gc.get_objects():
        cls = type(o)
        if str(getattr(cls, "__module__", "")).startswith(PACKAGE):
            ours.append(o)
        if issubclass(cls, torch.Tensor):
            tensors.append(o)
    return ours, tensors


LOOSE = {"rtol": 1e-4, "atol": 1e-6}


def _solve(kind, strategy):
    y0 = state()
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    if kind == "rk4":
        out = odeint_reg(MLPField(), y0, t, method="rk4", options={"step_size": 0.05}, strategy=strategy)
    elif kind == "dopri5":
        out = odeint_reg(MLPField(), y0, t, method="dopri5", strategy=strategy, stiffness_weight=0.1, **LOOSE)
    elif kind == "dopri5_adjoint":
        # at the default tolerances the adjoint's backward solve alone takes about a second
        out = odeint_adjoint_reg(MLPField(), y0, t, method="dopri5", strategy=strategy, **LOOSE)
    else:
        bm = torchsde.BrownianInterval(0.0, 1.0, size=y0.shape, dtype=y0.dtype, entropy=3)
        out = sdeint_reg(DiagonalSDE(), y0, t, bm=bm, method="euler", dt=0.05, strategy=strategy)
    (out[0].square().mean() + out[-1]).backward()
    return out


CYCLE_CASES = [(kind, strategy) for kind in ("rk4", "dopri5", "dopri5_adjoint", "sde_euler")
               for strategy in STRATEGIES if not (kind == "dopri5_adjoint" and strategy == "global")]


@pytest.mark.parametrize("kind,strategy", CYCLE_CASES)
def test_results_are_freed_by_reference_counting(kind, strategy):
    """With the cyclic GC off, deleting the results frees everything a call made: the recorder, the
    estimator, the wrapper solver and the recorded tensors (they used to form a cycle
    recorder -> estimator -> solver -> recorder that kept them until the GC ran)."""
    gc.collect()
    ours_before, tensors_before = ({id(o) for o in objects} for objects in _ours_and_tensors())
    gc.disable()
    try:
        out = _solve(kind, strategy)
        del out
        ours_after, tensors_after = _ours_and_tensors()
        left = [o for o in ours_after if id(o) not in ours_before]
        left_tensors = [o for o in tensors_after if id(o) not in tensors_before]
        del ours_after, tensors_after
    finally:
        gc.enable()
    names = sorted(type(o).__qualname__ for o in left)
    if kind == "sde_euler":
        # torchsde's ForwardSDE keeps bound methods of itself (a cycle of torchsde's own, also made by
        # a plain torchsde.sdeint, see below); it holds the SDE it wraps, our counting wrapper with its
        # evaluation counters and stats. No recorder, solver, sample or tensor of ours stays.
        assert set(names) <= {"_CountedSDE", "EvalCounter", "LocalRegStats"}, names
    else:
        assert names == [], names
        assert left_tensors == []


def test_plain_torchsde_leaves_its_forward_sde_to_the_cyclic_gc():
    """What the SDE case above allows is upstream's: torchsde alone leaves the same cycle."""
    y0 = state()
    bm = torchsde.BrownianInterval(0.0, 1.0, size=y0.shape, dtype=y0.dtype, entropy=3)
    gc.collect()
    gc.disable()
    try:
        ys = torchsde.sdeint(DiagonalSDE(), y0, torch.linspace(0.0, 1.0, 4, dtype=torch.float64), bm=bm, method="euler",
                            dt=0.05)
        del ys
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kept = {type(o).__qualname__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert "ForwardSDE" in kept


# --- the SDE counting wrapper under any ``names`` ------------------------------------------------

class DriftNamedForward(nn.Module):
    """An SDE whose drift is its ``forward`` (as in torchsde's renaming tests) and prior drift ``w``."""
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, t, y):
        return -self.a * torch.sin(y)

    def w(self, t, y):
        return -0.5 * y

    def g(self, t, y):
        return 0.2 * torch.cos(y)


RENAMES = [({"drift": "forward"}, False), ({"drift": "forward", "diffusion": "g"}, False),
           ({"drift": "forward", "prior_drift": "w"}, True)]


@pytest.mark.parametrize("strategy", ["unbiased", "global", "none"])
@pytest.mark.parametrize("names,logqp", RENAMES)
def test_renamed_sde_functions_including_forward(names, logqp, strategy):
    y0 = torch.ones(4, 3, dtype=torch.float64)
    ts = torch.linspace(0.0, 0.3, 5, dtype=torch.float64)

    def bm():   # with logqp, torchsde appends the log-ratio channel to the state and the noise
        return torchsde.BrownianInterval(0.0, 0.3, size=(4, 3 + logqp), dtype=torch.float64, entropy=5)
    sde = DriftNamedForward()
    expected = torchsde.sdeint(sde, y0, ts, bm=bm(), method="euler", dt=0.05, names=names, logqp=logqp)
    *out, reg, stats = sdeint_reg(sde, y0, ts, bm=bm(), method="euler", dt=0.05, names=names, logqp=logqp,
                                  strategy=strategy, stiffness_weight=0.1, return_stats=True)
    expected = expected if logqp else (expected,)
    assert len(out) == len(expected)
    for got, want in zip(out, expected):
        assert torch.equal(got, want)
    # Every drift evaluation went through the renamed function (and was counted).
    assert stats.nfe_forward > 0 and stats.nfe_diffusion_forward > 0
    if strategy != "none":
        assert stats.nfe_reg > 0
        reg.backward()
        assert sde.a.grad is not None and sde.a.grad != 0


def test_renamed_forward_drift_with_the_adjoint():
    from torchdiffeq_localreg import sdeint_adjoint_reg
    sde = DriftNamedForward()
    y0 = torch.ones(4, 3, dtype=torch.float64)
    ts = torch.linspace(0.0, 0.3, 5, dtype=torch.float64)
    bm = torchsde.BrownianTree(0.0, torch.zeros(4, 3, dtype=torch.float64), t1=0.3, entropy=5)
    ys, reg, stats = sdeint_adjoint_reg(sde, y0, ts, bm=bm, method="euler", dt=0.05, names={"drift": "forward"},
                                        return_stats=True)
    expected = torchsde.sdeint_adjoint(sde, y0, ts, bm=bm, method="euler", dt=0.05, names={"drift": "forward"})
    assert torch.equal(ys, expected)
    (ys.sum() + reg).backward()
    assert stats.nfe_backward > 0


# --- import isolation: nothing of ours in torchdiffeq's solver table -----------------------------

def _field_and_state():
    return MLPField(), state(), torch.linspace(0.0, 1.0, 4, dtype=torch.float64)


def test_solver_table_holds_upstreams_entries_only():
    from torchdiffeq._impl.odeint import SOLVERS
    odeint_reg(*_field_and_state())   # also after a call
    assert not [name for name in SOLVERS if "localreg" in name]
    assert all(cls.__module__.startswith("torchdiffeq.") for cls in SOLVERS.values())


def test_plain_torchdiffeq_refuses_our_names_as_upstream_refuses_any_unknown_method():
    import torchdiffeq
    func, y0, t = _field_and_state()
    with pytest.raises(ValueError, match="Invalid method") as refused:
        torchdiffeq.odeint(func, y0, t, method="_localreg_dopri5")
    assert "localreg" not in str(refused.value).split("Must be one of")[1]
    with pytest.raises(ValueError, match="Invalid method"):
        torchdiffeq.odeint(func, y0, t, method="_localreg_dopri5", options={"_localreg_recorder": "junk"})


@pytest.mark.parametrize("method,options", [("dopri5", {}), ("rk4", {"step_size": 0.1})])
@pytest.mark.parametrize("entry", ["direct", "adjoint"])
def test_unknown_options_warn_as_upstream_and_cannot_collide_with_ours(method, options, entry):
    """A user's option, even one named like our old private key, reaches upstream's solver as upstream
    passes it: warned about with upstream's class name, ignored, the solution unchanged."""
    import torchdiffeq
    func, y0, t = _field_and_state()
    options = {**options, "_localreg_recorder": "junk", "bogus": 1}
    upstream = torchdiffeq.odeint_adjoint if entry == "adjoint" else torchdiffeq.odeint
    ours = odeint_adjoint_reg if entry == "adjoint" else odeint_reg
    with pytest.warns(UserWarning) as upstream_warnings:
        expected = upstream(func, y0, t, method=method, options=options)
    with pytest.warns(UserWarning) as our_warnings:
        solution, reg = ours(func, y0, t, method=method, options=options)
    upstream_messages = [str(w.message) for w in upstream_warnings]
    assert any(message.startswith(("Dopri5Solver:", "RK4:")) for message in upstream_messages), upstream_messages
    assert [str(w.message) for w in our_warnings] == upstream_messages
    assert torch.equal(solution, expected) and torch.isfinite(reg)


def test_concurrent_plain_calls_never_see_our_solvers():
    """While other threads run regularized solves, plain torchdiffeq in this thread sees only
    upstream's table: its error message lists upstream's methods, and our names stay unknown."""
    import threading

    import torchdiffeq
    from torchdiffeq._impl.odeint import SOLVERS
    upstream_names = set(SOLVERS)
    stop, errors = threading.Event(), []

    def regularized():
        func, y0, t = _field_and_state()
        try:
            while not stop.is_set():
                for method, options in (("dopri5", None), ("rk4", {"step_size": 0.2})):
                    odeint_reg(func, y0, t, method=method, options=options, strategy="biased")
                    odeint_adjoint_reg(func, y0, t, method=method, options=options)
        except Exception as error:   # reported below
            errors.append(error)
    threads = [threading.Thread(target=regularized) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        func, y0, t = _field_and_state()
        for _ in range(200):
            assert set(SOLVERS) == upstream_names
            with pytest.raises(ValueError, match="Invalid method") as refused:
                torchdiffeq.odeint(func, y0, t, method="_localreg_dopri5")
            assert "localreg" not in str(refused.value).split("Must be one of")[1]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []


@pytest.mark.filterwarnings("ignore::UserWarning")   # upstream's own notes on Adams and scipy
@pytest.mark.parametrize("method,options", [("implicit_adams", {"step_size": 0.1}), ("explicit_adams", {"step_size": 0.1}),
                                            ("scipy_solver", {"solver": "RK45"}), ("dopri5", None)])
@pytest.mark.parametrize("entry", ["direct", "adjoint"])
def test_strategy_none_accepts_every_upstream_method(method, options, entry):
    import torchdiffeq
    func, y0, t = _field_and_state()
    upstream = torchdiffeq.odeint_adjoint if entry == "adjoint" else torchdiffeq.odeint
    ours = odeint_adjoint_reg if entry == "adjoint" else odeint_reg
    expected = upstream(func, y0, t, method=method, options=options)
    solution, reg, stats = ours(func, y0, t, method=method, options=options, strategy="none", return_stats=True)
    assert torch.equal(solution, expected) and reg == 0 and stats.method == method
    # The local strategies still refuse the methods whose steps cannot be redone alone.
    if method != "dopri5":
        with pytest.raises(ValueError, match="not supported"):
            ours(func, y0, t, method=method, options=options)


# --- complex states, num_samples, errors that name the argument -----------------------------------

class ComplexRotation(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

    def forward(self, t, y):
        return 1j * self.w * y

    def f(self, t, y):
        return 1j * self.w * y

    def g(self, t, y):
        return 0.1 * y


def _complex_state():
    return torch.randn(2, 3, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("strategy", ["unbiased", "biased", "global"])
def test_complex_state_is_refused_up_front_for_odes_and_sdes(strategy):
    y0, t = _complex_state(), torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="y0 must be a real .* strategy='none'"):
        odeint_reg(ComplexRotation(), y0, t, strategy=strategy)
    with pytest.raises(TypeError, match="y0 must be a real"):
        odeint_reg(ComplexRotation(), (state(), y0), t, strategy=strategy)
    with pytest.raises(TypeError, match="y0 must be a real"):
        sdeint_reg(ComplexRotation(), y0, t, method="euler", dt=0.1, strategy=strategy)


def test_complex_state_runs_as_upstream_with_strategy_none():
    import torchdiffeq
    y0, t = _complex_state(), torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    solution, reg = odeint_reg(ComplexRotation(), y0, t, strategy="none")
    assert torch.equal(solution, torchdiffeq.odeint(ComplexRotation(), y0, t)) and reg == 0

    def bm():
        return torchsde.BrownianInterval(0.0, 1.0, size=(2, 3), dtype=torch.float64, entropy=1)
    ys, reg = sdeint_reg(ComplexRotation(), y0, t, bm=bm(), method="euler", dt=0.1, strategy="none")
    assert torch.equal(ys, torchsde.sdeint(ComplexRotation(), y0, t, bm=bm(), method="euler", dt=0.1))


@pytest.mark.parametrize("num_samples", [0, 1025, 2 ** 62])
def test_num_samples_is_capped_with_a_clear_error(num_samples):
    func, y0, t = _field_and_state()
    with pytest.raises(ValueError, match=r"num_samples must be an int in \[1, 1024\]"):
        odeint_reg(func, y0, t, num_samples=num_samples)
    with pytest.raises(ValueError, match=r"num_samples must be an int in \[1, 1024\]"):
        sdeint_reg(DiagonalSDE(), y0, t, method="euler", dt=0.1, num_samples=num_samples)


@pytest.mark.parametrize("entry", [odeint_reg, odeint_adjoint_reg])
def test_zero_dim_t_is_named(entry):
    func, y0, _ = _field_and_state()
    with pytest.raises(ValueError, match="t must be one dimensional"):
        entry(func, y0, torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="t must be one dimensional"):
        entry(func, y0, torch.zeros(2, 2, dtype=torch.float64), strategy="none")


@pytest.mark.parametrize("name", ["error_weight", "stiffness_weight"])
def test_huge_int_weight_is_a_value_error_naming_it(name):
    func, y0, t = _field_and_state()
    with pytest.raises(ValueError, match=f"{name} must be a finite float >= 0, got an int too large"):
        odeint_reg(func, y0, t, **{name: 10 ** 400})
    # A large int that is a float is used as one (it used to overflow inside torch).
    _, reg = odeint_reg(func, y0, t, method="rk4", options={"step_size": 0.25}, **{name: 10 ** 20})
    assert torch.isfinite(reg) and reg > 0


# --- upstream's behaviour for upstream's arguments ------------------------------------------------

@pytest.mark.parametrize("adjoint", [False, True])
def test_unknown_sde_keyword_warns_and_runs_as_torchsde(adjoint):
    from torchdiffeq_localreg import sdeint_adjoint_reg
    y0, ts = state(), torch.linspace(0.0, 1.0, 3, dtype=torch.float64)

    def bm():
        return torchsde.BrownianInterval(0.0, 1.0, size=y0.shape, dtype=y0.dtype, entropy=2)
    upstream = torchsde.sdeint_adjoint if adjoint else torchsde.sdeint
    ours = sdeint_adjoint_reg if adjoint else sdeint_reg
    sde = DiagonalSDE()
    with pytest.warns(UserWarning) as upstream_warnings:
        expected = upstream(sde, y0, ts, bm=bm(), method="euler", dt=0.1, not_an_argument=3)
    with pytest.warns(UserWarning) as our_warnings:
        ys, reg = ours(sde, y0, ts, bm=bm(), method="euler", dt=0.1, not_an_argument=3)
    assert [str(w.message) for w in our_warnings] == [str(w.message) for w in upstream_warnings]
    assert "Unexpected arguments {'not_an_argument': 3}" in str(our_warnings[0].message)
    assert torch.equal(ys, expected) and torch.isfinite(reg)


class BlowsUp(nn.Module):
    """Finite up to t = 0.5, NaN after: the solve itself produces the non-finite states."""

    def forward(self, t, y):
        return -y if float(t) <= 0.5 else y * math.nan


@pytest.mark.parametrize("strategy", ["unbiased", "biased", "global"])
def test_non_finite_message_says_what_was_not_finite(strategy):
    t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    y0 = state()
    nan_y0 = y0.clone()
    nan_y0[0, 0] = math.nan
    # Enough samples that some land where the solve's states are NaN (all 50 in the first half: 2^-50).
    kwargs = dict(method="rk4", options={"step_size": 0.1}, strategy=strategy,
                  num_samples=1 if strategy == "global" else 50)
    with pytest.raises(FloatingPointError, match="y0 is not finite"):
        odeint_reg(MLPField(), nan_y0, t, **kwargs)
    with pytest.raises(FloatingPointError, match="the solve itself produced non-finite states") as raised:
        odeint_reg(BlowsUp(), y0, t, **kwargs)
    assert "lower the learning rate" not in str(raised.value)
    with pytest.raises(FloatingPointError, match="y0 is not finite"):
        sdeint_reg(DiagonalSDE(), nan_y0, t, method="euler", dt=0.1, strategy=strategy)
