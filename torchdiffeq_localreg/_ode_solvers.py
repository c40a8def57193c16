"""Wrapper subclasses of torchdiffeq's solvers that observe a solve without changing it, and the
few lines of torchdiffeq's ``odeint`` / ``odeint_adjoint`` that run them.

Each supported upstream solver class gets a subclass (of the same name, so that upstream's
warnings read the same) that calls ``super()`` for every step and reports what it saw to a
:class:`~torchdiffeq_localreg._recorder.Recorder`. Nothing is added to torchdiffeq's solver table:
:func:`odeint_observed` is ``torchdiffeq.odeint`` with the table lookup replaced by our subclass,
and :func:`odeint_adjoint_observed` is ``torchdiffeq.odeint_adjoint`` whose autograd function's
forward pass does the same; its backward pass is upstream's own, unchanged. So a plain
``torchdiffeq.odeint`` call, concurrent or not, never sees our solvers, and the recorder reaches
the solver as an argument, never through the user's ``options``.
"""
import warnings
import weakref
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch

from ._estimates import rk_stage_estimates, rk_step_estimates, step_doubling_estimates
from ._recorder import Estimator, Recorder, RowSubset
from ._tsit5 import Tsit5Solver
from ._upstream import (SOLVERS, FixedGridODESolver, OdeintAdjointMethod, RKAdaptiveStepsizeODESolver, _check_inputs,
                        _flat_to_shape, _interp_evaluate, find_parameters, handle_adjoint_norm_)


class _ObservingMixin:
    """Reports the span of every solve to the recorder given to :meth:`_lr_observe`; without one
    the subclass behaves exactly like its parent."""

    _lr_recorder_ref: Optional["weakref.ReferenceType[Recorder]"] = None

    def __init__(self, *args, **kwargs):
        # Fixed-grid solvers drop rtol and norm; the step-doubling estimate needs them.
        self._lr_rtol, self._lr_norm = kwargs.get("rtol"), kwargs.get("norm")
        super().__init__(*args, **kwargs)

    def _lr_observe(self, recorder: Recorder) -> None:
        # Weakly: the recorder holds the estimator, which holds this solver's function or step; a
        # strong reference back would make a cycle that only the cyclic GC frees, and keep the
        # recorded tensors alive until it runs. The entry point holds the recorder for the call.
        self._lr_recorder_ref = weakref.ref(recorder)
        recorder.bind(self._lr_estimator())

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


def _make_wrapper(name: str, cls):
    mixin = _ObservedRK if issubclass(cls, RKAdaptiveStepsizeODESolver) else _ObservedFixedGrid
    # Upstream's class name: upstream's messages (e.g. "Dopri5Solver: Unexpected arguments") read the same.
    return type(cls.__name__, (mixin, cls), {"__module__": __name__, "__qualname__": cls.__qualname__, "__doc__": (
        f"Observing wrapper of torchdiffeq's {cls.__name__} (method {name!r}).")})


# The solvers our entry points know: upstream's table, plus our own Tsitouras 5(4) under "tsit5"
# where the installed torchdiffeq lacks it. A copy: upstream's table is left as it is, so plain
# torchdiffeq.odeint never sees our solver.
SOLVER_TABLE: Dict[str, type] = dict(SOLVERS) if "tsit5" in SOLVERS else {**SOLVERS, "tsit5": Tsit5Solver}
OWN_METHODS = tuple(n for n in SOLVER_TABLE if n not in SOLVERS)

# The methods we wrap, each one tested (tests/problems.py ALL_METHODS), and nothing else: a method is
# supported because it is listed here, not because of its class. Not listed: the Adams methods
# (multistep: a lone step from a recorded state is not the step the solver took), scipy_solver (no
# steps of its own to retake), torchdiffeq master's implicit fixed-grid family (implicit_euler,
# implicit_midpoint, trapezoid, radauIIA3, gl4, radauIIA5, gl6, sdirk2, trbdf2: their Newton
# iterations make the regularization step's gradient inexact, e.g. gl6 fails gradcheck), and any
# method a later torchdiffeq adds, until it is tested.
ADAPTIVE_ALLOW_LIST = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5")
FIXED_GRID_ALLOW_LIST = ("euler", "midpoint", "rk4", "heun2", "heun3")


