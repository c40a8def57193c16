"""AutoWeight: the regularization's weight with no number to choose.

A constant weight means something different on every problem and at every point of a training
run (see :mod:`._weight_control`); :class:`AutoWeight` instead sets the weight from the two
gradients themselves, so that the regularization's pull is a fixed share of the task's.
"""
import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from ._stats import last_regularized_solve_is_sde
from ._warnings import user_stacklevel
from ._weight_control import (MAX_STEPS, COMBINE_MODES, Combine, StatsLike, _check_int, _check_real, _Control,
                              _dot, _norm_sq, _project_cone)


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
    its pull is a share :math:`c` of the task's, measured on the parameters that ``reg`` reaches
    (the vector field's, :math:`R`) and averaged over recent steps:

    .. math::

        T \leftarrow \beta T + (1 - \beta) \lVert g_t \rVert_R^2, \qquad
        G \leftarrow \beta G + (1 - \beta) \lVert g_r \rVert^2, \qquad
        \lambda = \min\Big(c \sqrt{\hat T / \hat G},\
                          K \lambda_0 \sqrt{\max(1, \hat T / \hat T_0)}\Big),

    with :math:`\hat T, \hat G` bias-corrected as in Adam. The ratio makes the weight scale-free:
    ``reg = E |dt|`` weakens by orders of magnitude as the solver's steps shrink, and the task's
    gradient varies as much between problems, but the ratio of the two is what moves the model.
    Averaging the squared norms over steps (rather than normalizing each step) keeps the weight
    steady although the sampled step changes every time: a sample from a step that the solver
    takes with a tiny error pulls little, as it would with a constant weight. Because the pull is
    a share of the task's from the first step, it acts while the solver's steps are still large,
    where it pays most, instead of waiting for the NFE to grow. :math:`\lambda_0` is the geometric
    mean of the weight over the first ``CALIBRATION_STEPS`` steps, :math:`\hat T_0` the task's
    averaged squared gradient norm at that step, and :math:`K` a ceiling relative to it: as the
    model gets cheap, ``reg``'s gradient shrinks and the weight rises to hold the
    model there, but once it is as cheap as the solver allows, that gradient nearly vanishes while
    the task's does not, and an unbounded ratio would scale noise up to a fixed share of every
    step. The ceiling rises with the task's gradient where that has grown since the calibration
    (by the square root of the ratio of its averaged squares, as the weight itself scales): a
    classifier that starts at chance has a small gradient at first, so its first weights, and a
    ceiling fixed to them, are too small for the model it becomes (on our disk-vs-ring task the
    NFE came down to 26 evaluations instead of 35, and to 36 instead of 46 in 200 steps, at 100%
    either way, on 6 seeds; on 12 seeds, with the conflict factor below, it reaches 31 and 39).
    Where the task's gradient never exceeds its calibrated size (our Lotka-Volterra and spiral SDE
    fits), the ceiling is :math:`K \lambda_0`; on our latent ODE it grows too, and there the rise
    took the NFE from 0.52x to 0.36x of plain training's, and the error from 1.14x to 1.24x of it
    (100 seeds, before the conflict factor). On most ODE problems of our protocol the weight
    reaches the ceiling within a few hundred steps and stays there, which makes AutoWeight a
    constant weight calibrated from the problem's own first steps.

    The share is :math:`c = 0.3` for an ODE solve and :math:`c = 0.05` for an SDE solve (known from
    the first :meth:`update`, whose stats of an SDE count diffusion evaluations; at the first
    :meth:`backward`, from the kind of the last regularized solve in the calling thread or asyncio
    task). Both are measured, not derived: the SDE regularizer differentiates torchsde's
    step-doubling error estimate, not a Runge-Kutta pair's embedded error, and at the same share it
    moved our SDEs much further. On our MNIST neural SDE (20 seeds) a share of 0.1 cost 0.66 points
    of accuracy at 0.73x the NFE and 0.05 cost 0.30 points at 0.89x (0.3 held the solve at a single
    step and cost 2.4 points); on the spiral SDE 0.05 gave 0.73x vanilla's error at the same NFE as
    0.1 (0.80x), and 0.96x in runs of 200 steps (0.1: 0.89x); on the ODE classifiers 0.1 cut too
    little (``benchmarks/weight_control.py`` has the runs). The ODE share 0.5 cut further in the
    protocol (disk vs ring NFE 25.5 instead of 31.0, the latent ODE 0.26x instead of 0.40x at 1.02x
    vanilla's mean error on 200 seeds) but cost the short runs of the examples: on 10 seeds of
    ``examples/latent_ode.py`` it had 1.23x plain training's error, worse on 9 (0.3: 0.96x, worse
    on 4), and on ``examples/ode_demo.py`` 1.28x (0.3: 1.06x on those seeds; over 80 seeds the share
    0.3 has 1.13x there, where plain training at a learning rate a millionth larger has 1.08x, and no
    constant cuts the NFE without cost).

    The pull :math:`p = \lambda g_r` then loses the part that works against the task, both
    against this step's gradient and against its moving average :math:`m \leftarrow \beta_m m +
    (1 - \beta_m) g_t` (the task's systematic direction, which a noisy minibatch or SDE gradient
    hides): the applied pull is the point nearest to :math:`p` of the cone
    :math:`\{d : d \cdot g_t \ge 0,\ d \cdot m \ge 0\}`, and the step's gradient is
    :math:`g_t + d`. To first order no step then trades task loss for fewer evaluations, in
    expectation as well as on the batch at hand.

    On ODE solves the weight is finally multiplied by a factor for the conflict that remains:

    .. math::

        C \leftarrow \beta C + (1 - \beta) \cos(g_r, m)_R, \qquad
        \lambda \leftarrow \lambda \min\Big(1, \frac{1 + \hat C}{1 + C_f}\Big)^2,
        \quad C_f = -0.5,

    :math:`\hat C` bias-corrected like :math:`\hat T`. The projection removes the pull's conflict
    with each step, but late in a noisy fit the task's minibatch gradient is mostly noise (on our
    Lotka-Volterra fit :math:`\lVert m \rVert^2 / \hat T` fell to 0.001-0.003), the projection lets
    most of the pull through, and the model drifts until the task's systematic gradient balances
    it: there :math:`\hat C` fell to -0.8, the weight rose and the task loss rose with it (1.35x
    vanilla's error on 40 seeds). While the averaged cosine stays above -0.5 the factor is 1; at
    -0.75 it is 1/4, at -1 it is 0. On that fit it acts early and grows: the median weight was 0.77x
    that of the rule without it at step 50, 0.63x at step 200 and 0.22x at step 500. It took that
    fit to 0.86x vanilla's error (at 0.98x its NFE instead of 0.91x) and our latent ODE from 1.24x
    to 1.11x (100 seeds; a second sample of the rule, its shares changed by a millionth: 1.06x;
    on 200 seeds 1.05x, though 1.17x on a typical seed),
    and left both classifiers' runs nearly or exactly unchanged. It is not applied to SDE solves,
    where it never helped our fits' error and cost NFE (on the spiral SDE in 200 steps, 50.5
    evaluations against 49.8).

    Args:
        combine: ``"project"`` (default) as above; ``"sum"`` is the plain
            ``(task_loss + weight * reg).backward()`` with the weight of the previous steps (the
            form that several ``torch.distributed`` processes need: update on every rank, then
            load rank 0's :meth:`state_dict` everywhere so that all ranks use the same weight).

    Attributes:
        weight: the weight of ``reg`` used by the last :meth:`backward` (0.0 before the first; with
            ``combine="sum"`` the first step has weight 0, as nothing is measured yet).

    Warnings (each given once): the solves use a fixed-step method (their NFE cannot change);
    the weight has sat at its ceiling for many steps; a step recorded no solve.
    """

    # The settings, found by benchmarks/weight_control.py; class attributes so that the protocol's
    # candidates can subclass them, not arguments: none is a number a user should have to choose.
    FRACTION = 0.3           # c: the regularization's pull as a share of the task's, for ODE solves
    FRACTION_SDE = 0.05      # c for SDE solves (torchsde's step-doubling estimate: see the class docstring)
    NORM_SMOOTHING = 0.99    # beta: EMA factor of the squared gradient norms (0: each step's own)
    MOMENTUM = 0.99          # beta_m: EMA factor of the task's gradient for the projection (0: none)
    CEILING = 10.0           # K: the weight's bound, relative to its calibrated value
    CALIBRATION_STEPS = 10   # steps after which lambda_0 is taken
    RESTRICT_NORM = True     # measure ||g_t|| on the parameters reg reaches only
    BOUND_PATIENCE = 200     # steps at the ceiling before the warning
    CONFLICT_FREE = -0.5     # C_f: the averaged cosine of g_r with m above which an ODE's weight is not reduced
    CONFLICT_POWER = 2       # the power of the conflict factor (0: no factor)

    def __init__(self, *, combine: Combine = "project") -> None:
        super().__init__()
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}.")
        self.combine = combine
        self._task_sq = 0.0            # T: EMA of ||g_t||_R^2
        self._reg_sq = 0.0             # G: EMA of ||g_r||^2
        self._ref = 0.0                # lambda_0 (0 until calibrated)
        self._task_ref = 0.0           # T_0, the bias-corrected T at the calibration (0 until calibrated)
        self._log_ref_sum = 0.0        # sum of log(lambda) over the calibration steps
        self._last = 0.0               # the weight the last backward used
        self._next = 0.0               # the weight the next plain sum uses (combine="sum")
        self._steps = 0                # backward calls that measured both gradients
        self._at_bound = 0             # consecutive steps at the ceiling
        self._updates = 0              # update() calls that counted a solve
        self._nfe = 0.0                # the last step's forward NFE
        self._momentum: List[Optional[torch.Tensor]] = []  # m, per parameter
        self._sde = False              # do the solves integrate an SDE? (known from the first update)
        self._cos_sum = 0.0            # C: EMA of cos(g_r, m) on the parameters reg reaches (not bias-corrected)


    @property
    def weight(self) -> float:
        """The weight of ``reg`` of the last step (see the class docstring); 0.0 before the first."""
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
    def share(self) -> float:
        """c: the share of the task's pull that the regularization's pull is given (FRACTION, or
        FRACTION_SDE once :meth:`update` has seen an SDE solve)."""
        return self.FRACTION_SDE if self._sde else self.FRACTION

    @property
    def ceiling(self) -> float:
        """The current bound of the weight, ``K * lambda_0 * sqrt(max(1, T / T_0))`` (inf until calibrated)."""
        if self._ref <= 0:
            return math.inf
        ceiling = self.CEILING * self._ref
        if self._task_ref > 0:
            ceiling *= math.sqrt(max(1.0, self._task_mean() / self._task_ref))
        return ceiling

    @property
    def conflict(self) -> float:
        """C-hat: the averaged cosine between the regularization's gradient and the task gradient's
        moving average, on the parameters the regularization reaches (0.0 before the first step)."""
        return self._cos_sum / (1 - self.NORM_SMOOTHING ** self._steps) if self._steps else 0.0

    @property
    def conflict_factor(self) -> float:
        """The factor ``min(1, (1 + C) / (1 + C_f)) ** 2`` that the weight of an ODE's regularization
        is multiplied by (see the class docstring); 1.0 for SDE solves."""
        if self._sde or not self.CONFLICT_POWER:
            return 1.0
        return min(1.0, max(0.0, (1.0 + self.conflict) / (1.0 + self.CONFLICT_FREE))) ** self.CONFLICT_POWER

    def _task_mean(self) -> float:
        """T bias-corrected: the average of the task's squared gradient norms over recent steps."""
        return self._task_sq / (1 - self.NORM_SMOOTHING ** self._steps) if self._steps else 0.0

    def _measure(self, g_task: Sequence[Optional[torch.Tensor]], g_reg: Sequence[Optional[torch.Tensor]],
                 like: torch.Tensor) -> float:
        """Records this step's gradient norms and conflict; returns the weight lambda they give, its
        conflict factor applied (the previous step's weight if nothing can be measured)."""
        reached = [b is not None for b in g_reg]
        task_sq = float(_norm_sq((a for a, r in zip(g_task, reached) if r or not self.RESTRICT_NORM), like))
        reg_sq = float(_norm_sq((b for b, r in zip(g_reg, reached) if r), like))
        if not (math.isfinite(task_sq) and math.isfinite(reg_sq)) or reg_sq == 0.0:
            return self._next  # nothing to measure this step: keep the weight
        self._steps += 1
        weight = self._ratio(task_sq, reg_sq)
        if weight > 0 and self._steps <= self.CALIBRATION_STEPS:
            self._log_ref_sum += math.log(weight)
            if self._steps == self.CALIBRATION_STEPS:
                self._ref = math.exp(self._log_ref_sum / self.CALIBRATION_STEPS)
                self._task_ref = self._task_mean()
        bounded = min(weight, self.ceiling)
        self._at_bound = self._at_bound + 1 if bounded < weight else 0
        if self._at_bound >= self.BOUND_PATIENCE:
            self._warn_once("bound", f"the weight has sat at its ceiling ({bounded:.3g}: {self.CEILING:g} x its "
                            f"calibrated value, more where the task's gradient has grown since) for "
                            f"{self._at_bound} steps: the regularization's "
                            f"gradient has become small against the task's. Either the model is already about as "
                            f"cheap as the solver allows (check stats.nfe_forward: then nothing is wrong), or the "
                            f"regularization cannot make it cheaper without costing the task. The control keeps the "
                            f"pull bounded either way.")
        if self.MOMENTUM:
            self._track_conflict(g_reg, reached)
        return bounded * self.conflict_factor

    def _track_conflict(self, g_reg: Sequence[Optional[torch.Tensor]], reached: Sequence[bool]) -> None:
        """Averages this step's cosine between reg's gradient and m (on the parameters reg reaches) into C."""
        m = [a if r else None for a, r in zip(self._momentum, reached)]
        norms = _dot(m, m) * _dot(g_reg, g_reg)
        if norms > 0:
            beta = self.NORM_SMOOTHING
            self._cos_sum = beta * self._cos_sum + (1 - beta) * _dot(g_reg, m) / math.sqrt(norms)

    def _ratio(self, task_sq: float, reg_sq: float) -> float:
        """Averages one step's squared gradient norms into T and G; returns the unbounded weight."""
        beta = self.NORM_SMOOTHING
        self._task_sq = beta * self._task_sq + (1 - beta) * task_sq
        self._reg_sq = beta * self._reg_sq + (1 - beta) * reg_sq
        # The bias corrections of T and G are equal and cancel in their ratio.
        return self.share * math.sqrt(self._task_sq) / math.sqrt(self._reg_sq)

    def _moving_average(self, store: List[Optional[torch.Tensor]],
                        grads: Sequence[Optional[torch.Tensor]]) -> List[Optional[torch.Tensor]]:
        """``store`` moved towards ``grads`` by the EMA factor MOMENTUM, per parameter (anew if the
        parameters changed)."""
        if len(store) != len(grads) or any(m is not None and a is not None and m.shape != a.shape
                                           for m, a in zip(store, grads)):
            if store:
                warnings.warn("AutoWeight: the parameters passed to backward() changed; the task gradient's moving "
                              "average starts anew.", RuntimeWarning, stacklevel=user_stacklevel())
            store = [None] * len(grads)
        for k, a in enumerate(grads):
            if a is None:
                continue
            m = store[k]
            if m is None:
                store[k] = (1 - self.MOMENTUM) * a.detach()
            else:
                if m.device != a.device or m.dtype != a.dtype:  # a state loaded on another device
                    m = store[k] = m.to(a)
                m.mul_(self.MOMENTUM).add_(a.detach(), alpha=1 - self.MOMENTUM)
        return store

    def _observe(self, g_task: Sequence[Optional[torch.Tensor]], g_reg: Sequence[Optional[torch.Tensor]],
                 like: torch.Tensor) -> float:
        """Updates the moving averages with this step's two gradients; returns the weight they give."""
        if not self._sde and self._updates == 0 and last_regularized_solve_is_sde():
            self._use_sde_share()  # before the first update, the kind of this context's last solve
        if self.MOMENTUM:
            self._momentum = self._moving_average(self._momentum, g_task)
        return self._measure(g_task, g_reg, like)

    def _scale_reg(self, task_loss: torch.Tensor, reg: torch.Tensor, g_task: Sequence[Optional[torch.Tensor]],
                   g_reg: Sequence[Optional[torch.Tensor]]) -> Union[float, torch.Tensor]:
        self._last = self._next = self._observe(g_task, g_reg, reg)
        return self._last

    def _combine_reg(self, g_task: Sequence[Optional[torch.Tensor]],
                     pull: Sequence[Optional[torch.Tensor]]) -> List[Optional[torch.Tensor]]:
        directions = [g_task] + ([self._momentum] if self.MOMENTUM else [])
        return _project_cone(pull, directions)

    def _sum_backward(self, task_loss: torch.Tensor, reg: torch.Tensor, params: List[torch.Tensor]) -> None:
        if not reg.requires_grad:
            task_loss.backward()
            return
        if not task_loss.requires_grad:  # a constant task: nothing to measure against
            self._last = self._next
            (task_loss + self._next * reg).backward()
            return
        # The plain sum with the previous steps' weight, and the two gradients it mixes measured for
        # the next steps: reg's directly (one backward through the regularization step), the task's
        # as what the sum added to .grad minus weight * reg's.
        weight = self._next
        g_reg = list(torch.autograd.grad(reg, params, allow_unused=True, retain_graph=True))
        before = [None if q.grad is None else q.grad.detach().clone() for q in params]
        (task_loss + weight * reg).backward()
        g_task = []
        for q, old, b in zip(params, before, g_reg):
            g = q.grad
            if g is not None and old is not None:
                g = g - old
            if g is not None and b is not None and weight:
                g = g - weight * b
            g_task.append(g)
        self._last = weight
        self._next = self._observe(g_task, g_reg, reg)

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
        items = self._read_stats(stats)
        if items is not None:
            self._updates += 1
            self._nfe = float(sum(s.nfe_forward for s in items))
            if not self._sde and any(s.nfe_diffusion_forward > 0 for s in items):
                self._use_sde_share()
        return self.weight

    def _use_sde_share(self) -> None:
        """Switches to FRACTION_SDE; the weights measured so far (with FRACTION) are rescaled."""
        factor = self.FRACTION_SDE / self.FRACTION
        self._sde = True
        self._log_ref_sum += min(self._steps, self.CALIBRATION_STEPS) * math.log(factor)
        self._ref *= factor
        self._next *= factor

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume: numbers, and the task gradient's moving average (tensors)."""
        return {"combine": self.combine, "task_sq": self._task_sq, "reg_sq": self._reg_sq, "ref": self._ref,
                "task_ref": self._task_ref, "log_ref_sum": self._log_ref_sum, "sde": self._sde,
                "last": self._last, "next": self._next, "steps": self._steps, "at_bound": self._at_bound,
                "updates": self._updates, "cos_sum": self._cos_sum,
                "nfe": self._nfe, "momentum": [None if m is None else m.clone() for m in self._momentum]}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a :meth:`state_dict`; validates every entry before changing anything. The
        task gradient's moving average is kept on the device it was saved on (or mapped to by
        ``torch.load``) and moves to the gradients' device at the next step.

        Raises:
            TypeError, ValueError: naming the entry that is missing, unknown, of the wrong type or
                out of range.
        """
        self._check_state_keys(state_dict)
        if not isinstance(state_dict["sde"], bool):
            raise TypeError(f"state_dict['sde'] must be a bool, got {state_dict['sde']!r}.")
        combine = state_dict["combine"]
        if combine not in COMBINE_MODES:
            raise ValueError(f"state_dict['combine'] must be one of {COMBINE_MODES}, got {combine!r}.")
        steps = _check_int("state_dict['steps']", state_dict["steps"], low=0, high=MAX_STEPS)

        def real(key: str, high: float = 1e30) -> float:
            return _check_real(f"state_dict[{key!r}]", state_dict[key], low=0.0, high=high, low_open=False)

        values: Dict[str, Any] = {"steps": steps, "at_bound": _check_int("state_dict['at_bound']", state_dict["at_bound"], low=0,
                                                          high=steps),
                  "updates": _check_int("state_dict['updates']", state_dict["updates"], low=0, high=MAX_STEPS),
                  "nfe": real("nfe", 1e15), "last": real("last"), "next": real("next"), "ref": real("ref"),
                  "task_ref": real("task_ref", 1e300),
                  "task_sq": real("task_sq", 1e300), "reg_sq": real("reg_sq", 1e300),
                  "log_ref_sum": _check_real("state_dict['log_ref_sum']", state_dict["log_ref_sum"],
                                             low=-1e3 * self.CALIBRATION_STEPS, high=1e3 * self.CALIBRATION_STEPS,
                                             low_open=False, high_open=False),
                  "cos_sum": _check_real("state_dict['cos_sum']", state_dict["cos_sum"], low=-1.0, high=1.0,
                                         low_open=False, high_open=False)}
        momentum = state_dict["momentum"]
        if not isinstance(momentum, list) or not all(m is None or isinstance(m, torch.Tensor) for m in momentum):
            raise TypeError("state_dict['momentum'] must be a list of tensors or None.")
        if not all(m is None or bool(torch.isfinite(m).all()) for m in momentum):
            raise ValueError("state_dict['momentum'] must hold finite values only.")
        values["momentum"] = [None if m is None else m.clone() for m in momentum]
        self.combine = combine
        self._sde = state_dict["sde"]
        for key, value in values.items():
            setattr(self, f"_{key}", value)

    def __repr__(self) -> str:
        return f"AutoWeight(weight={self.weight:.4g}, steps={self._steps}, combine={self.combine!r})"
