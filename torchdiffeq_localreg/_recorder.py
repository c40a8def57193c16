"""What a wrapper solver reports to while it solves, and how reg is made from it.

One :class:`Recorder` serves one call of an entry point: the ODE and SDE wrapper solvers
report their span and accepted steps to it, and it turns them into ``reg`` with the help of
an :class:`Estimator` that knows the solver family. Nothing here is shared between calls,
so nested and concurrent solves do not interfere.
"""
import abc
import contextlib
from typing import Any, List, Optional, Tuple

import torch

from ._sampling import LOCAL_STRATEGIES, Sample, StepSampler
from ._stats import EvalCounter, LocalRegStats


def recording_gradients() -> bool:
    """Whether autograd records operations now. Off under ``torch.no_grad()`` and under
    ``torch.inference_mode()``, also with ``torch.enable_grad()`` inside it (grad mode is then on,
    but inference mode records nothing): a regularization step could not train anything."""
    return torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def _float(x) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


class Estimator(abc.ABC):
    """How one solver family turns a recorded step into estimates.

    Times are tensors in the solver's own (increasing) time; ``dt > 0``.
    """

    @abc.abstractmethod
    def sample_point(self, payload: Any, t: float) -> Tuple[torch.Tensor, Any, torch.Tensor]:
        """(t_s, y_s, dt_s) at time ``t`` inside the recorded step, all detached constants.

        y_s is the state in whatever form :meth:`local_estimates` takes it (a tensor for ODEs)."""

    @abc.abstractmethod
    def local_estimates(self, t: torch.Tensor, y: Any, dt: torch.Tensor, stiffness: bool):
        """(E, S or None) of one fresh step of the solver from (t, y) with dt, with autograd on."""

    @abc.abstractmethod
    def step_estimates(self, payload: Any, stiffness: bool):
        """(E, S or None, dt) of the recorded step itself, connected to the solve's graph."""


class RowSubset(abc.ABC):
    """Runs the regularization step on some rows of a batched state (``reg_batch_size``).

    Args:
        batch: the batch size B, the first dimension of the caller's state.
        size: how many rows each regularization step runs on, 1 <= size <= B.
    """

    def __init__(self, batch: int, size: int):
        self.batch = batch
        self.size = size

    @abc.abstractmethod
    def local_estimates(self, estimator: Estimator, t: torch.Tensor, y: Any, dt: torch.Tensor, rows: List[int],
                        stiffness: bool):
        """:meth:`Estimator.local_estimates` of the step from (t, y) with dt, on ``rows`` of y only."""


