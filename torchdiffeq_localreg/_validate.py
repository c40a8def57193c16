"""Checks of our own keyword arguments, shared by the ODE and SDE entry points.

Every allowed string is listed here once; every message names the argument and what it may be.
"""
import math
import numbers
from typing import Any, Literal, Optional, Tuple, get_args

import torch

# The type checker's view of ``strategy`` and the runtime check read the same list.
Strategy = Literal["unbiased", "biased", "global", "none"]
STRATEGIES = get_args(Strategy)

# Each sample is one extra solver step with its own graph (milliseconds and tens of KB on a toy
# problem), run one after another: more than this is refused rather than left to run for hours.
MAX_NUM_SAMPLES = 1024


def _number(name: str, value: Any, kind: type, expected: str) -> Any:
    """``value`` as a Python number of ``kind`` (``numbers.Integral`` or ``numbers.Real``), as users pass
    numbers: Python and numpy scalars, and 0-d tensors (read with ``.item()``). Booleans are refused,
    and so is a tensor that requires grad (``.item()`` would drop its gradient without a word)."""
    source = ""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        if value.requires_grad:
            raise TypeError(f"{name} must be {expected}, got a tensor that requires grad, whose gradient would be "
                            f"lost; pass a number ({name}=value.item()).")
        value, source = value.item(), " (a 0-d tensor)"
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {expected}, got {value!r}{source}.")
    return value


def as_int(name: str, value: Any, expected: str) -> int:
    """An integer argument of ours: a Python int, numpy integer or 0-d integer tensor, as an int."""
    return int(_number(name, value, numbers.Integral, expected))


def as_float(name: str, value: Any, expected: str) -> float:
    """A real argument of ours: any real number (numpy scalars, 0-d tensors included), as a float.

    Raises:
        ValueError: a value too large for a float.
    """
    value = _number(name, value, numbers.Real, expected)
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be {expected}, got an int too large for a float.") from None


def check_reg_args(strategy: str, num_samples: Any, error_weight: Any, stiffness_weight: Any,
                   generator: Optional[torch.Generator], return_stats: bool,
                   adjoint: bool) -> Tuple[int, float, float]:
    """Raises ValueError/TypeError for any bad value of the regularization arguments.

    Returns:
        ``(num_samples, error_weight, stiffness_weight)`` as a Python int and floats: the numbers may
        come as numpy scalars or 0-d tensors (``numbers.Integral`` / ``numbers.Real``), booleans not.
    """
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    if adjoint and strategy == "global":
        raise ValueError(
            "strategy='global' needs backpropagation through the solver's steps, which the adjoint "
            "method does not do. Use odeint_reg/sdeint_reg for 'global', or one of the local "
            "strategies ('unbiased', 'biased') with the adjoint.")
    num_samples = as_int("num_samples", num_samples, "an int >= 1")
    if not 1 <= num_samples <= MAX_NUM_SAMPLES:
        raise ValueError(f"num_samples must be an int in [1, {MAX_NUM_SAMPLES}] (each sample is one extra "
                         f"solver step, run one after another), got {num_samples}.")
    weights = []
    for name, value in (("error_weight", error_weight), ("stiffness_weight", stiffness_weight)):
        as_number = as_float(name, value, "a finite float >= 0")
        if not math.isfinite(as_number) or as_number < 0:
            raise ValueError(f"{name} must be a finite float >= 0, got {as_number}.")
        weights.append(as_number)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
    if not isinstance(return_stats, bool):
        raise TypeError(f"return_stats must be a bool, got {return_stats!r}.")
    return num_samples, weights[0], weights[1]


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


def check_reg_batch_size_value(reg_batch_size: Any, strategy: str) -> Optional[int]:
    """``reg_batch_size`` on its own: None, or an integer >= 1 (returned as an int) with a strategy it
    applies to."""
    if reg_batch_size is None:
        return None
    reg_batch_size = as_int("reg_batch_size", reg_batch_size, "an int >= 1 or None")
    if reg_batch_size < 1:
        raise ValueError(f"reg_batch_size must be an int >= 1 or None, got {reg_batch_size}.")
    if strategy == "global":
        raise ValueError("reg_batch_size applies to the local strategies ('unbiased', 'biased'); strategy='global' "
                         "sums the solve's own steps over the whole batch. Pass reg_batch_size=None.")
    return reg_batch_size


def check_reg_batch_size(reg_batch_size: Any, y0, strategy: str) -> Tuple[Optional[int], Optional[int]]:
    """``(reg_batch_size as an int, B)`` with B the batch size (the first dimension of ``y0``, of every
    tensor of a tuple ``y0``) when ``reg_batch_size`` is an integer in [1, B] and the strategy is a
    local one; B is None when ``reg_batch_size`` is None or the strategy is ``"none"`` (nothing to
    regularize). An empty batch (B = 0) passes with any ``reg_batch_size``: it has nothing to
    regularize either."""
    reg_batch_size = check_reg_batch_size_value(reg_batch_size, strategy)
    if reg_batch_size is None or strategy == "none":
        return reg_batch_size, None
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
    if reg_batch_size > batch > 0:
        raise ValueError(f"reg_batch_size must be at most the batch size (the first dimension of y0), {batch}; "
                         f"got {reg_batch_size}.")
    return reg_batch_size, batch


def has_no_elements(y0) -> bool:
    """Whether the state (a tensor, or every tensor of a tuple) is empty, e.g. a batch of 0 rows.
    Such a state has nothing to regularize; its error norms (RMS over no elements) are NaN."""
    parts = y0 if isinstance(y0, tuple) else (y0,)
    return all(isinstance(part, torch.Tensor) and part.numel() == 0 for part in parts)