def _wraps(name: str, base: type) -> bool:
    """Whether ``name`` is listed, present, and of the family it is listed under."""
    return (name in SOLVER_TABLE and isinstance(SOLVER_TABLE[name], type)
            and issubclass(SOLVER_TABLE[name], base))


ADAPTIVE_METHODS = tuple(n for n in ADAPTIVE_ALLOW_LIST if _wraps(n, RKAdaptiveStepsizeODESolver))
FIXED_GRID_METHODS = tuple(n for n in FIXED_GRID_ALLOW_LIST if _wraps(n, FixedGridODESolver))
# {method name: our wrapper class}.
WRAPPED: Dict[str, type] = {n: _make_wrapper(n, SOLVER_TABLE[n]) for n in ADAPTIVE_METHODS + FIXED_GRID_METHODS}
UNSUPPORTED_METHODS = tuple(n for n in SOLVER_TABLE if n not in WRAPPED)


class _ODERows(RowSubset):
    """Takes rows of the solver's state (a flat vector for tuple states: the same rows of every
    tensor) and steps them with the estimator of a solver built for a state of that many rows."""

    def __init__(self, batch: int, size: int, shapes: Optional[Sequence[torch.Size]], estimator: Estimator):
        super().__init__(batch, size)
        self.shapes = shapes
        self.estimator = estimator

    def select(self, y: torch.Tensor, rows: List[int]) -> torch.Tensor:
        index = torch.as_tensor(rows, device=y.device)
        if self.shapes is None:
            return y[index]
        return torch.cat([part[index].reshape(-1) for part in _flat_to_shape(y, (), self.shapes)])

    def local_estimates(self, estimator, t, y, dt, rows, stiffness):
        return self.estimator.local_estimates(t, self.select(y, rows), dt, stiffness)


def ode_rows(func, y0, t, rtol, atol, method: str, options, batch: int, size: int) -> RowSubset:
    """The :class:`RowSubset` of a solve of ``func`` from ``y0`` (the caller's state, batch first):
    upstream's own input normalisation and ``method``'s solver, applied to a state of ``size`` rows,
    give the function, tolerances and norm the step on a sub-batch needs (tuple states flattened,
    time reversed, tolerances cast, exactly as for the solve)."""
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if (isinstance(tol, torch.Tensor) and isinstance(y0, torch.Tensor) and batch > 1 and tol.numel() > 1
                and tol.dim() == y0.dim() and tol.shape[0] == batch):
            raise ValueError(f"reg_batch_size cannot be used with a per-row {name} (a tensor whose first dimension "
                             f"is the batch, shape {tuple(tol.shape)}); pass a {name} that broadcasts over rows.")
    template = tuple(part[:size] for part in y0) if isinstance(y0, tuple) else y0[:size]
    with warnings.catch_warnings():
        # The solve itself has already warned about anything upstream warns about here.
        warnings.simplefilter("ignore")
        shapes, func, y_rows, _, rtol, atol, method, options, _, _ = _check_inputs(
            func, template, t, rtol, atol, method, options, None, SOLVER_TABLE)
        solver = WRAPPED[method](func=func, y0=y_rows, rtol=rtol, atol=atol, **options)
    full_shapes = None if shapes is None else [part.shape for part in y0]
    return _ODERows(batch, size, full_shapes, solver._lr_estimator())


def odeint_observed(recorder: Optional[Recorder], func, y0, t, *, rtol, atol, method, options, event_fn):
    """``torchdiffeq.odeint(func, y0, t, ...)`` with ``method``'s solver replaced by its observing
    wrapper, which reports to ``recorder`` (None: the plain solve, for our own methods with
    ``strategy="none"``). ``method`` must be a key of :data:`WRAPPED`."""
    shapes, func, y0, t, rtol, atol, method, options, event_fn, t_is_reversed = _check_inputs(
        func, y0, t, rtol, atol, method, options, event_fn, SOLVER_TABLE)
    solver = WRAPPED[method](func=func, y0=y0, rtol=rtol, atol=atol, **options)
    if recorder is not None:
        solver._lr_observe(recorder)
    if event_fn is None:
        solution = solver.integrate(t)
    else:
        event_t, solution = solver.integrate_until_event(t[0], event_fn)
        event_t = event_t.to(t)
        if t_is_reversed:
            event_t = -event_t
    if shapes is not None:
        solution = _flat_to_shape(solution, (len(t),), shapes)
    return solution if event_fn is None else (event_t, solution)


