"""One-import mode: upstream's solver signatures, regularized inside a ``regularize()`` block.

Models call ``odeint`` deep inside ``forward``; threading ``reg`` out of every call by hand is not
"add one import". Here ``odeint``, ``odeint_adjoint``, ``sdeint`` and ``sdeint_adjoint`` have
exactly upstream's signatures and return values. Outside a :class:`regularize` block they *are*
upstream's solve (a direct call, nothing recorded). Inside, each solve runs through the matching
``*_reg`` function and adds its ``reg`` and stats to the innermost active block.

The active block lives in a :class:`contextvars.ContextVar`, so blocks nest (a solve counts in
the innermost block only), threads start outside any block, and asyncio tasks see the block that
was active when they were created.
"""
import contextvars
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Tuple, Union

import torch
import torchdiffeq
import torchsde

from ._api_ode import odeint_adjoint_reg, odeint_reg
from ._api_sde import sdeint_adjoint_reg, sdeint_reg
from ._stats import LocalRegStats
from ._upstream import sde_misc as _sde_misc
from ._validate import Strategy, check_reg_args, check_reg_batch_size_value

TensorOrTensors = Union[torch.Tensor, Tuple[torch.Tensor, ...]]

_ACTIVE: "contextvars.ContextVar[Optional[regularize]]" = contextvars.ContextVar("torchdiffeq_localreg_active",
                                                                                   default=None)


class regularize:
    """Regularize every ``torchdiffeq_localreg.odeint`` / ``odeint_adjoint`` / ``sdeint`` /
    ``sdeint_adjoint`` call made inside the ``with`` block, at any depth::

        import torchdiffeq_localreg as localreg
        with localreg.regularize() as r:
            logits = model(x)               # model code uses: from torchdiffeq_localreg import odeint
        loss = criterion(logits, y) + lam * r.reg

    Args (keyword-only; the same meanings as in :func:`odeint_reg`):
        strategy: ``"unbiased"`` (default), ``"biased"``, ``"global"`` (direct solves only) or
            ``"none"``.
        num_samples, error_weight, stiffness_weight, reg_batch_size: as in :func:`odeint_reg`
            (``reg_batch_size`` is checked against each solve's batch when it runs).
        generator: ``torch.Generator`` for the sampling. When None, each solve draws from the
            package's private generator, as :func:`odeint_reg` does without one (seeded from
            ``torch.initial_seed()``, re-seeded when that changes): the block never draws from
            torch's global random stream, so swapping in the one-import functions leaves the rest
            of a program's random draws unchanged, and a program that calls ``torch.manual_seed``
            draws the same samples on every run.
        when_no_grad: what a solve does while gradients are off (``torch.no_grad()``,
            ``torch.inference_mode()``, evaluation): ``"skip"`` (default) runs the plain upstream
            solve, with no regularization step and nothing recorded; ``"regularize"`` regularizes
            it anyway, with gradients switched on for that solve (not under inference mode).

    Attributes:
        reg: the sum of the ``reg`` of every regularized solve in the block, a scalar tensor
            (``torch.zeros(())`` when none ran).
        stats: the :class:`LocalRegStats` of each regularized solve, in call order.
        skipped: number of solves run plainly because gradients were off.
        nfe_forward, nfe_reg, nfe_backward: sums over :attr:`stats` (read ``nfe_backward`` after
            ``loss.backward()``).

    A weight control takes the list of stats: ``budget.update(r.stats)``.
    """

    def __init__(self, *, strategy: Strategy = "unbiased", num_samples: int = 1, error_weight: float = 1.0,
                 stiffness_weight: float = 0.0, generator: Optional[torch.Generator] = None,
                 when_no_grad: Literal["skip", "regularize"] = "skip", reg_batch_size: Optional[int] = None) -> None:
        check_reg_args(strategy, num_samples, error_weight, stiffness_weight, generator, False, False)
        check_reg_batch_size_value(reg_batch_size, strategy)
        self.reg_batch_size = reg_batch_size
        if when_no_grad not in ("skip", "regularize"):
            raise ValueError(f"when_no_grad must be one of ('skip', 'regularize'), got {when_no_grad!r}.")
        self.strategy, self.num_samples = strategy, num_samples
        self.error_weight, self.stiffness_weight = error_weight, stiffness_weight
        self.generator = generator
        self.when_no_grad = when_no_grad
        self.stats: List[LocalRegStats] = []
        self.skipped = 0
        self._regs: List[torch.Tensor] = []
        self._token: Optional[contextvars.Token] = None

    def __enter__(self) -> "regularize":
        if self._token is not None:
            raise RuntimeError("this regularize() block is already active; create a new one to nest.")
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None

    @property
    def reg(self) -> torch.Tensor:
        if not self._regs:
            return torch.zeros(())
        total = self._regs[0]
        for r in self._regs[1:]:
            total = total + r.to(total.device)
        return total

    @property
    def nfe_forward(self) -> int:
        return sum(s.nfe_forward for s in self.stats)

    @property
    def nfe_reg(self) -> int:
        return sum(s.nfe_reg for s in self.stats)

    @property
    def nfe_backward(self) -> int:
        return sum(s.nfe_backward for s in self.stats)

    def _kwargs(self) -> Dict[str, Any]:
        # strategy='global' with an adjoint call is refused by the *_reg function's own check.
        return dict(strategy=self.strategy, num_samples=self.num_samples, error_weight=self.error_weight,
                    stiffness_weight=self.stiffness_weight, generator=self.generator,
                    reg_batch_size=self.reg_batch_size, return_stats=True)

    def _record(self, out: Tuple[Any, ...]) -> Tuple[Any, ...]:
        """Keeps reg and stats (the last two entries of a ``*_reg`` result); returns the rest."""
        *rest, reg, stats = out
        self._regs.append(reg)
        self.stats.append(stats)
        return tuple(rest)

    def __repr__(self) -> str:
        return f"regularize(strategy={self.strategy!r}, solves={len(self.stats)}, skipped={self.skipped})"


