"""The neural SDE side of the benchmarks: :class:`SDEProblem` for the one training loop of
``_train.py``, and the pieces of RNODE for an SDE.

Every method trains the same model (same initialisation, same data order, same Brownian paths,
same optimiser and number of iterations for a given seed) with ``sdeint_reg`` and direct backprop
through torchsde's adaptive solve; only the extra loss term differs:

- ``vanilla``: none (``strategy="none"``: the plain solve, no extra evaluation);
- ``unbiased`` / ``biased`` / ``budget``: local regularization (ours), ``weight * reg``;
- ``global``: the 2021 baseline, ``strategy="global"``: the step-doubling error of every accepted
  step, backpropagated through the solve;
- ``steer``: STEER's random end time (``steer_times``), no loss term;
- ``rnode``: RNODE for an SDE, see :class:`RNODESDE`.

After training each model predicts with plain ``torchsde.sdeint`` (adaptive, same tolerances) on
a ``BrownianInterval`` with a fixed seed; the test NFE counts drift evaluations of that solve.

Same noise: every Brownian motion here is a ``BrownianInterval`` seeded by ``entropy`` (per seed
and iteration in training, one fixed value in evaluation), so all methods draw the same increment
over the whole span; the values inside it are drawn as Brownian bridges at the times the solver
asks for, so where two models' solvers step differently their paths agree in law, not point for
point. torchsde's order-independent path (``halfway_tree=True``) would make them identical, but
it made the prediction solve 5-8x slower in our measurement, which would swamp the prediction
times this benchmark is about.
"""
import argparse
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchsde
from torchsde import BaseBrownian, BrownianInterval

from _regularizers import RNODEDynamics, steer_times
from _train import STRATEGIES, Task
from torchdiffeq_localreg import sdeint_reg

METHODS = ("vanilla", "unbiased", "biased", "budget", "global", "steer", "rnode")
SDE_METHODS = ("euler", "milstein", "srk")
# Seeds of the Brownian motions: training iteration ``itr`` of seed ``s`` uses _TRAIN_BM * s + itr;
# every evaluation uses _EVAL_BM (the same noise for every method and seed).
_TRAIN_BM = 1_000_003
_EVAL_BM = 20230302


class NeuralSDE(nn.Module):
    """A diagonal-noise Ito SDE: drift ``drift(y)``, diffusion ``sigma_max * sigmoid(diffusion(y))``.

    The sigmoid keeps the diffusion positive and below ``sigma_max``. ``nfe`` counts drift
    evaluations (every torchsde method evaluates the drift through ``f``).
    """

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, drift: nn.Module, diffusion: nn.Module, sigma_max: float):
        super().__init__()
        self.drift, self.diffusion, self.sigma_max = drift, diffusion, sigma_max
        self.nfe = 0

    def f(self, t, y):
        self.nfe += 1
        return self.drift(y)

    def g(self, t, y):
        return self.sigma_max * torch.sigmoid(self.diffusion(y))


class _Drift(nn.Module):
    """The drift of an SDE as a vector field ``func(t, z)``, for :class:`RNODEDynamics`."""

    def __init__(self, sde: NeuralSDE):
        super().__init__()
        self.sde = sde

    def forward(self, t, z):
        return self.sde.f(t, z)


class RNODESDE(nn.Module):
    """RNODE (Finlay et al. 2020) for a diagonal-noise SDE, as an augmented SDE.

    The state is ``[z, kinetic, jacobian]`` (``d + 2`` columns). The drift of ``z`` is the SDE's
    drift f; the drifts of the two extra columns are RNODE's integrands of f, ``||f(z)||^2`` and
    ``||eps^T df/dz||^2`` (Hutchinson, one Gaussian ``eps`` per solve, from
    :class:`RNODEDynamics`); their diffusion is zero. Along every sample path the two columns
    therefore integrate exactly ``int ||f||^2 dt`` and ``int ||eps^T df/dz||^2 dt``, with no Ito
    correction (no noise enters them). This regularizes the drift only, the part an ODE solver
    would see; the diffusion is left free, as RNODE has no term for it. Under adaptive stepping
    the two columns also enter torchsde's error norm (as the augmented states of RNODE do for an
    ODE solver). Solve it with :class:`PaddedBrownian` so that ``z`` sees the same noise as the
    unaugmented SDE.
    """

    def __init__(self, sde: NeuralSDE):
        super().__init__()
        self.sde = sde
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self.dynamics = RNODEDynamics(_Drift(sde))

    def resample(self, z: torch.Tensor, generator: Optional[torch.Generator] = None) -> None:
        self.dynamics.resample(z, generator)

    @staticmethod
    def initial_state(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, z.new_zeros(z.shape[0], 2)], dim=1)

    def f(self, t, y):
        z = y[:, :-2]
        f, kinetic, jacobian = self.dynamics(t, (z, None, None))
        return torch.cat([f, kinetic[:, None], jacobian[:, None]], dim=1)

    def g(self, t, y):
        z = y[:, :-2]
        return torch.cat([self.sde.g(t, z), z.new_zeros(z.shape[0], 2)], dim=1)


class PaddedBrownian(BaseBrownian):
    """``bm`` with ``pad`` extra channels that are always zero (for the zero-diffusion RNODE columns),
    so the augmented SDE sees exactly ``bm``'s noise in its first channels."""

    def __init__(self, bm: BaseBrownian, pad: int):
        self.bm, self.pad = bm, pad

    def _padded(self, x):
        return F.pad(x, (0, self.pad) * (x.dim() - 1))

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        out = self.bm(ta, tb, return_U=return_U, return_A=return_A)
        return self._padded(out) if torch.is_tensor(out) else tuple(self._padded(x) for x in out)

    def __repr__(self):
        return f"PaddedBrownian({self.bm!r}, pad={self.pad})"

    @property
    def dtype(self):
        return self.bm.dtype

    @property
    def device(self):
        return self.bm.device

    @property
    def shape(self):
        return (self.bm.shape[0], self.bm.shape[1] + self.pad)

    @property
    def levy_area_approximation(self):
        return self.bm.levy_area_approximation


