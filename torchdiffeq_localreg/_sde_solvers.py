"""Wrapper subclasses of torchsde's solvers that observe a solve without changing it.

Every forward solver class torchsde's ``methods.select`` can return gets a subclass whose
``step`` calls the upstream step and reports what it saw to a
:class:`~torchdiffeq_localreg._recorder.Recorder`; ``integrate`` is upstream's, called through
``super()``. The entry points in ``_api_sde`` build these subclasses themselves (as
``torchsde.sdeint`` builds its solver), so nothing in torchsde is registered or replaced.

Which step calls are accepted steps is read off upstream's integrate loop: without adaptive
stepping every step is accepted; with it, each attempt is three calls (one step t0 -> t1, then two
half steps t0 -> t_mid -> t1), and the attempt was accepted exactly when the next attempt starts at
its t1 (a rejected one is retried from its t0), or when the solve ends after it.
"""
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch

from ._estimates import sde_pair_estimates, sde_step_doubling_estimates
from ._recorder import Estimator, Recorder, RowSubset
from ._upstream import METHODS, SDE_TYPES, BaseSDESolver, ForwardSDE, ReversibleHeun
from ._upstream import sde_methods as methods


def _detach(xs):
    return tuple(x.detach() if isinstance(x, torch.Tensor) else x for x in xs)


@dataclass
class _SDEStep:
    """One accepted step [t0, t1] and what it started from (the solver's extra state included)."""

    t0: torch.Tensor
    t1: torch.Tensor
    y0: torch.Tensor
    extra0: Tuple
    y_full: Optional[torch.Tensor] = None   # global strategy only (graph-connected): the full step,
    y_half: Optional[torch.Tensor] = None   # and the two half steps when adaptive stepping made them


@dataclass
class _SDEPoint:
    """A sampled state: the regularization step doubles the window [t, t1] from (y, extra)."""

    y: torch.Tensor
    extra: Tuple
    t1: torch.Tensor


class _ObservingSDESolver:
    """Mixin placed before a torchsde solver class; without a recorder it changes nothing."""

    def __init__(self, *args, _localreg_recorder: Optional[Recorder] = None, **kwargs):
        super().__init__(*args, **kwargs)
        # SRK picks its step function per noise type in __init__ and binds it to the instance, which
        # would shadow our ``step``; keep that function (unbound: a bound method of the solver kept
        # on the solver is a reference cycle) as the upstream step instead.
        bound = self.__dict__.pop("step", None)
        self._lr_step_function = getattr(bound, "__func__", None) if getattr(bound, "__self__", None) is self else bound
        # Weakly, as the ODE wrappers do: the recorder holds the estimator, which holds this solver.
        self._lr_recorder_ref = None if _localreg_recorder is None else weakref.ref(_localreg_recorder)
        if _localreg_recorder is not None:
            _localreg_recorder.bind(_SDEEstimator(self))

    @property
    def _lr_recorder(self) -> Optional[Recorder]:
        return None if self._lr_recorder_ref is None else self._lr_recorder_ref()

    def integrate(self, y0, ts, extra0):
        recorder = self._lr_recorder
        if recorder is None:
            return super().integrate(y0, ts, extra0)
        self._lr_t_end = ts[-1]
        self._lr_calls = 0
        self._lr_attempt = None
        # The global strategy doubles every fixed step with new Brownian queries; made during the
        # solve they could change how a Brownian interval resolves the solve's own later queries.
        self._lr_deferred = [] if recorder.needs_step_graph else None
        recorder.start(ts[0])
        out = super().integrate(y0, ts, extra0)
        if self._lr_attempt is not None:
            self._lr_accept(recorder, self._lr_attempt)   # the loop only ends after an accepted attempt
        for step in self._lr_deferred or ():
            recorder.accept(step.t0, step.t1, step)
        # Some upstream solvers (SRK) hold themselves in a cycle; keep no recorded tensors on them.
        self._lr_attempt = self._lr_deferred = None
        recorder.finish(ts[-1])
        return out

    def _lr_upstream_step(self, t0, t1, y0, extra0):
        function = self._lr_step_function
        if function is None:
            # (mypy cannot know that the class after this mixin is always a torchsde solver.)
            return super().step(t0, t1, y0, extra0)  # type: ignore[misc]
        return function(self, t0, t1, y0, extra0) if not hasattr(function, "__self__") else function(t0, t1, y0, extra0)

    def step(self, t0, t1, y0, extra0):
        y1, extra1 = self._lr_upstream_step(t0, t1, y0, extra0)
        recorder = self._lr_recorder
        if recorder is not None:
            if self.adaptive:
                self._lr_observe_attempt(recorder, t0, t1, y0, extra0, y1)
            else:
                self._lr_accept(recorder, _SDEStep(t0, t1, y0, extra0, y_full=y1))
        return y1, extra1

    def _lr_observe_attempt(self, recorder, t0, t1, y0, extra0, y1):
        role = self._lr_calls % 3
        self._lr_calls += 1
        if role == 0:   # the full step of a new attempt: settle the previous attempt
            previous = self._lr_attempt
            if previous is not None:
                if float(t0) == float(previous.t0):
                    recorder.reject()
                else:
                    self._lr_accept(recorder, previous)
            self._lr_attempt = _SDEStep(t0, t1, y0, extra0, y_full=y1)
        elif role == 2:   # the second half step ends the attempt
            self._lr_attempt.y_half = y1

    def _lr_live_extra(self, t, extra):
        """The recorded extra solver state, as the regularization window starts from it."""
        return extra

    def _lr_accept(self, recorder: Recorder, step: _SDEStep):
        if not recorder.needs_step_graph:
            # Constants: no gradient may flow through the recorded state.
            step = _SDEStep(step.t0.detach(), step.t1.detach(), step.y0.detach(), _detach(step.extra0))
        if self._lr_deferred is not None and step.y_half is None:
            self._lr_deferred.append(step)
        else:
            recorder.accept(step.t0, step.t1, step)


