"""AutoWeight: the regularization's weight with no number to choose.

A constant weight means something different on every problem and at every point of a training
run (see :mod:`._weight_control`); :class:`AutoWeight` instead fixes the *share* of the
regularization's pull in each step's gradient, which means the same everywhere.
"""
import math
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from ._weight_control import MAX_STEPS, COMBINE_MODES, Combine, StatsLike, _check_int, _check_real, _Control, _norm_sq


class AutoWeight(_Control):
    r"""Regularization weight set from the gradients themselves, acting from the first step.

    Use it where you would call ``loss.backward()``::

        auto = AutoWeight()
        pred, reg, stats = odeint_reg(func, x, t, return_stats=True)
        auto.backward(task_loss, reg, model.parameters())   # instead of (task_loss + w * reg).backward()
        optimizer.step()
        auto.update(stats)

    Each :meth:`backward` takes the task's gradient :math:`g_t` and the regularization's
    gradient :math:`g_r` apart (the local regularizer is one extra solver step outside the solve,
    so its gradient costs one backward pass through that step only) and weighs ``reg`` so that
    its pull is a fixed fraction :math:`c` of the task's, measured on the parameters that
    ``reg`` reaches (the vector field's, :math:`R`):

    .. math::

        \lambda^\ast = c\, \frac{\lVert g_t \rVert_R}{\lVert g_r \rVert}, \qquad
        \lambda = \min\big(\lambda^\ast,\ K \lambda_0\big), \qquad
        g = g_t + \lambda g_r - \min(0,\ g_t \cdot \lambda g_r)\, g_t / \lVert g_t \rVert^2 .

    The ratio makes the weight scale-free: ``reg = E |dt|`` weakens by orders of magnitude as the
    solver's steps shrink, and the task's gradient varies as much between problems, but their
    ratio is what moves the model. Because the pull is a share of the task's from the first step,
    it acts while the solver's steps are still large, where it pays most, instead of waiting for
    the NFE to grow. The last term drops the part of the regularization's pull that opposes the
    task's (as :meth:`NFEBudget.backward` does), so to first order no step trades task loss for
    fewer evaluations. :math:`\lambda_0` is the weight calibrated over the first steps (the
    geometric mean of :math:`\lambda^\ast` there) and :math:`K` a ceiling relative to it: once the
    model is as cheap as the solver allows, ``reg``'s gradient nearly vanishes while the task's
    does not, and an unbounded ratio would scale noise up to a fixed share of every step.

    Args:
        combine: ``"project"`` (default) as above; ``"sum"`` is the plain
            ``(task_loss + weight * reg).backward()`` with the weight of the previous steps (the
            form that several ``torch.distributed`` processes need: update on every rank, then
            load rank 0's :meth:`state_dict` everywhere so that all ranks use the same weight).

    Attributes:
        weight: the weight used by the last :meth:`backward` (``"project"``), or the one the next
            plain sum uses (``"sum"``); 0.0 before the first step.

    Warnings (each given once): the solves use a fixed-step method (their NFE cannot change);
    the weight has sat at its ceiling for many steps; a step recorded no solve.
    """

    # The settings, found by benchmarks/weight_control.py; class attributes so that the protocol's
    # candidates can subclass them, not arguments: none is a number a user should have to choose.
    FRACTION = 0.1           # c: the regularization's pull as a share of the task's
    CEILING = 10.0           # K: the weight's bound, relative to its calibrated value
    CALIBRATION_STEPS = 10   # steps over which lambda_0 is measured
    SMOOTHING = 0.0          # EMA factor of log(lambda*) (0: each step's own ratio)
    RESTRICT_NORM = True     # measure ||g_t|| on the parameters reg reaches only
    BOUND_PATIENCE = 200     # steps at the ceiling before the warning

    def __init__(self, *, combine: Combine = "project") -> None:
        super().__init__()
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}.")
        self.combine = combine
        self._log_weight = -math.inf   # log of the smoothed lambda* (the weight the plain sum uses)
        self._last = 0.0               # the weight the last backward used
        self._log_ref_sum = 0.0        # sum of log(lambda*) over the calibration steps
        self._calibrated = 0           # calibration steps seen
        self._steps = 0                # backward calls that measured both gradients
        self._at_bound = 0             # consecutive steps at the ceiling
        self._updates = 0              # update() calls that counted a solve
        self._nfe = 0.0                # the last step's forward NFE

    @property
    def weight(self) -> float:
        """The weight of ``reg`` (see the class docstring); 0.0 before the first step."""
        if self.combine == "sum":
            return self._bounded(math.exp(self._log_weight)) if self._steps else 0.0
        return self._last

    @property
    def steps(self) -> int:
        """Number of steps whose gradients set the weight so far."""
        return self._steps

    @property
    def nfe(self) -> float:
        """The forward NFE of the last step seen by :meth:`update` (0.0 before)."""
        return self._nfe

    @property
    def ceiling(self) -> float:
        """The current bound of the weight, ``K * lambda_0`` (inf until calibrated)."""
        if self._calibrated < self.CALIBRATION_STEPS:
            return math.inf
        return self.CEILING * math.exp(self._log_ref_sum / self._calibrated)

    def _bounded(self, weight: float) -> float:
        return min(weight, self.ceiling)

    def _measure(self, g_task: Sequence[Optional[torch.Tensor]], g_reg: Sequence[Optional[torch.Tensor]],
                 like: torch.Tensor) -> Optional[float]:
        """Records lambda* = c ||g_t||_R / ||g_r|| of this step; returns it (None if it is undefined)."""
        reached = [b is not None for b in g_reg]
        task_sq = _norm_sq((a for a, r in zip(g_task, reached) if r or not self.RESTRICT_NORM), like)
        reg_sq = _norm_sq(g_reg, like)
        task_norm, reg_norm = math.sqrt(float(task_sq)), math.sqrt(float(reg_sq))
        if not (reg_norm > 0 and math.isfinite(reg_norm) and math.isfinite(task_norm)):
            return None
        ratio = self.FRACTION * task_norm / reg_norm
        if ratio <= 0:
            return None
        log_ratio = math.log(ratio)
        self._steps += 1
        if self._calibrated < self.CALIBRATION_STEPS:
            self._log_ref_sum += log_ratio
            self._calibrated += 1
        beta = self.SMOOTHING
        self._log_weight = log_ratio if self._steps == 1 else beta * self._log_weight + (1 - beta) * log_ratio
        bounded = self._bounded(ratio)
        self._at_bound = self._at_bound + 1 if bounded < ratio else 0
        if self._at_bound >= self.BOUND_PATIENCE:
            self._warn_once("bound", f"the weight has sat at its ceiling ({self.CEILING:g} x its calibrated value) "
                            f"for {self._at_bound} steps: the regularization's gradient has nearly vanished, "
                            f"usually because the model is already about as cheap as the solver allows. Nothing "
                            f"is wrong; the control keeps the pull bounded there.")
        return ratio

    def _scale_reg(self, task_loss: torch.Tensor, reg: torch.Tensor, g_task: Sequence[Optional[torch.Tensor]],
                   g_reg: Sequence[Optional[torch.Tensor]]) -> Union[float, torch.Tensor]:
        ratio = self._measure(g_task, g_reg, reg)
        if ratio is None:
            self._last = 0.0
        else:
            self._last = self._bounded(ratio if self.SMOOTHING == 0 else math.exp(self._log_weight))
        return self._last

    def _sum_backward(self, task_loss: torch.Tensor, reg: torch.Tensor, params: List[torch.Tensor]) -> None:
        if not reg.requires_grad:
            task_loss.backward()
            return
        if not task_loss.requires_grad:  # a constant task: nothing to measure against
            (task_loss + self.weight * reg).backward()
            return
        # The plain sum, and the two gradients it mixes measured for the next steps' weight: reg's
        # directly (one backward through the regularization step), the task's as what the sum
        # added to .grad minus weight * reg's.
        weight = self.weight
        g_reg = list(torch.autograd.grad(reg, params, allow_unused=True, retain_graph=True))
        before = [None if q.grad is None else q.grad.detach().clone() for q in params]
        (task_loss + weight * reg).backward()
        g_task = []
        for q, old, b in zip(params, before, g_reg):
            g = q.grad
            if g is not None and old is not None:
                g = g - old
            if g is not None and b is not None:
                g = g - weight * b
            g_task.append(g)
        self._measure(g_task, g_reg, reg)
        self._last = weight

    def update(self, stats: StatsLike) -> float:
        """Records one training step's statistics; returns :attr:`weight`.

        The weight itself is set in :meth:`backward`; ``update`` checks what a weight control
        cannot see from gradients: a fixed-step solver (whose NFE cannot change) and a step that
        recorded no solve, each warned about once.

        Args:
            stats: the :class:`LocalRegStats` of the step's solve, or a sequence of them
                (``regularize().stats``).

        Raises:
            TypeError: ``stats`` is not a LocalRegStats or a sequence of them (e.g. ``reg``).
            ValueError: a stats' ``nfe_forward`` is not a finite number >= 0.
        """
        nfe = self._forward_nfe(stats)
        if nfe is not None:
            self._updates += 1
            self._nfe = nfe
        return self.weight

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume (plain Python numbers)."""
        return {"combine": self.combine, "log_weight": self._log_weight, "last": self._last,
                "log_ref_sum": self._log_ref_sum, "calibrated": self._calibrated, "steps": self._steps,
                "at_bound": self._at_bound, "updates": self._updates, "nfe": self._nfe}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a :meth:`state_dict`; validates every entry before changing anything.

        Raises:
            TypeError, ValueError: naming the entry that is missing, unknown, of the wrong type or
                out of range.
        """
        self._check_state_keys(state_dict)
        combine = state_dict["combine"]
        if combine not in COMBINE_MODES:
            raise ValueError(f"state_dict['combine'] must be one of {COMBINE_MODES}, got {combine!r}.")
        calibrated = _check_int("state_dict['calibrated']", state_dict["calibrated"], low=0,
                                high=self.CALIBRATION_STEPS)
        steps = _check_int("state_dict['steps']", state_dict["steps"], low=calibrated, high=MAX_STEPS)
        values = {"combine": combine, "calibrated": calibrated, "steps": steps,
                  "at_bound": _check_int("state_dict['at_bound']", state_dict["at_bound"], low=0, high=steps),
                  "updates": _check_int("state_dict['updates']", state_dict["updates"], low=0, high=MAX_STEPS),
                  "nfe": _check_real("state_dict['nfe']", state_dict["nfe"], low=0.0, high=1e15, low_open=False),
                  "last": _check_real("state_dict['last']", state_dict["last"], low=0.0, high=1e30, low_open=False),
                  "log_ref_sum": _check_real("state_dict['log_ref_sum']", state_dict["log_ref_sum"],
                                             low=-1e3 * (calibrated + 1), high=1e3 * (calibrated + 1),
                                             low_open=False, high_open=False)}
        log_weight = state_dict["log_weight"]
        if not (steps == 0 and log_weight == -math.inf):
            log_weight = _check_real("state_dict['log_weight']", log_weight, low=-1e3, high=1e3)
        values["log_weight"] = log_weight
        self.combine = values.pop("combine")
        for key, value in values.items():
            setattr(self, f"_{key}", value)

    def __repr__(self) -> str:
        return f"AutoWeight(weight={self.weight:.4g}, steps={self._steps}, combine={self.combine!r})"
