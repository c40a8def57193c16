"""Weight control: the regularization weight set for you, and the machinery the controls share.

A constant weight ``lam`` in ``loss = task_loss + lam * reg`` means something different on every
problem, tolerance and batch size: too small and nothing changes, too large and accuracy is lost.
:class:`NFEBudget` replaces it by a number a user knows, the evaluations of ``func`` per solve
that the trained model should need, and adjusts ``lam`` by dual ascent on the measured NFE;
:class:`~torchdiffeq_localreg.AutoWeight` (``_auto_weight.py``) needs no number at all. Both
combine the two gradients in :meth:`_Control.backward` and read the solves' statistics in
:meth:`_Control._forward_nfe`.
"""
import math
import warnings
from numbers import Integral, Real
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Sequence, Set, Union, get_args

import torch

from ._stats import LocalRegStats
from ._warnings import user_stacklevel

# What ``update`` takes: one solve's stats, or a sequence of them (``regularize().stats``). A tensor
# (``reg`` passed by mistake) is rejected by the type checker and, at run time, with our own message.
StatsLike = Union[LocalRegStats, Sequence[LocalRegStats]]
Combine = Literal["project", "sum"]
COMBINE_MODES = get_args(Combine)
# Bounds that keep a restored state usable: bias corrections take ``beta ** steps`` (a float power
# of an int, which overflows past about 2**1023 steps), and NFE averages are compared and added.
MAX_STEPS = 2 ** 53
MAX_NFE = 1e15


def _as_number(name: str, value: Any, kind: type) -> Any:
    """``value`` as a plain Python number of ``kind`` (``Integral`` or ``Real``): numpy scalars and
    0-d tensors are accepted as users pass them, booleans are not; a TypeError names ``name``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dim() == 0 \
            and value.dtype is not torch.bool and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if kind is Integral else "a real number"
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}.")
    return int(value) if isinstance(value, Integral) and kind is Integral else value


def _check_real(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = True,
                high_open: bool = True) -> float:
    """``value`` as a float inside the interval, or a TypeError/ValueError naming ``name``."""
    value = _as_number(name, value, Real)
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large, got {value!r}.") from None
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (math.isfinite(value) and above and below):
        raise ValueError(f"{name} must be a finite number in {left}{low:g}, {high:g}{right}, got {value!r}.")
    return value


def _check_int(name: str, value: Any, *, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or a TypeError/ValueError naming ``name``."""
    value = _as_number(name, value, Integral)
    if not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}.")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}.")
    return value


def _norm_sq(grads: Iterable[Optional[torch.Tensor]], like: torch.Tensor) -> torch.Tensor:
    return sum(((g * g).sum() for g in grads if g is not None), torch.zeros((), dtype=like.dtype, device=like.device))


def _dot(xs: Sequence[Optional[torch.Tensor]], ys: Sequence[Optional[torch.Tensor]]) -> float:
    """The inner product of two gradients given per parameter (None: zero there), as a float."""
    terms = [(x * y).sum() for x, y in zip(xs, ys) if x is not None and y is not None]
    return float(torch.stack([t.to(terms[0]) for t in terms]).sum()) if terms else 0.0  # one sync, not one per tensor


