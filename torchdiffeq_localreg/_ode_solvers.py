"""Wrapper subclasses of torchdiffeq's solvers that observe a solve without changing it.

Each supported upstream solver class gets a subclass that calls ``super()`` for every step and
reports what it saw to a :class:`~torchdiffeq_localreg._recorder.Recorder`. The subclasses are
added to torchdiffeq's solver table under our own names (``"_localreg_" + name``), so that both
``torchdiffeq.odeint`` and ``torchdiffeq.odeint_adjoint`` (whose forward pass looks solvers up in
that table) can run them; upstream's own entries are never touched. The recorder reaches the
solver through ``options`` under :data:`RECORDER_KEY`; without it the subclasses behave exactly
like their parents.
"""
import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torchdiffeq._impl.fixed_adams import AdamsBashforthMoulton
from torchdiffeq._impl.interp import _interp_evaluate
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
from torchdiffeq._impl.solvers import FixedGridODESolver

from ._estimates import rk_stage_estimates, rk_step_estimates, step_doubling_estimates
from ._recorder import Estimator, Recorder

RECORDER_KEY = "_localreg_recorder"
PREFIX = "_localreg_"


class _ObservingMixin:
    """Reports the span of every solve to the recorder handed in through ``options``."""

    def __init__(self, *args, _localreg_recorder: Optional[Recorder] = None, **kwargs):
        # Fixed-grid solvers drop rtol and norm; the step-doubling estimate needs them.
        self._lr_rtol, self._lr_norm = kwargs.get("rtol"), kwargs.get("norm")
        super().__init__(*args, **kwargs)
        # Weakly: the recorder holds the estimator, which holds this solver's function or step; a
        # strong reference back would make a cycle that only the cyclic GC frees, and keep the
        # recorded tensors alive until it runs. The entry point holds the recorder for the call.
        self._lr_recorder_ref = None if _localreg_recorder is None else weakref.ref(_localreg_recorder)
        if _localreg_recorder is not None:
            _localreg_recorder.bind(self._lr_estimator())

    @property
    def _lr_recorder(self) -> Optional[Recorder]:
        return None if self._lr_recorder_ref is None else self._lr_recorder_ref()

    def _lr_estimator(self) -> Estimator:
        """The :class:`Estimator` of this solver family; each concrete wrapper defines it."""
        raise NotImplementedError

    def integrate(self, t):
        recorder = self._lr_recorder
        if recorder is None:
            return super().integrate(t)
        recorder.start(t[0])
        solution = super().integrate(t)
        recorder.finish(t[-1])
        return solution

    def integrate_until_event(self, t0, event_fn):
        recorder = self._lr_recorder
        if recorder is None:
            return super().integrate_until_event(t0, event_fn)
        recorder.start(t0)
        event_t, solution = super().integrate_until_event(t0, event_fn)
        recorder.finish(event_t)
        return event_t, solution


@dataclass
class _RKStep:
    t0: torch.Tensor
    dt: torch.Tensor
    t1: torch.Tensor
    y0: torch.Tensor
    interp_coeff: List[torch.Tensor]
    y1: Optional[torch.Tensor] = None   # only for the global strategy (graph-connected)
    k: Optional[torch.Tensor] = None


class _ObservedRK(_ObservingMixin):
    """Observes ``RKAdaptiveStepsizeODESolver._adaptive_step``; the stages come from ``_interp_fit``,
    which upstream calls on accepted steps only, with the exact ``dt`` of the step."""

    def _lr_estimator(self):
        return _RKEstimator(self)

    def _interp_fit(self, y0, y1, k, dt):
        self._lr_stages = (k, dt)
        return super()._interp_fit(y0, y1, k, dt)

    def _adaptive_step(self, rk_state):
        recorder = self._lr_recorder
        if recorder is None:
            return super()._adaptive_step(rk_state)
        self._lr_stages = None
        new_state = super()._adaptive_step(rk_state)
        if self._lr_stages is None:
            # Rejected: upstream keeps t0 == t1 and does not fit an interpolant.
            recorder.reject()
            return new_state
        k, dt = self._lr_stages
        self._lr_stages = None
        if recorder.needs_step_graph:
            step = _RKStep(new_state.t0, dt, new_state.t1, rk_state.y1, new_state.interp_coeff, new_state.y1, k)
        else:
            # Constants: no gradient may flow through the recorded state.
            step = _RKStep(new_state.t0.detach(), dt.detach(), new_state.t1.detach(), rk_state.y1.detach(),
                           [c.detach() for c in new_state.interp_coeff])
        recorder.accept(new_state.t0, new_state.t1, step)
        return new_state