def brownian(t0: float, t1: float, like: torch.Tensor, entropy: int, sde_method: str) -> BrownianInterval:
    """A ``BrownianInterval`` on [t0, t1] shaped like ``like``, seeded by ``entropy``
    (with the space-time Levy area that ``srk`` needs)."""
    return BrownianInterval(t0=t0, t1=t1, size=tuple(like.shape), dtype=like.dtype, device=like.device,
                            entropy=entropy,
                            levy_area_approximation="space-time" if sde_method == "srk" else "none")


class SDEProblem(Task):
    """A neural SDE problem for :func:`_train.train_run`.

    Subclasses set ``ts`` (output times of a solve, a 1-D tensor) and implement :meth:`make_model`
    (a fresh model with an ``sde`` attribute, a :class:`NeuralSDE`), :meth:`batch`, :meth:`initial`,
    :meth:`loss`, :meth:`test_initial` and :meth:`metrics`. Reads ``args.sde_method, dt, tol,
    steer_b`` (the Brownian motions of every method span the longest STEER solve).
    """

    ts: torch.Tensor

    def initial(self, model: nn.Module, batch) -> torch.Tensor:
        """The SDE's initial state ``(batch, d)`` for ``batch``."""
        raise NotImplementedError

    def loss(self, model: nn.Module, ys: torch.Tensor, batch) -> torch.Tensor:
        """The task loss of the solution ``ys`` (shape ``(len(ts), batch, d)``)."""
        raise NotImplementedError

    def test_initial(self, model: nn.Module) -> torch.Tensor:
        """The initial states of the test set (the prediction that is timed and whose NFE is counted)."""
        raise NotImplementedError

    def metrics(self, model: nn.Module, predict: Callable[[torch.Tensor], torch.Tensor],
                ys_test: torch.Tensor) -> Dict[str, float]:
        """``train_metric``, ``test_metric`` and the ``extra_metrics``, given ``ys_test`` (the prediction
        from :meth:`test_initial`); ``predict(y0)`` solves from other initial states on the same
        evaluation Brownian motion."""
        raise NotImplementedError

    def training_step(self, model, batch, method, weight, args, generator, itr=0, seed=0):
        ts = self.ts
        y0 = self.initial(model, batch)
        t1 = float(ts[-1]) + max(args.steer_b, weight if method == "steer" else 0.0)
        bm = brownian(float(ts[0]), t1, y0, _TRAIN_BM * seed + itr, args.sde_method)
        solve_ts = steer_times(ts, weight, generator) if method == "steer" else ts
        kwargs = dict(method=args.sde_method, dt=args.dt, adaptive=True, rtol=args.tol, atol=args.tol,
                      generator=generator, return_stats=True)
        if method == "rnode":
            augmented = RNODESDE(model.sde)
            augmented.resample(y0, generator)
            ys, _, stats = sdeint_reg(augmented, augmented.initial_state(y0), solve_ts, bm=PaddedBrownian(bm, 2),
                                      strategy="none", **kwargs)
            return self.loss(model, ys[:, :, :-2], batch), weight * ys[-1, :, -2:].sum(1).mean(), stats
        strategy = STRATEGIES.get(method, method)
        ys, reg, stats = sdeint_reg(model.sde, y0, solve_ts, bm=bm, strategy=strategy, **kwargs)
        penalty = weight * reg if strategy != "none" else torch.zeros((), dtype=ys.dtype, device=ys.device)
        return self.loss(model, ys, batch), penalty, stats

    def _predict(self, model: nn.Module, args) -> Callable[[torch.Tensor], torch.Tensor]:
        """``predict(y0)``: plain ``torchsde.sdeint`` from ``y0`` on the fixed evaluation Brownian motion."""
        ts = self.ts

        def predict(y0):
            bm = brownian(float(ts[0]), float(ts[-1]), y0, _EVAL_BM, args.sde_method)
            return torchsde.sdeint(model.sde, y0, ts, bm=bm, method=args.sde_method, dt=args.dt, adaptive=True,
                                   rtol=args.tol, atol=args.tol)
        return predict

    @torch.no_grad()
    def evaluate(self, model, args):
        predict = self._predict(model, args)
        model.sde.nfe = 0
        ys_test = predict(self.test_initial(model))
        return {**self.metrics(model, predict, ys_test), "test_nfe": model.sde.nfe}

    def predictor(self, model, args):
        predict = self._predict(model, args)

        @torch.no_grad()
        def timed():
            return predict(self.test_initial(model))

        return timed


def add_sde_args(parser: argparse.ArgumentParser, *, dt: float, sigma_max: float,
                 sde_method: str = "milstein") -> argparse.ArgumentParser:
    """The flags of the SDE benchmarks only."""
    parser.add_argument("--sde_method", choices=SDE_METHODS, default=sde_method, help="torchsde method")
    parser.add_argument("--dt", type=float, default=dt, help="initial step of the adaptive solves")
    parser.add_argument("--sigma_max", type=float, default=sigma_max, help="bound of the learned diffusion")
    return parser


def check_sde_args(args: argparse.Namespace) -> None:
    """Raises ``ValueError`` naming the flag for out-of-range values."""
    for name in ("dt", "sigma_max"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name} must be > 0, got {getattr(args, name)}.")
