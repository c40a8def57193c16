"""Weight control: the regularization weight that makes the trained model cost a chosen NFE.

A constant weight ``lam`` in ``loss = task_loss + lam * reg`` means something different on every
problem, tolerance and batch size: too small and nothing changes, too large and accuracy is lost.
:class:`NFEBudget` replaces it by a number a user knows, the evaluations of ``func`` per solve
that the trained model should need, and adjusts ``lam`` by dual ascent on the measured NFE.
"""
import math
from numbers import Real
from typing import Any, Dict, Iterable, List, Literal, Optional, Union, get_args

import torch

from ._stats import LocalRegStats

StatsLike = Union[LocalRegStats, Iterable[LocalRegStats]]
Combine = Literal["project", "sum"]
COMBINE_MODES = get_args(Combine)


def _check_real(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = True,
                high_open: bool = True) -> float:
    """``value`` as a float inside the interval, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}.")
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


class NFEBudget:
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

    Choosing the target: the NFE the *trained* model should need per solve, at the training
    tolerance. A good default is about 0.6 x what the same model needs when trained without
    regularization (its prediction NFE at the end of training); a model whose NFE already stays
    below the target is left alone (the weight decays to ``min_weight``). NFE is read from
    training solves, so train and predict at the same tolerance for the target to mean the
    prediction NFE.

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
        self.target_nfe = _check_real("target_nfe", target_nfe, low=0.0)
        self.rate = _check_real("rate", rate, low=0.0)
        self.smoothing = _check_real("smoothing", smoothing, low=0.0, high=1.0, low_open=False)
        self.leak = _check_real("leak", leak, low=0.0, high=1.0, low_open=False, high_open=False)
        self.anticipation = _check_real("anticipation", anticipation, low=0.0, low_open=False)
        self.trend_smoothing = _check_real("trend_smoothing", trend_smoothing, low=0.0, high=1.0)
        if self.trend_smoothing <= self.smoothing:
            raise ValueError(f"trend_smoothing must be larger than smoothing (a slower average), got "
                             f"trend_smoothing={self.trend_smoothing:g}, smoothing={self.smoothing:g}.")
        self.min_weight = _check_real("min_weight", min_weight, low=0.0)
        self.max_weight = _check_real("max_weight", max_weight, low=0.0)
        initial_weight = _check_real("initial_weight", initial_weight, low=0.0)
        if not self.min_weight <= initial_weight <= self.max_weight:
            raise ValueError(f"need min_weight <= initial_weight <= max_weight, got min_weight={self.min_weight:g}, "
                             f"initial_weight={initial_weight:g}, max_weight={self.max_weight:g}.")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int):
            raise TypeError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}.")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps}.")
        self.warmup_steps = warmup_steps
        if not isinstance(hold, bool):
            raise TypeError(f"hold must be a bool, got {hold!r}.")
        self.hold = hold
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
                an iterable of them when a step runs several solves (their NFEs are added).
        """
        nfe = self._forward_nfe(stats)
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
        return self.weight

    def backward(self, task_loss: torch.Tensor, reg: torch.Tensor, parameters: Iterable[torch.Tensor]) -> None:
        r"""Accumulates into ``.grad`` the gradient of ``task_loss + weight * reg``, combined by ``combine``.

        Call it where you would call ``(task_loss + budget.weight * reg).backward()``. The local
        regularizer is computed by one extra solver step from a recorded, detached state, so its
        graph is separate from the solve's and its gradient :math:`g_r` (of ``weight * reg``) comes
        apart from the task's :math:`g_t` for one cheap backward pass through that step. With
        ``combine="project"``, when the two conflict (:math:`g_t \cdot g_r < 0`, taken over all
        ``parameters`` as one vector), the component of :math:`g_r` along :math:`g_t` is removed
        (as in PCGrad, Yu et al. 2020):

        .. math::

            g = g_t + g_r - \min(0,\ g_t \cdot g_r)\, g_t / \lVert g_t 
Vert^2,

        so to first order a step never makes the task loss worse for the sake of fewer
        evaluations: the model gets cheaper along the directions the task does not care about.
        On our protocol this kept a regression's error at (or below) the unregularized model's
        where the plain sum cost it, at the same NFE. ``combine="sum"`` is
        ``(task_loss + weight * reg).backward()``.

        Args:
            task_loss: the scalar loss of the task (everything but the regularization term).
            reg: the ``reg`` of this step's solve(s), a scalar (``odeint_reg``, ``regularize().reg``).
            parameters: the parameters the optimizer steps, e.g. ``model.parameters()``. With
                ``"project"`` the gradients of these are combined; other leaves of ``task_loss``'s
                graph get its gradient as with ``backward()``, but the regularization's gradient
                reaches only these.

        Raises:
            TypeError, ValueError: for a non-scalar or non-tensor loss, or parameters that are not
                tensors.
            RuntimeError: ``combine="project"`` under ``torch.distributed`` with more than one
                process: each process would project against its own gradient; use ``"sum"``.
        """
        for name, value in (("task_loss", task_loss), ("reg", reg)):
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise TypeError(f"{name} must be a scalar tensor, got "
                                f"{type(value).__name__ if not isinstance(value, torch.Tensor) else tuple(value.shape)}.")
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        params = list(parameters)
        if not all(isinstance(q, torch.Tensor) for q in params):
            raise TypeError("parameters must be an iterable of tensors, e.g. model.parameters().")
        weight = self.weight
        if self.combine == "sum" or weight == 0.0 or not reg.requires_grad:
            (task_loss + weight * reg).backward()
            return
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            raise RuntimeError("NFEBudget(combine='project').backward is not supported with several torch.distributed "
                               "processes (each would project against its own gradient); use combine='sum' there.")
        params = [q for q in params if q.requires_grad]
        before = [q.grad for q in params]
        for q in params:
            q.grad = None
        # retain_graph: with strategy="global" reg shares the solve's graph.
        task_loss.backward(retain_graph=True)
        g_task: List[Optional[torch.Tensor]] = [q.grad for q in params]
        g_reg = torch.autograd.grad(weight * reg, params, allow_unused=True)
        dot = sum(((a * b).sum() for a, b in zip(g_task, g_reg) if a is not None and b is not None),
                  torch.zeros((), dtype=reg.dtype, device=reg.device))
        task_sq = sum(((a * a).sum() for a in g_task if a is not None),
                      torch.zeros((), dtype=reg.dtype, device=reg.device))
        coef = torch.where((dot < 0) & (task_sq > 0), dot / task_sq.clamp_min(torch.finfo(task_sq.dtype).tiny),
                           torch.zeros_like(dot))
        for q, old, a, b in zip(params, before, g_task, g_reg):
            if a is not None:  # the projection acts on the whole vector, where reg does not reach too
                b = -coef * a if b is None else b - coef * a
            parts = [g for g in (old, a, b) if g is not None]
            q.grad = None if not parts else sum(parts[1:], parts[0])

    @staticmethod
    def _forward_nfe(stats: StatsLike) -> int:
        if isinstance(stats, LocalRegStats):
            return stats.nfe_forward
        if isinstance(stats, (str, bytes)) or not isinstance(stats, Iterable):
            raise TypeError(f"stats must be a LocalRegStats or an iterable of them, got {type(stats).__name__}.")
        items = list(stats)
        if not items or not all(isinstance(s, LocalRegStats) for s in items):
            raise TypeError("stats must be a LocalRegStats or a non-empty iterable of LocalRegStats "
                            "(pass return_stats=True to the solve).")
        return sum(s.nfe_forward for s in items)

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
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}.")
        expected = set(self.state_dict())
        if set(state_dict) != expected:
            missing, unknown = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
            raise ValueError(f"state_dict has the wrong keys: missing {missing}, unexpected {unknown}.")
        steps = state_dict["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"state_dict['steps'] must be an int >= 0, got {steps!r}.")
        restored = NFEBudget(state_dict["target_nfe"], rate=state_dict["rate"], smoothing=state_dict["smoothing"],
                             min_weight=state_dict["min_weight"], max_weight=state_dict["max_weight"],
                             initial_weight=state_dict["min_weight"], warmup_steps=state_dict["warmup_steps"],
                             leak=state_dict["leak"], hold=state_dict["hold"],
                             anticipation=state_dict["anticipation"], trend_smoothing=state_dict["trend_smoothing"],
                             combine=state_dict["combine"])
        log_weight = _check_real("state_dict['log_weight']", state_dict["log_weight"], low=-math.inf)
        if not math.log(restored.min_weight) - 1e-12 <= log_weight <= math.log(restored.max_weight) + 1e-12:
            raise ValueError(f"state_dict['log_weight'] must lie between log(min_weight) and log(max_weight), "
                             f"got {log_weight!r}.")
        nfe_avg = _check_real("state_dict['nfe_avg']", state_dict["nfe_avg"], low=0.0, low_open=False)
        nfe_slow = _check_real("state_dict['nfe_slow']", state_dict["nfe_slow"], low=0.0, low_open=False)
        if not isinstance(state_dict["active"], bool):
            raise ValueError(f"state_dict['active'] must be a bool, got {state_dict['active']!r}.")
        self.__dict__.update(restored.__dict__)
        self._log_weight, self._nfe_avg, self._nfe_slow, self._steps = log_weight, nfe_avg, nfe_slow, steps
        self._active = state_dict["active"]

    def __repr__(self) -> str:
        return (f"NFEBudget(target_nfe={self.target_nfe:g}, weight={self.weight:.4g}, nfe={self.nfe:.1f}, "
                f"steps={self._steps})")