def _project_cone(pull: Sequence[Optional[torch.Tensor]],
                  directions: Sequence[Sequence[Optional[torch.Tensor]]]) -> List[Optional[torch.Tensor]]:
    r"""The point nearest to ``pull`` of the cone :math:`\{d : d \cdot a \ge 0\ \forall a\}` of one or
    two ``directions``: ``pull`` itself when it opposes none of them, else ``pull + sum_i mu_i a_i``
    with the multipliers :math:`\mu \ge 0` of the active constraints (KKT, enumerated: at most three
    sets for two directions). With one direction this is PCGrad's projection. The result may be
    nonzero where ``pull`` is None (a parameter only the task reaches)."""
    dirs = [a for a in directions if _dot(a, a) > 0]
    along = [_dot(pull, a) for a in dirs]
    if all(x >= 0 for x in along):
        return list(pull)
    gram = [[_dot(a, b) for b in dirs] for a in dirs]
    best: Optional[List[float]] = None
    subsets = [[0], [1], [0, 1]] if len(dirs) == 2 else [[0]]
    for active in subsets:
        if len(active) == 1:
            i = active[0]
            mu = [0.0] * len(dirs)
            mu[i] = -along[i] / gram[i][i]
        else:
            det = gram[0][0] * gram[1][1] - gram[0][1] ** 2
            if det <= 1e-12 * gram[0][0] * gram[1][1]:
                continue  # (nearly) parallel directions: a single constraint covers both
            mu = [(-along[0] * gram[1][1] + along[1] * gram[0][1]) / det,
                  (-along[1] * gram[0][0] + along[0] * gram[0][1]) / det]
        if min(mu) < 0:
            continue
        if any(along[k] + sum(mu[i] * gram[i][k] for i in range(len(dirs))) < -1e-9 * math.sqrt(gram[k][k])
               for k in range(len(dirs))):
            continue
        cost = sum(mu[i] * mu[j] * gram[i][j] for i in range(len(dirs)) for j in range(len(dirs)))
        if best is None or cost < best[0]:
            best = [cost, *mu]
    if best is None:  # cannot happen for a nonempty set of directions; keep the pull as it is
        return list(pull)
    mus = best[1:]
    out: List[Optional[torch.Tensor]] = []
    for k, p in enumerate(pull):
        parts: List[torch.Tensor] = [] if p is None else [p]
        for coef, a in zip(mus, dirs):
            g = a[k]
            if coef != 0.0 and g is not None:
                parts.append(coef * g)
        out.append(None if not parts else sum(parts[1:], parts[0]))
    return out


