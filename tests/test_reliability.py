"""Reliability against careless and hostile use (issue 11): no reference cycles, import isolation,
the SDE counting wrapper under any ``names``, complex states, bounded ``num_samples``, errors that
name the argument, and upstream's behaviour for upstream's arguments."""
import gc

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

def _ours():
    return [o for o in gc.get_objects() if str(getattr(type(o), "__module__", "")).startswith(PACKAGE)]


def _tensors():
    return [o for o in gc.get_objects() if issubclass(type(o), torch.Tensor)]


def _solve(kind, strategy):
    y0 = state()
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    if kind == "rk4":
        out = odeint_reg(MLPField(), y0, t, method="rk4", options={"step_size": 0.05}, strategy=strategy)
    elif kind == "dopri5":
        out = odeint_reg(MLPField(), y0, t, method="dopri5", strategy=strategy, stiffness_weight=0.1)
    elif kind == "dopri5_adjoint":
        out = odeint_adjoint_reg(MLPField(), y0, t, method="dopri5", strategy=strategy)
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
    ours_before = {id(o) for o in _ours()}
    tensors_before = {id(o) for o in _tensors()}
    gc.disable()
    try:
        out = _solve(kind, strategy)
        del out
        left = [o for o in _ours() if id(o) not in ours_before]
        left_tensors = [o for o in _tensors() if id(o) not in tensors_before]
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
