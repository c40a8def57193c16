"""The SDE entry points: validate, build the recorder, run torchsde's solve, compute reg.

``torchsde.sdeint`` builds its solver from ``methods.select`` and offers no way to pass another
class, so the entry points repeat its few lines of glue around upstream's own pieces: they call
torchsde's ``check_contract`` (all input checks, defaults, the default Brownian motion),
instantiate our observing subclass of the class ``methods.select`` returns, run it (for the adjoint
through torchsde's own ``_SdeintAdjointMethod``, whose backward solve is untouched) and return
through torchsde's ``parse_return``.
"""
import warnings
from typing import Any, Dict, Iterable, Literal, Optional, Sequence, Tuple, Union, overload

import torch
import torch.nn as nn
from torchsde import BaseBrownian

from ._recorder import Recorder, recording_gradients
from ._sde_solvers import WRAPPERS, SDERows, methods_for
from ._stats import EvalCounter, LocalRegStats, note_regularized_solve
from ._upstream import (METHODS, _SdeintAdjointMethod, _select_default_adjoint_method, check_contract, find_parameters,
                        parse_return)
from ._upstream import sde_methods as methods
from ._upstream import sde_misc as misc
from ._validate import Strategy, check_real_state, check_reg_args, check_reg_batch_size, has_no_elements

# torchsde ships no type information, so to a type checker its aliases (torchsde.types) are Any;
# the public signatures spell the same types out.
_Scalar = Union[float, torch.Tensor]
_Vector = Union[Sequence[float], torch.Tensor]
_Tensors = Sequence[torch.Tensor]


# The SDE methods torchsde looks up, by the key of ``names`` that renames them, and whether they
# evaluate the drift, the diffusion, or both. The prior drift h (logqp) counts as a drift.
_SDE_FUNCTIONS = {
    "f": ("drift", (True, False)),
    "h": ("prior_drift", (True, False)),
    "g": ("diffusion", (False, True)),
    "g_prod": (None, (False, True)),
    "f_and_g": ("drift_and_diffusion", (True, True)),
    "f_and_g_prod": ("drift_and_diffusion_prod", (True, True)),
}


class _CountedSDE(nn.Module):
    """Presents ``base``'s drift and diffusion functions unchanged, counting each call.

    Has exactly the functions ``base`` has (under the names ``names`` gives them), its
    ``noise_type`` and ``sde_type``, and (as a submodule) its parameters, so torchsde treats it
    exactly like ``base``.
    """

    def __init__(self, base: Any, drift: EvalCounter, diffusion: EvalCounter, names: Optional[Dict[str, str]]):
        super().__init__()
        self.base = base
        kinds = {}
        for name, (key, (is_drift, is_diffusion)) in _SDE_FUNCTIONS.items():
            counters = (drift,) * is_drift + (diffusion,) * is_diffusion
            kinds[names.get(key, name) if names and key else name] = counters
        self._lr_counters = kinds
        object.__setattr__(self, "_lr_base", base)   # beside nn.Module's registry, for the lookup below

    def __getattribute__(self, name):
        # The SDE's functions come first, also under a name nn.Module itself defines (torchsde's own
        # tests name the drift ``forward``). A function ``base`` lacks raises AttributeError, so that
        # torchsde falls back to its defaults exactly as it does for ``base``.
        own = object.__getattribute__(self, "__dict__")
        counters = own.get("_lr_counters", {}).get(name)
        if counters is None:
            return super().__getattribute__(name)
        function = getattr(own["_lr_base"], name)

        def counted(*args, **kwargs):
            for counter in counters:
                counter.count()
            return function(*args, **kwargs)
        return counted

    def __getattr__(self, name):
        if name in ("noise_type", "sde_type"):
            return getattr(self.base, name)
        return super().__getattr__(name)


