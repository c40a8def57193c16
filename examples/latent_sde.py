"""A latent SDE fitted to a few noisy observations of a 1-D curve (torchsde style), with local regularization.

The prior is an Ornstein-Uhlenbeck process (drift h = theta * (mu - y), constant diffusion sigma);
the posterior shares its diffusion g and has a learned drift f(t, y). Training maximises the ELBO:
the likelihood of the observations under posterior sample paths minus the KL divergence between
posterior and prior, which torchsde accumulates along the paths with ``logqp=True`` (plus the KL of
the initial state). The change from the plain torchsde script:

    -from torchsde import sdeint, sdeint_adjoint
    +from torchdiffeq_localreg import sdeint_reg, sdeint_adjoint_reg, AutoWeight
    +auto = AutoWeight()
    ...
    -zs, log_ratio = sdeint(sde, z0, ts, bm=bm, method=args.method, dt=args.dt, adaptive=args.adaptive,
    -                       rtol=args.rtol, atol=args.atol, logqp=True)
    +zs, log_ratio, reg, stats = sdeint_reg(sde, z0, ts, bm=bm, method=args.method, dt=args.dt,
    +                                       adaptive=args.adaptive, rtol=args.rtol, atol=args.atol, logqp=True,
    +                                       return_stats=True)
    ...
     loss = -log_lik + kl_weight * kl
    -loss.backward()
    +auto.backward(loss, reg, sde.parameters())   # instead of loss.backward()
     optimizer.step()
    +auto.update(stats)

``AutoWeight`` sets the weight of ``reg`` at every step from the two gradients: the
regularization's pull is a share of the task's (the negative ELBO, likelihood and KL terms),
projected so that it never works against the task; there is no number to choose.
``sde.parameters()`` is what the optimizer steps (the posterior drift and the initial state's mean
and variance). ``--target_nfe N`` puts ``NFEBudget(target_nfe=N, rate=--budget_rate,
min_weight=--budget_min_weight)`` in its place (the script calls either ``control``), for a budget
of N drift evaluations per training solve as ``stats.nfe_forward`` counts them: the training solve
carries the KL term as an extra channel (``logqp``), its count includes the prior's drift, and it
costs more than the test solve (plain run: 370 against 127 evaluations). ``--reg_weight W`` uses a
constant weight instead, with the plain ``(loss + W * reg).backward()``; ``--reg none`` is the
plain latent SDE. The flags ``--adjoint`` (also ``--adjoint True``), ``--viz``/``--visualize``,
``--gpu N`` and torchsde's ``--train-iters`` take upstream's forms.

The data: observations of ``y = sin(2 pi t) + 0.1 cos(6 pi t)`` with small Gaussian noise on two
segments of [0, 1], with a gap between them where the posterior must interpolate. After training,
posterior paths are sampled on a grid of [0, 1] with a plain solve (fixed test Brownian paths): the
mean absolute error of their median to the true curve (gap included) is the test metric, the
solve's ``stats.nfe_forward`` the test NFE. The default solve is adaptive (Euler-Maruyama with
step-doubling error control at tolerance 1e-2): with fixed steps the NFE could not change (and
``AutoWeight`` warns so). ``--viz`` draws posterior sample paths and percentile bands against the
data, and the NFE over training.

    python examples/latent_sde.py --viz              # regularized, weight set by AutoWeight
    python examples/latent_sde.py --reg none         # the plain latent SDE, same settings
    python examples/latent_sde.py --target_nfe N     # weight set by NFEBudget for N drift evaluations per solve
    python examples/latent_sde.py --smoke --viz      # seconds

Outputs, relative to the working directory, in ``--train-dir`` (default ``runs/latent_sde``):
``log.csv`` (per iteration), ``model.pt`` and with ``--viz`` ``posterior.png`` and ``nfe.png``.
"""
import argparse
import csv
import json
import math
import os
import time

import torch
import torch.nn as nn
import torchsde
from torch.distributions import Laplace, Normal, kl_divergence

from torchdiffeq_localreg import AutoWeight, NFEBudget, sdeint_adjoint_reg, sdeint_reg