def _active() -> Optional[regularize]:
    """The innermost active block that should regularize a solve now, or None for a plain solve."""
    block = _ACTIVE.get()
    if block is None:
        return None
    if not torch.is_grad_enabled() and block.when_no_grad == "skip":
        block.skipped += 1
        return None
    return block


def _unwrap(rest: Tuple[Any, ...]) -> Any:
    return rest[0] if len(rest) == 1 else rest


def odeint(func: Callable, y0: TensorOrTensors, t: torch.Tensor, *, rtol: Any = 1e-7, atol: Any = 1e-9,
           method: Optional[str] = None, options: Optional[Dict[str, Any]] = None,
           event_fn: Optional[Callable] = None) -> Any:
    """``torchdiffeq.odeint``, same signature and return value; regularized inside :class:`regularize`.

    Outside a block this is a direct call of ``torchdiffeq.odeint``. Inside, the solution is
    bit-identical to it and the block receives the solve's ``reg`` and stats.
    """
    block = _active()
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn)
    if block is None:
        return torchdiffeq.odeint(func, y0, t, **kwargs)
    with torch.enable_grad():  # a no-op, unless when_no_grad='regularize' asked for it under no_grad
        return _unwrap(block._record(odeint_reg(func, y0, t, **kwargs, **block._kwargs())))


def odeint_adjoint(func: Callable, y0: TensorOrTensors, t: torch.Tensor, *, rtol: Any = 1e-7, atol: Any = 1e-9,
                   method: Optional[str] = None, options: Optional[Dict[str, Any]] = None,
                   event_fn: Optional[Callable] = None, adjoint_rtol: Any = None, adjoint_atol: Any = None,
                   adjoint_method: Optional[str] = None, adjoint_options: Optional[Dict[str, Any]] = None,
                   adjoint_params: Optional[Iterable[torch.Tensor]] = None) -> Any:
    """``torchdiffeq.odeint_adjoint``, same signature and return value; regularized inside
    :class:`regularize` (through :func:`odeint_adjoint_reg`)."""
    block = _active()
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn, adjoint_rtol=adjoint_rtol,
                  adjoint_atol=adjoint_atol, adjoint_method=adjoint_method, adjoint_options=adjoint_options,
                  adjoint_params=adjoint_params)
    if block is None:
        return torchdiffeq.odeint_adjoint(func, y0, t, **kwargs)
    with torch.enable_grad():  # a no-op, unless when_no_grad='regularize' asked for it under no_grad
        return _unwrap(block._record(odeint_adjoint_reg(func, y0, t, **kwargs, **block._kwargs())))


