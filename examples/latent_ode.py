"""Latent ODE on irregularly sampled noisy spirals, with local regularization.

In the spirit of torchdiffeq's ``examples/latent_ode.py`` (same flags): a GRU encoder reads a
spiral's noisy observations backwards in time and gives a Gaussian posterior over the latent start
state z0; a neural ODE carries z0 through time and a decoder maps the latent path back to the
plane. Training maximises the ELBO (Gaussian likelihood of the observations + KL to the prior).
Each spiral is observed at its own random subset of a time grid (irregular sampling; the encoder
sees the mask and the time since its last observation, as in the paper's PhysioNet model), and the
likelihood counts only the observed points. The change from the plain version is three lines:

    -from torchdiffeq import odeint
    +from torchdiffeq_localreg import odeint_reg as odeint
    ...
    -pred_z = odeint(func, z0, ts).permute(1, 0, 2)
    -loss = torch.mean(-logpx + analytic_kl, dim=0)
    +pred_z, reg, stats = odeint(func, z0, ts, strategy=args.reg, ..., return_stats=True)
    +loss = torch.mean(-logpx + analytic_kl, dim=0) + args.reg_weight * reg

(with ``--adjoint``, ``odeint_adjoint`` becomes ``odeint_adjoint_reg``; ``--reg none`` runs the same
call with ``strategy="none"``). After training, held-out spirals are reconstructed with a plain
solve; their error and the solve's NFE are printed and returned.

    python examples/latent_ode.py --visualize              # about 40 s of CPU time (1 thread)
    python examples/latent_ode.py --reg none --visualize   # the unregularized baseline
    python examples/latent_ode.py --smoke                  # a few seconds

Outputs in ``--train_dir`` (default ``runs/latent_ode``): ``log.csv`` (per iteration: negative
ELBO, reg, forward/regularization/backward NFE, wall time), ``ckpt.pt`` (the final weights) and
with ``--visualize`` ``vis.png`` (reconstructions and extrapolations) and ``nfe.png``.
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

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--adjoint", action="store_true")
parser.add_argument("--visualize", action="store_true")
parser.add_argument("--niters", type=int, default=400)
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--train_dir", type=str, default=os.path.join("runs", "latent_ode"))
parser.add_argument("--method", type=str, default="dopri5")
parser.add_argument("--rtol", type=float, default=1e-6)
parser.add_argument("--atol", type=float, default=1e-6)
parser.add_argument("--batch_size", type=int, default=64)
parser.add_argument("--nspiral", type=int, default=512, help="training spirals (plus 128 held out)")
parser.add_argument("--ngrid", type=int, default=50, help="time grid on [0, 2 pi]")
parser.add_argument("--nobs", type=int, default=20, help="observed grid points per spiral")
parser.add_argument("--noise_std", type=float, default=0.1)
parser.add_argument("--latent_dim", type=int, default=4)
parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
add_reg_args(parser, reg_weight=100.0)

T_MAX = 2 * math.pi  # one turn of the spiral in the observed window
N_TEST = 128


def spiral_points(u0, direction, t):
    """Points of the spiral r = 0.2 u at angle u = u0 + direction * t (ccw outwards, cw inwards)."""
    u = u0[:, None] + direction[:, None] * t[None, :]
    return torch.stack([0.2 * u * torch.cos(u), 0.2 * u * torch.sin(u)], dim=-1)  # (N, T, 2)


def make_spirals(n, args, generator):
    """Noisy spirals, each observed at ``nobs`` random points of the grid; returns a dict of tensors."""
    t = torch.linspace(0.0, T_MAX, args.ngrid)
    direction = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    # Start angles keep every path on the arm u in [pi/2, 9 pi/2], whichever way it turns.
    u0 = 0.5 * math.pi + 2 * math.pi * torch.rand(n, generator=generator) + (direction < 0) * T_MAX
    clean = spiral_points(u0, direction, t)
    noisy = clean + args.noise_std * torch.randn(clean.shape, generator=generator)
    order = torch.rand(n, args.ngrid, generator=generator).argsort(dim=1)
    mask = torch.zeros(n, args.ngrid).scatter_(1, order[:, :args.nobs], 1.0)
    return {"t": t, "x": noisy * mask[..., None], "mask": mask, "clean": clean, "u0": u0, "direction": direction}


class RecognitionRNN(nn.Module):
    """Reads (observation, mask, time since the last observation) backwards; returns q(z0)'s mean, log-variance."""

    def __init__(self, latent_dim, obs_dim=2, hidden=25):
        super().__init__()
        self.hidden = hidden
        self.cell = nn.GRUCell(obs_dim + 2, hidden)
        self.out = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x, mask, t):
        h = x.new_zeros(x.shape[0], self.hidden)
        t_last = torch.full_like(mask[:, 0], float(t[-1]))
        for i in reversed(range(len(t))):
            m = mask[:, i:i + 1]
            step = self.cell(torch.cat([x[:, i], m, (t_last - t[i])[:, None]], dim=-1), h)
            h = m * step + (1 - m) * h
            t_last = torch.where(m[:, 0] > 0, t[i].expand_as(t_last), t_last)
        return self.out(h).chunk(2, dim=-1)


