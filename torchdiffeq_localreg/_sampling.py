"""Choosing where to regularize: the one place that draws random numbers.

Both local strategies are one mechanism, weighted reservoir sampling over the solver's
accepted steps, kept with O(num_samples) memory while the solve runs:

- ``"biased"``: every accepted step has weight 1, so each sample is a uniformly chosen
  accepted step, and the sample point is that step's start (t_k, y_k, dt_k).
- ``"unbiased"``: a step's weight is the length of its overlap with the integration span,
  so the chosen step contains a time that is uniform on the span; t_s is then drawn
  uniformly inside the chosen piece. The span's end need not be known in advance (event
  handling): the newest step is committed only once the next one arrives or the solve ends,
  when its overlap with the final span is known.

Each of the ``num_samples`` slots is an independent reservoir, so samples are drawn with
replacement.

With ``reg_batch_size``, the rows of the batch each regularization step runs on are drawn here
too (:meth:`StepSampler.rows`), after the solve, from the same generator.

Without a caller's generator the draws come from :func:`private_generator`, never from torch's
global random stream: swapping ``odeint`` for ``odeint_reg`` must not shift the user's own later
draws (data order, dropout, initialisation).
"""
import threading
from dataclasses import dataclass, replace
from typing import Any, List, Optional

import torch

LOCAL_STRATEGIES = ("unbiased", "biased")

_BUFFER = 256

# Mixed into torch.initial_seed() so that our stream is not the user's stream after the same seed
# (torch.rand after torch.manual_seed(s) would otherwise repeat our uniforms).
_SEED_OFFSET = 0x5DEECE66D
_private_lock = threading.Lock()
_private: Optional[torch.Generator] = None
_private_seed: Optional[int] = None


def private_generator() -> torch.Generator:
    """The package's own CPU generator, used whenever the caller passes no ``generator``.

    Seeded from ``torch.initial_seed()`` on first use, and re-seeded at a solve whenever that
    differs from its value at the previous solve that used this generator (``torch.manual_seed(s)``
    with a new ``s``, ``torch.seed()``), so a program that seeds torch draws the same samples on
    every run, while torch's global stream is never consumed. Calling ``torch.manual_seed`` with
    the seed that was in force at the previous solve does not restart it (``torch.initial_seed()``
    looks unchanged, and nothing else tells a re-seed apart from ordinary use); a caller who
    needs that passes its own generator. The check and re-seed happen under a
    lock; torch serialises the draws on one generator, so threads share the stream safely (in an
    order that depends on their scheduling).
    """
    global _private, _private_seed
    seed = torch.initial_seed()
    with _private_lock:
        if _private is None or seed != _private_seed:
            _private = torch.Generator().manual_seed((seed + _SEED_OFFSET) % 2 ** 64)
            _private_seed = seed
        return _private


@dataclass
class Sample:
    """One sampled point: the step it lies in, and the time t_s inside that step."""

    index: int      # index of the step among accepted steps, from 0
    t0: float       # start of the step
    t1: float       # end of the step
    t: float        # the sampled time, t0 <= t <= t1
    payload: Any    # whatever the solver stored to recompute this step
    lo: float = 0.0  # the part of the step inside the span (unbiased strategy)
    hi: float = 0.0


class _Uniforms:
    """Uniform draws on [0, 1), fetched from ``generator`` in blocks to keep per-step cost low."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator
        self.buffer: List[float] = []

    def next(self) -> float:
        if not self.buffer:
            draws = torch.rand(_BUFFER, generator=self.generator, dtype=torch.float64, device=self.generator.device)
            self.buffer = draws.tolist()[::-1]
        return self.buffer.pop()


class StepSampler:
    """Keeps ``num_samples`` independent reservoir samples of the accepted steps of one solve.

    Times are plain floats in the solver's own (increasing) time. Call :meth:`observe` for every
    accepted step in order, then :meth:`finish` once with the end of the span. ``generator``
    None draws from :func:`private_generator`.
    """

    def __init__(self, strategy: str, num_samples: int, generator: Optional[torch.Generator]):
        if strategy not in LOCAL_STRATEGIES:
            raise ValueError(f"StepSampler: strategy must be one of {LOCAL_STRATEGIES}, got {strategy!r}.")
        self.strategy = strategy
        self.num_samples = num_samples
        self.uniforms = _Uniforms(generator if generator is not None else private_generator())
        self.t_start: Optional[float] = None
        self.total_weight = 0.0
        self.slots: List[Optional[Sample]] = [None] * num_samples
        self.pending: Optional[Sample] = None
        self.count = 0

    def start(self, t_start: float) -> None:
        self.t_start = t_start

    def observe(self, t0: float, t1: float, payload: Any) -> None:
        if self.pending is not None:
            self._commit(self.pending, self.pending.t1)
        self.pending = Sample(index=self.count, t0=t0, t1=t1, t=t0, payload=payload)
        self.count += 1

    def finish(self, t_end: float) -> List[Sample]:
        """Closes the span at ``t_end`` and returns the samples (empty if the solve took no step)."""
        if self.pending is not None:
            self._commit(self.pending, t_end)
            self.pending = None
        samples = [replace(s) for s in self.slots if s is not None]
        if self.strategy == "unbiased":
            for sample in samples:
                sample.t = sample.lo + self.uniforms.next() * (sample.hi - sample.lo)
        return samples

    def rows(self, batch: int, size: int) -> List[int]:
        """``size`` distinct rows of ``range(batch)``, uniformly without replacement, in increasing order."""
        generator = self.uniforms.generator
        drawn = torch.randperm(batch, generator=generator, device=generator.device)[:size]
        return sorted(drawn.tolist())

    def _commit(self, step: Sample, t_end: float) -> None:
        if self.strategy == "biased":
            weight = 1.0
        else:
            lo = step.t0 if self.t_start is None else max(step.t0, self.t_start)
            step.lo, step.hi = lo, max(lo, min(step.t1, t_end))
            weight = step.hi - step.lo
        if weight <= 0.0:
            return
        self.total_weight += weight
        for i in range(self.num_samples):
            # Keep this step with probability weight / total_weight (always, for the first).
            if self.uniforms.next() * self.total_weight < weight:
                self.slots[i] = step
