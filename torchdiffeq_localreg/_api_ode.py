"""The ODE entry points: validate, build the recorder, call upstream, compute reg."""
from typing import Any, Callable, Dict, Iterable, Literal, Optional, Tuple, TypeVar, Union, overload

import torch
import torch.nn as nn

from ._ode_solvers import (ADAPTIVE_METHODS, FIXED_GRID_METHODS, OWN_METHODS, SOLVER_TABLE, UNSUPPORTED_METHODS,
                           WRAPPED, ode_rows, odeint_adjoint_observed, odeint_observed)
from ._recorder import Recorder, recording_gradients
from ._stats import EvalCounter, LocalRegStats, note_regularized_solve
from ._upstream import (FixedGridODESolver, _all_adjoint_callback_names, _all_callback_names, find_parameters,
                        upstream_odeint, upstream_odeint_adjoint)
from ._validate import Strategy, check_real_state, check_reg_args, check_reg_batch_size, check_times, has_no_elements

TensorOrTensors = Union[torch.Tensor, Tuple[torch.Tensor, ...]]
# The state y0 (a tensor or a tuple of tensors); the solution has the same structure.
_State = TypeVar("_State", torch.Tensor, Tuple[torch.Tensor, ...])
# rtol/atol: one value, or (with a tuple state) one per tensor of the state.
Tolerance = Union[float, torch.Tensor, Tuple[Union[float, torch.Tensor], ...]]
EventFn = Callable[[torch.Tensor, _State], torch.Tensor]

_CALLBACK_NAMES = frozenset(_all_callback_names) | frozenset(_all_adjoint_callback_names)


class _CountedFunc(nn.Module):
    """Calls ``base`` unchanged and counts each call; exposes ``base``'s solver callbacks and
    (as a submodule) its parameters, so upstream treats it exactly like ``base``."""

    def __init__(self, base: Callable, counter: EvalCounter):
        super().__init__()
        self.base = base
        self.counter = counter

    def forward(self, t, y):
        self.counter.count()
        return self.base(t, y)

    def __getattr__(self, name):
        if name in _CALLBACK_NAMES:
            return getattr(self.base, name)
        return super().__getattr__(name)


def _check_method(method: Optional[str]) -> str:
    method = "dopri5" if method is None else method
    if method not in WRAPPED:
        raise ValueError(
            f"method {method!r} is not supported by torchdiffeq_localreg. Supported: adaptive "
            f"{ADAPTIVE_METHODS} (embedded error estimate) and fixed-grid {FIXED_GRID_METHODS} "
            f"(step-doubling estimate). Not supported: {UNSUPPORTED_METHODS}, except with strategy='none' "
            f"(the plain solve), which runs every method torchdiffeq accepts.")
    return method


def _fixed_steps(method: Any) -> bool:
    """Whether upstream's solver ``method`` takes steps fixed in advance (its NFE cannot change)."""
    solver = SOLVER_TABLE.get(method) if isinstance(method, str) else None
    return isinstance(solver, type) and issubclass(solver, FixedGridODESolver)


