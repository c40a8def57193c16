"""Continuous normalizing flow on 2-D data, with local regularization.

In the spirit of torchdiffeq's ``examples/cnf.py``: a neural ODE transports a standard normal to a
2-D data set (two moons or two circles, made with torch). A data point x at t = 1 is carried back
to z at t = 0 together with the instantaneous change of variables,

    d z / dt = f(t, z),      d logp / dt = -tr(df/dz),

so that log p(x) = log N(z; 0, I) - logp(0) with logp(1) = 0. In 2-D the trace is exact: two
autograd calls give the two diagonal entries of the Jacobian. The ODE state is the tuple (z, logp).
The change from the plain version is three lines:

    -from torchdiffeq import odeint
    +from torchdiffeq_localreg import odeint_reg as odeint
    ...
    -z_t0, logp_diff_t0 = odeint(func, (x, logp_diff_t1), t, atol=args.tol, rtol=args.tol)
    -loss = -logp_x.mean(0)
    +(z_t, logp_diff_t), reg, stats = odeint(func, (x, logp_diff_t1), t, ..., strategy=args.reg, ...)
    +loss = -logp_x.mean(0) + args.reg_weight * reg

(with ``--adjoint``, ``odeint_adjoint`` becomes ``odeint_adjoint_reg``; ``--reg none`` runs the same
call with ``strategy="none"``). After training the held-out negative log-likelihood and the NFE of
its plain solve are printed and returned.

    python examples/cnf.py --viz                   # about 40 s of CPU time (1 thread)
    python examples/cnf.py --reg none --viz        # the unregularized baseline
    python examples/cnf.py --smoke                 # a few seconds

Outputs in ``--results_dir`` (default ``runs/cnf``): ``log.csv`` (per iteration: negative
log-likelihood, reg, forward/regularization/backward NFE, wall time) and with ``--viz``
``cnf.png`` (data, learned density, samples) and ``nfe.png``.
"""
import argparse
import math
import os

import torch
import torch.nn as nn

from _common import (CSVLog, Timer, add_reg_args, plot_nfe, progress, pyplot, save_figure, set_threads,
                     training_summary)
from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg

LOG_FIELDS = ("itr", "loss", "reg", "nfe_forward", "nfe_reg", "nfe_backward", "time")
DATASETS = ("moons", "circles")

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--adjoint", action="store_true")
parser.add_argument("--viz", action="store_true")
parser.add_argument("--niters", type=int, default=300)
parser.add_argument("--lr", type=float, default=1e-2)
parser.add_argument("--num_samples", type=int, default=256, help="batch size")
parser.add_argument("--hidden_dim", type=int, default=64)
parser.add_argument("--data", type=str, choices=DATASETS, default="moons")
parser.add_argument("--method", type=str, default="dopri5")
parser.add_argument("--tol", type=float, default=1e-5, help="rtol and atol")
parser.add_argument("--results_dir", type=str, default=os.path.join("runs", "cnf"))
parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
add_reg_args(parser, reg_weight=0.05)

T1 = 1.0  # data lives at t = T1, the base distribution at t = 0


def sample_data(name, n, generator, noise=0.06):
    """``n`` points of two moons or two circles, roughly centred and scaled to unit spread."""
    angle = math.pi * torch.rand(n, generator=generator)
    first = torch.arange(n) < n // 2
    if name == "moons":
        upper = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
        lower = torch.stack([1.0 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=-1)
        points = (torch.where(first[:, None], upper, lower) - torch.tensor([0.5, 0.25])) * 1.5
    elif name == "circles":
        radius = torch.where(first, 1.0, 0.5)[:, None] * 1.6
        points = radius * torch.stack([torch.cos(2 * angle), torch.sin(2 * angle)], dim=-1)
    else:
        raise ValueError(f"data must be one of {DATASETS}, got {name!r}.")
    return points + noise * torch.randn(n, 2, generator=generator)


def exact_trace_2d(f, z, create_graph):
    """tr(df/dz) for a batch of 2-D fields whose rows depend only on their own row of z."""
    d0 = torch.autograd.grad(f[:, 0].sum(), z, create_graph=create_graph, retain_graph=True)[0][:, 0]
    d1 = torch.autograd.grad(f[:, 1].sum(), z, create_graph=create_graph)[0][:, 1]
    return d0 + d1


class CNF(nn.Module):
    """Dynamics of the state (z, logp): a time-conditioned MLP and minus its exact Jacobian trace."""

    def __init__(self, hidden=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2))

    def forward(self, t, state):
        z, _ = state
        # Inside a no-grad solve (evaluation, the adjoint's forward pass) the trace still needs
        # autograd; its graph is kept only when the caller differentiates through the result.
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.net(torch.cat([z, t.expand(z.shape[0], 1).to(z)], dim=-1))
            dlogp = -exact_trace_2d(dz, z, create_graph)[:, None]
        if not create_graph:
            dz, dlogp = dz.detach(), dlogp.detach()
        return dz, dlogp