class _Observed(NamedTuple):
    """Travels through ``OdeintAdjointMethod``'s ``method`` argument (which has no gradient)."""

    method: str
    recorder: Optional[Recorder]


class _ObservedAdjointMethod(OdeintAdjointMethod):
    """Upstream's adjoint autograd function; only the forward solve runs our wrapper solver."""

    @staticmethod
    def forward(ctx, shapes, func, y0, t, rtol, atol, method, options, event_fn, adjoint_rtol, adjoint_atol,
                adjoint_method, adjoint_options, t_requires_grad, *adjoint_params):
        # What upstream's forward stores, for upstream's backward.
        ctx.shapes = shapes
        ctx.func = func
        ctx.adjoint_rtol = adjoint_rtol
        ctx.adjoint_atol = adjoint_atol
        ctx.adjoint_method = adjoint_method
        ctx.adjoint_options = adjoint_options
        ctx.t_requires_grad = t_requires_grad
        ctx.event_mode = event_fn is not None
        with torch.no_grad():
            ans = odeint_observed(method.recorder, func, y0, t, rtol=rtol, atol=atol, method=method.method,
                                  options=options, event_fn=event_fn)
            if event_fn is None:
                ctx.save_for_backward(t, ans, *adjoint_params)
            else:
                ctx.save_for_backward(t, ans[1], ans[0], *adjoint_params)
        return ans


def odeint_adjoint_observed(recorder: Optional[Recorder], func, y0, t, *, rtol, atol, method, options, event_fn,
                            adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options, adjoint_params):
    """``torchdiffeq.odeint_adjoint(func, y0, t, ...)`` whose forward solve runs ``method``'s observing
    wrapper (reporting to ``recorder``); the backward solve is upstream's, with upstream's solvers."""
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise ValueError("func must be an instance of nn.Module to specify the adjoint parameters; alternatively "
                         "they can be specified explicitly via the `adjoint_params` argument. If there are no "
                         "parameters then it is allowable to set `adjoint_params=()`.")
    if adjoint_rtol is None:
        adjoint_rtol = rtol
    if adjoint_atol is None:
        adjoint_atol = atol
    if adjoint_method is None:
        adjoint_method = method
    if adjoint_method in OWN_METHODS:
        raise ValueError(f"adjoint_method={adjoint_method!r}: the adjoint's backward solve is torchdiffeq's own, and "
                         f"the installed torchdiffeq does not have {adjoint_method!r} (this package's "
                         f"{adjoint_method!r} runs the forward solve only). Pass adjoint_method, e.g. 'dopri5'.")
    if adjoint_method != method and options is not None and adjoint_options is None:
        raise ValueError("If `adjoint_method != method` then we cannot infer `adjoint_options` from `options`. So as "
                         "`options` has been passed then `adjoint_options` must be passed as well.")
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in options.items() if k != "norm"} if options is not None else {}
    else:
        adjoint_options = adjoint_options.copy()
    adjoint_params = tuple(find_parameters(func)) if adjoint_params is None else tuple(adjoint_params)
    kept = tuple(p for p in adjoint_params if p.requires_grad)
    if len(kept) != len(adjoint_params) and callable(adjoint_options.get("norm")):
        warnings.warn("An adjoint parameter was passed without requiring gradient. For efficiency this will be "
                      "excluded from the adjoint pass, and will not appear as a tensor in the adjoint norm.")
    shapes, func, y0, t, rtol, atol, method, options, event_fn, decreasing_time = _check_inputs(
        func, y0, t, rtol, atol, method, options, event_fn, SOLVER_TABLE)
    handle_adjoint_norm_(adjoint_options, shapes, options["norm"])
    ans = _ObservedAdjointMethod.apply(shapes, func, y0, t, rtol, atol, _Observed(method, recorder), options,
                                       event_fn, adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options,
                                       t.requires_grad, *kept)
    if event_fn is None:
        solution = ans
    else:
        event_t, solution = ans
        event_t = event_t.to(t)
        if decreasing_time:
            event_t = -event_t
    if shapes is not None:
        solution = _flat_to_shape(solution, (len(t),), shapes)
    return solution if event_fn is None else (event_t, solution)
