"""intercept() and regularize(intercept=True): upstream's module attributes, routed while a block is open;
and the warnings of a block that saw no solve, or cannot regularize under inference mode."""
import sys
import threading
import warnings

import pytest
import torch
import torchdiffeq
import torchsde

import torchdiffeq_localreg as localreg
from torchdiffeq_localreg._context import _ROUTER
from problems import MLPField, SmallSDE, brownian, state

T = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
# Upstream's functions, from the modules that define them.
UPSTREAM = {
    (torchdiffeq, "odeint"): sys.modules["torchdiffeq._impl.odeint"].odeint,
    (torchdiffeq, "odeint_adjoint"): sys.modules["torchdiffeq._impl.adjoint"].odeint_adjoint,
    (torchsde, "sdeint"): sys.modules["torchsde._core.sdeint"].sdeint,
    (torchsde, "sdeint_adjoint"): sys.modules["torchsde._core.adjoint"].sdeint_adjoint,
}


def _all_upstream():
    return all(getattr(module, name) is function for (module, name), function in UPSTREAM.items())


def _none_upstream():
    return not any(getattr(module, name) is function for (module, name), function in UPSTREAM.items())


@pytest.fixture(autouse=True)
def _upstream_before_and_after():
    assert _all_upstream() and _ROUTER.open_blocks == 0
    yield
    assert _all_upstream() and _ROUTER.open_blocks == 0


FUNC, SDE_MODEL = MLPField(), SmallSDE()


def _ode(solve):
    return solve(FUNC, state(), T)


def _sde(solve):
    return solve(SDE_MODEL, torch.zeros(3, 2, dtype=torch.float64), T, bm=brownian(), dt=0.1, method="euler")


CALLS = {"odeint": (torchdiffeq, _ode), "odeint_adjoint": (torchdiffeq, _ode), "sdeint": (torchsde, _sde),
         "sdeint_adjoint": (torchsde, _sde)}


def test_importing_the_package_changes_nothing():
    # The fixture checks the attributes; a fresh interpreter checks the import itself
    # (tests/test_ode_exactness.py::test_import_leaves_torchdiffeq_unchanged, and torchsde's in test_sde.py).
    assert "torchdiffeq_localreg" in sys.modules and _ROUTER.open_blocks == 0


@pytest.mark.parametrize("name", list(CALLS))
def test_regularize_intercept_routes_the_attribute_call(name):
    module, run = CALLS[name]
    expected = run(UPSTREAM[module, name])
    with localreg.regularize(intercept=True, generator=torch.Generator().manual_seed(0)) as r:
        assert _none_upstream()
        got = run(getattr(module, name))   # looked up at call time, as torchcde does
    assert _all_upstream()
    assert torch.equal(got, expected)
    assert len(r.stats) == 1 and r.reg.requires_grad and r.stats[0].nfe_reg > 0
    one_import = getattr(localreg, name)
    with localreg.regularize(generator=torch.Generator().manual_seed(0)) as direct:
        run(one_import)
    assert torch.equal(r.reg, direct.reg)


def test_without_intercept_nothing_is_routed():
    with pytest.warns(UserWarning, match="intercept=True"):
        with localreg.regularize() as r:
            assert _all_upstream()
            torchdiffeq.odeint(MLPField(), state(), T)
    assert r.stats == []


def test_routed_call_outside_a_regularize_block_is_upstreams():
    func, y0 = MLPField(), state()
    expected = torchdiffeq.odeint(func, y0, T)
    with localreg.intercept() as block:
        assert _none_upstream() and "active=True" in repr(block)
        got = torchdiffeq.odeint(func, y0, T)
        with localreg.regularize() as r:
            torchdiffeq.odeint(func, y0, T)
    assert torch.equal(got, expected) and len(r.stats) == 1


@pytest.mark.parametrize("adjoint", [False, True])
def test_the_plain_path_inside_a_routed_block_does_not_recurse(adjoint):
    """strategy='none' runs upstream's solve from inside the package: it must call upstream's own
    function, not the routed attribute (which would route back to us without end)."""
    func, y0 = MLPField(), state()
    solve = "odeint_adjoint" if adjoint else "odeint"
    expected = UPSTREAM[torchdiffeq, solve](func, y0, T)
    with localreg.regularize(intercept=True, strategy="none") as r:
        got = getattr(torchdiffeq, solve)(func, y0, T)
    assert torch.equal(got, expected) and len(r.stats) == 1


def test_nested_blocks_restore_once_when_the_last_ends():
    func, y0 = MLPField(), state()
    with localreg.intercept():
        with localreg.regularize(intercept=True) as inner:
            torchdiffeq.odeint(func, y0, T)
            assert _ROUTER.open_blocks == 2
        assert _none_upstream() and _ROUTER.open_blocks == 1
        with localreg.regularize() as outer:
            torchdiffeq.odeint(func, y0, T)
    assert len(inner.stats) == 1 and len(outer.stats) == 1


def test_concurrent_blocks_in_threads_restore_once_when_the_last_ends():
    """Thread A opens first and closes first; B's block must still be routed after A's has closed."""
    func, y0 = MLPField(), state()
    a_open, a_closed = threading.Event(), threading.Event()
    results, errors = {}, []

    def thread_a():
        try:
            with localreg.regularize(intercept=True) as r:
                a_open.set()
                torchdiffeq.odeint(func, y0, T)
            results["a"] = len(r.stats)
        except Exception as error:  # reported by the main thread
            errors.append(error)
        finally:
            a_open.set()
            a_closed.set()

    def thread_b():
        try:
            a_open.wait(10)
            with localreg.regularize(intercept=True) as r:
                a_closed.wait(10)
                results["routed after A closed"] = _none_upstream()
                torchdiffeq.odeint(func, y0, T)
            results["b"] = len(r.stats)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == []
    assert results == {"a": 1, "b": 1, "routed after A closed": True}


