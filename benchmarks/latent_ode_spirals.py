"""Experiment 3: interpolation of irregularly sampled noisy spirals with a latent ODE.

Our stand-in for the paper's PhysioNet experiment (which cannot be downloaded here). Each
trajectory is a 2-D Archimedean spiral (random radius, phase, speed and direction) on a common time
grid; every trajectory is observed, with Gaussian noise, at a random subset of the grid times (its
own mask, as PhysioNet's irregular measurements are). A GRU encoder reads the observations with
their mask backwards in time and gives q(z0); a latent ODE carries z0 over the grid; a decoder maps
the latent path back to the plane. Training maximises an ELBO on the observed points; the metric is
the test MSE against the clean spiral at the grid times the encoder did not see (interpolation).

Methods, measurements, resumption and outputs as in ``mnist_node.py``:

    python benchmarks/latent_ode_spirals.py --jobs 2     # every method, seeds 0 1 2
    python benchmarks/latent_ode_spirals.py --smoke      # a few seconds
"""
import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn as nn

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402,F401
import _train  # noqa: E402

PAPER = {"data": "PhysioNet (37 channels, irregular, with mask)", "encoder": "GRU, hidden 40", "latent": 50,
         "ODE dim": 20, "solver": "Tsit5", "rtol=atol": 1.4e-8, "grad": "interpolating adjoint",
         "optimizer": "Adamax", "lr": 0.01, "batch_size": 512, "niters": 3000, "reg_weight": "100 -> 10",
         "KL": "warmed up"}


METHODS = ("vanilla", "unbiased", "biased", "budget", "global", "steer", "rnode")
SMOKE = dict(niters=3, batch_size=16, n_train=32, n_test=16, n_times=12, tol=1e-3, seeds=[0], reg_weights=[1.0],
             pred_repeats=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _train.add_args(parser, methods=METHODS, niters=1000, batch_size=64, lr=1e-2, tol=1e-5,
                    reg_weights=(0.3, 1.0, 3.0, 10.0), global_weight=1.0, steer_b=0.02, rnode_weight=0.01)
    _train.add_ode_args(parser, stiffness_weight=0.1)
    parser.add_argument("--n_train", type=int, default=512, help="training trajectories")
    parser.add_argument("--n_test", type=int, default=256, help="test trajectories")
    parser.add_argument("--n_times", type=int, default=50, help="grid times per trajectory")
    parser.add_argument("--observed", type=float, default=0.5, help="fraction of grid times observed")
    parser.add_argument("--noise", type=float, default=0.05, help="observation noise std")
    parser.add_argument("--latent", type=int, default=4, help="latent ODE dimension")
    parser.add_argument("--hidden", type=int, default=32, help="width of the ODE, encoder and decoder networks")
    return parser


def make_spirals(n: int, t: torch.Tensor, observed: float, noise: float, generator: torch.Generator):
    """Noisy spirals observed at random grid times: ``(x, mask, clean)`` with shapes (n, T, 2), (n, T), (n, T, 2)."""
    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, 1, generator=generator)

    r0, phase, speed = uniform(0.5, 1.0), uniform(0.0, 2 * math.pi), uniform(1.0, 1.5) * math.pi
    direction = torch.where(torch.rand(n, 1, generator=generator) < 0.5, -1.0, 1.0)
    angle = phase + direction * speed * t
    radius = r0 + 0.4 * t
    clean = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    mask = (torch.rand(n, len(t), generator=generator) < observed).float()
    mask[:, 0] = 1.0  # every trajectory is seen at its start
    x = (clean + noise * torch.randn(clean.shape, generator=generator)) * mask.unsqueeze(-1)
    return x, mask, clean


