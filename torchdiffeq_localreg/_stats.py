"""The statistics object returned with ``return_stats=True``, and the kind of the last regularized
solve in the current context (thread or asyncio task)."""
import contextvars
from dataclasses import dataclass, field
from typing import List, Optional

_LAST_SOLVE_SDE: "contextvars.ContextVar[Optional[bool]]" = contextvars.ContextVar(
    "torchdiffeq_localreg_last_solve_sde", default=None)


def note_regularized_solve(sde: bool) -> None:
    """Records that the current context has just taken a regularization step of an SDE (``sde``) or ODE solve."""
    _LAST_SOLVE_SDE.set(sde)


def last_regularized_solve_is_sde() -> Optional[bool]:
    """Whether the current context's last regularized solve integrated an SDE; None if it has taken none.

    :class:`AutoWeight` reads it at its first ``backward``, before any ``update`` has told it the
    kind of solve. A context variable, like the active ``regularize()`` block: a solve in another
    thread (as in ``nn.DataParallel``'s replicas) or in another asyncio task is not seen."""
    return _LAST_SOLVE_SDE.get()


@dataclass
class LocalRegStats:
    """What one regularized solve cost and what it sampled.

    All values are plain Python numbers, read off the solve; collecting them costs
    no extra function evaluations.

    Attributes:
        strategy: the sampling strategy used (``"unbiased"``, ``"biased"``, ``"global"`` or ``"none"``).
        method: the upstream solver name (e.g. ``"dopri5"``, ``"srk"``).
        nfe_forward: evaluations of ``func`` (ODE) or of the drift (SDE) during the solve.
        nfe_reg: evaluations of ``func`` / the drift spent on the regularization step(s).
        nfe_backward: evaluations of ``func`` / the drift during the backward pass. It keeps
            counting while ``loss.backward()`` runs, so read it after the backward pass; it is
            nonzero only for adjoint methods, whose backward solve evaluates the dynamics again.
        nfe_diffusion_forward, nfe_diffusion_reg, nfe_diffusion_backward: the same counts for the
            diffusion of an SDE (always 0 for ODEs).
        num_accepted: accepted solver steps (every step, for fixed-step solvers).
        num_rejected: rejected solver steps.
        sample_steps: index (among accepted steps, from 0) of the step each sample came from.
        t_samples: the sampled times t_s, in the caller's time convention.
        dt_samples: the step size used at each sample, signed as the caller's time runs.
        error_estimates: the scaled error norm E at each sample (for ``"global"``: at each accepted step).
        stiffness_estimates: the stiffness estimate S at each sample (empty unless ``stiffness_weight > 0``).
        reg: the value of the returned regularization term.
        reg_rows: with ``reg_batch_size``, the rows of the batch (indices into the first dimension
            of ``y0``, increasing) that each sample's regularization step ran on, one list per
            sample; empty when ``reg_batch_size`` is None (the step ran on the whole batch).
        skipped: True when gradients were disabled during the call (``torch.no_grad()``,
            ``torch.inference_mode()``, as at evaluation): the plain solve ran, no regularization
            step was taken and ``reg`` is 0.
        adaptive: False when the solver's steps are fixed in advance (a fixed-grid ODE method such
            as ``euler`` or ``rk4``, or ``adaptive=False`` for torchsde): the NFE of such a solve
            cannot change as the model trains, which the weight controls warn about.
    """

    strategy: str
    method: str
    nfe_forward: int = 0
    nfe_reg: int = 0
    nfe_backward: int = 0
    nfe_diffusion_forward: int = 0
    nfe_diffusion_reg: int = 0
    nfe_diffusion_backward: int = 0
    num_accepted: int = 0
    num_rejected: int = 0
    sample_steps: List[int] = field(default_factory=list)
    t_samples: List[float] = field(default_factory=list)
    dt_samples: List[float] = field(default_factory=list)
    error_estimates: List[float] = field(default_factory=list)
    stiffness_estimates: List[float] = field(default_factory=list)
    reg: float = 0.0
    reg_rows: List[List[int]] = field(default_factory=list)
    skipped: bool = False
    adaptive: bool = True

    @property
    def nfe_total(self) -> int:
        """All evaluations of ``func`` / the drift so far: forward, regularization and backward."""
        return self.nfe_forward + self.nfe_reg + self.nfe_backward


class EvalCounter:
    """Counts evaluations into a :class:`LocalRegStats`, by phase.

    The phase moves ``"forward"`` -> ``"reg"`` -> ``"backward"``; each :meth:`count` adds one
    to the field ``{prefix}_{phase}`` (e.g. ``nfe_forward`` or ``nfe_diffusion_reg``).
    """

    PHASES = ("forward", "reg", "backward")

    def __init__(self, stats: LocalRegStats, prefix: str = "nfe"):
        self.stats = stats
        self.prefix = prefix
        self.phase = "forward"

    def count(self, n: int = 1) -> None:
        name = f"{self.prefix}_{self.phase}"
        setattr(self.stats, name, getattr(self.stats, name) + n)