def _run(adjoint: bool, sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp,
         extra, extra_solver_state, strategy, num_samples, error_weight, stiffness_weight, generator,
         reg_batch_size, return_stats, adjoint_args: Dict[str, Any]):
    num_samples, error_weight, stiffness_weight = check_reg_args(strategy, num_samples, error_weight,
                                                                 stiffness_weight, generator, return_stats, adjoint)
    check_real_state(y0, strategy)
    reg_batch_size, batch = check_reg_batch_size(reg_batch_size, y0, strategy)
    if adjoint and adjoint_args["adjoint_params"] is None and not isinstance(sde, nn.Module):
        raise ValueError('`sde` must be an instance of nn.Module to specify the adjoint parameters; alternatively '
                         'they can be specified explicitly via the `adjoint_params` argument. If there are no '
                         'parameters then it is allowable to set `adjoint_params=()`.')
    if adjoint and adjoint_args["adjoint_params"] is None:
        # torchdiffeq's search, on the caller's sde: torchsde's default, the parameters() of the module
        # it builds around ours, is the same tuple for a plain module, and empty for a DataParallel
        # replica (whose parameters are plain tensor attributes), whose weights would get no gradient.
        adjoint_args = dict(adjoint_args, adjoint_params=tuple(find_parameters(sde)))
    # Without gradients (evaluation) a regularization step could not train anything: skip it.
    skipped = strategy != "none" and not recording_gradients()
    stats = LocalRegStats(strategy=strategy, method=str(method), skipped=skipped, adaptive=bool(adaptive))
    drift, diffusion = EvalCounter(stats, "nfe"), EvalCounter(stats, "nfe_diffusion")
    counted = _CountedSDE(sde, drift, diffusion, names)

    # torchsde.sdeint / sdeint_adjoint from here on, with our solver class.
    sde, y0, ts, bm, method, options = check_contract(counted, y0, ts, bm, method, adaptive, options, names, logqp)
    stats.method = method
    if adjoint:
        misc.assert_no_grad(['ts', 'dt', 'rtol', 'adjoint_rtol', 'atol', 'adjoint_atol', 'dt_min'],
                            [ts, dt, rtol, adjoint_args["adjoint_rtol"], atol, adjoint_args["adjoint_atol"], dt_min])
    else:
        misc.assert_no_grad(['ts', 'dt', 'rtol', 'atol', 'dt_min'], [ts, dt, rtol, atol, dt_min])
    solver_class = methods.select(method=method, sde_type=sde.sde_type)
    if (solver_class not in WRAPPERS or solver_class.sde_type != sde.sde_type
            or sde.noise_type not in solver_class.noise_types):
        raise ValueError(f"method {method!r} cannot solve an SDE of type {sde.sde_type!r} with noise type "
                         f"{sde.noise_type!r}; the methods that can: {methods_for(sde.sde_type, sde.noise_type)}.")
    recorder = None
    # An empty state (a batch of 0 rows) has nothing to regularize: the plain solve, reg = 0.
    if strategy != "none" and not skipped and not has_no_elements(y0):
        recorder = Recorder(strategy, num_samples, error_weight, stiffness_weight, generator, stats,
                            counters=(drift, diffusion),
                            rows=None if batch is None else SDERows(batch, reg_batch_size))
        solver_class = WRAPPERS[solver_class]
    solver = solver_class(sde=sde, bm=bm, dt=dt, adaptive=adaptive, rtol=rtol, atol=atol, dt_min=dt_min,
                          options=options, **({} if recorder is None else {"_localreg_recorder": recorder}))
    if extra_solver_state is None:
        extra_solver_state = solver.init_extra_solver_state(ts[0], y0)
    if adjoint:
        ys, *extra_solver_state = _run_adjoint(sde, y0, ts, bm, solver, method, dt, adaptive, dt_min,
                                               extra_solver_state, **adjoint_args)
    else:
        ys, extra_solver_state = solver.integrate(y0, ts, extra_solver_state)
    out = parse_return(y0, ys, extra_solver_state, extra, logqp)

    for counter in (drift, diffusion):
        counter.phase = "reg"
    if recorder is None:
        reg = torch.zeros((), dtype=ys.dtype, device=ys.device)
    else:
        reg = recorder.compute(ys)
        note_regularized_solve(sde=True)
    for counter in (drift, diffusion):
        counter.phase = "backward"

    result = (*out, reg) if isinstance(out, tuple) else (out, reg)
    return (*result, stats) if return_stats else result