def _run(adjoint: bool, func, y0, t, rtol, atol, method, options, event_fn, strategy, num_samples,
         error_weight, stiffness_weight, generator, reg_batch_size, return_stats, adjoint_kwargs: Dict[str, Any]):
    num_samples, error_weight, stiffness_weight = check_reg_args(strategy, num_samples, error_weight,
                                                                 stiffness_weight, generator, return_stats, adjoint)
    # strategy="none" is the plain solve: every method upstream accepts, checked by upstream.
    method_name = ("dopri5" if method is None else method) if strategy == "none" else _check_method(method)
    check_times("t", t)
    check_real_state(y0, strategy)
    reg_batch_size, batch = check_reg_batch_size(reg_batch_size, y0, strategy)
    # Without gradients (evaluation) a regularization step could not train anything: skip it.
    skipped = strategy != "none" and not recording_gradients()
    stats = LocalRegStats(strategy=strategy, method=str(method_name), skipped=skipped,
                          adaptive=not _fixed_steps(method_name))
    counter = EvalCounter(stats)
    counted = _CountedFunc(func, counter)
    if skipped or has_no_elements(y0):
        # An empty state (a batch of 0 rows) has nothing to regularize: the plain solve, reg = 0.
        strategy = "none"

    if strategy == "none" and method_name in OWN_METHODS:
        # Our own solver (tsit5 on a torchdiffeq without it), plainly: no recorder.
        recorder = None
        solve = odeint_adjoint_observed if adjoint else odeint_observed
        out = solve(None, counted, y0, t, rtol=rtol, atol=atol, method=method_name, options=options,
                    event_fn=event_fn, **adjoint_kwargs)
    elif strategy == "none":
        recorder = None
        if adjoint:
            out = upstream_odeint_adjoint(counted, y0, t, rtol=rtol, atol=atol, method=method, options=options,
                                          event_fn=event_fn, **adjoint_kwargs)
        else:
            out = upstream_odeint(counted, y0, t, rtol=rtol, atol=atol, method=method, options=options,
                                  event_fn=event_fn)
    else:
        time_sign = -1.0 if len(t) > 1 and bool(t[0] > t[1]) else 1.0
        rows = None if batch is None else ode_rows(counted, y0, t, rtol, atol, method_name, options, batch,
                                                   reg_batch_size)
        recorder = Recorder(strategy, num_samples, error_weight, stiffness_weight, generator, stats,
                            counters=(counter,), time_sign=time_sign, rows=rows)
        # Upstream's odeint / odeint_adjoint with our observing solver, passed in directly: nothing
        # is registered in torchdiffeq's solver table and nothing is added to ``options``.
        solve = odeint_adjoint_observed if adjoint else odeint_observed
        out = solve(recorder, counted, y0, t, rtol=rtol, atol=atol, method=method_name, options=options,
                    event_fn=event_fn, **adjoint_kwargs)
    solution = out[1] if event_fn is not None else out
    like = solution if isinstance(solution, torch.Tensor) else solution[0]

    counter.phase = "reg"
    if recorder is None:
        reg = torch.zeros((), dtype=like.dtype, device=like.device)
    else:
        reg = recorder.compute(like)
        note_regularized_solve(sde=False)
    counter.phase = "backward"

    result = (*out, reg) if event_fn is not None else (out, reg)
    return (*result, stats) if return_stats else result


@overload
def odeint_reg(func: Callable[[torch.Tensor, _State], Any], y0: _State, t: torch.Tensor, *, rtol: Tolerance = ...,
               atol: Tolerance = ..., method: Optional[str] = ..., options: Optional[Dict[str, Any]] = ...,
               event_fn: None = ..., strategy: Strategy = ..., num_samples: int = ..., error_weight: float = ...,
               stiffness_weight: float = ..., generator: Optional[torch.Generator] = ...,
               reg_batch_size: Optional[int] = ...,
               return_stats: Literal[False] = ...) -> Tuple[_State, torch.Tensor]: ...
@overload
def odeint_reg(func: Callable[[torch.Tensor, _State], Any], y0: _State, t: torch.Tensor, *, rtol: Tolerance = ...,
               atol: Tolerance = ..., method: Optional[str] = ..., options: Optional[Dict[str, Any]] = ...,
               event_fn: None = ..., strategy: Strategy = ..., num_samples: int = ..., error_weight: float = ...,
               stiffness_weight: float = ..., generator: Optional[torch.Generator] = ...,
               reg_batch_size: Optional[int] = ...,
               return_stats: Literal[True]) -> Tuple[_State, torch.Tensor, LocalRegStats]: ...
@overload
def odeint_reg(func: Callable[[torch.Tensor, _State], Any], y0: _State, t: torch.Tensor, *, rtol: Tolerance = ...,
               atol: Tolerance = ..., method: Optional[str] = ..., options: Optional[Dict[str, Any]] = ...,
               event_fn: EventFn[_State], strategy: Strategy = ..., num_samples: int = ..., error_weight: float = ...,
               stiffness_weight: float = ..., generator: Optional[torch.Generator] = ...,
               reg_batch_size: Optional[int] = ...,
               return_stats: Literal[False] = ...) -> Tuple[torch.Tensor, _State, torch.Tensor]: ...
