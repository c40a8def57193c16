"""Differentiable error and stiffness estimates of one solver step.

Everything here runs with autograd on, so that the gradient of the estimate reaches the
parameters of the dynamics through this one step only.
"""
from typing import Callable, Optional, Tuple

import torch
from ._upstream import _ButcherTableau, _compute_error_ratio, _runge_kutta_step
from ._upstream import sde_rms as _sde_rms

Estimate = Tuple[torch.Tensor, Optional[torch.Tensor]]


def stiffness_pair(tableau: _ButcherTableau) -> Tuple[int, int]:
    """The two stages of ``tableau`` closest in time, latest pair first on ties.

    Stage 0 is the step's start (c = 0); stage i >= 1 has c = ``tableau.alpha[i - 1]``.
    For Dormand-Prince 5(4) and Tsitouras 5(4) this is stages 5 and 6 (both at c = 1, the second at y1),
    for dopri8 the last two stages (c = 1), for bosh3 stages 2 and 3 (c = 3/4 and 1),
    for fehlberg2 stages 1 and 2 (c = 1/2 and 1), for adaptive_heun stages 0 and 1.
    """
    c = [0.0] + [float(a) for a in tableau.alpha]
    pairs = [(i, j) for j in range(1, len(c)) for i in range(j)]
    return min(pairs, key=lambda p: (abs(c[p[1]] - c[p[0]]), -p[1], -p[0]))


def _stage_state(k: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor, tableau: _ButcherTableau, i: int):
    if i == 0:
        return y0
    return y0 + torch.sum(k[..., :i] * (tableau.beta[i - 1] * dt), dim=-1).view_as(y0)


def lipschitz_stiffness(f_a: torch.Tensor, f_b: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
                        dt: torch.Tensor) -> torch.Tensor:
    """|dt| * ||f_a - f_b|| / ||y_a - y_b||: two evaluations at (nearly) one time estimate the
    dominant Lipschitz constant (Hairer & Wanner, Solving ODEs II, sec. IV.2). Zero when the states
    coincide."""
    num = torch.linalg.vector_norm(f_a - f_b)
    den = torch.linalg.vector_norm(y_a - y_b)
    rho = num / den.clamp_min(torch.finfo(den.dtype).tiny)
    return dt.abs().to(rho.dtype) * rho


def rk_stage_estimates(k: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, dt: torch.Tensor,
                       tableau: _ButcherTableau, rtol, atol, norm: Callable, stiffness: bool) -> Estimate:
    """Error ratio E and (optionally) stiffness S from the stages ``k`` of one Runge-Kutta step.

    E is the very number the step controller compares to 1: the embedded error
    ``sum_i k_i * dt * c_error_i`` scaled by ``atol + rtol * max(|y0|, |y1|)`` and normed by the
    solver's norm. S is ``|dt| * ||k_j - k_i|| / ||Y_j - Y_i||`` for the stage pair of
    :func:`stiffness_pair`, with Y the stage states; it costs no evaluation.
    """
    dt = dt.to(y0.abs().dtype)
    error = torch.sum(k * (dt * tableau.c_error), dim=-1)
    ratio = _compute_error_ratio(error, rtol, atol, y0, y1, norm)
    if not stiffness:
        return ratio, None
    i, j = stiffness_pair(tableau)
    y_i = _stage_state(k, y0, dt, tableau, i)
    y_j = _stage_state(k, y0, dt, tableau, j)
    return ratio, lipschitz_stiffness(k[..., j], k[..., i], y_j, y_i, dt)


def rk_step_estimates(func: Callable, tableau: _ButcherTableau, t0: torch.Tensor, y0: torch.Tensor,
                      dt: torch.Tensor, rtol, atol, norm: Callable, stiffness: bool) -> Estimate:
    """Takes one step of the tableau from (t0, y0) with ``dt`` (1 + stages evaluations) and
    returns :func:`rk_stage_estimates` of it."""
    f0 = func(t0, y0)
    y1, _, _, k = _runge_kutta_step(func, y0, f0, t0, dt, t0 + dt, tableau=tableau)
    return rk_stage_estimates(k, y0, y1, dt, tableau, rtol, atol, norm, stiffness)