def _run_adjoint(sde, y0, ts, bm, solver, method, dt, adaptive, dt_min, extra_solver_state, adjoint_method,
                 adjoint_adaptive, adjoint_rtol, adjoint_atol, adjoint_options, adjoint_params):
    """The part of ``torchsde.sdeint_adjoint`` after ``check_contract``, with ``solver`` given."""
    adjoint_params = tuple(sde.parameters()) if adjoint_params is None else tuple(adjoint_params)
    adjoint_params = filter(lambda x: x.requires_grad, adjoint_params)
    adjoint_method = _select_default_adjoint_method(sde, method, adjoint_method)
    adjoint_options = {} if adjoint_options is None else adjoint_options.copy()

    # The caveats torchsde raises for the reversible Heun method under the adjoint, in our words.
    if method == METHODS.reversible_heun:
        if adjoint_method != METHODS.adjoint_reversible_heun:
            warnings.warn(f"method={method!r} is exactly reversible only with "
                          f"adjoint_method={METHODS.adjoint_reversible_heun!r}; got {adjoint_method!r}.")
        if adaptive or adjoint_adaptive:
            warnings.warn(f"method={method!r} with adaptive or adjoint_adaptive: the forward time steps are not "
                          f"saved, so the backward pass may not retrace them exactly.")
        else:
            num_steps = (ts - ts[0]) / dt
            if not torch.allclose(num_steps, num_steps.round()):
                warnings.warn(f"method={method!r}: the output times `ts` are not whole multiples of `dt` apart, so "
                              f"the backward pass (which steps to every output time) cannot retrace the forward "
                              f"pass (which interpolates to them) exactly.")

    return _SdeintAdjointMethod.apply(
        sde, ts, dt, bm, solver, method, adjoint_method, adjoint_adaptive, adjoint_rtol, adjoint_atol, dt_min,
        adjoint_options, len(extra_solver_state), y0, *extra_solver_state, *adjoint_params
    )


@overload
def sdeint_reg(sde: Any, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = ...,
               method: Optional[str] = ..., dt: _Scalar = ..., adaptive: bool = ..., rtol: _Scalar = ...,
               atol: _Scalar = ..., dt_min: _Scalar = ..., options: Optional[Dict[str, Any]] = ...,
               names: Optional[Dict[str, str]] = ..., logqp: Literal[False] = ..., extra: Literal[False] = ...,
               extra_solver_state: Optional[_Tensors] = ..., *, strategy: Strategy = ..., num_samples: int = ...,
               error_weight: float = ..., stiffness_weight: float = ...,
               generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
               return_stats: Literal[False] = ...) -> Tuple[torch.Tensor, torch.Tensor]: ...
@overload
def sdeint_reg(sde: Any, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = ...,
               method: Optional[str] = ..., dt: _Scalar = ..., adaptive: bool = ..., rtol: _Scalar = ...,
               atol: _Scalar = ..., dt_min: _Scalar = ..., options: Optional[Dict[str, Any]] = ...,
               names: Optional[Dict[str, str]] = ..., logqp: Literal[False] = ..., extra: Literal[False] = ...,
               extra_solver_state: Optional[_Tensors] = ..., *, strategy: Strategy = ..., num_samples: int = ...,
               error_weight: float = ..., stiffness_weight: float = ...,
               generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
               return_stats: Literal[True]) -> Tuple[torch.Tensor, torch.Tensor, LocalRegStats]: ...
