"""Benchmark, experiment 4: fit a neural SDE to the sample paths of a known stochastic spiral.

Data: the cubic spiral of torchdiffeq's ODE demo with multiplicative diagonal noise (Ito),

    du = A^T u^3 dt + noise * u dW,   A = [[-0.1, 2.0], [-2.0, -0.1]],   u(0) = (2, 0),  t in [0, 1],

simulated with torchsde (``srk``, fixed step ``--data_dt``, 1e-3) at ``--n_times`` equally
spaced times; half of the paths are for training, the other half held out. Model: a
diagonal-noise neural SDE, drift ``MLP(u^3)`` 2 -> 64 (tanh) -> 2, diffusion
``sigma_max * sigmoid(Linear 2 -> 2)``, started at u(0). Loss: the squared error of the mean and
of the variance over ``--batch_size`` model samples against those of the training paths, at the
training times (every other time). Test metric: the same errors against the held-out paths at
the held-out times (the times in between), from a larger model sample on a fixed Brownian seed.
Methods, measurements, resumption and outputs as in ``mnist_sde.py``; the metric (lower is better) is
the test error, the sum of the two.

    python benchmarks/spiral_sde.py --jobs 2   # every method, seeds 0 1 2
    python benchmarks/spiral_sde.py --smoke    # a few seconds
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torchsde

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _train  # noqa: E402
from _sde import METHODS, NeuralSDE, SDEProblem, add_sde_args, check_sde_args  # noqa: E402

PAPER = {"data": "stochastic spiral (not given in method.md)", "loss": "mean and variance over time",
         "solver": "adaptive SDE solver", "note": "the paper reports test NFE 0.556-0.733x across experiments"}

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--n_paths", type=int, default=512, help="data paths (half training, half held out)")
parser.add_argument("--n_times", type=int, default=31, help="observation times on [0, 1]")
parser.add_argument("--noise", type=float, default=0.2, help="multiplicative noise of the true spiral")
parser.add_argument("--data_dt", type=float, default=1e-3, help="fixed step of the data simulation")
parser.add_argument("--eval_samples", type=int, default=512, help="model samples for the test statistics")
# Measured on a 2-core CPU (one thread per run, two at a time): with these settings vanilla's NFE
# grows from about 20 to 55 drift evaluations per solve over the first 300 iterations and then stays
# there; a run takes about 40 s.
_train.add_args(parser, methods=METHODS, niters=1000, batch_size=64, lr=1e-2, lr_decay=1e-5, tol=0.05,
                reg_weights=(0.3, 1.0, 3.0), global_weight=3.0, steer_b=0.02, rnode_weight=0.01)
add_sde_args(parser, dt=0.1, sigma_max=0.5)
SMOKE = dict(niters=2, batch_size=16, n_paths=64, eval_samples=32, data_dt=1e-2, seeds=[0], reg_weights=[1.0],
             pred_repeats=1)

TRUE_A = [[-0.1, 2.0], [-2.0, -0.1]]


class TrueSpiral(nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, noise: float):
        super().__init__()
        self.register_buffer("A", torch.tensor(TRUE_A))
        self.noise = noise

    def f(self, t, u):
        return u.pow(3) @ self.A

    def g(self, t, u):
        return self.noise * u


class Cube(nn.Module):
    def forward(self, u):
        return u.pow(3)


@torch.no_grad()
def simulate(n_paths: int, ts: torch.Tensor, noise: float, dt: float, seed: int = 0) -> torch.Tensor:
    """``n_paths`` sample paths of the true spiral at ``ts``: shape ``(len(ts), n_paths, 2)``."""
    u0 = torch.tensor([[2.0, 0.0]], device=ts.device).expand(n_paths, 2)
    bm = torchsde.BrownianInterval(t0=float(ts[0]), t1=float(ts[-1]), size=(n_paths, 2), device=ts.device,
                                   entropy=seed, levy_area_approximation="space-time")
    return torchsde.sdeint(TrueSpiral(noise).to(ts.device), u0, ts, bm=bm, method="srk", dt=dt)


def moments_error(ys: torch.Tensor, mean: torch.Tensor, var: torch.Tensor):
    """Squared errors of the sample mean and variance of ``ys`` (times, samples, 2) against ``mean``, ``var``."""
    return (ys.mean(1) - mean).pow(2).mean(), (ys.var(1) - var).pow(2).mean()


class SpiralTask(SDEProblem):
    metric_name = "error"
    extra_metrics = ("train_mean_err", "train_var_err", "test_mean_err", "test_var_err")

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.ts = torch.linspace(0.0, 1.0, args.n_times)
        paths = simulate(args.n_paths, self.ts.to(args.device), args.noise, args.data_dt)
        train, test = paths[:, : args.n_paths // 2], paths[:, args.n_paths // 2:]
        self.train_idx, self.test_idx = slice(0, None, 2), slice(1, None, 2)
        self.train_mean, self.train_var = train.mean(1)[self.train_idx], train.var(1)[self.train_idx]
        self.test_mean, self.test_var = test.mean(1)[self.test_idx], test.var(1)[self.test_idx]
        self.u0 = paths[0, :1]

    def make_model(self):
        return _SpiralModel(self.args.sigma_max)

    def batch(self, batch_size, generator):
        return None  # every iteration starts all samples at u(0); only the Brownian paths change

    def initial(self, model, batch):
        return self.u0.expand(self.args.batch_size, 2)

    def loss(self, model, ys, batch):
        mean_err, var_err = moments_error(ys[self.train_idx], self.train_mean, self.train_var)
        return mean_err + var_err

    def test_initial(self, model):
        return self.u0.expand(self.args.eval_samples, 2)

    def metrics(self, model, predict, ys_test):
        train_mean, train_var = moments_error(ys_test[self.train_idx], self.train_mean, self.train_var)
        test_mean, test_var = moments_error(ys_test[self.test_idx], self.test_mean, self.test_var)
        return {"train_mean_err": train_mean.item(), "train_var_err": train_var.item(),
                "test_mean_err": test_mean.item(), "test_var_err": test_var.item(),
                "train_metric": (train_mean + train_var).item(), "test_metric": (test_mean + test_var).item()}


class _SpiralModel(nn.Module):
    def __init__(self, sigma_max: float):
        super().__init__()
        self.sde = NeuralSDE(nn.Sequential(Cube(), nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 2)), nn.Linear(2, 2),
                             sigma_max)


def main(argv=None):
    args = _train.parse_args(parser, argv, SMOKE)
    _train.check_args(args, METHODS)
    check_sde_args(args)
    for name, low in (("n_paths", 4), ("n_times", 3), ("eval_samples", 2)):
        if getattr(args, name) < low:
            raise ValueError(f"--{name} must be >= {low}, got {getattr(args, name)}.")
    if not args.noise >= 0:
        raise ValueError(f"--noise must be >= 0, got {args.noise}.")
    if not args.data_dt > 0:
        raise ValueError(f"--data_dt must be > 0, got {args.data_dt}.")
    settings = {"data": f"cubic spiral, noise {args.noise}*u, {args.n_paths // 2} training + {args.n_paths // 2} "
                        f"held-out paths, {args.n_times} times on [0, 1] (even: training, odd: test), "
                        f"simulated with srk at dt {args.data_dt}",
                "model": "drift MLP(u^3) 2-64(tanh)-2, diffusion sigma_max*sigmoid(Linear 2-2)",
                "metric": "error of the mean + error of the variance at the held-out times",
                "eval_samples": args.eval_samples, **_train.settings_of(args)}
    notes = ("RNODE regularizes the drift only (kinetic energy and Jacobian norm integrated along each sample path "
             "as two zero-diffusion state columns); it has no term for the diffusion. STEER's end time must stay "
             "inside the last observation interval (b < 1/(n_times-1)), so it only perturbs the last time. "
             "batch_size is the number of model samples per iteration.")
    return _train.run_benchmark("spiral_sde", lambda: SpiralTask(args), args, argv, __file__, settings, PAPER,
                                "Spiral SDE", notes)


if __name__ == "__main__":
    main()