def step_doubling_estimates(step: Callable, func: Callable, t0: torch.Tensor, y0: torch.Tensor,
                            dt: torch.Tensor, rtol, atol, norm: Callable, stiffness: bool) -> Estimate:
    """Error ratio by step doubling, for solvers without an embedded pair.

    ``step(t0, dt, y0)`` returns the state after one step. With y_full one step of ``dt`` and
    y_half two steps of ``dt / 2``, E = norm((y_full - y_half) / (atol + rtol * max(|y0|, |y_half|))).
    S compares ``func`` at t0 + dt on both end states (2 more evaluations), as in
    :func:`lipschitz_stiffness`.
    """
    half = dt / 2
    y_full = step(t0, dt, y0)
    y_mid = step(t0, half, y0)
    y_half = step(t0 + half, dt - half, y_mid)
    ratio = _compute_error_ratio(y_full - y_half, rtol, atol, y0, y_half, norm)
    if not stiffness:
        return ratio, None
    t1 = t0 + dt
    return ratio, lipschitz_stiffness(func(t1, y_full), func(t1, y_half), y_full, y_half, dt)


# SDEs (torchsde): step doubling on the same Brownian increments, as torchsde's adaptive stepping.

def sde_error_ratio(y_full: torch.Tensor, y_half: torch.Tensor, rtol, atol, eps: float = 1e-7) -> torch.Tensor:
    """torchsde's ``adaptive_stepping.compute_error``, with autograd on and as a tensor.

    ``y_full`` is one step of dt, ``y_half`` two steps of dt/2 over the same Brownian path; the
    error ``y_full - y_half`` is scaled by ``(atol + rtol * max(|y_full|, |y_half|)).clamp_min(eps)``
    and normed by upstream's own RMS (clamped below at ``eps``). Same operations in the same order,
    so the value is bit-identical to the number torchsde's step controller compares to 1.
    """
    tol = (rtol * torch.max(torch.abs(y_full), torch.abs(y_half)) + atol).clamp_min(eps)
    return _sde_rms([(y_full - y_half) / tol], eps)


def sde_pair_estimates(drift: Callable, t1: torch.Tensor, y_full: torch.Tensor, y_half: torch.Tensor,
                       dt: torch.Tensor, rtol, atol, stiffness: bool) -> Estimate:
    """E of :func:`sde_error_ratio` and (optionally) S from the two end states of a doubled step.

    S = ``|dt| * ||f(t1, y_full) - f(t1, y_half)|| / ||y_full - y_half||`` with f the drift
    (:func:`lipschitz_stiffness`; 2 drift evaluations): the end states differ by the local error,
    so the quotient estimates the drift's dominant Lipschitz constant along that direction. The
    diffusion does not enter S.
    """
    ratio = sde_error_ratio(y_full, y_half, rtol, atol)
    if not stiffness:
        return ratio, None
    return ratio, lipschitz_stiffness(drift(t1, y_full), drift(t1, y_half), y_full, y_half, dt)


def sde_step_doubling_estimates(step: Callable, drift: Callable, t0: torch.Tensor, t1: torch.Tensor,
                                y0: torch.Tensor, extra0, rtol, atol, stiffness: bool,
                                y_full: Optional[torch.Tensor] = None) -> Estimate:
    """Takes the step torchsde's adaptive stepping takes on [t0, t1] and returns its estimates.

    ``step(ta, tb, y, extra) -> (y, extra)`` is the solver's own step, which draws its Brownian
    increments from the solver's Brownian motion over [ta, tb]. As in torchsde's integrate loop:
    one step t0 -> t1 (skipped when ``y_full`` is given), and two steps t0 -> t_mid -> t1 with
    ``t_mid = 0.5 * (t0 + t1)``, the second continuing from the first's extra solver state. On an
    interval the solve already stepped over, the increments are the very ones the solve used.

    A step too short to be halved in floating point (torchsde's fixed grid is accumulated by
    repeated addition and can end in such a sliver) has E = S = 0 and costs no evaluation, except
    that a non-finite y0 makes them NaN: a sliver must not hide a non-finite state.
    """
    t_mid = 0.5 * (t0 + t1)
    if not t0 < t_mid < t1:
        zero = y0.detach().sum() * 0   # 0, or NaN when y0 holds a NaN or an infinity (no host sync)
        return zero, zero if stiffness else None
    if y_full is None:
        y_full, _ = step(t0, t1, y0, extra0)
    y_mid, extra_mid = step(t0, t_mid, y0, extra0)
    y_half, _ = step(t_mid, t1, y_mid, extra_mid)
    return sde_pair_estimates(drift, t1, y_full, y_half, t1 - t0, rtol, atol, stiffness)