class _ReversibleHeunExtra:
    """ReversibleHeun carries (f(t, z), g(t, z), z) from step to step. The window recomputes f and g
    from the recorded z (1 drift and 1 diffusion evaluation, the very same values), so that the
    gradient of reg also reaches the parameters through them, not only through the window's own
    evaluations."""

    def _lr_live_extra(self, t, extra):
        return self.init_extra_solver_state(t, extra[-1])


class _SDEEstimator(Estimator):
    """Step doubling with the solver's own step, Brownian motion, rtol and atol.

    The state handed between :meth:`sample_point` and :meth:`local_estimates` is an
    :class:`_SDEPoint` (state, extra solver state and window end), not a bare tensor.
    """

    def __init__(self, solver: BaseSDESolver):
        self.solver = solver
        self.step = solver._lr_upstream_step
        self.rtol, self.atol = solver.rtol, solver.atol

    def drift(self, t, y):
        """The drift alone, from whichever of f, f_and_g, f_and_g_prod the SDE defines."""
        sde = self.solver.sde
        if getattr(sde.f, "__func__", None) is not ForwardSDE.f_default:
            return sde.f(t, y)
        if getattr(sde.f_and_g, "__func__", None) is not ForwardSDE.f_and_g_default:
            return sde.f_and_g(t, y)[0]
        bm = self.solver.bm
        return sde.f_and_g_prod(t, y, torch.zeros(bm.shape, dtype=y.dtype, device=y.device))[0]

    def sample_point(self, step: _SDEStep, t: float):
        """The window [t_s, t_s + dt] with dt the step's size, starting inside the recorded step.

        At the step's start (``biased``) the window is the step itself, on the very Brownian
        increments the solve used. Inside the step (``unbiased``), y_s comes from one step of the
        solver's own method from the step's start to t_s, on the Brownian increment over
        [t0, t_s] that the solver's Brownian motion gives; the window is moved back to end at the
        last output time when it would pass it, because the Brownian motion may end there.
        """
        dt = step.t1 - step.t0
        t_end = self.solver._lr_t_end
        t_s = torch.minimum(torch.tensor(t, dtype=step.t0.dtype, device=step.t0.device), t_end - dt)
        if t_s <= step.t0:
            return step.t0, _SDEPoint(step.y0, step.extra0, step.t1), dt
        with torch.no_grad():
            y_s, extra_s = self.step(step.t0, t_s, step.y0, step.extra0)
        t_1 = torch.minimum(t_s + dt, t_end)
        return t_s, _SDEPoint(y_s, _detach(extra_s), t_1), t_1 - t_s

    def local_estimates(self, t, point: _SDEPoint, dt, stiffness):
        return sde_step_doubling_estimates(self.step, self.drift, t, point.t1, point.y,
                                           self.solver._lr_live_extra(t, point.extra), self.rtol, self.atol,
                                           stiffness)

    def step_estimates(self, step: _SDEStep, stiffness):
        dt = step.t1 - step.t0
        if step.y_full is not None and step.y_half is not None:   # adaptive stepping already doubled this step
            e, s = sde_pair_estimates(self.drift, step.t1, step.y_full, step.y_half, dt,
                                      self.rtol, self.atol, stiffness)
        else:
            e, s = sde_step_doubling_estimates(self.step, self.drift, step.t0, step.t1, step.y0, step.extra0,
                                               self.rtol, self.atol, stiffness, y_full=step.y_full)
        return e, s, dt