@overload
def sdeint_reg(sde: Any, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = ...,
               method: Optional[str] = ..., dt: _Scalar = ..., adaptive: bool = ..., rtol: _Scalar = ...,
               atol: _Scalar = ..., dt_min: _Scalar = ..., options: Optional[Dict[str, Any]] = ...,
               names: Optional[Dict[str, str]] = ..., logqp: Literal[True] = ..., extra: Literal[False] = ...,
               extra_solver_state: Optional[_Tensors] = ..., *, strategy: Strategy = ..., num_samples: int = ...,
               error_weight: float = ..., stiffness_weight: float = ...,
               generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
               return_stats: Literal[False] = ...) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
@overload
def sdeint_reg(sde: Any, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = ...,
               method: Optional[str] = ..., dt: _Scalar = ..., adaptive: bool = ..., rtol: _Scalar = ...,
               atol: _Scalar = ..., dt_min: _Scalar = ..., options: Optional[Dict[str, Any]] = ...,
               names: Optional[Dict[str, str]] = ..., logqp: Literal[True] = ..., extra: Literal[False] = ...,
               extra_solver_state: Optional[_Tensors] = ..., *, strategy: Strategy = ..., num_samples: int = ...,
               error_weight: float = ..., stiffness_weight: float = ...,
               generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
               return_stats: Literal[True]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, LocalRegStats]: ...
@overload
def sdeint_reg(sde: Any, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = ...,
               method: Optional[str] = ..., dt: _Scalar = ..., adaptive: bool = ..., rtol: _Scalar = ...,
               atol: _Scalar = ..., dt_min: _Scalar = ..., options: Optional[Dict[str, Any]] = ...,
               names: Optional[Dict[str, str]] = ..., logqp: bool = ..., extra: bool = ...,
               extra_solver_state: Optional[_Tensors] = ..., *, strategy: Strategy = ..., num_samples: int = ...,
               error_weight: float = ..., stiffness_weight: float = ...,
               generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
               return_stats: bool = ...) -> Tuple[Any, ...]: ...