class Recorder:
    """Collects one solve's accepted steps and computes ``reg`` from them.

    Args:
        strategy: ``"unbiased"``, ``"biased"`` or ``"global"`` (``"none"`` never builds a recorder).
        num_samples: samples for the local strategies.
        error_weight, stiffness_weight: weights of E * |dt| and S.
        generator: random source of the samplers.
        stats: filled in as the solve goes.
        counters: evaluation counters whose phase is switched to ``"reg"`` while estimates run.
        time_sign: -1 when the caller's time runs backwards (the solver sees -t), else 1.
        rows: with ``reg_batch_size``, how the regularization step runs on a subset of the rows.
    """

    def __init__(self, strategy: str, num_samples: int, error_weight: float, stiffness_weight: float,
                 generator: Optional[torch.Generator], stats: LocalRegStats,
                 counters: Tuple[EvalCounter, ...] = (), time_sign: float = 1.0,
                 rows: Optional[RowSubset] = None):
        self.strategy = strategy
        # As floats: a huge Python int would overflow inside torch.
        self.error_weight = float(error_weight)
        self.stiffness_weight = float(stiffness_weight)
        self.stats = stats
        self.counters = counters
        self.time_sign = time_sign
        self.rows = rows
        self.estimator: Optional[Estimator] = None
        self.sampler = StepSampler(strategy, num_samples, generator) if strategy in LOCAL_STRATEGIES else None
        self.samples: Optional[List[Sample]] = None
        self.global_terms: List[torch.Tensor] = []
        self.global_e: List[torch.Tensor] = []
        self.global_s: List[torch.Tensor] = []

    @property
    def needs_step_graph(self) -> bool:
        """Whether accepted steps must be reported with their graph-connected internals."""
        return self.strategy == "global"

    @property
    def wants_stiffness(self) -> bool:
        return self.stiffness_weight > 0

    # Called by the wrapper solvers, in order.
    def bind(self, estimator: Estimator) -> None:
        if self.estimator is not None:
            raise RuntimeError("A localreg recorder serves exactly one solve; it was handed to a second solver.")
        self.estimator = estimator

    def start(self, t_start: torch.Tensor) -> None:
        if self.sampler is not None:
            self.sampler.start(_float(t_start))

    def accept(self, t0: torch.Tensor, t1: torch.Tensor, payload: Any) -> None:
        self.stats.num_accepted += 1
        if self.sampler is not None:
            self.sampler.observe(_float(t0), _float(t1), payload)
        elif self.strategy == "global":
            with self.reg_phase():
                e, s, dt = self._bound_estimator().step_estimates(payload, self.wants_stiffness)
            self.global_terms.append(self._term(e, s, dt))
            self.global_e.append(e.detach())
            if s is not None:
                self.global_s.append(s.detach())

    def _bound_estimator(self) -> Estimator:
        if self.estimator is None:
            raise RuntimeError("No solver has reported to this localreg recorder.")
        return self.estimator

    def reject(self) -> None:
        self.stats.num_rejected += 1

    def finish(self, t_end: torch.Tensor) -> None:
        if self.sampler is not None:
            self.samples = self.sampler.finish(_float(t_end))

    # Called by the entry point after the solve.
    @contextlib.contextmanager
    def reg_phase(self):
        previous = [c.phase for c in self.counters]
        for c in self.counters:
            c.phase = "reg"
        try:
            yield
        finally:
            for c, phase in zip(self.counters, previous):
                c.phase = phase

    def _term(self, e: torch.Tensor, s: Optional[torch.Tensor], dt: torch.Tensor) -> torch.Tensor:
        term = self.error_weight * e * dt.abs().to(e.dtype)
        if s is not None:
            term = term + self.stiffness_weight * s.to(term.dtype)
        return term

    def compute(self, like: torch.Tensor) -> torch.Tensor:
        """The regularization term, a scalar of ``like``'s dtype and device.

        Raises:
            FloatingPointError: if the term is not finite.
        """
        stats = self.stats
        if self.strategy == "global":
            terms = self.global_terms
            stats.error_estimates = torch.stack(self.global_e).tolist() if self.global_e else []
            stats.stiffness_estimates = torch.stack(self.global_s).tolist() if self.global_s else []
            reg = torch.stack(terms).sum() if terms else None
        else:
            terms = []
            es: List[torch.Tensor] = []
            ss: List[torch.Tensor] = []
            non_finite_at: List[float] = []   # sampled times whose recorded state is not finite
            with self.reg_phase():
                for sample in self.samples or []:
                    estimator = self._bound_estimator()
                    t_s, y_s, dt_s = estimator.sample_point(sample.payload, sample.t)
                    state = getattr(y_s, "y", y_s)   # the SDE estimator hands over a point holding y
                    if isinstance(state, torch.Tensor) and not bool(torch.isfinite(state).all()):
                        non_finite_at.append(self.time_sign * _float(t_s))
                    e, s = self._local_estimates(estimator, t_s, y_s, dt_s)
                    terms.append(self._term(e, s, dt_s))
                    es.append(e.detach())
                    if s is not None:
                        ss.append(s.detach())
                    stats.sample_steps.append(sample.index)
                    stats.t_samples.append(self.time_sign * _float(t_s))
                    stats.dt_samples.append(self.time_sign * _float(dt_s))
            stats.error_estimates = torch.stack(es).tolist() if es else []
            stats.stiffness_estimates = torch.stack(ss).tolist() if ss else []
            reg = torch.stack(terms).mean() if terms else None
        if reg is None:
            # No accepted step (e.g. a single output time): nothing to regularize.
            return torch.zeros((), dtype=like.dtype, device=like.device)
        reg = reg.to(like.dtype)
        value = _float(reg)
        stats.reg = value
        if not torch.isfinite(torch.tensor(value)):
            raise FloatingPointError(self._non_finite_message(value, like, non_finite_at if self.strategy != "global"
                                                              else []))
        return reg

    def _local_estimates(self, estimator: Estimator, t_s: torch.Tensor, y_s: Any, dt_s: torch.Tensor):
        subset = self.rows
        if subset is None:
            return estimator.local_estimates(t_s, y_s, dt_s, self.wants_stiffness)
        if subset.size == subset.batch:
            # The whole batch: the step is the full-batch one, and nothing is drawn.
            self.stats.reg_rows.append(list(range(subset.batch)))
            return estimator.local_estimates(t_s, y_s, dt_s, self.wants_stiffness)
        if self.sampler is None:
            raise RuntimeError("reg_batch_size needs a local strategy's sampler.")
        rows = self.sampler.rows(subset.batch, subset.size)
        self.stats.reg_rows.append(rows)
        return subset.local_estimates(estimator, t_s, y_s, dt_s, rows, self.wants_stiffness)

    def _non_finite_message(self, value: float, solution: torch.Tensor, non_finite_at: List[float]) -> str:
        """Says what was not finite: y0, the solve's own states, or only the regularization step."""
        stats = self.stats
        head = f"The regularization term is not finite ({value}) with strategy={self.strategy!r}: "
        if solution.dim() > 0 and not bool(torch.isfinite(solution[0]).all()):
            return head + "y0 is not finite (the solution starts from it)."
        if not bool(torch.isfinite(solution.detach()).all()) or non_finite_at:
            where = f" (the sampled state at t={non_finite_at} is not finite)" if non_finite_at else ""
            return head + (f"the solve itself produced non-finite states{where}, before any regularization "
                           f"step; the dynamics overflow on this span.")
        return head + (f"error estimates {stats.error_estimates}, stiffness estimates {stats.stiffness_estimates}, "
                       f"at times {stats.t_samples} with steps {stats.dt_samples}. The solve's states are finite; "
                       f"the dynamics overflow on the regularization step; lower the learning rate or the weights.")
