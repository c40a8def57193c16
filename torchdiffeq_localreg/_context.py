"""One-import mode: upstream's solver signatures, regularized inside a ``regularize()`` block.

Models call ``odeint`` deep inside ``forward``; threading ``reg`` out of every call by hand is not
"add one import". Here ``odeint``, ``odeint_adjoint``, ``sdeint`` and ``sdeint_adjoint`` have
exactly upstream's signatures and return values. Outside a :class:`regularize` block they *are*
upstream's solve (a direct call, nothing recorded). Inside, each solve runs through the matching
``*_reg`` function and adds its ``reg`` and stats to the innermost active block.

The active block lives in a :class:`contextvars.ContextVar`, so blocks nest (a solve counts in
the innermost block only), threads start outside any block, and asyncio tasks see the block that
was active when they were created.

Code that calls ``torchdiffeq.odeint`` & co. by attribute (``torchcde.cdeint``) is reached by
:class:`intercept` (or ``regularize(intercept=True)``), which routes those module attributes to the
functions here while a block is open (the mechanism is in ``_intercept``).
"""
import contextvars
import warnings
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Tuple, Union

import torch
import torchdiffeq
import torchsde

from ._api_ode import odeint_adjoint_reg, odeint_reg
from ._api_sde import sdeint_adjoint_reg, sdeint_reg
from ._intercept import Route, Router, routed_function
from ._recorder import recording_gradients
from ._stats import LocalRegStats
from ._upstream import sde_misc as _sde_misc
from ._upstream import upstream_odeint, upstream_odeint_adjoint, upstream_sdeint, upstream_sdeint_adjoint
from ._validate import Strategy, check_reg_args, check_reg_batch_size_value
from ._warnings import user_stacklevel

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

    With ``intercept=True`` the solves of code that calls ``torchdiffeq.odeint``,
    ``torchdiffeq.odeint_adjoint``, ``torchsde.sdeint`` or ``torchsde.sdeint_adjoint`` by attribute
    (``torchcde.cdeint`` does) are regularized too; see :class:`intercept`.

    Args (keyword-only; the same meanings as in :func:`odeint_reg`):
        strategy: ``"unbiased"`` (default), ``"biased"``, ``"global"`` (direct solves only) or
            ``"none"``.
        num_samples, error_weight, stiffness_weight, reg_batch_size: as in :func:`odeint_reg`
            (``reg_batch_size`` is checked against each solve's batch when it runs). Numbers may be
            numpy scalars or 0-d tensors; booleans are refused.
        generator: ``torch.Generator`` for the sampling. When None, each solve draws from the
            package's private generator, as :func:`odeint_reg` does without one (seeded from
            ``torch.initial_seed()``, re-seeded when that changes): the block never draws from
            torch's global random stream, so swapping in the one-import functions leaves the rest
            of a program's random draws unchanged, and a program that calls ``torch.manual_seed``
            draws the same samples on every run.
        when_no_grad: what a solve does while gradients are off (``torch.no_grad()``,
            ``torch.inference_mode()``, evaluation): ``"skip"`` (default) runs the plain upstream
            solve, with no regularization step and nothing recorded; ``"regularize"`` regularizes
            it anyway under ``torch.no_grad()``, with gradients switched on for that solve. Under
            ``torch.inference_mode()`` nothing can record a gradient, so there ``"regularize"``
            skips as ``"skip"`` does and warns once per block.
        intercept: False (default): only the package's one-import functions are regularized.
            True: for the duration of the block, ``torchdiffeq.odeint``, ``torchdiffeq.odeint_adjoint``,
            ``torchsde.sdeint`` and ``torchsde.sdeint_adjoint`` route through them as well (exactly
            as inside ``with intercept():``), in this thread (or task) only. It cannot reach names
            bound before the call by ``from torchdiffeq import odeint``.

    Attributes:
        reg: the sum of the ``reg`` of every regularized solve in the block, a scalar tensor
            (``torch.zeros(())`` when none ran).
        stats: the :class:`LocalRegStats` of each regularized solve, in call order.
        skipped: number of solves run plainly because gradients were off.
        nfe_forward, nfe_reg, nfe_backward: sums over :attr:`stats` (read ``nfe_backward`` after
            ``loss.backward()``).

    A weight control takes the list of stats: ``budget.update(r.stats)``.

    Warns:
        UserWarning: when a block entered with gradients on ends, without an exception, having seen
            no solve at all (none here, none skipped, none in a nested block): ``r.reg`` is then 0
            with no gradient, almost always because the solves bypassed the package (upstream
            called by attribute, as ``torchcde`` does, or imported with ``from torchdiffeq import
            odeint``) or ran in other threads (``nn.DataParallel`` on several GPUs runs each
            replica in a thread of its own, which starts outside any block). The message names the
            fix.

    Raises:
        ValueError, TypeError: a bad argument, when the block is created (nothing has changed yet).
        RuntimeError: entering a block that is already active.
    """

    def __init__(self, *, strategy: Strategy = "unbiased", num_samples: int = 1, error_weight: float = 1.0,
                 stiffness_weight: float = 0.0, generator: Optional[torch.Generator] = None,
                 when_no_grad: Literal["skip", "regularize"] = "skip", reg_batch_size: Optional[int] = None,
                 intercept: bool = False) -> None:
        num_samples, error_weight, stiffness_weight = check_reg_args(strategy, num_samples, error_weight,
                                                                     stiffness_weight, generator, False, False)
        self.reg_batch_size = check_reg_batch_size_value(reg_batch_size, strategy)
        if when_no_grad not in ("skip", "regularize"):
            raise ValueError(f"when_no_grad must be one of ('skip', 'regularize'), got {when_no_grad!r}.")
        if not isinstance(intercept, bool):
            raise TypeError(f"intercept must be a bool (True or False), got {intercept!r}.")
        self.strategy, self.num_samples = strategy, num_samples
        self.error_weight, self.stiffness_weight = error_weight, stiffness_weight
        self.generator = generator
        self.when_no_grad = when_no_grad
        self.intercept = intercept
        self.stats: List[LocalRegStats] = []
        self.skipped = 0
        self._regs: List[torch.Tensor] = []
        self._token: Optional[contextvars.Token] = None
        self._routing: Optional[contextvars.Token] = None
        self._parent: Optional[regularize] = None
        self._saw_solve = False
        self._grad_at_enter = False
        self._warned_inference = False

    def __enter__(self) -> "regularize":
        if self._token is not None:
            raise RuntimeError("this regularize() block is already active; create a new one to nest.")
        if self.intercept:
            self._routing = _ROUTER.open()
        self._parent = _ACTIVE.get()
        self._saw_solve = False
        self._grad_at_enter = recording_gradients()
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        if self._token is None:
            return
        token, self._token = self._token, None
        routing, self._routing = self._routing, None
        try:
            _ACTIVE.reset(token)
        finally:   # the attributes are restored even if the block is closed from another context
            if routing is not None:
                _ROUTER.close(routing)
        if exc_type is None and self._grad_at_enter and not self._saw_solve:
            warnings.warn(self._no_solve_message(), UserWarning, stacklevel=user_stacklevel())

    def _no_solve_message(self) -> str:
        head = ("regularize() block ended without seeing a solve: r.reg is 0 and has no gradient. Only solves through "
                "torchdiffeq_localreg.odeint, odeint_adjoint, sdeint or sdeint_adjoint, in this thread, count")
        tail = (" Solves in other threads are not this block's (nn.DataParallel on several GPUs runs each replica in "
                "a thread of its own: return reg from forward with odeint_adjoint_reg & co. there). odeint_reg and "
                "the other *_reg functions return their reg themselves and are not counted.")
        if self.intercept:
            return (f"{head}, and with intercept=True also torchdiffeq.odeint & co. called by attribute; "
                    f"names bound before the call by `from torchdiffeq import odeint` (or `from torchsde import "
                    f"sdeint`) keep upstream's function: import them from torchdiffeq_localreg instead.{tail}")
        return (f"{head}. Code that calls torchdiffeq.odeint / torchsde.sdeint by attribute (torchcde.cdeint does) "
                f"bypasses the block: pass regularize(..., intercept=True) to route those calls through it. "
                f"Code that does `from torchdiffeq import odeint` should import odeint from torchdiffeq_localreg "
                f"instead.{tail}")

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

    def _skip_under_inference_mode(self) -> bool:
        """Whether a solve must run plainly although ``when_no_grad="regularize"``: inference mode
        records no gradient whatever grad mode says. Warns the first time in this block."""
        if not torch.is_inference_mode_enabled():
            return False
        if not self._warned_inference:
            self._warned_inference = True
            warnings.warn("regularize(when_no_grad='regularize') under torch.inference_mode(): no gradient can be "
                          "recorded there, so the solve runs plainly, as with when_no_grad='skip' (counted in "
                          "r.skipped). Use torch.no_grad() to regularize without gradients elsewhere.",
                          UserWarning, stacklevel=user_stacklevel())
        return True

    def __repr__(self) -> str:
        return (f"regularize(strategy={self.strategy!r}, intercept={self.intercept}, solves={len(self.stats)}, "
                f"skipped={self.skipped})")


def _active() -> Optional[regularize]:
    """The innermost active block that should regularize a solve now, or None for a plain solve.
    The block and the blocks around it note that a solve ran."""
    block = _ACTIVE.get()
    if block is None:
        return None
    outer: Optional[regularize] = block
    while outer is not None:
        outer._saw_solve = True
        outer = outer._parent
    if not recording_gradients() and (block.when_no_grad == "skip" or block._skip_under_inference_mode()):
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
        return upstream_odeint(func, y0, t, **kwargs)
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
        return upstream_odeint_adjoint(func, y0, t, **kwargs)
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
        return upstream_sdeint(sde, y0, ts, **kwargs, **unused_kwargs)
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
        return upstream_sdeint_adjoint(sde, y0, ts, **kwargs, **unused_kwargs)
    _sde_misc.handle_unused_kwargs(unused_kwargs, msg="`sdeint_adjoint`")
    with torch.enable_grad():  # a no-op, unless when_no_grad='regularize' asked for it under no_grad
        return _unwrap(block._record(sdeint_adjoint_reg(sde, y0, ts, **kwargs, **block._kwargs())))



# The module attributes intercept() routes, each to the one-import function above with its signature.
_ROUTER = Router([Route(module, name, original, routed_function(original, one_import))
                  for module, name, original, one_import in (
                      (torchdiffeq, "odeint", upstream_odeint, odeint),
                      (torchdiffeq, "odeint_adjoint", upstream_odeint_adjoint, odeint_adjoint),
                      (torchsde, "sdeint", upstream_sdeint, sdeint),
                      (torchsde, "sdeint_adjoint", upstream_sdeint_adjoint, sdeint_adjoint))])


class intercept:
    """Route ``torchdiffeq.odeint``, ``torchdiffeq.odeint_adjoint``, ``torchsde.sdeint`` and
    ``torchsde.sdeint_adjoint`` through this package's one-import functions while the block is open,
    so that code which calls them by attribute (``torchcde.cdeint``, or user code written
    ``torchdiffeq.odeint(...)``) is regularized inside :class:`regularize` blocks without edits::

        import torchcde
        import torchdiffeq_localreg as localreg
        with localreg.intercept():                     # e.g. around the whole training loop
            for x, y in loader:
                with localreg.regularize() as r:
                    logits = model(x)                  # calls torchcde.cdeint -> torchdiffeq.odeint
                loss = criterion(logits, y) + lam * r.reg

    ``with regularize(intercept=True):`` is the same as a :class:`regularize` block inside an
    ``intercept()`` block. A routed call outside any :class:`regularize` block is upstream's solve
    (a direct call, bit-identical), so the routing changes no result there.

    What it does and guarantees:
        - Nothing at import: the module attributes change only while at least one block is open,
          and are upstream's functions again when the last one, in any thread, closes. Blocks nest
          and may be open in several threads at once; upstream's functions are put back exactly
          once, by the last block to close.
        - Only the calls made in this thread (or asyncio task) inside the block are routed: a solve
          in another thread, while a block is open here, calls upstream's own function and gets
          upstream's result (even inside that thread's own :class:`regularize` block, unless that
          block intercepts too).
        - It replaces an attribute only while it holds upstream's own function, and restores only
          what it replaced: an attribute that other code replaced before the first block opened,
          or while blocks were open, is left as that code set it (with a ``RuntimeWarning``).

    What it cannot reach:
        - Names bound before the call by ``from torchdiffeq import odeint`` (or
          ``from torchsde import sdeint``): they hold upstream's function itself, not the module
          attribute. Import them from ``torchdiffeq_localreg`` instead (same signature).
        - ``torchdiffeq.odeint_event``, whose default ``odeint_interface`` was bound when
          torchdiffeq was imported: pass ``odeint_interface=torchdiffeq_localreg.odeint``.
        - Calls in other threads, and in processes (DataLoader workers, torchrun ranks) that do not
          open a block themselves.

    Raises:
        RuntimeError: entering a block that is already active.
    """

    def __init__(self) -> None:
        self._token: Optional[contextvars.Token] = None

    def __enter__(self) -> "intercept":
        if self._token is not None:
            raise RuntimeError("this intercept() block is already active; create a new one to nest.")
        self._token = _ROUTER.open()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._token is not None:
            token, self._token = self._token, None
            _ROUTER.close(token)

    def __repr__(self) -> str:
        return f"intercept(active={self._token is not None})"