def sdeint_reg(sde: Any, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = None,
               method: Optional[str] = None, dt: _Scalar = 1e-3, adaptive: bool = False, rtol: _Scalar = 1e-5,
               atol: _Scalar = 1e-4, dt_min: _Scalar = 1e-5, options: Optional[Dict[str, Any]] = None,
               names: Optional[Dict[str, str]] = None, logqp: bool = False, extra: bool = False,
               extra_solver_state: Optional[_Tensors] = None, *, strategy: str = "unbiased", num_samples: int = 1,
               error_weight: float = 1.0, stiffness_weight: float = 0.0,
               generator: Optional[torch.Generator] = None, reg_batch_size: Optional[int] = None,
               return_stats: bool = False,
               **unused_kwargs: Any) -> Tuple[Any, ...]:
    """Integrate an SDE like ``torchsde.sdeint`` and return a local regularization term.

    The solve is torchsde's, unchanged: with the same Brownian motion ``bm``, the outputs are
    bit-identical to ``torchsde.sdeint`` with the same arguments. While it runs, the solver's
    accepted steps are observed; afterwards, per sample, one window [t_s, t_s + dt_s] is stepped
    over again from a recorded, detached state, with autograd on, by step doubling as torchsde's
    adaptive stepping does it (one step of dt_s against two of dt_s / 2, on the Brownian increments
    ``bm`` gives for those intervals), and

        reg = mean over samples of ( error_weight * E * |dt_s| + stiffness_weight * S )

    where E = RMS((y_full - y_half) / (atol + rtol * max(|y_full|, |y_half|))) is exactly the number
    torchsde's step controller compares to 1 (same rtol, atol, clamping and norm; with ``logqp`` the
    log-ratio channel is part of the state, as it is for the controller), and
    S = |dt_s| * ||f(t_s + dt_s, y_full) - f(t_s + dt_s, y_half)|| / ||y_full - y_half|| estimates
    the drift's Lipschitz constant (2 drift evaluations; the diffusion does not enter it). The
    gradient of ``reg`` reaches the SDE's parameters through this window only. E measures how hard
    the dynamics are for fixed-step solves too (``adaptive=False``), where nothing controls it.

    Where the window comes from (``strategy``):
        ``"unbiased"``: t_s uniform on [ts[0], ts[-1]]; dt_s the size of the accepted step
        [t_k, t_k+1] that contains t_s; y_s (and the extra state of solvers that keep one) from one
        step of the same method from t_k to t_s, on the Brownian increment ``bm`` gives over
        [t_k, t_s]. The window is moved back to end at ts[-1] if it would pass it, as ``bm`` may
        end there.
        ``"biased"``: a uniformly chosen accepted step, redone on the increments the solve used;
        with ``adaptive=True`` its E is the very value the controller accepted the step with.
        ``"global"``: the sum over all accepted steps (the 2021 baseline), backpropagated through
        the solve; with ``adaptive=True`` it reuses the controller's own doubled steps (no extra
        evaluations for E); without, each step is doubled after the solve.
        ``"none"``: the plain solve; ``reg`` is zero and nothing extra is evaluated.

    The Brownian motion: after the solve the regularization queries ``bm`` over [t_k, t_s] and the
    window's halves. A ``BrownianInterval`` draws values at new query times in the order the
    queries come, so a later solve on the same ``bm`` that queries times the first did not (notably
    ``sdeint_adjoint_reg``'s backward pass, whose times differ from the forward grid in the last bits
    unless ``dt`` and ``ts`` are exact in binary, and whose adaptive steps are its own) gets
    its increments there from a path refined at a few more points: an equally exact Brownian path,
    but not bit for bit what a run without regularization would draw. ``BrownianTree`` and
    ``BrownianInterval(..., halfway_tree=True)`` do not depend on query order; with them the
    adjoint's gradients are bit-identical too.

    Args:
        sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp, extra,
            extra_solver_state: exactly as in ``torchsde.sdeint``, with the same defaults (the
            method depends on the SDE's type and noise type; ``bm`` defaults to a
            ``BrownianInterval``).
        strategy: ``"unbiased"``, ``"biased"``, ``"global"`` or ``"none"``, see above.
        num_samples: number of independent samples (drawn with replacement) for the local strategies,
            1 to 1024 (each is one extra solver step, taken one after another). Any integer: a
            Python or numpy int, or a 0-d integer tensor (as for ``reg_batch_size``); not a bool.
        error_weight: weight of ``E * |dt_s|``, a float >= 0. Any real number: numpy scalars and
            0-d tensors (without grad) too, as for ``stiffness_weight``; not a bool.
        stiffness_weight: weight of ``S``, a float >= 0; when 0, S is not computed.
        generator: ``torch.Generator`` for the sampling. None (default): the package's private CPU
            generator, never torch's global random stream (see ``generator`` of :func:`odeint_reg`).
        reg_batch_size: None (default): the window runs on the whole batch. An int b <= the batch
            size B (the first dimension of ``y0``): each sample's window runs on b rows of the
            sampled state drawn from ``generator`` uniformly without replacement (with those rows'
            Brownian increments and extra solver state; listed in ``stats.reg_rows``), at about
            b / B of its cost; the solve is unchanged. E is then the RMS over those rows: its
            square, the mean of squares over b random rows, is an unbiased estimate of the
            batch's mean square, and E (a concave function of it) is biased slightly low by
            Jensen's inequality, the less the larger b. This requires that the drift and diffusion
            treat rows independently (no BatchNorm or other statistics over the batch). ``b = B``
            is the whole batch (nothing drawn); with None nothing extra is drawn from ``generator``.
        return_stats: also return a :class:`LocalRegStats`. Drift evaluations are counted in
            ``nfe_forward``, ``nfe_reg``, ``nfe_backward``, diffusion evaluations in
            ``nfe_diffusion_forward``, ``nfe_diffusion_reg``, ``nfe_diffusion_backward``: one per call
            of ``f`` or ``h`` (drift), of ``g`` or ``g_prod`` (diffusion), and of ``f_and_g`` or
            ``f_and_g_prod`` (both). torchsde's shape checks before the solve count as forward.

    Returns:
        What ``torchsde.sdeint`` returns, with ``reg`` appended: ``(ys, reg)``; with ``logqp=True``
        ``(ys, log_ratio, reg)``; with ``extra=True`` the extra solver state before ``reg``. With
        ``return_stats=True`` a :class:`LocalRegStats` comes last. ``reg`` is a scalar tensor of
        ``ys``'s dtype and device (zero when the solve took no step). Under ``torch.no_grad()``
        or ``torch.inference_mode()`` (evaluation; also with ``torch.enable_grad()`` inside it) no
        regularization step is taken: the plain solve runs at no extra cost, ``reg`` is zero and
        ``stats.skipped`` is True. A ``y0`` with no elements (an empty batch) has nothing to
        regularize: the plain solve runs and ``reg`` is a zero that adds nothing to any gradient.

    Raises:
        ValueError: unknown ``strategy``, ``num_samples`` outside [1, 1024], negative or non-finite
            weights, ``reg_batch_size`` below 1 or above the batch size or with ``strategy="global"``,
            and everything torchsde rejects (unknown or incompatible ``method``, bad shapes,
            ``ts`` not strictly increasing, arguments that require grad, ...).
        TypeError: our keyword arguments of the wrong type (``num_samples`` or ``reg_batch_size`` not an
            integer, weights not real numbers, booleans, tensors that require grad); a complex ``y0``
            (the error norms are defined for real states; ``strategy="none"`` passes it to torchsde
            untouched).
        FloatingPointError: if ``reg`` is not finite; the message says whether ``y0``, the solve's
            own states or only the regularization step were not finite.

    Unknown keyword arguments are warned about and ignored, as ``torchsde.sdeint`` does.
    """
    misc.handle_unused_kwargs(unused_kwargs, msg="`sdeint`")   # warns and runs, as torchsde does
    return _run(False, sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp, extra,
                extra_solver_state, strategy, num_samples, error_weight, stiffness_weight, generator, reg_batch_size,
                return_stats, {})


