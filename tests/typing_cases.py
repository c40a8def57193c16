"""Static checks of the public API's types: read by mypy (tests/test_packaging.py), never run.

Each ``assert_type`` fails the check if mypy infers another type for the call. Each wrong call
carries a ``# type: ignore[code]``; mypy runs with ``--warn-unused-ignores``, so a wrong call that
mypy no longer rejects (with that error code) fails the check too.
"""
from typing import Any, Dict, List, Literal, Tuple

import torch
from typing_extensions import assert_type

import torchdiffeq_localreg as localreg
from torchdiffeq_localreg import (AutoWeight, LocalRegStats, NFEBudget, odeint_adjoint_reg, odeint_event_reg,
                                  odeint_reg, regularize, sdeint_adjoint_reg, sdeint_reg)

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

# Weight control: a float weight, moved by update() from one stats or a list of them.
budget = NFEBudget(target_nfe=40.0, rate=0.1)
assert_type(budget.weight, float)
assert_type(budget.update(stats), float)
assert_type(budget.update([stats, stats]), float)
assert_type(budget.state_dict(), Dict[str, Any])
assert_type(budget.load_state_dict(budget.state_dict()), None)
solution, reg = odeint_reg(func, y0, t)
assert_type(budget.backward(solution.sum(), reg, [y0]), None)
assert_type(NFEBudget(target_nfe=40.0, combine="sum").combine, Literal["project", "sum"])
auto = AutoWeight()
assert_type(auto.backward(solution.sum(), reg, [y0]), None)
assert_type(auto.update(stats), float)
for number in (auto.weight, auto.share, auto.ceiling, auto.nfe, auto.conflict, auto.conflict_factor):
    assert_type(number, float)
assert_type(auto.steps, int)
assert_type(auto.state_dict(), Dict[str, Any])
assert_type(AutoWeight(combine="sum").combine, Literal["project", "sum"])

# One-import mode: the block yields itself; upstream's solvers return Any as upstream's do.
with regularize(strategy="biased", num_samples=2) as block:
    assert_type(block, regularize)
    assert_type(localreg.odeint(func, y0, t, method="dopri5"), Any)
    assert_type(localreg.odeint_adjoint(func, y0, t, adjoint_params=()), Any)
    assert_type(localreg.sdeint(sde, ys0, ts, dt=0.1), Any)
    assert_type(localreg.sdeint_adjoint(sde, ys0, ts, adaptive=True), Any)
assert_type(block.reg, Tensor)
assert_type(block.stats, List[LocalRegStats])
assert_type(block.nfe_forward, int)
budget.update(block.stats)

# Event handling: the event time, the solution and reg (then stats), in a tuple.
assert_type(odeint_event_reg(func, y0, t[0], event_fn=event_fn), Tuple[Any, ...])
assert_type(odeint_event_reg(func, y0, t[0], event_fn=event_fn, odeint_interface=odeint_adjoint_reg,
                             return_stats=True), Tuple[Any, ...])

# Wrong calls that mypy must reject.
odeint_reg(func, y0, t, strategy="unbaised")  # type: ignore[call-overload]
odeint_reg(func, y0, t, num_samples=1.5)  # type: ignore[call-overload]
odeint_reg(func, y0, [0.0, 1.0])  # type: ignore[call-overload]
odeint_adjoint_reg(func, y0, t, generator=0)  # type: ignore[call-overload]
solution, reg = odeint_reg(func, y0, t, return_stats=True)  # type: ignore[misc]
sdeint_reg(sde, ys0, ts, strategy="Global")  # type: ignore[call-overload]
ys, reg = sdeint_reg(sde, ys0, ts, logqp=True)  # type: ignore[misc]
stats.nfe_forwards  # type: ignore[attr-defined]
NFEBudget(target_nfe=40.0, initial_weigth=0.1)  # type: ignore[call-arg]
NFEBudget(target_nfe=40.0, combine="average")  # type: ignore[arg-type]
budget.weight = 0.5  # type: ignore[misc]
regularize("biased")  # type: ignore[call-arg]
regularize(num_samples="2")  # type: ignore[arg-type]
block.stats.append(stats.nfe_forward)  # type: ignore[arg-type]
localreg.odeint(func, y0, t, strategy="biased")  # type: ignore[call-arg]
localreg.odeint_adjoint(func, y0, t, adjiont_rtol=1e-3)  # type: ignore[call-arg]
localreg.odeint(func, y0, t, method=5)  # type: ignore[arg-type]
localreg.odeint(func, y0, t, 1e-3)  # type: ignore[call-arg]
odeint_event_reg(func, y0, t[0])  # type: ignore[call-arg]
