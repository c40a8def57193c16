"""Experiment 5: learn the vector field of a Lotka-Volterra system from noisy trajectories.

A regression whose plain NFE grows during training: predator-prey cycles have sharp peaks, and as
the neural vector field learns them the solver needs more and more steps. The data are
trajectories of

    dx/dt = a x - b x y,    dy/dt = d x y - g y,    (a, b, d, g) = (1.5, 1.0, 1.0, 3.0),

from random initial states in [1, 4] x [0.5, 2], solved in float64 with dopri5 at 1e-10, observed
at ``--n_times`` equally spaced times on [0, ``--horizon``] with Gaussian noise ``--noise``.
Model: an autonomous MLP field 2 -> hidden -> hidden -> 2 (tanh). Training: windows of
``--window`` observations from random training trajectories, solved from the window's first
(noisy) observation; loss: the MSE against the window's noisy observations. Test metric: the MSE
of the solve of each held-out trajectory from its clean initial state over the whole horizon,
against the clean trajectory (lower is better).

Methods, measurements, resumption and outputs as in ``mnist_node.py``:

    python benchmarks/lotka_volterra.py --jobs 2     # every method, seeds 0 1 2
    python benchmarks/lotka_volterra.py --smoke      # a few seconds
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torchdiffeq

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402,F401
import _train  # noqa: E402

PAPER = {"note": "not in the paper: a regression added to the weight-control protocol (issue 19), whose plain "
                 "NFE grows during training"}
METHODS = ("vanilla", "unbiased", "biased", "budget", "global", "steer", "rnode")
SMOKE = dict(niters=3, batch_size=8, n_train=8, n_test=4, n_times=21, window=5, tol=1e-3, seeds=[0],
             reg_weights=[1.0], pred_repeats=1)
TRUE_PARAMS = (1.5, 1.0, 1.0, 3.0)
SCALE = 3.0  # the field sees y / SCALE, so its inputs are of order 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _train.add_args(parser, methods=METHODS, niters=1000, batch_size=64, lr=3e-3, tol=1e-6,
                    reg_weights=(0.01, 0.03, 0.1, 0.3, 1.0), global_weight=0.1, steer_b=0.05, rnode_weight=0.01)
    _train.add_ode_args(parser, stiffness_weight=0.1)
    parser.add_argument("--n_train", type=int, default=64, help="training trajectories")
    parser.add_argument("--n_test", type=int, default=64, help="held-out trajectories")
    parser.add_argument("--n_times", type=int, default=101, help="observation times on [0, horizon]")
    parser.add_argument("--horizon", type=float, default=10.0, help="length of each trajectory")
    parser.add_argument("--window", type=int, default=20, help="observations per training window")
    parser.add_argument("--noise", type=float, default=0.1, help="observation noise std")
    parser.add_argument("--hidden", type=int, default=64, help="width of the field's hidden layers")
    return parser


class TrueField(nn.Module):
    def forward(self, t, y):
        a, b, d, g = TRUE_PARAMS
        x, p = y[..., 0], y[..., 1]
        return torch.stack([a * x - b * x * p, d * x * p - g * p], dim=-1)


def make_trajectories(n: int, t: torch.Tensor, noise: float, generator: torch.Generator):
    """``(noisy, clean)`` trajectories, each (n, T, 2), float32."""
    low, high = torch.tensor([1.0, 0.5]), torch.tensor([4.0, 2.0])
    y0 = (low + (high - low) * torch.rand(n, 2, generator=generator)).double()
    clean = torchdiffeq.odeint(TrueField(), y0, t.double(), rtol=1e-10, atol=1e-10, method="dopri5")
    clean = clean.transpose(0, 1).float()
    return clean + noise * torch.randn(clean.shape, generator=generator), clean


class _Field(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2))

    def forward(self, t, y):
        return SCALE * self.net(y / SCALE)


class FieldModel(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.func = _Field(hidden)


class LotkaVolterraProblem(_train.Problem):
    metric_name = "mse"

    def __init__(self, args, t, train, test):
        self.args, self.t = args, t
        self.window_t = t[:args.window] - t[0]
        self.noisy, _ = train
        # Evaluation sets: (initial state, trajectory) solved over the whole horizon.
        self.train_eval = (train[1][:, 0], train[1])
        self.test = (test[1][:, 0], test[1])

    def make_model(self):
        return FieldModel(self.args.hidden)

    def batch(self, batch_size, generator):
        n, steps = self.noisy.shape[0], self.noisy.shape[1] - self.args.window + 1
        traj = torch.randint(n, (batch_size,), generator=generator)
        start = torch.randint(steps, (batch_size,), generator=generator)
        index = start[:, None] + torch.arange(self.args.window)[None, :]
        windows = self.noisy[traj[:, None], index]                     # (B, window, 2)
        return windows[:, 0], windows

    def initial(self, model, batch, generator):
        y0 = batch[0]
        t = self.t if generator is None else self.window_t  # evaluation solves the whole horizon
        return y0, t.to(y0), torch.zeros((), dtype=y0.dtype, device=y0.device)

    def loss(self, model, zs, batch):
        return (zs.transpose(0, 1) - batch[1]).pow(2).mean()

    def metric(self, model, zs, batch):
        return (zs.transpose(0, 1) - batch[1]).pow(2).mean().item()


def main(argv=None):
    args = _train.parse_args(build_parser(), argv, SMOKE)
    _train.check_args(args)
    for name in ("n_train", "n_test", "hidden"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if not 2 <= args.window <= args.n_times:
        raise ValueError(f"--window must be in [2, --n_times], got {args.window}.")
    if not (args.noise >= 0 and args.horizon > 0):
        raise ValueError(f"--noise must be >= 0 and --horizon > 0, got {args.noise}, {args.horizon}.")
    t = torch.linspace(0.0, args.horizon, args.n_times)
    last = float(t[args.window - 1] - t[args.window - 2])
    if "steer" in args.methods and not args.steer_b < last:
        raise ValueError(f"--steer_b must be < the grid interval {last:g}, got {args.steer_b}.")

    def make_problem():
        data = torch.Generator().manual_seed(1234)  # the same data set for every seed and method
        train = make_trajectories(args.n_train, t, args.noise, data)
        test = make_trajectories(args.n_test, t, args.noise, data)
        return LotkaVolterraProblem(args, t, train, test)

    settings = {"data": f"Lotka-Volterra (a, b, d, g) = {TRUE_PARAMS}, y0 in [1, 4] x [0.5, 2], {args.n_times} times "
                        f"on [0, {args.horizon:g}], noise {args.noise:g}", "n_train": args.n_train,
                "n_test": args.n_test, "window": args.window,
                "field": f"MLP 2-{args.hidden}-{args.hidden}-2 (tanh) on y/{SCALE:g}, autonomous",
                "metric": "test MSE of the whole-horizon solve from the clean initial state against the clean "
                          "trajectory", **_train.settings_of(args)}
    return _train.run_benchmark("lotka_volterra", make_problem, args, argv, __file__, settings, PAPER,
                                "Lotka-Volterra field from noisy trajectories")


if __name__ == "__main__":
    main()
