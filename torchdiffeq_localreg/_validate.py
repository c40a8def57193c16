"""Checks of our own keyword arguments, shared by the ODE and SDE entry points.

Every allowed string is listed here once; every message names the argument and what it may be.
"""
import math
from typing import Literal, Optional, get_args

import torch

# The type checker's view of ``strategy`` and the runtime check read the same list.
Strategy = Literal["unbiased", "biased", "global", "none"]
STRATEGIES = get_args(Strategy)


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
    if num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples}.")
    for name, value in (("error_weight", error_weight), ("stiffness_weight", stiffness_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a finite float >= 0, got {value!r}.")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite float >= 0, got {value}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
    if not isinstance(return_stats, bool):
        raise TypeError(f"return_stats must be a bool, got {return_stats!r}.")