@overload
def odeint_reg(func: Callable[[torch.Tensor, _State], Any], y0: _State, t: torch.Tensor, *, rtol: Tolerance = ...,
               atol: Tolerance = ..., method: Optional[str] = ..., options: Optional[Dict[str, Any]] = ...,
               event_fn: EventFn[_State], strategy: Strategy = ..., num_samples: int = ..., error_weight: float = ...,
               stiffness_weight: float = ..., generator: Optional[torch.Generator] = ...,
               reg_batch_size: Optional[int] = ...,
               return_stats: Literal[True]) -> Tuple[torch.Tensor, _State, torch.Tensor, LocalRegStats]: ...
@overload
def odeint_reg(func: Callable[[torch.Tensor, _State], Any], y0: _State, t: torch.Tensor, *, rtol: Tolerance = ...,
               atol: Tolerance = ..., method: Optional[str] = ..., options: Optional[Dict[str, Any]] = ...,
               event_fn: Optional[EventFn[_State]] = ..., strategy: Strategy = ..., num_samples: int = ...,
               error_weight: float = ..., stiffness_weight: float = ...,
               generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
               return_stats: bool = ...) -> Tuple[Any, ...]: ...
def odeint_reg(func: Callable[[torch.Tensor, Any], Any], y0: TensorOrTensors, t: torch.Tensor, *,
               rtol: Tolerance = 1e-7, atol: Tolerance = 1e-9,
               method: Optional[str] = None, options: Optional[Dict[str, Any]] = None,
               event_fn: Optional[EventFn[Any]] = None, strategy: str = "unbiased", num_samples: int = 1,
               error_weight: float = 1.0, stiffness_weight: float = 0.0,
               generator: Optional[torch.Generator] = None, reg_batch_size: Optional[int] = None,
               return_stats: bool = False) -> Tuple[Any, ...]:
    """Integrate an ODE like ``torchdiffeq.odeint`` and return a local regularization term.

    The solve is upstream's, unchanged: ``solution`` is bit-identical to
    ``torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options,
    event_fn=event_fn)``. While it runs, the solver's accepted steps are observed; afterwards one
    extra step of the same solver is taken (per sample) from a sampled point (t_s, y_s, dt_s),
    held constant, and its estimates give

        reg = mean over samples of ( error_weight * E * |dt_s| + stiffness_weight * S )

    where E is the solver's own scaled error norm of that step (the number its step controller
    compares to 1: ``norm(err / (atol + rtol * max(|y0|, |y1|)))``) and S a stiffness estimate,
    ``|dt_s| * ||k_j - k_i|| / ||Y_j - Y_i||`` for the two stages closest in time (for dopri5 the
    last two, both at t + dt). The gradient of ``reg`` reaches ``func``'s parameters through the
    extra step only. Add ``lam * reg`` to the loss to make the solver take fewer steps.

    Fixed-grid methods have no embedded error estimate: E is measured by step doubling (one step of
    dt against two of dt/2, same scaling and norm) and S compares ``func`` on the two end states.
    The extra step always starts from ``func(t_s, y_s)``; for ``fehlberg2`` and ``adaptive_heun``,
    whose solver reuses a last-stage derivative that is not taken at y1, E can therefore differ
    from the solver's internal number by a tolerance-sized amount (it is exact for the others).

    Args:
        func, y0, t, rtol, atol, method, options, event_fn: exactly as in ``torchdiffeq.odeint``
            (default method ``"dopri5"``; tuple states, decreasing ``t``, ``options`` such as
            ``step_t``, ``jump_t``, ``first_step``, ``norm``, and callbacks on ``func`` all work).
            ``method="tsit5"`` (Tsitouras 5(4), the paper's solver) is upstream's where the installed
            torchdiffeq has it, otherwise this package's own (used by these entry points only;
            plain ``torchdiffeq.odeint`` is left as it is).
        strategy: where to regularize.
            ``"unbiased"``: t_s uniform on the span of ``t`` (up to the event time with
            ``event_fn``); y_s from the solver's interpolant in the accepted step containing t_s,
            dt_s that step's size.
            ``"biased"``: a uniformly chosen accepted step (its start and size), which favours the
            regions where the solver takes many small steps.
            ``"global"``: the sum over all accepted steps of the weighted terms, taken from the
            solve's own stages (no extra evaluations for adaptive methods); backpropagates through
            the solver, so it needs the direct (non-adjoint) method.
            ``"none"``: the plain solve; ``reg`` is zero and nothing extra is evaluated.
        num_samples: number of independent samples (drawn with replacement) for the local strategies,
            1 to 1024 (each is one extra solver step, taken one after another). Any integer: a
            Python or numpy int, or a 0-d integer tensor (as for ``reg_batch_size``); not a bool.
        error_weight: weight of ``E * |dt|``, a float >= 0. Any real number: numpy scalars and
            0-d tensors (without grad) too, as for ``stiffness_weight``; not a bool.
        stiffness_weight: weight of ``S``, a float >= 0; when 0, S is not computed.
        generator: ``torch.Generator`` for the sampling. None (default): the package's private CPU
            generator, seeded from ``torch.initial_seed()`` and re-seeded whenever that changes, so
            ``torch.manual_seed(s)`` makes runs reproducible while torch's global random stream is
            never drawn from (the program's own later draws are as without this call). Calling
            ``torch.manual_seed`` again with the same seed in one process does not restart it;
            pass a generator for that.
        reg_batch_size: None (default): the regularization step runs on the whole state. An int b:
            the first dimension of ``y0`` (of every tensor of a tuple ``y0``) is the batch, of size
            B >= b, and each sample's step runs on b rows of y_s drawn from ``generator``
            uniformly without replacement (the same rows of every tensor of a tuple state; listed
            in ``stats.reg_rows``), at about b / B of the step's cost. The solve is unchanged.
            E is then the norm over those rows: with the default RMS norm, the mean of the squared
            scaled errors over b random rows is an unbiased estimate of the mean over the batch,
            and E, its square root (a concave function), is biased slightly low by Jensen's
            inequality, the less the larger b (a custom ``norm`` in ``options`` sees the b rows).
            S is the stiffness quotient on those rows. This requires that ``func`` treats rows
            independently (row i of ``func(t, y)`` depends on row i of ``y`` only: no BatchNorm
            or other statistics over the batch), otherwise the step on b rows is not the step
            those rows take in the batch. ``b = B`` is the whole batch (nothing drawn); with
            None nothing extra is drawn from ``generator``, so ``reg`` is as without the argument.
        return_stats: also return a :class:`LocalRegStats`.

    Returns:
        ``(solution, reg)``; with ``event_fn``, ``(event_t, solution, reg)``; with
        ``return_stats=True`` a :class:`LocalRegStats` is appended. ``reg`` is a scalar tensor of
        the state's dtype and device (zero when the solve took no step). Under ``torch.no_grad()``
        or ``torch.inference_mode()`` (evaluation; also with ``torch.enable_grad()`` inside it) no
        regularization step is taken: the plain solve runs at no extra cost, ``reg`` is zero and
        ``stats.skipped`` is True. A state with no elements (an empty batch, of every tensor of a
        tuple) has nothing to regularize: the plain solve runs (upstream's solution, where upstream
        gives one: its adaptive methods cannot start on an empty state) and ``reg`` is a zero
        that adds nothing to any gradient.

    Raises:
        ValueError: unknown ``strategy``, ``num_samples`` outside [1, 1024], negative or non-finite
            weights, ``t`` not one-dimensional, ``reg_batch_size`` below 1, above the batch size, with
            a ``y0`` without a batch dimension (0-dim, or tensors of a tuple with different first
            dimensions), with per-row tolerances or with ``strategy="global"``, a
            ``method`` without single steps to retake (Adams and scipy solvers; ``strategy="none"``
            runs them, as upstream does), or any error upstream raises.
        TypeError: arguments of the wrong type (``num_samples`` or ``reg_batch_size`` not an integer,
            weights not real numbers, booleans, tensors that require grad); a complex ``y0``
            (the error norms are defined for real states; ``strategy="none"`` passes it to upstream
            untouched).
        FloatingPointError: if ``reg`` is not finite.
    """
    return _run(False, func, y0, t, rtol, atol, method, options, event_fn, strategy, num_samples,
                error_weight, stiffness_weight, generator, reg_batch_size, return_stats, {})