class _Control:
    """What the weight controls share: checking ``backward``'s and ``update``'s input, the backward
    pass that keeps the task's and the regularization's gradients apart, and warnings given once.

    A subclass sets :attr:`combine` and implements :attr:`weight`; it may override
    :meth:`_scale_reg` to choose, from the two gradients, the weight of ``reg`` in this step.
    """

    combine: Combine = "project"

    def __init__(self) -> None:
        self._warned: Set[str] = set()

    @property
    def weight(self) -> float:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _check_state_keys(self, state_dict: Any) -> None:
        """A dict with exactly the keys of :meth:`state_dict`, or a TypeError/ValueError."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}.")
        expected = set(self.state_dict())
        if set(state_dict) != expected:
            missing, unknown = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
            raise ValueError(f"state_dict has the wrong keys: missing {missing}, unexpected {unknown}.")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"{type(self).__name__}: {message}", RuntimeWarning, stacklevel=user_stacklevel())

    @staticmethod
    def _check_backward_args(task_loss: Any, reg: Any, parameters: Any) -> List[torch.Tensor]:
        """The trainable tensors of ``parameters``; raises before any ``.grad`` is touched."""
        for name, value in (("task_loss", task_loss), ("reg", reg)):
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise TypeError(f"{name} must be a scalar tensor, got "
                                f"{type(value).__name__ if not isinstance(value, torch.Tensor) else tuple(value.shape)}.")
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
            raise TypeError(f"parameters must be an iterable of tensors, e.g. model.parameters(), "
                            f"got {type(parameters).__name__}.")
        params = list(parameters)
        if not all(isinstance(q, torch.Tensor) for q in params):
            raise TypeError("parameters must be an iterable of tensors, e.g. model.parameters().")
        if not params:
            raise ValueError("parameters is empty: pass the tensors the optimizer steps, e.g. model.parameters() "
                             "called anew at each step (a generator made once is exhausted after its first use).")
        trainable = [q for q in params if q.requires_grad]
        if not trainable:
            raise ValueError(f"parameters has no tensor that requires grad (all {len(params)} are frozen): pass "
                             f"the tensors the optimizer steps.")
        return trainable

    def backward(self, task_loss: torch.Tensor, reg: torch.Tensor, parameters: Iterable[torch.Tensor]) -> None:
        r"""Accumulates into ``.grad`` the gradient of ``task_loss + weight * reg``, combined by ``combine``.

        Call it where you would call ``(task_loss + weight * reg).backward()``. The local
        regularizer is computed by one extra solver step from a recorded, detached state, so its
        graph is separate from the solve's and its gradient :math:`g_r` (of ``weight * reg``) comes
        apart from the task's :math:`g_t` for one cheap backward pass through that step. With
        ``combine="project"``, when the two conflict (:math:`g_t \cdot g_r < 0`, taken over all
        ``parameters`` as one vector), the component of :math:`g_r` along :math:`g_t` is removed
        (as in PCGrad, Yu et al. 2020):

        .. math::

            g = g_t + g_r - \min(0,\ g_t \cdot g_r)\, g_t / \lVert g_t \rVert^2,

        so to first order a step never makes the task loss worse for the sake of fewer
        evaluations: the model gets cheaper along the directions the task does not care about.
        ``combine="sum"`` is ``(task_loss + weight * reg).backward()``.

        Args:
            task_loss: the scalar loss of the task (everything but the regularization term).
            reg: the ``reg`` of this step's solve(s), a scalar (``odeint_reg``, ``regularize().reg``).
            parameters: the parameters the optimizer steps, e.g. ``model.parameters()``. With
                ``"project"`` the gradients of these are combined; other leaves of ``task_loss``'s
                graph get its gradient as with ``backward()``, but the regularization's gradient
                reaches only these.

        A ``reg`` without gradient (no solve was regularized, or it ran under ``torch.no_grad()``)
        gives ``task_loss.backward()``; a ``task_loss`` without gradient (a constant) gives the
        plain sum, as ``(task_loss + weight * reg).backward()`` would.

        Raises:
            TypeError: for a non-scalar or non-tensor loss, or ``parameters`` that are not tensors.
            ValueError: for an empty ``parameters`` (e.g. an exhausted ``model.parameters()``
                generator) or one whose tensors are all frozen. Both checks run before any
                ``.grad`` is touched.
            RuntimeError: ``combine="project"`` under ``torch.distributed`` with more than one
                process: each process would project against its own gradient; use ``"sum"``.
        """
        params = self._check_backward_args(task_loss, reg, parameters)
        if self.combine == "sum" or not reg.requires_grad or not task_loss.requires_grad:
            self._sum_backward(task_loss, reg, params)
            return
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            raise RuntimeError(f"{type(self).__name__}(combine='project').backward is not supported with several "
                               f"torch.distributed processes (each would project against its own gradient); use "
                               f"combine='sum' there.")
        before = [q.grad for q in params]
        for q in params:
            q.grad = None
        # retain_graph: with strategy="global" reg shares the solve's graph.
        task_loss.backward(retain_graph=True)
        g_task: List[Optional[torch.Tensor]] = [q.grad for q in params]
        g_reg = list(torch.autograd.grad(reg, params, allow_unused=True))
        scale = self._scale_reg(task_loss, reg, g_task, g_reg)
        pull = self._combine_reg(g_task, [None if b is None else scale * b for b in g_reg])
        for q, old, a, b in zip(params, before, g_task, pull):
            parts = [g for g in (old, a, b) if g is not None]
            q.grad = None if not parts else sum(parts[1:], parts[0])

    def _combine_reg(self, g_task: Sequence[Optional[torch.Tensor]],
                     pull: Sequence[Optional[torch.Tensor]]) -> List[Optional[torch.Tensor]]:
        """The regularization's part of the step's gradient: ``pull`` (the weighted gradient of
        ``reg``) without its component against the task's gradient."""
        return _project_cone(pull, [g_task])

    def _sum_backward(self, task_loss: torch.Tensor, reg: torch.Tensor, params: List[torch.Tensor]) -> None:
        """``(task_loss + weight * reg).backward()``, or ``task_loss.backward()`` when reg has no gradient."""
        if reg.requires_grad:
            (task_loss + self.weight * reg).backward()
        else:
            task_loss.backward()

    def _scale_reg(self, task_loss: torch.Tensor, reg: torch.Tensor, g_task: Sequence[Optional[torch.Tensor]],
                   g_reg: Sequence[Optional[torch.Tensor]]) -> Union[float, torch.Tensor]:
        """The weight of ``reg`` in this step, given both gradients (of ``task_loss`` and of ``reg``)."""
        return self.weight

    def _forward_nfe(self, stats: StatsLike) -> Optional[float]:
        """The forward NFE of one step's solve(s) (summed), or None, with a warning given once, for a
        step that recorded no solve."""
        items = self._read_stats(stats)
        return None if items is None else float(sum(s.nfe_forward for s in items))

    def _read_stats(self, stats: StatsLike) -> Optional[List[LocalRegStats]]:
        """One step's stats as a list, checked; None, with a warning given once, for a step that
        recorded no solve. Warns once when the solves take fixed steps."""
        if isinstance(stats, LocalRegStats):
            items = [stats]
        elif isinstance(stats, torch.Tensor):
            raise TypeError("stats must be a LocalRegStats or a sequence of them, got a Tensor (reg?): pass the "
                            "stats of the step's solve(s), e.g. return_stats=True of odeint_reg, or regularize().stats.")
        elif isinstance(stats, (str, bytes, dict)) or not isinstance(stats, Iterable):
            raise TypeError(f"stats must be a LocalRegStats or a sequence of them, got {type(stats).__name__}.")
        else:
            items = list(stats)
            if not all(isinstance(s, LocalRegStats) for s in items):
                raise TypeError("stats must be a LocalRegStats or a sequence of LocalRegStats, got a sequence of "
                                f"{sorted({type(s).__name__ for s in items})}.")
        if not items:
            self._warn_once("no solve", "update() got no stats: this step recorded no solve, so it is not counted. "
                            "A regularize() block sees only the package's own odeint/sdeint calls: code that calls "
                            "torchdiffeq.odeint (or torchsde.sdeint) by attribute, as torchcde does, needs "
                            "regularize(intercept=True).")
            return None
        for s in items:
            nfe = s.nfe_forward
            if isinstance(nfe, bool) or not isinstance(nfe, Real) or not (math.isfinite(nfe) and 0 <= nfe <= MAX_NFE):
                raise ValueError(f"stats.nfe_forward must be a finite number in [0, {MAX_NFE:g}], got {nfe!r}.")
        fixed = sorted({s.method for s in items if not s.adaptive})
        if fixed:
            self._warn_once("fixed", f"the solves use a fixed step ({', '.join(fixed)}): their NFE cannot change, so "
                            f"regularizing for fewer evaluations cannot pay off. Use an adaptive method (dopri5, or "
                            f"adaptive=True for torchsde), or train without this control.")
        return items