class _Field(nn.Module):
    """The autonomous latent field as a ``func(t, z)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t, z):
        return self.net(z)


class LatentODE(nn.Module):
    def __init__(self, latent: int, hidden: int, obs_dim: int = 2):
        super().__init__()
        self.gru = nn.GRU(obs_dim + 1, hidden, batch_first=True)
        self.to_q = nn.Linear(hidden, 2 * latent)
        self.func = _Field(nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                         nn.Linear(hidden, latent)))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, obs_dim))

    def encode(self, x, mask):
        """Mean and log-variance of q(z0), reading (observation, mask) from the last time to the first."""
        seq = torch.cat([x, mask.unsqueeze(-1)], dim=-1).flip(1)
        _, h = self.gru(seq)
        return self.to_q(h[-1]).chunk(2, dim=-1)

    def decode(self, zs):
        return self.decoder(zs).transpose(0, 1)  # (T, B, latent) -> (B, T, obs)


class SpiralProblem(_train.Problem):
    metric_name = "mse"

    def __init__(self, args, t, train, test):
        self.args, self.t = args, t
        self.train_set, self.train_eval, self.test = train, train, test

    def make_model(self):
        return LatentODE(self.args.latent, self.args.hidden)

    def batch(self, batch_size, generator):
        idx = torch.randint(len(self.train_set[0]), (batch_size,), generator=generator)
        return tuple(d[idx] for d in self.train_set)

    def initial(self, model, batch, generator):
        x, mask, _ = batch
        mean, logvar = model.encode(x, mask)
        if generator is None:
            return mean, self.t.to(x), torch.zeros((), dtype=x.dtype, device=x.device)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=generator.device).to(mean)
        z0 = mean + torch.exp(0.5 * logvar) * eps
        kl = 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).sum(-1)
        # KL per observed value, so the ELBO's two terms keep their relative size.
        per_value = (mask.sum(1) * x.shape[-1]).clamp(min=1)
        return z0, self.t.to(x), (kl / per_value).mean()

    def loss(self, model, zs, batch):
        x, mask, _ = batch
        sq = (model.decode(zs) - x).pow(2).sum(-1) * mask
        return sq.sum() / (2 * self.args.noise ** 2 * mask.sum() * x.shape[-1])

    def metric(self, model, zs, batch):
        _, mask, clean = batch
        hidden = 1.0 - mask
        sq = (model.decode(zs) - clean).pow(2).mean(-1) * hidden
        return (sq.sum() / hidden.sum().clamp(min=1)).item()


def main(argv=None):
    args = _train.parse_args(build_parser(), argv, SMOKE)
    _train.check_args(args)
    for name in ("n_train", "n_test", "latent", "hidden"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.n_times < 3:
        raise ValueError(f"--n_times must be >= 3, got {args.n_times}.")
    if not 0 < args.observed <= 1:
        raise ValueError(f"--observed must be in (0, 1], got {args.observed}.")
    if not args.noise > 0:
        raise ValueError(f"--noise must be > 0, got {args.noise}.")
    t = torch.linspace(0.0, 2.0, args.n_times)
    last = float(t[-1] - t[-2])
    if "steer" in args.methods and not args.steer_b < last:
        raise ValueError(f"--steer_b must be < the last grid interval {last:g} (STEER moves only the end time), "
                         f"got {args.steer_b}.")

    def make_problem():
        data = torch.Generator().manual_seed(1234)  # the same data set for every seed and method
        train = make_spirals(args.n_train, t, args.observed, args.noise, data)
        test = make_spirals(args.n_test, t, args.observed, args.noise, data)
        return SpiralProblem(args, t, train, test)

    settings = {"data": f"Archimedean spirals, {args.n_times} grid times on [0, 2], {args.observed:g} observed, "
                        f"noise {args.noise:g}", "n_train": args.n_train, "n_test": args.n_test,
                "encoder": f"GRU hidden {args.hidden} (backwards, with mask)", "latent": args.latent,
                "field": f"MLP {args.latent}-{args.hidden}-{args.hidden}-{args.latent} (tanh), autonomous",
                "metric": "test MSE at the unobserved grid times against the clean spiral", **_train.settings_of(args)}
    notes = "STEER can move only the last output time (by less than one grid interval)."
    return _train.run_benchmark("latent_ode_spirals", make_problem, args, argv, __file__, settings, PAPER,
                                "Latent ODE, spirals", notes)


if __name__ == "__main__":
    main()