@overload
def odeint_adjoint_reg(func: Callable[[torch.Tensor, _State], Any], y0: _State, t: torch.Tensor, *,
                       rtol: Tolerance = ..., atol: Tolerance = ..., method: Optional[str] = ...,
                       options: Optional[Dict[str, Any]] = ..., event_fn: None = ...,
                       adjoint_rtol: Optional[Tolerance] = ..., adjoint_atol: Optional[Tolerance] = ...,
                       adjoint_method: Optional[str] = ..., adjoint_options: Optional[Dict[str, Any]] = ...,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = ..., strategy: Strategy = ...,
                       num_samples: int = ..., error_weight: float = ..., stiffness_weight: float = ...,
                       generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
                       return_stats: Literal[False] = ...) -> Tuple[_State, torch.Tensor]: ...
@overload
def odeint_adjoint_reg(func: Callable[[torch.Tensor, _State], Any], y0: _State, t: torch.Tensor, *,
                       rtol: Tolerance = ..., atol: Tolerance = ..., method: Optional[str] = ...,
                       options: Optional[Dict[str, Any]] = ..., event_fn: None = ...,
                       adjoint_rtol: Optional[Tolerance] = ..., adjoint_atol: Optional[Tolerance] = ...,
                       adjoint_method: Optional[str] = ..., adjoint_options: Optional[Dict[str, Any]] = ...,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = ..., strategy: Strategy = ...,
                       num_samples: int = ..., error_weight: float = ..., stiffness_weight: float = ...,
                       generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
                       return_stats: Literal[True]) -> Tuple[_State, torch.Tensor, LocalRegStats]: ...