@overload
def sdeint_adjoint_reg(sde: nn.Module, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = ...,
                       method: Optional[str] = ..., adjoint_method: Optional[str] = ..., dt: _Scalar = ...,
                       adaptive: bool = ..., adjoint_adaptive: bool = ..., rtol: _Scalar = ...,
                       adjoint_rtol: _Scalar = ..., atol: _Scalar = ..., adjoint_atol: _Scalar = ...,
                       dt_min: _Scalar = ..., options: Optional[Dict[str, Any]] = ...,
                       adjoint_options: Optional[Dict[str, Any]] = ...,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = ...,
                       names: Optional[Dict[str, str]] = ..., logqp: Literal[False] = ...,
                       extra: Literal[False] = ..., extra_solver_state: Optional[_Tensors] = ..., *,
                       strategy: Strategy = ..., num_samples: int = ..., error_weight: float = ...,
                       stiffness_weight: float = ..., generator: Optional[torch.Generator] = ...,
                       reg_batch_size: Optional[int] = ...,
                       return_stats: Literal[False] = ...) -> Tuple[torch.Tensor, torch.Tensor]: ...
@overload
def sdeint_adjoint_reg(sde: nn.Module, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = ...,
                       method: Optional[str] = ..., adjoint_method: Optional[str] = ..., dt: _Scalar = ...,
                       adaptive: bool = ..., adjoint_adaptive: bool = ..., rtol: _Scalar = ...,
                       adjoint_rtol: _Scalar = ..., atol: _Scalar = ..., adjoint_atol: _Scalar = ...,
                       dt_min: _Scalar = ..., options: Optional[Dict[str, Any]] = ...,
                       adjoint_options: Optional[Dict[str, Any]] = ...,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = ...,
                       names: Optional[Dict[str, str]] = ..., logqp: Literal[False] = ...,
                       extra: Literal[False] = ..., extra_solver_state: Optional[_Tensors] = ..., *,
                       strategy: Strategy = ..., num_samples: int = ..., error_weight: float = ...,
                       stiffness_weight: float = ..., generator: Optional[torch.Generator] = ...,
                       reg_batch_size: Optional[int] = ...,
                       return_stats: Literal[True]) -> Tuple[torch.Tensor, torch.Tensor, LocalRegStats]: ...