class LatentODEfunc(nn.Module):
    def __init__(self, latent_dim, hidden=20):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, latent_dim))

    def forward(self, t, z):
        return self.net(z)


class Decoder(nn.Module):
    def __init__(self, latent_dim, obs_dim=2, hidden=20):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, obs_dim))

    def forward(self, z):
        return self.net(z)


def log_normal_pdf(x, mean, logvar):
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 / logvar.exp())


def normal_kl(mu, logvar):
    """KL( N(mu, exp(logvar)) || N(0, 1) ), elementwise."""
    return 0.5 * (logvar.exp() + mu ** 2 - 1.0 - logvar)


@torch.no_grad()
def reconstruct(rec, func, dec, data, t, args):
    """Decodes the posterior mean's path at times ``t`` with a plain solve; returns (paths, NFE)."""
    mean, _ = rec(data["x"], data["mask"], data["t"])
    pred_z, _, stats = odeint_reg(func, mean, t, rtol=args.rtol, atol=args.atol, method=args.method,
                                  strategy="none", return_stats=True)
    return dec(pred_z).permute(1, 0, 2), stats.nfe_forward


def visualize(path, rec, func, dec, test, args, n_show=4):
    plt = pyplot()
    show = {k: (v[:n_show] if k != "t" else v) for k, v in test.items()}
    t_ext = torch.linspace(0.0, 1.5 * T_MAX, 3 * args.ngrid).to(test["t"])
    pred, _ = reconstruct(rec, func, dec, show, t_ext, args)
    truth = spiral_points(show["u0"], show["direction"], t_ext)
    inside = t_ext <= T_MAX
    fig, axes = plt.subplots(1, n_show, figsize=(3.2 * n_show, 3.4))
    for k, ax in enumerate(axes):
        obs = show["mask"][k] > 0
        truth_k, pred_k, x_k = truth[k].cpu(), pred[k].cpu(), show["x"][k][obs].cpu()
        ax.plot(truth_k[:, 0], truth_k[:, 1], color="0.6", label="true")
        ax.scatter(x_k[:, 0], x_k[:, 1], s=8, color="black", label="observed")
        ax.plot(pred_k[inside, 0], pred_k[inside, 1], "r-", label="reconstruction")
        ax.plot(pred_k[~inside, 0], pred_k[~inside, 1], "r--", label="extrapolation")
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(loc="lower left", fontsize=7)
    fig.suptitle(f"Latent ODE on held-out spirals (--reg {args.reg})")
    return save_figure(fig, path)