def test_a_plain_solve_in_another_thread_is_upstreams_while_a_block_is_open():
    func, y0 = MLPField(), state()
    expected = torchdiffeq.odeint(func, y0, T)
    seen = {}

    def other_thread():
        seen["routed"] = _none_upstream()
        seen["plain"] = torchdiffeq.odeint(func, y0, T)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with localreg.regularize() as own:   # a block of that thread's own, not intercepting
                seen["in own block"] = torchdiffeq.odeint(func, y0, T)
        seen["own stats"] = len(own.stats)
        seen["own warned"] = any("without seeing a solve" in str(w.message) for w in caught)

    with pytest.warns(UserWarning, match="without seeing a solve"):   # this block saw none: they ran elsewhere
        with localreg.regularize(intercept=True) as r:
            th = threading.Thread(target=other_thread)
            th.start()
            th.join(30)
    assert seen["routed"] and seen["own stats"] == 0 and seen["own warned"]
    assert torch.equal(seen["plain"], expected) and torch.equal(seen["in own block"], expected)
    assert r.stats == []   # the other thread's solves are not this block's


def test_a_replacement_made_before_the_block_is_left_alone(monkeypatch):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        return UPSTREAM[torchdiffeq, "odeint"](*args, **kwargs)

    monkeypatch.setattr(torchdiffeq, "odeint", wrapper)
    with pytest.warns(RuntimeWarning, match="torchdiffeq.odeint is not torchdiffeq's") as caught:
        with localreg.intercept():
            assert torchdiffeq.odeint is wrapper
            assert torchsde.sdeint is not UPSTREAM[torchsde, "sdeint"]   # the others are routed
    assert caught[0].filename == __file__   # the user's with line
    assert torchdiffeq.odeint is wrapper
    monkeypatch.undo()


def test_a_replacement_made_inside_the_block_is_not_clobbered(monkeypatch):
    def theirs(*args, **kwargs):
        return UPSTREAM[torchdiffeq, "odeint"](*args, **kwargs)

    with pytest.warns(RuntimeWarning, match="replaced by other code while routed") as caught:
        with localreg.intercept():
            torchdiffeq.odeint = theirs
    assert caught[0].filename == __file__
    assert torchdiffeq.odeint is theirs and torchsde.sdeint is UPSTREAM[torchsde, "sdeint"]
    torchdiffeq.odeint = UPSTREAM[torchdiffeq, "odeint"]


def test_an_exception_restores_and_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(KeyError):
            with localreg.regularize(intercept=True):
                raise KeyError("inside")


def test_a_name_imported_before_the_block_is_not_reached():
    from torchdiffeq import odeint as bound_before

    with pytest.warns(UserWarning, match="from torchdiffeq import odeint"):
        with localreg.regularize(intercept=True) as r:
            bound_before(MLPField(), state(), T)
    assert r.stats == []


def test_bad_intercept_and_reentry_are_refused_before_anything_changes():
    with pytest.raises(TypeError, match="intercept must be a bool"):
        localreg.regularize(intercept="yes")
    assert _ROUTER.open_blocks == 0
    block = localreg.intercept()
    with block:
        with pytest.raises(RuntimeError, match="already active"):
            block.__enter__()
        assert _ROUTER.open_blocks == 1


# A block that saw no solve.

def test_a_block_that_saw_no_solve_warns_once_naming_the_fix():
    with pytest.warns(UserWarning) as caught:
        with localreg.regularize() as r:
            pass
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "intercept=True" in messages[0] and "torchcde" in messages[0]
    assert r.reg.item() == 0.0


@pytest.mark.parametrize("case", ["no_grad", "inference_mode", "skipped solve", "nested solve"])
def test_no_spurious_warning(case):
    func, y0 = MLPField(), state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if case in ("no_grad", "inference_mode"):
            with (torch.no_grad() if case == "no_grad" else torch.inference_mode()):
                with localreg.regularize():
                    pass
        elif case == "skipped solve":
            with localreg.regularize() as r:
                with torch.no_grad():
                    localreg.odeint(func, y0, T)
            assert r.skipped == 1
        else:
            with localreg.regularize() as outer:
                with localreg.regularize() as inner:
                    localreg.odeint(func, y0, T)
            assert outer.stats == [] and len(inner.stats) == 1


# when_no_grad="regularize" under inference mode.

def test_inference_mode_skips_with_one_warning_even_when_asked_to_regularize():
    func, y0 = MLPField(), state()
    expected = torchdiffeq.odeint(func, y0, T)
    with pytest.warns(UserWarning, match="inference_mode") as caught:
        with torch.inference_mode(), localreg.regularize(when_no_grad="regularize") as r:
            first = localreg.odeint(func, y0, T)
            localreg.odeint(func, y0, T)
    assert len(caught) == 1 and caught[0].filename == __file__   # the solve's line
    assert r.stats == [] and r.skipped == 2 and torch.equal(first, expected)
    with localreg.regularize(when_no_grad="regularize") as r, torch.no_grad():
        localreg.odeint(func, y0, T)
    assert len(r.stats) == 1 and r.reg.requires_grad


def test_reg_functions_skip_under_enable_grad_inside_inference_mode():
    """Grad mode can be switched on inside inference mode, which still records nothing."""
    with torch.inference_mode(), torch.enable_grad():
        _, reg, stats = localreg.odeint_reg(MLPField(), state(), T, return_stats=True)
    assert stats.skipped and stats.nfe_reg == 0 and reg.item() == 0.0