@overload
def odeint_adjoint_reg(func: Callable[[torch.Tensor, _State], Any], y0: _State, t: torch.Tensor, *,
                       rtol: Tolerance = ..., atol: Tolerance = ..., method: Optional[str] = ...,
                       options: Optional[Dict[str, Any]] = ..., event_fn: EventFn[_State],
                       adjoint_rtol: Optional[Tolerance] = ..., adjoint_atol: Optional[Tolerance] = ...,
                       adjoint_method: Optional[str] = ..., adjoint_options: Optional[Dict[str, Any]] = ...,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = ..., strategy: Strategy = ...,
                       num_samples: int = ..., error_weight: float = ..., stiffness_weight: float = ...,
                       generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
                       return_stats: Literal[False] = ...) -> Tuple[torch.Tensor, _State, torch.Tensor]: ...
@overload
def odeint_adjoint_reg(func: Callable[[torch.Tensor, _State], Any], y0: _State, t: torch.Tensor, *,
                       rtol: Tolerance = ..., atol: Tolerance = ..., method: Optional[str] = ...,
                       options: Optional[Dict[str, Any]] = ..., event_fn: EventFn[_State],
                       adjoint_rtol: Optional[Tolerance] = ..., adjoint_atol: Optional[Tolerance] = ...,
                       adjoint_method: Optional[str] = ..., adjoint_options: Optional[Dict[str, Any]] = ...,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = ..., strategy: Strategy = ...,
                       num_samples: int = ..., error_weight: float = ..., stiffness_weight: float = ...,
                       generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
                       return_stats: Literal[True]) -> Tuple[torch.Tensor, _State, torch.Tensor, LocalRegStats]: ...
@overload
def odeint_adjoint_reg(func: Callable[[torch.Tensor, _State], Any], y0: _State, t: torch.Tensor, *,
                       rtol: Tolerance = ..., atol: Tolerance = ..., method: Optional[str] = ...,
                       options: Optional[Dict[str, Any]] = ..., event_fn: Optional[EventFn[_State]] = ...,
                       adjoint_rtol: Optional[Tolerance] = ..., adjoint_atol: Optional[Tolerance] = ...,
                       adjoint_method: Optional[str] = ..., adjoint_options: Optional[Dict[str, Any]] = ...,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = ..., strategy: Strategy = ...,
                       num_samples: int = ..., error_weight: float = ..., stiffness_weight: float = ...,
                       generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
                       return_stats: bool = ...) -> Tuple[Any, ...]: ...