def main(argv=None):
    args = parser.parse_args(argv)
    if args.smoke:
        args.niters, args.nspiral, args.batch_size, args.ngrid, args.nobs = 4, 32, 16, 20, 8
        args.rtol = args.atol = 1e-4
    set_threads(1)  # the models are tiny: one thread is fastest, and spares a shared 2-core machine
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    odeint = odeint_adjoint_reg if args.adjoint else odeint_reg
    data_gen = torch.Generator().manual_seed(args.seed)
    train = {k: v.to(device) for k, v in make_spirals(args.nspiral, args, data_gen).items()}
    test = {k: v.to(device) for k, v in make_spirals(N_TEST, args, data_gen).items()}
    ts = train["t"]
    batches = torch.Generator().manual_seed(args.seed + 1)
    sampler = torch.Generator().manual_seed(args.seed + 2)

    os.makedirs(args.train_dir, exist_ok=True)
    log = CSVLog(args.log or os.path.join(args.train_dir, "log.csv"), LOG_FIELDS)
    print(f"settings: {vars(args)}")

    func = LatentODEfunc(args.latent_dim).to(device)
    rec = RecognitionRNN(args.latent_dim).to(device)
    dec = Decoder(args.latent_dim).to(device)
    params = list(func.parameters()) + list(rec.parameters()) + list(dec.parameters())
    optimizer = torch.optim.Adam(params, lr=args.lr)
    noise_logvar = torch.full((1,), 2 * math.log(args.noise_std), device=device)

    for itr in progress(range(1, args.niters + 1), total=args.niters, desc="latent_ode"):
        with Timer() as timer:
            optimizer.zero_grad()
            idx = torch.randint(args.nspiral, (args.batch_size,), generator=batches).to(device)
            x, mask = train["x"][idx], train["mask"][idx]
            qz0_mean, qz0_logvar = rec(x, mask, ts)
            z0 = qz0_mean + torch.randn_like(qz0_mean) * (0.5 * qz0_logvar).exp()
            pred_z, reg, stats = odeint(func, z0, ts, rtol=args.rtol, atol=args.atol, method=args.method,
                                        strategy=args.reg, stiffness_weight=args.stiffness_weight,
                                        generator=sampler, return_stats=True)
            pred_x = dec(pred_z.permute(1, 0, 2))
            logpx = (log_normal_pdf(x, pred_x, noise_logvar) * mask[..., None]).sum(dim=(1, 2))
            analytic_kl = normal_kl(qz0_mean, qz0_logvar).sum(dim=-1)
            loss = torch.mean(-logpx + analytic_kl, dim=0)
            (loss + args.reg_weight * reg).backward()
            optimizer.step()
        log.write(itr=itr, loss=loss.item(), reg=reg.item(), nfe_forward=stats.nfe_forward,
                  nfe_reg=stats.nfe_reg, nfe_backward=stats.nfe_backward, time=timer.seconds)

    torch.save({"func": func.state_dict(), "rec": rec.state_dict(), "dec": dec.state_dict(), "args": vars(args)},
               os.path.join(args.train_dir, "ckpt.pt"))
    pred, test_nfe = reconstruct(rec, func, dec, test, ts, args)
    test_mse = ((pred - test["clean"]) ** 2).sum(-1).mean().item()
    figures = []
    if args.visualize:
        figures.append(visualize(os.path.join(args.train_dir, "vis.png"), rec, func, dec, test, args))
        figures.append(plot_nfe(log.rows, os.path.join(args.train_dir, "nfe.png"),
                                title=f"latent_ode: NFE over training (--reg {args.reg})"))
    print(f"final: held-out squared error to the clean spirals {test_mse:.4f}, test NFE {test_nfe}, "
          f"{training_summary(log.rows)}")
    return {"rows": log.rows, "test_mse": test_mse, "test_nfe": test_nfe, "figures": figures, "args": args}


if __name__ == "__main__":
    main()
