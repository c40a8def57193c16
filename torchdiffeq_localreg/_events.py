"""Differentiable event times with local regularization: ``torchdiffeq.odeint_event`` around ``odeint_reg``."""
from typing import Any, Callable, Dict, Tuple

import torch
import torchdiffeq

from ._api_ode import TensorOrTensors, odeint_reg


def odeint_event_reg(func: Callable, y0: TensorOrTensors, t0: torch.Tensor, *, event_fn: Callable,
                     reverse_time: bool = False, odeint_interface: Callable = odeint_reg,
                     **kwargs: Any) -> Tuple[Any, ...]:
    """``torchdiffeq.odeint_event`` with a regularization term: returns ``(event_t, solution, reg)``.

    Upstream's ``odeint_event`` runs the solve (with ``event_fn``, from ``t0`` towards
    ``t0 + 1`` or, with ``reverse_time``, ``t0 - 1``) through ``odeint_interface`` and reroutes the
    gradient of the event time through the implicit function theorem. Here that interface is
    :func:`odeint_reg` (or :func:`odeint_adjoint_reg`): the event time, the solution and their
    gradients are upstream's, and the solve's ``reg`` is returned beside them.

    Args:
        func, y0, t0, event_fn, reverse_time: as in ``torchdiffeq.odeint_event``.
        odeint_interface: :func:`odeint_reg` (default) or :func:`odeint_adjoint_reg`.
        **kwargs: passed to ``odeint_interface``: upstream's (``rtol``, ``atol``, ``method``,
            ``options``, ``adjoint_*``) and ours (``strategy``, ``num_samples``, ``error_weight``,
            ``stiffness_weight``, ``generator``, ``return_stats``).

    Returns:
        ``(event_t, solution, reg)``; with ``return_stats=True`` a :class:`LocalRegStats` is appended.
    """
    extra: Dict[str, Any] = {}

    def interface(f: Callable, y: TensorOrTensors, t: torch.Tensor, **kw: Any) -> Any:
        event_t, solution, *rest = odeint_interface(f, y, t, **kw)
        extra["rest"] = rest
        return event_t, solution

    event_t, solution = torchdiffeq.odeint_event(func, y0, t0, event_fn=event_fn, reverse_time=reverse_time,
                                                 odeint_interface=interface, **kwargs)
    return (event_t, solution, *extra["rest"])
