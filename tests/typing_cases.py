"""Static checks of the public API's types: read by mypy (tests/test_packaging.py), never run.

Each ``assert_type`` fails the check if mypy infers another type for the call. Each wrong call
carries a ``# type: ignore[code]``; mypy runs with ``--warn-unused-ignores``, so a wrong call that
mypy no longer rejects (with that error code) fails the check too.
"""
from typing import Any, List, Tuple

import torch
from typing_extensions import assert_type

from torchdiffeq_localreg import LocalRegStats, odeint_adjoint_reg, odeint_reg, sdeint_adjoint_reg, sdeint_reg

Tensor = torch.Tensor
func = torch.nn.Linear(2, 2)
y0, t = torch.zeros(2), torch.linspace(0.0, 1.0, 3)
flag = bool(torch.rand(()) > 0.5)


def event_fn(t: Tensor, y: Tensor) -> Tensor:
    return y.sum()


class SDE(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return -y

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return torch.ones_like(y)


sde, ys0, ts = SDE(), torch.zeros(3, 2), torch.linspace(0.0, 1.0, 3)

# ODE: the tuple follows return_stats and event_fn; the solution keeps y0's structure.
assert_type(odeint_reg(func, y0, t), Tuple[Tensor, Tensor])
assert_type(odeint_reg(func, y0, t, return_stats=True), Tuple[Tensor, Tensor, LocalRegStats])
assert_type(odeint_reg(func, y0, t, event_fn=event_fn), Tuple[Tensor, Tensor, Tensor])
assert_type(odeint_reg(func, y0, t, event_fn=event_fn, return_stats=True),
            Tuple[Tensor, Tensor, Tensor, LocalRegStats])
assert_type(odeint_reg(lambda t, y: y, (y0, y0), t, strategy="biased"), Tuple[Tuple[Tensor, ...], Tensor])
assert_type(odeint_reg(func, y0, t, return_stats=flag), Tuple[Any, ...])
assert_type(odeint_adjoint_reg(func, y0, t, adjoint_params=(), return_stats=True),
            Tuple[Tensor, Tensor, LocalRegStats])
assert_type(odeint_adjoint_reg(func, y0, t, event_fn=event_fn), Tuple[Tensor, Tensor, Tensor])

# SDE: the tuple follows return_stats and logqp.
assert_type(sdeint_reg(sde, ys0, ts), Tuple[Tensor, Tensor])
assert_type(sdeint_reg(sde, ys0, ts, dt=0.1, return_stats=True), Tuple[Tensor, Tensor, LocalRegStats])
assert_type(sdeint_reg(sde, ys0, [0.0, 1.0], logqp=True), Tuple[Tensor, Tensor, Tensor])
assert_type(sdeint_adjoint_reg(sde, ys0, ts, logqp=True, return_stats=True),
            Tuple[Tensor, Tensor, Tensor, LocalRegStats])
assert_type(sdeint_adjoint_reg(sde, ys0, ts, extra=True), Tuple[Any, ...])

stats = odeint_reg(func, y0, t, return_stats=True)[2]
assert_type(stats.nfe_forward, int)
assert_type(stats.error_estimates, List[float])

# Wrong calls that mypy must reject.
odeint_reg(func, y0, t, strategy="unbaised")  # type: ignore[call-overload]
odeint_reg(func, y0, t, num_samples=1.5)  # type: ignore[call-overload]
odeint_reg(func, y0, [0.0, 1.0])  # type: ignore[call-overload]
odeint_adjoint_reg(func, y0, t, generator=0)  # type: ignore[call-overload]
solution, reg = odeint_reg(func, y0, t, return_stats=True)  # type: ignore[misc]
sdeint_reg(sde, ys0, ts, strategy="Global")  # type: ignore[call-overload]
ys, reg = sdeint_reg(sde, ys0, ts, logqp=True)  # type: ignore[misc]
stats.nfe_forwards  # type: ignore[attr-defined]
