"""Tsitouras 5(4), for torchdiffeq versions that do not have it (0.2.4 and 0.2.5).

The pair of Ch. Tsitouras, "Runge-Kutta pairs of order 5(4) satisfying only the first column
simplifying assumption", Computers & Mathematics with Applications 62 (2011) 770-775, with the
coefficients as published there: seven stages, first same as last (the seventh stage is taken at
the new state, so it is the next step's first), a 5th-order solution and an embedded 4th-order one.
The dense output is upstream's quartic interpolant through y0, y1, f0, f1 and the midpoint value,
which the pair's own continuous extension gives at theta = 1/2 (below).

Used only through this package's entry points under ``method="tsit5"``: it is not added to
torchdiffeq's solver table, so plain ``torchdiffeq.odeint(method="tsit5")`` behaves as the
installed torchdiffeq does. Where torchdiffeq has its own ``tsit5``, that one is used instead.
"""
import torch

from ._upstream import RKAdaptiveStepsizeODESolver, _ButcherTableau


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


_C = [0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0]

_A = [
    [0.161],
    [-0.008480655492356989, 0.335480655492357],
    [2.897153057105493, -6.359448489975075, 4.3622954328695815],
    [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
    [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383],
    [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774],
]

# The 5th-order weights (the last row of A: first same as last) and b - b_hat, the embedded error.
_B = _A[-1] + [0.0]
_B_ERROR = [-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
            0.5823571654525552, -0.45808210592918697, 0.015151515151515152]


def _dense_weights(theta: float):
    """The continuous extension b_i(theta) of the pair (Tsitouras 2011), y(t0 + theta dt) =
    y0 + dt * sum_i b_i(theta) k_i; at theta = 1 it is the 5th-order solution."""
    th = theta
    return [
        -1.0530884977290216 * th * (th - 1.3299890189751412) * (th * th - 1.4364028541716351 * th + 0.7139816917074209),
        0.1017 * th * th * (th * th - 2.1966568338249754 * th + 1.2949852507374631),
        2.490627285651252793 * th * th * (th * th - 2.38535645472061657 * th + 1.57803468208092486),
        -16.54810288924490272 * (th - 1.21712927295533244) * (th - 0.61620406037800089) * th * th,
        47.37952196281928122 * (th - 1.203071208372362603) * (th - 0.658047292653547382) * th * th,
        -34.87065786149660974 * (th - 1.2) * (th - 0.666666666666666667) * th * th,
        2.5 * (th - 1) * (th - 0.6) * th * th,
    ]


TSITOURAS_TABLEAU = _ButcherTableau(alpha=_t(_C), beta=[_t(row) for row in _A], c_sol=_t(_B), c_error=_t(_B_ERROR))
TSIT_C_MID = _t(_dense_weights(0.5))


class Tsit5Solver(RKAdaptiveStepsizeODESolver):
    order = 5
    tableau = TSITOURAS_TABLEAU
    mid = TSIT_C_MID