class _RowsBrownian:
    """``bm`` seen on some rows of the batch: the same increments (and U, A), of those rows only."""

    def __init__(self, bm: Any, index: torch.Tensor):
        self.bm = bm
        self.index = index
        self.shape = (len(index), *bm.shape[1:])

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        out = self.bm(ta, tb, return_U=return_U, return_A=return_A)
        return tuple(o[self.index] for o in out) if isinstance(out, tuple) else out[self.index]

    def __getattr__(self, name):
        return getattr(self.bm, name)


class SDERows(RowSubset):
    """The window of :class:`_SDEEstimator` on rows of the batch: the rows of the state and of the
    solver's extra state, stepped on those rows' Brownian increments (the solver's ``bm`` is seen
    through :class:`_RowsBrownian` while the window runs)."""

    def local_estimates(self, estimator, t, y: _SDEPoint, dt, rows: List[int], stiffness: bool):
        if not isinstance(estimator, _SDEEstimator):
            raise TypeError("SDERows serves the SDE estimator only.")
        index = torch.as_tensor(rows, device=y.y.device)
        extra = tuple(x[index] if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] == self.batch else x
                      for x in y.extra)
        solver = estimator.solver
        bm = solver.bm
        solver.bm = _RowsBrownian(bm, index)
        try:
            return estimator.local_estimates(t, _SDEPoint(y.y[index], extra, y.t1), dt, stiffness)
        finally:
            solver.bm = bm


def _forward_solver_classes() -> Tuple[type, ...]:
    """Every class ``methods.select`` gives for a forward solve, found from upstream's table."""
    classes = []
    for method in METHODS.all():
        if method == METHODS.adjoint_reversible_heun:   # runs only the backward pass of an adjoint
            continue
        for sde_type in SDE_TYPES.all():
            cls = methods.select(method=method, sde_type=sde_type)
            if cls.sde_type == sde_type and cls not in classes:
                classes.append(cls)
    return tuple(classes)


def _make_wrapper(cls: type) -> type:
    extra = (_ReversibleHeunExtra,) if issubclass(cls, ReversibleHeun) else ()
    return type(f"LocalReg{cls.__name__}", (*extra, _ObservingSDESolver, cls), {"__module__": __name__, "__doc__": (
        f"Observing wrapper of torchsde's {cls.__name__}.")})


WRAPPERS: Dict[type, type] = {cls: _make_wrapper(cls) for cls in _forward_solver_classes()}
FORWARD_METHODS = tuple(m for m in METHODS.all() if m != METHODS.adjoint_reversible_heun)


def methods_for(sde_type: str, noise_type: str) -> Tuple[str, ...]:
    """The forward methods torchsde offers for this SDE type and noise type."""
    classes = {m: methods.select(method=m, sde_type=sde_type) for m in FORWARD_METHODS}
    return tuple(m for m, cls in classes.items() if cls.sde_type == sde_type and noise_type in cls.noise_types)