def base_log_prob(z):
    return -0.5 * (z ** 2).sum(-1) - math.log(2 * math.pi)


@torch.no_grad()
def log_likelihood(func, x, args):
    """log p(x) by a plain solve from t = T1 to 0; returns (log p, NFE)."""
    t = torch.tensor([T1, 0.0]).to(x)
    (z, logp_diff), _, stats = odeint_reg(func, (x, torch.zeros(x.shape[0], 1).to(x)), t, rtol=args.tol,
                                          atol=args.tol, method=args.method, strategy="none", return_stats=True)
    return base_log_prob(z[-1]) - logp_diff[-1, :, 0], stats.nfe_forward


@torch.no_grad()
def sample(func, n, args, like):
    z0 = torch.randn(n, 2).to(like)
    t = torch.tensor([0.0, T1]).to(like)
    (z, _), _ = odeint_reg(func, (z0, torch.zeros(n, 1).to(like)), t, rtol=args.tol, atol=args.tol,
                           method=args.method, strategy="none")
    return z[-1]


def visualize(path, func, data, args, lim=2.5):
    plt = pyplot()
    n_grid, n_samples = (30, 500) if args.smoke else (80, 2000)
    grid = torch.linspace(-lim, lim, n_grid)
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([gx, gy], dim=-1).reshape(-1, 2).to(data)
    logp, _ = log_likelihood(func, points, args)
    samples = sample(func, n_samples, args, data).cpu()
    fig, (ax_data, ax_density, ax_samples) = plt.subplots(1, 3, figsize=(12, 4))
    ax_data.scatter(data[:, 0].cpu(), data[:, 1].cpu(), s=2)
    ax_data.set_title("Data")
    ax_density.pcolormesh(gx.numpy(), gy.numpy(), logp.exp().reshape(n_grid, n_grid).cpu().numpy(), shading="auto")
    ax_density.set_title("Learned density")
    ax_samples.scatter(samples[:, 0], samples[:, 1], s=2)
    ax_samples.set_title("Samples")
    for ax in (ax_data, ax_density, ax_samples):
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    fig.suptitle(f"CNF on {args.data} (--reg {args.reg})")
    return save_figure(fig, path)


def main(argv=None):
    args = parser.parse_args(argv)
    if args.smoke:
        args.niters, args.num_samples, args.hidden_dim, args.tol = 4, 64, 16, 1e-3
    set_threads(1)  # the models are tiny: one thread is fastest, and spares a shared 2-core machine
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    odeint = odeint_adjoint_reg if args.adjoint else odeint_reg
    data_gen = torch.Generator().manual_seed(args.seed)
    test_x = sample_data(args.data, 512 if args.smoke else 2048, data_gen).to(device)
    sampler = torch.Generator().manual_seed(args.seed + 1)

    os.makedirs(args.results_dir, exist_ok=True)
    log = CSVLog(args.log or os.path.join(args.results_dir, "log.csv"), LOG_FIELDS)
    print(f"settings: {vars(args)}")

    func = CNF(args.hidden_dim).to(device)
    optimizer = torch.optim.Adam(func.parameters(), lr=args.lr)
    t = torch.tensor([T1, 0.0], device=device)
    for itr in progress(range(1, args.niters + 1), total=args.niters, desc="cnf"):
        with Timer() as timer:
            optimizer.zero_grad()
            x = sample_data(args.data, args.num_samples, data_gen).to(device)
            logp_diff_t1 = torch.zeros(args.num_samples, 1, device=device)
            (z_t, logp_diff_t), reg, stats = odeint(func, (x, logp_diff_t1), t, rtol=args.tol, atol=args.tol,
                                                    method=args.method, strategy=args.reg,
                                                    stiffness_weight=args.stiffness_weight, generator=sampler,
                                                    return_stats=True)
            logp_x = base_log_prob(z_t[-1]) - logp_diff_t[-1, :, 0]
            loss = -logp_x.mean(0)
            (loss + args.reg_weight * reg).backward()
            optimizer.step()
        log.write(itr=itr, loss=loss.item(), reg=reg.item(), nfe_forward=stats.nfe_forward,
                  nfe_reg=stats.nfe_reg, nfe_backward=stats.nfe_backward, time=timer.seconds)

    test_logp, test_nfe = log_likelihood(func, test_x, args)
    test_nll = -test_logp.mean().item()
    figures = []
    if args.viz:
        figures.append(visualize(os.path.join(args.results_dir, "cnf.png"), func, test_x, args))
        figures.append(plot_nfe(log.rows, os.path.join(args.results_dir, "nfe.png"),
                                title=f"cnf: NFE over training (--reg {args.reg})"))
    print(f"final: held-out NLL {test_nll:.4f}, test NFE {test_nfe}, "
          f"{training_summary(log.rows)}")
    return {"rows": log.rows, "test_nll": test_nll, "test_nfe": test_nfe, "figures": figures, "args": args}


if __name__ == "__main__":
    main()