class NFEBudget(_Control):
    r"""Regularization weight that steers the solver's NFE to a target, by dual ascent.

    Use it in place of a constant weight::

        budget = NFEBudget(target_nfe=30)
        pred, reg, stats = odeint_reg(func, x, t, return_stats=True)
        loss = task_loss + budget.weight * reg
        loss.backward(); optimizer.step()
        budget.update(stats)

    or, so that the regularization never works against the task (see :meth:`backward`)::

        budget.backward(task_loss, reg, model.parameters())   # instead of loss.backward()
        optimizer.step()
        budget.update(stats)

    After each training step, :meth:`update` reads the forward NFE of the step's solve(s)
    (``stats.nfe_forward``: evaluations of ``func``, or of the drift for an SDE, during the solve
    only; the regularization step and the backward pass are not counted), smooths it with an
    exponential moving average, and moves the weight multiplicatively:

    .. math::

        \bar n \leftarrow \beta \bar n + (1 - \beta)\, n, \qquad
        \bar m \leftarrow \beta_s \bar m + (1 - \beta_s)\, n, \qquad
        p = \hat n + \kappa\,(\hat n - \hat m),

        e = \begin{cases} \min(p / n^* - 1,\ 1) & p > n^* \\
                           \max(\min(p / n^* - 1,\ -\delta), -1) & p \le n^* \end{cases}, \qquad
        \lambda \leftarrow \operatorname{clip}\big(\lambda \cdot e^{\eta e},
        \lambda_{\min}, \lambda_{\max}\big)

    where :math:`\hat n` and :math:`\hat m` are the bias-corrected fast and slow averages (as in
    Adam), :math:`p` the NFE extrapolated along its trend, :math:`n^*` the target, :math:`\eta`
    the rate, :math:`\kappa` the anticipation and :math:`\delta` the leak. While the model costs more than the target
    the weight grows geometrically, so it finds the scale that a problem needs (0.01 on one, 100
    on another) without a sweep. It is the Lagrange multiplier of "minimise the task loss subject
    to NFE <= target", in log space. The leak makes the weight keep decaying while the model is
    within its budget: the NFE of an adaptive solver moves in steps of a whole solver step (6
    evaluations for dopri5), and the model answers a weight change only after many optimizer
    steps, so plain dual ascent overshoots and then sits at a weight larger than needed whenever
    the NFE lands on or just under the target. With the leak it settles at the smallest weight
    that keeps the NFE at the target, which costs the least accuracy. Before the averaged NFE
    first exceeds the target the weight is held at ``initial_weight`` rather than decayed: a young
    model is often cheaper than it will become, and a weight decayed to ``min_weight`` by then
    would take hundreds of steps to climb back once the NFE grows.

    The anticipation is the derivative term of this controller. A model answers a larger weight
    only after tens to hundreds of optimizer steps, and then often all at once (a cheaper model
    has larger steps, where the same weight pulls harder): a controller that reacts to the NFE
    alone keeps raising the weight until the NFE has crossed the target, by then far too large,
    and the NFE falls well below the target and stays there. With :math:`\kappa > 0` the weight
    reacts to where the NFE is heading: it stops rising as soon as the NFE starts falling fast
    enough to reach the target, and rises faster while plain training makes the NFE grow.
    :math:`\hat n - \hat m` is about the NFE's change over the last
    :math:`1/(1-\beta_s) - 1/(1-\beta)` steps (90 at the defaults), so :math:`\kappa = 2`
    extrapolates the trend about 180 steps ahead.

    Choosing the target: the NFE the *trained* model's *training* solves should need, in the
    units :meth:`update` reads, ``stats.nfe_forward``. Without a number you know, use
    :class:`~torchdiffeq_localreg.AutoWeight` instead. A good target is about 0.6 x the mean
    ``stats.nfe_forward`` of the same model's last training steps without regularization; a
    model whose NFE already stays below the target is left alone (the weight decays to
    ``min_weight``). Three things make it differ from a count you may have: training solves can
    differ from the prediction solve (``ode_demo`` trains on short windows of about 56 evaluations
    and predicts the whole trajectory with 2594); an adaptive SDE solve's NFE depends on the batch;
    and with ``logqp=True`` torchsde evaluates two drifts per step (the posterior's and the
    prior's), and ``stats.nfe_forward`` counts both, twice what a counter inside ``f`` sees. A
    fixed-step solver's NFE cannot move: the weight would only climb (a warning says so).

    Args:
        target_nfe: evaluations per solve that the trained model should need, a number > 0. With
            several solves per step (a list of stats), the target is for their sum.
        initial_weight: the weight before the first update, > 0 (default 0.01).
        rate: :math:`\eta`, the largest change of ``log(weight)`` per update, > 0 (default 0.05:
            a factor 10 in about 46 steps at full speed).
        smoothing: :math:`\beta`, the EMA factor of the measured NFE, in [0, 1) (default 0.9;
            0 uses each step's NFE as it is).
        min_weight, max_weight: bounds of the weight, 0 < min_weight <= initial_weight <=
            max_weight (defaults 1e-4 and 1e4).
        warmup_steps: updates during which :attr:`weight` is 0 and the weight is not moved (the
            NFE average is still kept), an int >= 0 (default 0).
        leak: :math:`\delta`, the least relative excess by which the weight decays while the NFE is
            at or below the target, in [0, 1] (default 0.1: within budget, the weight halves in
            about 140 steps at the default rate; 0 is plain dual ascent).
        hold: keep the weight at ``initial_weight`` until the averaged NFE first exceeds the
            target (default True; False lets it decay from the first step).
        anticipation: :math:`\kappa`, how far the NFE's trend is extrapolated, a number >= 0
            (default 2.0; 0 reacts to the averaged NFE alone).
        trend_smoothing: :math:`\beta_s`, the EMA factor of the slow NFE average that the trend
            is measured against, in (smoothing, 1) (default 0.99).
        combine: how :meth:`backward` combines the gradients of ``task_loss`` and
            ``weight * reg``: ``"project"`` (default) drops the part of the regularization's
            gradient that opposes the task's; ``"sum"`` is the plain gradient of their sum. It
            does not change ``weight`` or a ``loss.backward()`` you call yourself.

    Raises:
        TypeError, ValueError: for arguments of the wrong type or out of range, naming the argument.
    """

    def __init__(self, target_nfe: float, *, initial_weight: float = 0.01, rate: float = 0.05,
                 smoothing: float = 0.9, min_weight: float = 1e-4, max_weight: float = 1e4,
                 warmup_steps: int = 0, leak: float = 0.1, hold: bool = True, anticipation: float = 2.0,
                 trend_smoothing: float = 0.99, combine: Combine = "project") -> None:
        super().__init__()
        self.target_nfe = _check_real("target_nfe", target_nfe, low=0.0, high=MAX_NFE)
        self.rate = _check_real("rate", rate, low=0.0, high=10.0)
        self.smoothing = _check_real("smoothing", smoothing, low=0.0, high=1.0, low_open=False)
        self.leak = _check_real("leak", leak, low=0.0, high=1.0, low_open=False, high_open=False)
        self.anticipation = _check_real("anticipation", anticipation, low=0.0, high=1e6, low_open=False)
        self.trend_smoothing = _check_real("trend_smoothing", trend_smoothing, low=0.0, high=1.0)
        if self.trend_smoothing <= self.smoothing:
            raise ValueError(f"trend_smoothing must be larger than smoothing (a slower average), got "
                             f"trend_smoothing={self.trend_smoothing:g}, smoothing={self.smoothing:g}.")
        self.min_weight = _check_real("min_weight", min_weight, low=0.0, high=1e30)
        self.max_weight = _check_real("max_weight", max_weight, low=0.0, high=1e30)
        initial_weight = _check_real("initial_weight", initial_weight, low=0.0, high=1e30)
        if not self.min_weight <= initial_weight <= self.max_weight:
            raise ValueError(f"need min_weight <= initial_weight <= max_weight, got min_weight={self.min_weight:g}, "
                             f"initial_weight={initial_weight:g}, max_weight={self.max_weight:g}.")
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, low=0, high=MAX_STEPS)
        self.hold = _check_bool("hold", hold)
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}.")
        self.combine = combine
        self._log_weight = math.log(initial_weight)
        self._nfe_avg = 0.0
        self._nfe_slow = 0.0
        self._steps = 0
        self._active = False  # has the averaged NFE exceeded the target yet?

    @property
    def weight(self) -> float:
        """The weight to multiply ``reg`` with in this step's loss (0.0 during warm-up)."""
        if self._steps < self.warmup_steps:
            return 0.0
        return math.exp(self._log_weight)

    @property
    def nfe(self) -> float:
        """The smoothed forward NFE seen so far (bias-corrected; 0.0 before the first update)."""
        if self._steps == 0:
            return 0.0
        return self._nfe_avg / (1.0 - self.smoothing ** self._steps)

    @property
    def nfe_trend(self) -> float:
        """The fast minus the slow NFE average (bias-corrected): > 0 while the NFE grows."""
        if self._steps == 0:
            return 0.0
        return self.nfe - self._nfe_slow / (1.0 - self.trend_smoothing ** self._steps)

    @property
    def steps(self) -> int:
        """Number of :meth:`update` calls so far."""
        return self._steps

    def update(self, stats: StatsLike) -> float:
        """Record one training step's NFE and move the weight; returns the new :attr:`weight`.

        Args:
            stats: the :class:`LocalRegStats` of the step's solve (``return_stats=True`` of any of
                ``odeint_reg``, ``odeint_adjoint_reg``, ``sdeint_reg``, ``sdeint_adjoint_reg``), or
                a sequence of them when a step runs several solves (their NFEs are added), such as
                ``regularize().stats``. A step that recorded no solve (an empty sequence) is not
                counted, with a warning given once.

        Raises:
            TypeError: ``stats`` is not a LocalRegStats or a sequence of them (e.g. ``reg``).
            ValueError: a stats' ``nfe_forward`` is not a finite number >= 0.
        """
        nfe = self._forward_nfe(stats)
        if nfe is None:
            return self.weight
        self._steps += 1
        self._nfe_avg = self.smoothing * self._nfe_avg + (1.0 - self.smoothing) * nfe
        self._nfe_slow = self.trend_smoothing * self._nfe_slow + (1.0 - self.trend_smoothing) * nfe
        if self._steps > self.warmup_steps:
            self._active = self._active or self.nfe > self.target_nfe or not self.hold
            heading = self.nfe + self.anticipation * self.nfe_trend
            excess = heading / self.target_nfe - 1.0
            if not self._active:
                excess = 0.0
            elif excess > 0:
                excess = min(excess, 1.0)
            else:
                excess = max(-1.0, min(excess, -self.leak))
            log_weight = self._log_weight + self.rate * excess
            self._log_weight = min(math.log(self.max_weight), max(math.log(self.min_weight), log_weight))
            if self._log_weight >= math.log(self.max_weight) and excess > 0:
                self._warn_once("bound", f"the weight is at max_weight={self.max_weight:g} and the NFE "
                                f"({self.nfe:.1f}) is still above target_nfe={self.target_nfe:g}: the target may be "
                                f"out of reach for this model and tolerance (see the target's rule in the docs).")
        return self.weight

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume: settings and the running state (plain Python numbers)."""
        return {"target_nfe": self.target_nfe, "rate": self.rate, "smoothing": self.smoothing, "leak": self.leak,
                "hold": self.hold, "anticipation": self.anticipation, "trend_smoothing": self.trend_smoothing,
                "combine": self.combine,
                "min_weight": self.min_weight, "max_weight": self.max_weight, "warmup_steps": self.warmup_steps,
                "log_weight": self._log_weight, "nfe_avg": self._nfe_avg, "nfe_slow": self._nfe_slow,
                "steps": self._steps, "active": self._active}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; validates every entry before changing anything."""
        self._check_state_keys(state_dict)
        steps = _check_int("state_dict['steps']", state_dict["steps"], low=0, high=MAX_STEPS)
        restored = NFEBudget(state_dict["target_nfe"], rate=state_dict["rate"], smoothing=state_dict["smoothing"],
                             min_weight=state_dict["min_weight"], max_weight=state_dict["max_weight"],
                             initial_weight=state_dict["min_weight"], warmup_steps=state_dict["warmup_steps"],
                             leak=state_dict["leak"], hold=state_dict["hold"],
                             anticipation=state_dict["anticipation"], trend_smoothing=state_dict["trend_smoothing"],
                             combine=state_dict["combine"])
        log_weight = _check_real("state_dict['log_weight']", state_dict["log_weight"], low=-1e3, high=1e3)
        if not math.log(restored.min_weight) - 1e-12 <= log_weight <= math.log(restored.max_weight) + 1e-12:
            raise ValueError(f"state_dict['log_weight'] must lie between log(min_weight) and log(max_weight), "
                             f"got {log_weight!r}.")
        nfe_avg = _check_real("state_dict['nfe_avg']", state_dict["nfe_avg"], low=0.0, high=MAX_NFE, low_open=False)
        nfe_slow = _check_real("state_dict['nfe_slow']", state_dict["nfe_slow"], low=0.0, high=MAX_NFE, low_open=False)
        if not isinstance(state_dict["active"], bool):
            raise ValueError(f"state_dict['active'] must be a bool, got {state_dict['active']!r}.")
        self.__dict__.update(restored.__dict__)
        self._log_weight, self._nfe_avg, self._nfe_slow, self._steps = log_weight, nfe_avg, nfe_slow, steps
        self._active = state_dict["active"]

    def __repr__(self) -> str:
        return (f"NFEBudget(target_nfe={self.target_nfe:g}, weight={self.weight:.4g}, nfe={self.nfe:.1f}, "
                f"steps={self._steps})")
