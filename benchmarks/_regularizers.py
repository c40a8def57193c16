"""The other cost regularizers the benchmarks compare against, written by us in PyTorch.

- STEER (Ghosh, Behl, Dupont, Torr, Namboodiri, NeurIPS 2020): during training, the end time of the
  solve is drawn uniformly from [T - b, T + b] at every iteration.
- RNODE (Finlay, Jacobsen, Nurbekyan, Oberman, ICML 2020): the kinetic energy int ||f||^2 dt and the
  Jacobian Frobenius norm int ||df/dz||_F^2 dt (Hutchinson estimate eps^T df/dz with Gaussian eps,
  one eps per solve) are integrated alongside the state as an augmented ODE; their weighted sum is
  added to the loss.
- TayNODE (Kelly et al. 2020) regularizes higher-order total derivatives through Taylor-mode
  automatic differentiation, which PyTorch does not have; it is not offered.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn


def steer_times(t: torch.Tensor, b: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``t`` with its last time replaced by ``t[-1] + u``, ``u ~ U(-b, b)`` (STEER's random end time).

    Raises:
        ValueError: if ``b`` is negative or not smaller than the last interval of ``t``
            (the times must stay strictly monotonic).
    """
    if len(t) < 2:
        raise ValueError("steer_times: t needs at least two times.")
    last = float((t[-1] - t[-2]).abs())
    if not 0 <= b < last:
        raise ValueError(f"steer_times: b must satisfy 0 <= b < |t[-1] - t[-2]| = {last:g}, got {b}.")
    u = (torch.rand((), generator=generator, dtype=torch.float64) * 2 - 1).item() * b
    out = t.clone()
    out[-1] = t[-1] + u * torch.sign(t[-1] - t[-2])
    return out


class RNODEDynamics(nn.Module):
    """Augments ``func(t, z)`` with the RNODE integrands.

    The state is the tuple ``(z, kinetic, jacobian)``, where ``kinetic`` and ``jacobian`` have shape
    ``(batch,)`` (the first dimension of ``z``) and start at zero; their time derivatives are
    ``||f||^2`` and ``||eps^T df/dz||^2`` summed over every dimension but the first. Call
    :meth:`resample` before each solve to draw a new Hutchinson probe ``eps`` like ``z``.
    """

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self.eps: Optional[torch.Tensor] = None

    def resample(self, z: torch.Tensor, generator: Optional[torch.Generator] = None) -> None:
        device = generator.device if generator is not None else z.device
        self.eps = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=device).to(z.device)

    @staticmethod
    def initial_state(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        return z, zeros, zeros.clone()

    def forward(self, t, state):
        z = state[0]
        if self.eps is None:
            raise RuntimeError("RNODEDynamics: call resample(z) before solving.")
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.func(t, z)
            (e_dfdz,) = torch.autograd.grad(f, z, self.eps, create_graph=True)
        kinetic = f.pow(2).flatten(1).sum(1)
        jacobian = e_dfdz.pow(2).flatten(1).sum(1)
        return f, kinetic, jacobian