try:
    from tqdm import tqdm
except ImportError:  # the progress bar is optional
    tqdm = None


def str2bool(value):
    """Upstream's boolean flags: ``--flag``, ``--flag True`` and ``--flag False`` (also 1/0, yes/no)."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--batch-size", type=int, default=128, help="posterior sample paths per iteration")
parser.add_argument("--likelihood", type=str, choices=["normal", "laplace"], default="laplace")
parser.add_argument("--scale", type=float, default=0.05, help="scale of the observation likelihood")
parser.add_argument("--adjoint", type=str2bool, nargs="?", const=True, default=False)
parser.add_argument("--adaptive", type=str2bool, nargs="?", const=True, default=True,
                    help="adaptive steps (default True: with fixed steps the NFE cannot change)")
parser.add_argument("--method", type=str, default="euler", help="a torchsde method for Ito SDEs with diagonal noise")
parser.add_argument("--dt", type=float, default=2e-2, help="step size (the first one when adaptive)")
parser.add_argument("--rtol", type=float, default=1e-2)
parser.add_argument("--atol", type=float, default=1e-2)
parser.add_argument("--num-iters", "--train-iters", dest="num_iters", type=int, default=500,
                    help="upstream: 5000")
parser.add_argument("--kl-anneal-iters", type=int, default=50, help="the KL weight grows linearly to 1 over these")
parser.add_argument("--lr", type=float, default=1e-2)
parser.add_argument("--hidden", type=int, default=64)
parser.add_argument("--train-dir", type=str, default=os.path.join("runs", "latent_sde"))
parser.add_argument("--viz", "--visualize", dest="viz", type=str2bool, nargs="?", const=True, default=False,
                    help="save posterior.png and nfe.png in --train-dir")
parser.add_argument("--gpu", type=int, default=0)
group = parser.add_argument_group("local regularization (torchdiffeq_localreg)")
group.add_argument("--reg", type=str, choices=("none", "unbiased", "biased", "global"), default="unbiased",
                   help="where to regularize: a local strategy, the 2021 global baseline, or none (plain)")
group.add_argument("--target_nfe", type=float, default=None,
                   help="a budget: NFEBudget sets the weight instead of AutoWeight, for this many drift evaluations "
                        "per training solve (stats.nfe_forward, which counts both drifts with logqp; about 0.6 x "
                        "the final_train_nfe of a --reg none run is a good budget) (default: None, AutoWeight)")
group.add_argument("--budget_rate", type=float, default=0.1,
                   help="with --target_nfe only: NFEBudget's rate, the largest change of log(weight) per step "
                        "(default 0.1: twice the package's 0.05, so that the weight finds its scale within this "
                        "run's few hundred steps)")
group.add_argument("--budget_min_weight", type=float, default=0.01,
                   help="with --target_nfe only: NFEBudget's lower bound of the weight (default 0.01, its starting "
                        "weight: while the young model is still cheaper than the target, the weight waits there "
                        "instead of sinking to the package's 1e-4, from where it would not climb back within a "
                        "short run)")
group.add_argument("--reg_weight", type=float, default=None,
                   help="a constant weight of reg instead of AutoWeight (default: None, use AutoWeight)")
group.add_argument("--stiffness_weight", type=float, default=0.0,
                   help="weight of the stiffness estimate inside reg (0: error estimate only)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--json", type=str, default=None, metavar="PATH", help="write the final numbers as JSON")
parser.add_argument("--smoke", action="store_true", help="a run of a few seconds (used by the tests)")


def make_data(device, seed=0, noise=0.02):
    """Observation times on [0.1, 0.4] and [0.6, 0.9] and noisy values of a sine-like curve."""
    gen = torch.Generator().manual_seed(seed)
    ts = torch.cat([torch.linspace(0.1, 0.4, 7), torch.linspace(0.6, 0.9, 7)])
    ys = true_curve(ts) + noise * torch.randn(len(ts), generator=gen)
    return ts.to(device), ys.to(device)


def true_curve(t):
    return torch.sin(2 * math.pi * t) + 0.1 * torch.cos(6 * math.pi * t)


class LatentSDE(nn.Module):
    sde_type = "ito"
    noise_type = "diagonal"

    def __init__(self, theta=1.0, mu=0.0, sigma=0.5, hidden=64):
        super().__init__()
        # The prior's stationary distribution N(mu, sigma^2 / (2 theta)) is the prior of the initial state.
        logvar = math.log(sigma ** 2 / (2 * theta))
        self.register_buffer("theta", torch.tensor([[theta]]))
        self.register_buffer("mu", torch.tensor([[mu]]))
        self.register_buffer("sigma", torch.tensor([[sigma]]))
        self.register_buffer("py0_mean", torch.tensor([[mu]]))
        self.register_buffer("py0_logvar", torch.tensor([[logvar]]))
        self.qy0_mean = nn.Parameter(torch.tensor([[mu]]))
        self.qy0_logvar = nn.Parameter(torch.tensor([[logvar]]))
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(),
                                 nn.Linear(hidden, 1))
        # Start from the prior: the posterior drift is zero at initialisation.
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def f(self, t, y):
        """Posterior drift."""
        t = t.to(y).expand(y.shape[0], 1)
        return self.net(torch.cat([torch.sin(t), torch.cos(t), y], dim=-1))

    def h(self, t, y):
        """Prior drift."""
        return self.theta * (self.mu - y)

    def g(self, t, y):
        """Diffusion, shared by prior and posterior."""
        return self.sigma.expand_as(y)

    def initial_state(self, batch_size):
        """Samples of the posterior initial state and their KL divergence from the prior's."""
        q = Normal(self.qy0_mean, (0.5 * self.qy0_logvar).exp())
        p = Normal(self.py0_mean, (0.5 * self.py0_logvar).exp())
        y0 = q.rsample((batch_size,)).reshape(batch_size, 1)
        return y0, kl_divergence(q, p).sum()