def sdeint(sde: Any, y0: torch.Tensor, ts: Any, bm: Any = None, method: Optional[str] = None, dt: Any = 1e-3,
           adaptive: bool = False, rtol: Any = 1e-5, atol: Any = 1e-4, dt_min: Any = 1e-5,
           options: Optional[Dict[str, Any]] = None, names: Optional[Dict[str, str]] = None, logqp: bool = False,
           extra: bool = False, extra_solver_state: Any = None, **unused_kwargs: Any) -> Any:
    """``torchsde.sdeint``, same signature and return value; regularized inside :class:`regularize`
    (through :func:`sdeint_reg`). Unknown keywords warn and are ignored, with torchsde's warning."""
    block = _active()
    kwargs = dict(bm=bm, method=method, dt=dt, adaptive=adaptive, rtol=rtol, atol=atol, dt_min=dt_min, options=options,
                  names=names, logqp=logqp, extra=extra, extra_solver_state=extra_solver_state)
    if block is None:
        return torchsde.sdeint(sde, y0, ts, **kwargs, **unused_kwargs)
    _sde_misc.handle_unused_kwargs(unused_kwargs, msg="`sdeint`")
    with torch.enable_grad():  # a no-op, unless when_no_grad='regularize' asked for it under no_grad
        return _unwrap(block._record(sdeint_reg(sde, y0, ts, **kwargs, **block._kwargs())))


def sdeint_adjoint(sde: Any, y0: torch.Tensor, ts: Any, bm: Any = None, method: Optional[str] = None,
                   adjoint_method: Optional[str] = None, dt: Any = 1e-3, adaptive: bool = False,
                   adjoint_adaptive: bool = False, rtol: Any = 1e-5, adjoint_rtol: Any = 1e-5, atol: Any = 1e-4,
                   adjoint_atol: Any = 1e-4, dt_min: Any = 1e-5, options: Optional[Dict[str, Any]] = None,
                   adjoint_options: Optional[Dict[str, Any]] = None, adjoint_params: Any = None,
                   names: Optional[Dict[str, str]] = None, logqp: bool = False, extra: bool = False,
                   extra_solver_state: Any = None, **unused_kwargs: Any) -> Any:
    """``torchsde.sdeint_adjoint``, same signature and return value; regularized inside
    :class:`regularize` (through :func:`sdeint_adjoint_reg`)."""
    block = _active()
    kwargs = dict(bm=bm, method=method, adjoint_method=adjoint_method, dt=dt, adaptive=adaptive,
                  adjoint_adaptive=adjoint_adaptive, rtol=rtol, adjoint_rtol=adjoint_rtol, atol=atol,
                  adjoint_atol=adjoint_atol, dt_min=dt_min, options=options, adjoint_options=adjoint_options,
                  adjoint_params=adjoint_params, names=names, logqp=logqp, extra=extra,
                  extra_solver_state=extra_solver_state)
    if block is None:
        return torchsde.sdeint_adjoint(sde, y0, ts, **kwargs, **unused_kwargs)
    _sde_misc.handle_unused_kwargs(unused_kwargs, msg="`sdeint_adjoint`")
    with torch.enable_grad():  # a no-op, unless when_no_grad='regularize' asked for it under no_grad
        return _unwrap(block._record(sdeint_adjoint_reg(sde, y0, ts, **kwargs, **block._kwargs())))