class _RKEstimator(Estimator):
    def __init__(self, solver: RKAdaptiveStepsizeODESolver):
        self.func = solver.func
        self.tableau = solver.tableau
        self.rtol, self.atol, self.norm = solver.rtol, solver.atol, solver.norm

    def sample_point(self, step: _RKStep, t: float):
        if t == float(step.t0):
            return step.t0, step.y0, step.dt
        t_s = torch.tensor(t, dtype=step.t0.dtype, device=step.t0.device)
        return t_s, _interp_evaluate(step.interp_coeff, step.t0, step.t1, t_s).detach(), step.dt

    def local_estimates(self, t, y, dt, stiffness):
        return rk_step_estimates(self.func, self.tableau, t, y, dt, self.rtol, self.atol, self.norm, stiffness)

    def step_estimates(self, step: _RKStep, stiffness):
        if step.k is None or step.y1 is None:
            raise RuntimeError("The global strategy needs the step's stages, which were not recorded.")
        e, s = rk_stage_estimates(step.k, step.y0, step.y1, step.dt, self.tableau,
                                  self.rtol, self.atol, self.norm, stiffness)
        return e, s, step.dt


@dataclass
class _GridStep:
    t0: torch.Tensor
    dt: torch.Tensor
    y0: torch.Tensor
    dy: torch.Tensor


def _detach(x):
    return x.detach() if isinstance(x, torch.Tensor) else x


class _ObservedFixedGrid(_ObservingMixin):
    """Observes ``FixedGridODESolver._step_func``; every grid step is an accepted step."""

    def _lr_estimator(self):
        return _GridEstimator(self)

    def _lr_plain_step(self, t0, dt, y0):
        dy, _ = super()._step_func(self.func, t0, dt, t0 + dt, y0)
        return y0 + dy

    def _step_func(self, func, t0, dt, t1, y0):
        dy, f0 = super()._step_func(func, t0, dt, t1, y0)
        recorder = self._lr_recorder
        if recorder is not None:
            if recorder.needs_step_graph:
                step = _GridStep(t0, dt, y0, dy)
            else:
                step = _GridStep(_detach(t0), _detach(dt), y0.detach(), dy.detach())
            recorder.accept(t0, t1, step)
        return dy, f0


class _GridEstimator(Estimator):
    """Step doubling with the solver's own step function, scaled by the caller's rtol, atol and norm."""

    def __init__(self, solver: FixedGridODESolver):
        self.func = solver.func
        self.step = solver._lr_plain_step
        self.rtol, self.atol, self.norm = solver._lr_rtol, solver.atol, solver._lr_norm

    def sample_point(self, step: _GridStep, t: float):
        dt = torch.as_tensor(step.dt)
        if t == float(step.t0):
            return step.t0, step.y0, dt
        # The same linear interpolant upstream uses for outputs between grid points.
        t_s = torch.tensor(t, dtype=step.t0.dtype, device=step.t0.device)
        frac = ((t_s - step.t0) / dt).to(step.y0.dtype)
        return t_s, step.y0 + frac * step.dy, dt

    def local_estimates(self, t, y, dt, stiffness):
        return step_doubling_estimates(self.step, self.func, t, y, dt, self.rtol, self.atol, self.norm, stiffness)

    def step_estimates(self, step: _GridStep, stiffness):
        dt = torch.as_tensor(step.dt)
        e, s = self.local_estimates(step.t0, step.y0, dt, stiffness)
        return e, s, dt


def _is_supported(cls) -> bool:
    if issubclass(cls, RKAdaptiveStepsizeODESolver):
        return True
    # Adams methods are multistep: one step depends on the solver's history, so a lone step
    # from a recorded state is not the step the solver took.
    return issubclass(cls, FixedGridODESolver) and not issubclass(cls, AdamsBashforthMoulton)


def _make_wrapper(name: str, cls):
    mixin = _ObservedRK if issubclass(cls, RKAdaptiveStepsizeODESolver) else _ObservedFixedGrid
    return type(f"LocalReg{cls.__name__}", (mixin, cls), {"__module__": __name__, "__doc__": (
        f"Observing wrapper of torchdiffeq's {cls.__name__} (method {name!r}).")})


def _register() -> Dict[str, str]:
    """Adds a wrapper for every supported upstream solver to torchdiffeq's table.

    Returns {upstream name: our table name}. Idempotent; never replaces an upstream entry.
    """
    names = {}
    for name, cls in list(SOLVERS.items()):
        if name.startswith(PREFIX) or not _is_supported(cls):
            continue
        ours = PREFIX + name
        if ours not in SOLVERS:
            SOLVERS[ours] = _make_wrapper(name, cls)
        names[name] = ours
    return names


WRAPPED: Dict[str, str] = _register()
ADAPTIVE_METHODS = tuple(n for n in WRAPPED if issubclass(SOLVERS[n], RKAdaptiveStepsizeODESolver))
FIXED_GRID_METHODS = tuple(n for n in WRAPPED if n not in ADAPTIVE_METHODS)
UNSUPPORTED_METHODS = tuple(n for n in SOLVERS if not n.startswith(PREFIX) and n not in WRAPPED)