def odeint_adjoint_reg(func: Callable[[torch.Tensor, Any], Any], y0: TensorOrTensors, t: torch.Tensor, *,
                       rtol: Tolerance = 1e-7, atol: Tolerance = 1e-9,
                       method: Optional[str] = None, options: Optional[Dict[str, Any]] = None,
                       event_fn: Optional[EventFn[Any]] = None, adjoint_rtol: Optional[Tolerance] = None,
                       adjoint_atol: Optional[Tolerance] = None,
                       adjoint_method: Optional[str] = None, adjoint_options: Optional[Dict[str, Any]] = None,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = None, strategy: str = "unbiased",
                       num_samples: int = 1, error_weight: float = 1.0, stiffness_weight: float = 0.0,
                       generator: Optional[torch.Generator] = None, reg_batch_size: Optional[int] = None,
               return_stats: bool = False) -> Tuple[Any, ...]:
    """``odeint_reg`` with gradients of the solution by ``torchdiffeq.odeint_adjoint``.

    The forward solve and the backward (adjoint) solve are upstream's, untouched: ``solution`` is
    bit-identical to ``torchdiffeq.odeint_adjoint`` with the same arguments, and its gradient is
    computed by upstream's adjoint with ``adjoint_rtol``, ``adjoint_atol``, ``adjoint_method``,
    ``adjoint_options`` (including ``{"norm": "seminorm"}``) and ``adjoint_params`` exactly as
    documented there. ``reg`` is computed as in :func:`odeint_reg` from the forward solve; it does
    not depend on the adjoint settings, and for the same ``generator`` state it is identical to
    :func:`odeint_reg`'s, gradient included. ``stats.nfe_backward`` counts the evaluations of
    ``func`` made by the adjoint solve (read it after ``backward()``).

    ``nn.DataParallel``: a replica of ``func`` holds its parameters as plain tensor attributes;
    without ``adjoint_params`` they are found on ``func`` as upstream finds them, so the weights
    get upstream's gradients.

    Args:
        See :func:`odeint_reg` and ``torchdiffeq.odeint_adjoint``. ``strategy="global"`` is not
        available here. With this package's own ``tsit5`` (a torchdiffeq without one), the
        backward solve, upstream's, needs an ``adjoint_method`` upstream has (e.g. ``"dopri5"``).

    Returns:
        As :func:`odeint_reg`.

    Raises:
        ValueError: as :func:`odeint_reg`; also for ``strategy="global"``, and as upstream when
            ``func`` is not an ``nn.Module`` and ``adjoint_params`` is not given, or when
            ``adjoint_method != method`` with ``options`` but no ``adjoint_options``; an
            ``adjoint_method`` the installed torchdiffeq does not have (our own ``tsit5``).
    """
    if adjoint_params is None and not isinstance(func, nn.Module):
        raise ValueError("func must be an instance of nn.Module to specify the adjoint parameters; "
                         "alternatively pass them as `adjoint_params` (use `adjoint_params=()` if there are none).")
    if adjoint_params is None:
        # Upstream's own search, on the caller's func: our counting wrapper around a DataParallel
        # replica (whose parameters are plain tensor attributes) would hide them from it.
        adjoint_params = tuple(find_parameters(func))
    # Resolve the backward solve's settings from the caller's method and options, as upstream does,
    # so that the adjoint solve uses the upstream solver and never sees our recorder.
    if adjoint_method is None:
        adjoint_method = method
    if adjoint_options is None:
        if adjoint_method != method and options is not None:
            raise ValueError("If `adjoint_method != method` then `adjoint_options` cannot be inferred from "
                             "`options`; as `options` was passed, pass `adjoint_options` as well.")
        adjoint_options = {k: v for k, v in options.items() if k != "norm"} if options is not None else {}
    adjoint_kwargs = dict(adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, adjoint_method=adjoint_method,
                          adjoint_options=adjoint_options, adjoint_params=adjoint_params)
    return _run(True, func, y0, t, rtol, atol, method, options, event_fn, strategy, num_samples,
                error_weight, stiffness_weight, generator, reg_batch_size, return_stats, adjoint_kwargs)