@overload
def sdeint_adjoint_reg(sde: nn.Module, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = ...,
                       method: Optional[str] = ..., adjoint_method: Optional[str] = ..., dt: _Scalar = ...,
                       adaptive: bool = ..., adjoint_adaptive: bool = ..., rtol: _Scalar = ...,
                       adjoint_rtol: _Scalar = ..., atol: _Scalar = ..., adjoint_atol: _Scalar = ...,
                       dt_min: _Scalar = ..., options: Optional[Dict[str, Any]] = ...,
                       adjoint_options: Optional[Dict[str, Any]] = ...,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = ...,
                       names: Optional[Dict[str, str]] = ..., logqp: Literal[True] = ...,
                       extra: Literal[False] = ..., extra_solver_state: Optional[_Tensors] = ..., *,
                       strategy: Strategy = ..., num_samples: int = ..., error_weight: float = ...,
                       stiffness_weight: float = ..., generator: Optional[torch.Generator] = ...,
                       reg_batch_size: Optional[int] = ...,
                       return_stats: Literal[False] = ...) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
@overload
def sdeint_adjoint_reg(sde: nn.Module, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = ...,
                       method: Optional[str] = ..., adjoint_method: Optional[str] = ..., dt: _Scalar = ...,
                       adaptive: bool = ..., adjoint_adaptive: bool = ..., rtol: _Scalar = ...,
                       adjoint_rtol: _Scalar = ..., atol: _Scalar = ..., adjoint_atol: _Scalar = ...,
                       dt_min: _Scalar = ..., options: Optional[Dict[str, Any]] = ...,
                       adjoint_options: Optional[Dict[str, Any]] = ...,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = ...,
                       names: Optional[Dict[str, str]] = ..., logqp: Literal[True] = ...,
                       extra: Literal[False] = ..., extra_solver_state: Optional[_Tensors] = ..., *,
                       strategy: Strategy = ..., num_samples: int = ..., error_weight: float = ...,
                       stiffness_weight: float = ..., generator: Optional[torch.Generator] = ...,
                       reg_batch_size: Optional[int] = ...,
                       return_stats: Literal[True]
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, LocalRegStats]: ...
@overload
def sdeint_adjoint_reg(sde: nn.Module, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = ...,
                       method: Optional[str] = ..., adjoint_method: Optional[str] = ..., dt: _Scalar = ...,
                       adaptive: bool = ..., adjoint_adaptive: bool = ..., rtol: _Scalar = ...,
                       adjoint_rtol: _Scalar = ..., atol: _Scalar = ..., adjoint_atol: _Scalar = ...,
                       dt_min: _Scalar = ..., options: Optional[Dict[str, Any]] = ...,
                       adjoint_options: Optional[Dict[str, Any]] = ...,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = ...,
                       names: Optional[Dict[str, str]] = ..., logqp: bool = ..., extra: bool = ...,
                       extra_solver_state: Optional[_Tensors] = ..., *, strategy: Strategy = ...,
                       num_samples: int = ..., error_weight: float = ..., stiffness_weight: float = ...,
                       generator: Optional[torch.Generator] = ..., reg_batch_size: Optional[int] = ...,
                       return_stats: bool = ...) -> Tuple[Any, ...]: ...
