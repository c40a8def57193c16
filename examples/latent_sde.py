"""A latent SDE fitted to a few noisy observations of a 1-D curve (torchsde style), with local regularization.

The prior is an Ornstein-Uhlenbeck process (drift h = theta * (mu - y), constant diffusion sigma);
the posterior shares its diffusion g and has a learned drift f(t, y). Training maximises the ELBO:
the likelihood of the observations under posterior sample paths minus the KL divergence between
posterior and prior, which torchsde accumulates along the paths with ``logqp=True`` (plus the KL of
the initial state). The change from the plain torchsde script:

    -from torchsde import sdeint, sdeint_adjoint
    +from torchdiffeq_localreg import sdeint_reg, sdeint_adjoint_reg
    ...
    -zs, log_ratio = sdeint(sde, z0, ts, bm=bm, method=args.method, dt=args.dt, adaptive=args.adaptive,
    -                       rtol=args.rtol, atol=args.atol, logqp=True)
    +zs, log_ratio, reg, stats = sdeint_reg(sde, z0, ts, bm=bm, method=args.method, dt=args.dt,
    +                                       adaptive=args.adaptive, rtol=args.rtol, atol=args.atol, logqp=True,
    +                                       strategy=args.reg, return_stats=True)
    ...
    -loss = -log_lik + kl_weight * kl
    +loss = -log_lik + kl_weight * kl + args.reg_weight * reg

The data: observations of ``y = sin(2 pi t) + 0.1 cos(6 pi t)`` with small Gaussian noise on two
segments of [0, 1], with a gap between them where the posterior must interpolate. ``--viz``
draws posterior sample paths and percentile bands against the data, and the NFE over training.

    python examples/latent_sde.py --viz              # a minute or two on a 2-core CPU
    python examples/latent_sde.py --reg none         # the plain latent SDE
    python examples/latent_sde.py --adaptive --method srk --rtol 1e-2 --atol 1e-2
    python examples/latent_sde.py --smoke --viz      # seconds
"""
import argparse
import math
import os
from pathlib import Path

import torch
import torch.nn as nn
import torchsde
from torch.distributions import Laplace, Normal, kl_divergence

from _common import CSVLog, Timer, add_reg_args, plot_nfe, progress, pyplot, save_figure, set_threads
from torchdiffeq_localreg import sdeint_adjoint_reg, sdeint_reg

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--batch-size", type=int, default=128, help="posterior sample paths per iteration")
parser.add_argument("--likelihood", type=str, choices=["normal", "laplace"], default="laplace")
parser.add_argument("--scale", type=float, default=0.05, help="scale of the observation likelihood")
parser.add_argument("--adjoint", action="store_true")
parser.add_argument("--adaptive", action="store_true")
parser.add_argument("--method", type=str, default="euler", help="a torchsde method for Ito SDEs with diagonal noise")
parser.add_argument("--dt", type=float, default=2e-2)
parser.add_argument("--rtol", type=float, default=1e-3)
parser.add_argument("--atol", type=float, default=1e-3)
parser.add_argument("--num-iters", type=int, default=200)
parser.add_argument("--kl-anneal-iters", type=int, default=50, help="the KL weight grows linearly to 1 over these")
parser.add_argument("--lr", type=float, default=1e-2)
parser.add_argument("--hidden", type=int, default=64)
parser.add_argument("--train-dir", type=str, default=str(ROOT / "runs" / "latent_sde"))
parser.add_argument("--viz", action="store_true", help="save posterior.png and nfe.png in --train-dir")
parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
add_reg_args(parser, reg_weight=1.0)


def make_data(device, seed=0, noise=0.02):
    """Observation times on [0.1, 0.4] and [0.6, 0.9] and noisy values of a sine-like curve."""
    gen = torch.Generator().manual_seed(seed)
    ts = torch.cat([torch.linspace(0.1, 0.4, 7), torch.linspace(0.6, 0.9, 7)])
    ys = torch.sin(2 * math.pi * ts) + 0.1 * torch.cos(6 * math.pi * ts) + noise * torch.randn(len(ts), generator=gen)
    return ts.to(device), ys.to(device)


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
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.fill_between(t, q[0], q[3], color="tab:blue", alpha=0.15, label="posterior 5-95%")
    ax.fill_between(t, q[1], q[2], color="tab:blue", alpha=0.3, label="posterior 25-75%")
    ax.plot(t, zs[:, :num_paths], color="tab:blue", alpha=0.3, linewidth=0.7)
    ax.scatter(ts_obs.cpu(), ys_obs.cpu(), color="black", zorder=3, s=15, label="data")
    ax.set_xlabel("t")
    ax.set_ylabel("y")
    ax.set_title(f"latent SDE posterior, reg={args.reg}")
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, path)


def main(argv=None):
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_iters, args.batch_size, args.kl_anneal_iters, args.dt = 5, 16, 2, 0.05
    set_threads(1 if args.smoke else 2)  # tiny smoke tensors gain nothing from threads
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
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
    print(f"settings: {vars(args)}")

    log = CSVLog(args.log or os.path.join(args.train_dir, "log.csv"),
                 ["itr", "loss", "log_lik", "kl", "kl_weight", "reg", "nfe_forward", "nfe_reg", "nfe_backward",
                  "time"])
    for itr in progress(range(1, args.num_iters + 1), desc="latent SDE", disable=args.smoke):
        with Timer() as timer:
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
            (loss + args.reg_weight * reg).backward()
            optimizer.step()
            scheduler.step()
        log.write(itr=itr, loss=loss.item(), log_lik=log_lik.item(), kl=kl.item(), kl_weight=kl_weight,
                  reg=reg.item(), nfe_forward=stats.nfe_forward, nfe_reg=stats.nfe_reg,
                  nfe_backward=stats.nfe_backward, time=timer.seconds)
        if itr % max(1, args.num_iters // 10) == 0 or itr == args.num_iters:
            print(f"iter {itr:5d} | loss {loss.item():.3f} | log-lik {log_lik.item():.3f} | KL {kl.item():.3f} | "
                  f"reg {reg.item():.4f} | NFE-F {stats.nfe_forward} NFE-B {stats.nfe_backward}", flush=True)
    torch.save({"state_dict": sde.state_dict(), "args": vars(args)}, os.path.join(args.train_dir, "model.pt"))

    figures = []
    if args.viz:
        figures.append(save_posterior(sde, args, ts_obs, ys_obs, seeds, os.path.join(args.train_dir, "posterior.png")))
        figures.append(plot_nfe(log.rows, os.path.join(args.train_dir, "nfe.png"), title=f"latent SDE, reg={args.reg}"))
    return {"rows": log.rows, "figures": figures, "args": args}


if __name__ == "__main__":
    main()
