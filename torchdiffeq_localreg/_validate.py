"""Checks of our own keyword arguments, shared by the ODE and SDE entry points.

Every allowed string is listed here once; every message names the argument and what it may be.
"""
import math
from typing import Literal, Optional, get_args

import torch

# The type checker's view of ``strategy`` and the runtime check read the same list.
Strategy = Literal["unbiased", "biased", "global", "none"]
STRATEGIES = get_args(Strategy)

# Each sample is one extra solver step with its own graph (milliseconds and tens of KB on a toy
# problem), run one after another: more than this is refused rather than left to run for hours.
MAX_NUM_SAMPLES = 1024


def check_reg_args(strategy: str, num_samples: int, error_weight: float, stiffness_weight: float,
                   generator: Optional[torch.Generator], return_stats: bool, adjoint: bool) -> None:
    """Raises ValueError/TypeError for any bad value of the regularization arguments."""
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    if adjoint and strategy == "global":
        raise ValueError(
            "strategy='global' needs backpropagation through the solver's steps, which the adjoint "
            "method does not do. Use odeint_reg/sdeint_reg for 'global', or one of the local "
            "strategies ('unbiased', 'biased') with the adjoint.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise TypeError(f"num_samples must be an int >= 1, got {num_samples!r}.")
    if not 1 <= num_samples <= MAX_NUM_SAMPLES:
        raise ValueError(f"num_samples must be an int in [1, {MAX_NUM_SAMPLES}] (each sample is one extra "
                         f"solver step, run one after another), got {num_samples}.")
    for name, value in (("error_weight", error_weight), ("stiffness_weight", stiffness_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a finite float >= 0, got {value!r}.")
        try:
            as_float = float(value)
        except OverflowError:
            raise ValueError(f"{name} must be a finite float >= 0, got an int too large for a float.") from None
        if not math.isfinite(as_float) or as_float < 0:
            raise ValueError(f"{name} must be a finite float >= 0, got {value}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
    if not isinstance(return_stats, bool):
        raise TypeError(f"return_stats must be a bool, got {return_stats!r}.")


def check_real_state(y0, strategy: str) -> None:
    """Complex states: the regularization's error norms and stiffness quotients are defined for real
    states only, so a complex ``y0`` is refused up front, for ODEs and SDEs alike; ``strategy="none"``
    (the plain solve) passes it to upstream untouched."""
    if strategy == "none":
        return
    parts = y0 if isinstance(y0, tuple) else (y0,)
    if any(isinstance(part, torch.Tensor) and part.is_complex() for part in parts):
        raise TypeError(f"y0 must be a real floating-point tensor (or tuple of them) with strategy={strategy!r}; "
                        f"complex states are not supported by the regularization. strategy='none' runs the "
                        f"plain solve, as upstream does.")


def check_times(name: str, t) -> None:
    """The times of an ODE solve: a 1-D tensor (upstream asserts the same, with the same words)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a 1-D torch.Tensor, got {type(t).__name__}.")
    if t.dim() != 1:
        raise ValueError(f"{name} must be one dimensional (a 1-D tensor of times), got a {t.dim()}-dim tensor.")


def check_reg_batch_size_value(reg_batch_size, strategy: str) -> None:
    """``reg_batch_size`` on its own: None, or an int >= 1 with a strategy it applies to."""
    if reg_batch_size is None:
        return
    if isinstance(reg_batch_size, bool) or not isinstance(reg_batch_size, int):
        raise TypeError(f"reg_batch_size must be an int >= 1 or None, got {reg_batch_size!r}.")
    if reg_batch_size < 1:
        raise ValueError(f"reg_batch_size must be an int >= 1 or None, got {reg_batch_size}.")
    if strategy == "global":
        raise ValueError("reg_batch_size applies to the local strategies ('unbiased', 'biased'); strategy='global' "
                         "sums the solve's own steps over the whole batch. Pass reg_batch_size=None.")


def check_reg_batch_size(reg_batch_size, y0, strategy: str) -> Optional[int]:
    """The batch size B (the first dimension of ``y0``, of every tensor of a tuple ``y0``) when
    ``reg_batch_size`` is an int in [1, B] and the strategy is a local one; None when
    ``reg_batch_size`` is None or the strategy is ``"none"`` (nothing to regularize)."""
    check_reg_batch_size_value(reg_batch_size, strategy)
    if reg_batch_size is None or strategy == "none":
        return None
    parts = y0 if isinstance(y0, tuple) else (y0,)
    shapes = [tuple(p.shape) if isinstance(p, torch.Tensor) else None for p in parts]
    if any(shape is None or len(shape) == 0 for shape in shapes):
        raise ValueError(f"reg_batch_size needs a batch dimension: the first dimension of y0 (of every tensor of a "
                         f"tuple y0) is taken as the batch, but y0 has shape(s) {shapes}.")
    batches = {shape[0] for shape in shapes if shape is not None}
    if len(batches) != 1:
        raise ValueError(f"reg_batch_size needs one batch dimension: every tensor of the tuple y0 must have the same "
                         f"first dimension, got shapes {shapes}.")
    batch = batches.pop()
    if reg_batch_size > batch:
        raise ValueError(f"reg_batch_size must be at most the batch size (the first dimension of y0), {batch}; "
                         f"got {reg_batch_size}.")
    return batch