def sdeint_adjoint_reg(sde: nn.Module, y0: torch.Tensor, ts: _Vector, bm: Optional[BaseBrownian] = None,
                       method: Optional[str] = None, adjoint_method: Optional[str] = None, dt: _Scalar = 1e-3,
                       adaptive: bool = False, adjoint_adaptive: bool = False, rtol: _Scalar = 1e-5,
                       adjoint_rtol: _Scalar = 1e-5, atol: _Scalar = 1e-4, adjoint_atol: _Scalar = 1e-4,
                       dt_min: _Scalar = 1e-5, options: Optional[Dict[str, Any]] = None,
                       adjoint_options: Optional[Dict[str, Any]] = None,
                       adjoint_params: Optional[Iterable[torch.Tensor]] = None,
                       names: Optional[Dict[str, str]] = None, logqp: bool = False, extra: bool = False,
                       extra_solver_state: Optional[_Tensors] = None, *, strategy: str = "unbiased",
                       num_samples: int = 1, error_weight: float = 1.0, stiffness_weight: float = 0.0,
                       generator: Optional[torch.Generator] = None, reg_batch_size: Optional[int] = None,
               return_stats: bool = False,
                       **unused_kwargs: Any) -> Tuple[Any, ...]:
    """``sdeint_reg`` with gradients of the outputs by ``torchsde.sdeint_adjoint``.

    The forward solve and the backward (adjoint) solve are torchsde's, untouched: the outputs are
    bit-identical to ``torchsde.sdeint_adjoint`` with the same arguments and Brownian motion, and
    their gradients come from torchsde's adjoint with ``adjoint_method``, ``adjoint_adaptive``,
    ``adjoint_rtol``, ``adjoint_atol``, ``adjoint_options`` and ``adjoint_params`` exactly as
    documented there (see :func:`sdeint_reg` on the Brownian motion the backward pass sees).
    ``reg`` is computed as in :func:`sdeint_reg` from the forward solve; it does not depend on the
    adjoint settings, and for the same ``generator`` state and Brownian path it is identical to
    :func:`sdeint_reg`'s, gradient included. ``stats.nfe_backward`` and
    ``stats.nfe_diffusion_backward`` count the evaluations of the adjoint solve (read them after
    ``backward()``).

    One difference, for ``nn.DataParallel``: without ``adjoint_params`` the parameters are found on
    ``sde`` as ``torchdiffeq.odeint_adjoint`` finds them. For a plain module that is torchsde's
    default (``sde``'s parameters, in the same order); a DataParallel replica holds its parameters
    as plain tensor attributes, which torchsde's default does not see (with ``torchsde.sdeint_adjoint``
    its weights get no gradient), and here they get their gradients.

    Args:
        See :func:`sdeint_reg` and ``torchsde.sdeint_adjoint``. ``strategy="global"`` is not
        available here.

    Returns:
        As :func:`sdeint_reg`.

    Raises:
        ValueError: as :func:`sdeint_reg`; also for ``strategy="global"``, and as torchsde when
            ``sde`` is not an ``nn.Module`` and ``adjoint_params`` is not given.
        TypeError: our keyword arguments of the wrong type.
        FloatingPointError: if ``reg`` is not finite.
    """
    adjoint_args = dict(adjoint_method=adjoint_method, adjoint_adaptive=adjoint_adaptive, adjoint_rtol=adjoint_rtol,
                        adjoint_atol=adjoint_atol, adjoint_options=adjoint_options, adjoint_params=adjoint_params)
    misc.handle_unused_kwargs(unused_kwargs, msg="`sdeint_adjoint`")
    return _run(True, sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, logqp, extra,
                extra_solver_state, strategy, num_samples, error_weight, stiffness_weight, generator, reg_batch_size,
                return_stats, adjoint_args)