def brownian(batch_size, channels, ref, seeds, method):
    """A Brownian motion on [0, 1] for ``batch_size`` paths, its entropy drawn from the generator ``seeds``."""
    entropy = int(torch.randint(2 ** 31 - 1, (1,), generator=seeds))
    levy = "foster" if method == "log_ode" else "space-time"
    return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(batch_size, channels), dtype=ref.dtype, device=ref.device,
                                     entropy=entropy, levy_area_approximation=levy)


@torch.no_grad()
def evaluate(sde, args, seeds, num_paths=256):
    """Posterior paths on a grid of [0, 1] by a plain solve: (MAE of their median to the true curve, NFE)."""
    ts = torch.linspace(0.0, 1.0, 101, device=sde.theta.device)
    y0, _ = sde.initial_state(num_paths)
    bm = brownian(num_paths, 1, y0, seeds, args.method)
    zs, _, stats = sdeint_reg(sde, y0, ts, bm=bm, method=args.method, dt=args.dt, adaptive=args.adaptive,
                              rtol=args.rtol, atol=args.atol, strategy="none", return_stats=True)
    median = zs[..., 0].median(dim=1).values
    return (median - true_curve(ts)).abs().mean().item(), stats.nfe_forward


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")   # "tight": keeps legends placed outside the axes
    plt.close(fig)
    return path


@torch.no_grad()
def save_posterior(sde, args, ts_obs, ys_obs, seeds, path, num_paths=30, num_bands=500):
    """Posterior sample paths and 5-95 / 25-75 percentile bands over a fine grid, with the observations."""
    plt = pyplot()
    ts = torch.linspace(0.0, 1.0, 101, device=ts_obs.device)
    y0, _ = sde.initial_state(num_bands)
    bm = brownian(num_bands, 1, y0, seeds, args.method)
    zs, _ = sdeint_reg(sde, y0, ts, bm=bm, method=args.method, dt=args.dt, adaptive=args.adaptive, rtol=args.rtol,
                       atol=args.atol, strategy="none")
    zs, t = zs.squeeze(-1).cpu(), ts.cpu()
    q = torch.quantile(zs, torch.tensor([0.05, 0.25, 0.75, 0.95]), dim=1)
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    ax.fill_between(t, q[0], q[3], color="tab:blue", alpha=0.15, label="posterior 5-95%")
    ax.fill_between(t, q[1], q[2], color="tab:blue", alpha=0.3, label="posterior 25-75%")
    ax.plot(t, zs[:, :num_paths], color="tab:blue", alpha=0.3, linewidth=0.7)
    ax.plot([], [], color="tab:blue", alpha=0.6, linewidth=0.7, label=f"{num_paths} posterior paths")
    ax.scatter(ts_obs.cpu(), ys_obs.cpu(), color="black", marker="o", zorder=3, s=15, label="observations")
    ax.set_xlabel("time t")
    ax.set_ylabel("state y")
    ax.set_title(f"Latent SDE: posterior against the observations (--reg {args.reg})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save_figure(plt, fig, path)


def plot_nfe(path, rows, title):
    """Forward and regularization NFE of the training solves, and the weight of reg, over training."""
    plt = pyplot()
    fig, (ax_nfe, ax_weight) = plt.subplots(1, 2, figsize=(10, 3.5))
    itrs, every = [r["itr"] for r in rows], max(1, len(rows) // 12)
    ax_nfe.plot(itrs, [r["nfe_forward"] for r in rows], color="#1f77b4", marker="o", markevery=every, markersize=5,
                lw=1.2, label="solve (drift evaluations)")
    ax_nfe.plot(itrs, [r["nfe_reg"] for r in rows], color="#ff7f0e", marker="s", markevery=every, markersize=5,
                lw=1.2, label="regularization step")
    ax_nfe.set(xlabel="training iteration", ylabel="function evaluations (NFE)", title="cost of each training step")
    ax_nfe.set_ylim(bottom=0)
    ax_nfe.grid(alpha=0.3)
    ax_nfe.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    plot_weight(ax_weight, rows)
    fig.suptitle(title)
    return save_figure(plt, fig, path)


def plot_weight(ax, rows):
    """The weight of reg over training, on a log axis when it is positive throughout."""
    itrs, weights = [r["itr"] for r in rows], [r["weight"] for r in rows]
    ax.plot(itrs, weights, color="#9467bd", marker="^", markevery=max(1, len(rows) // 12), markersize=5, lw=1.2)
    if all(w > 0 for w in weights):
        ax.set_yscale("log")
    ax.set(xlabel="training iteration", ylabel="weight of reg", title="weight of reg")
    ax.grid(alpha=0.3)


def main(argv=None):
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_iters, args.batch_size, args.kl_anneal_iters, args.dt = 5, 16, 2, 0.05
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)  # the model is tiny: one thread is fastest
    torch.manual_seed(args.seed)
    device = torch.device('cuda:' + str(args.gpu) if torch.cuda.is_available() else 'cpu')
    os.makedirs(args.train_dir, exist_ok=True)
    ts_obs, ys_obs = make_data(device, seed=args.seed)
    # Solve from t = 0 through the observation times to t = 1.
    ts = torch.cat([ts_obs.new_zeros(1), ts_obs, ts_obs.new_ones(1)])
    sde = LatentSDE(hidden=args.hidden).to(device)
    optimizer = torch.optim.Adam(sde.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.999)
    generator, seeds = torch.Generator().manual_seed(args.seed), torch.Generator().manual_seed(args.seed + 1)
    likelihood = Laplace if args.likelihood == "laplace" else Normal
    solve = sdeint_adjoint_reg if args.adjoint else sdeint_reg
    # The weight of reg: AutoWeight by default, NFEBudget with --target_nfe, a constant with --reg_weight,
    # none with --reg none.
    control = None
    if args.reg != "none" and args.reg_weight is None:
        control = AutoWeight() if args.target_nfe is None else \
            NFEBudget(target_nfe=args.target_nfe, rate=args.budget_rate, min_weight=args.budget_min_weight)
    print(f"settings: {vars(args)}")

    rows = []
    steps = range(1, args.num_iters + 1)
    bar = tqdm(steps, desc=f"latent_sde --reg {args.reg}", disable=True if args.smoke else None) if tqdm else steps
    for itr in bar:
        start = time.perf_counter()
        y0, kl0 = sde.initial_state(args.batch_size)
        bm = brownian(args.batch_size, 2, y0, seeds, args.method)  # logqp adds a noiseless channel
        zs, log_ratio, reg, stats = solve(sde, y0, ts, bm=bm, method=args.method, dt=args.dt,
                                          adaptive=args.adaptive, rtol=args.rtol, atol=args.atol, logqp=True,
                                          strategy=args.reg, stiffness_weight=args.stiffness_weight,
                                          generator=generator, return_stats=True)
        log_lik = likelihood(loc=zs[1:-1, :, 0], scale=args.scale).log_prob(ys_obs[:, None]).sum(0).mean()
        kl = log_ratio.sum(0).mean() + kl0
        kl_weight = min(1.0, itr / max(args.kl_anneal_iters, 1))
        loss = -log_lik + kl_weight * kl
        optimizer.zero_grad()
        if control is not None:  # loss + weight * reg, without the part of reg's gradient that opposes loss's
            control.backward(loss, reg, sde.parameters())
            weight = control.weight  # the weight this step used (AutoWeight sets it in backward)
        else:
            weight = 0.0 if args.reg == "none" else args.reg_weight
            (loss + weight * reg).backward()
        optimizer.step()
        scheduler.step()
        if control is not None:
            control.update(stats)
        rows.append({"itr": itr, "loss": loss.item(), "log_lik": log_lik.item(), "kl": kl.item(),
                     "kl_weight": kl_weight, "reg": reg.item(), "weight": weight, "nfe_forward": stats.nfe_forward,
                     "nfe_reg": stats.nfe_reg, "nfe_backward": stats.nfe_backward,
                     "time": time.perf_counter() - start})
        if tqdm and not args.smoke:
            bar.set_postfix(loss=f"{loss.item():.2f}", nfe=stats.nfe_forward, weight=f"{weight:.3g}")
    write_csv(os.path.join(args.train_dir, "log.csv"), rows)
    torch.save({"state_dict": sde.state_dict(), "args": vars(args)}, os.path.join(args.train_dir, "model.pt"))

    test_seeds = torch.Generator().manual_seed(args.seed + 2)  # the same test Brownian paths for every run
    torch.manual_seed(args.seed + 3)
    test_mae, test_nfe = evaluate(sde, args, test_seeds)
    figures = []
    if args.viz:
        figures.append(save_posterior(sde, args, ts_obs, ys_obs, seeds, os.path.join(args.train_dir, "posterior.png")))
        figures.append(plot_nfe(os.path.join(args.train_dir, "nfe.png"), rows, f"latent SDE, --reg {args.reg}"))
    last = rows[-max(1, len(rows) // 10):]
    summary = {"metric_name": "test_mae", "test_metric": test_mae, "higher_is_better": False, "test_nfe": test_nfe,
               "final_train_nfe": sum(r["nfe_forward"] for r in last) / len(last),
               "training_time_s": sum(r["time"] for r in rows), "wall_time_s": time.perf_counter() - wall_start,
               "cpu_time_s": time.process_time() - cpu_start,
               "weight_control": "none" if args.reg == "none" else (type(control).__name__ if control else "constant"),
               "final_weight": rows[-1]["weight"]}
    if isinstance(control, NFEBudget):
        summary["target_nfe"] = control.target_nfe
    print(f"final: posterior median's error to the true curve {test_mae:.4f}, test NFE {test_nfe}, training-solve "
          f"NFE {summary['final_train_nfe']:.1f} (last 10%), weight {summary['final_weight']:.3g}, "
          f"training {summary['training_time_s']:.1f} s, wall {summary['wall_time_s']:.1f} s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return {"rows": rows, "test_mae": test_mae, "test_nfe": test_nfe, "figures": figures, "args": args,
            "summary": summary, "control": control}


if __name__ == "__main__":
    main()
