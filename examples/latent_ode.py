"""Latent ODE on irregularly sampled noisy spirals, with local regularization.

In the spirit of torchdiffeq's ``examples/latent_ode.py`` (same flags): a GRU encoder reads a
spiral's noisy observations backwards in time and gives a Gaussian posterior over the latent start
state z0; a neural ODE carries z0 through time and a decoder maps the latent path back to the
plane. Training maximises the ELBO (Gaussian likelihood of the observations + KL to the prior).
Each spiral is observed at its own random subset of a time grid (irregular sampling; the encoder
sees the mask and the time since its last observation, as in the paper's PhysioNet model), and the
likelihood counts only the observed points. Upstream's flags and values work as they are
(``--adjoint True``, ``--visualize True``, ``--gpu 0``). The change from the plain version (the
solve keeps upstream's ``odeint`` call, one-import mode; evaluation and plots use the same
``odeint``, plain under ``torch.no_grad()``):

    -from torchdiffeq import odeint
    +from torchdiffeq_localreg import odeint
    +import torchdiffeq_localreg as localreg
    +auto = localreg.AutoWeight()
    ...
    -pred_z = odeint(func, z0, ts).permute(1, 0, 2)
    +with localreg.regularize() as r:
    +    pred_z = odeint(func, z0, ts).permute(1, 0, 2)
     ...
     loss = torch.mean(-logpx + analytic_kl, dim=0)
    -loss.backward()
    +auto.backward(loss, r.reg, params)   # instead of loss.backward()
     optimizer.step()
    +auto.update(r.stats)

(with ``--adjoint``, the same with ``odeint_adjoint``). ``AutoWeight`` sets the weight of
``r.reg`` at every step from the two gradients: the regularization's pull is a share of the
task's (the negative ELBO, likelihood and KL), projected so that it never works against the task;
there is no number to choose. ``params`` is what the optimizer steps: the dynamics', the encoder's
and the decoder's parameters. ``--target_nfe N`` puts ``NFEBudget(target_nfe=N,
rate=--budget_rate, min_weight=--budget_min_weight)`` in its place (the script calls either
``control``), for a budget of N evaluations per training solve. ``--reg_weight W`` uses a constant
weight instead, with the plain ``(loss + W * r.reg).backward()``; ``--reg none`` runs the same
block with ``strategy="none"`` (the plain latent ODE). The log's NFE columns are the block's
``r.nfe_forward``, ``r.nfe_reg`` and ``r.nfe_backward``. After training, held-out spirals are
reconstructed with a plain solve over the same time grid; their squared error to the clean spirals
and the solve's NFE (counted by the dynamics, ``LatentODEfunc.nfe``, as upstream does) are the test
metric and the test NFE.

    python examples/latent_ode.py --visualize              # regularized, weight set by AutoWeight
    python examples/latent_ode.py --reg none --visualize   # the plain latent ODE, same settings
    python examples/latent_ode.py --target_nfe N           # weight set by NFEBudget for N evaluations per solve
    python examples/latent_ode.py --smoke                  # a few seconds

Outputs, relative to the working directory, in ``--train_dir`` (default ``runs/latent_ode``):
``log.csv`` (per iteration: negative ELBO, reg, weight, forward/regularization/backward NFE,
time), ``ckpt.pt`` (the final weights) and with ``--visualize`` ``vis.png`` (reconstructions and
extrapolations) and ``nfe.png``.
"""
import argparse
import csv
import json
import math
import os
import time

import torch
import torch.nn as nn

import torchdiffeq_localreg as localreg
from torchdiffeq_localreg import odeint, odeint_adjoint

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
parser.add_argument("--adjoint", type=str2bool, nargs="?", const=True, default=False)
parser.add_argument("--visualize", "--viz", dest="visualize", type=str2bool, nargs="?", const=True, default=False)
parser.add_argument("--niters", type=int, default=400, help="upstream: 2000")
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
parser.add_argument("--gpu", type=int, default=0)
group = parser.add_argument_group("local regularization (torchdiffeq_localreg)")
group.add_argument("--reg", type=str, choices=("none", "unbiased", "biased", "global"), default="unbiased",
                   help="where to regularize: a local strategy, the 2021 global baseline, or none (plain)")
group.add_argument("--target_nfe", type=float, default=None,
                   help="a budget: NFEBudget sets the weight instead of AutoWeight, for this many evaluations per "
                        "solve (stats.nfe_forward; about 0.6 x the final_train_nfe of a --reg none run is a good "
                        "budget) (default: None, AutoWeight)")
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
        self.nfe = 0

    def forward(self, t, z):
        self.nfe += 1
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
    func.nfe = 0
    pred_z = odeint(func, mean, t, rtol=args.rtol, atol=args.atol, method=args.method)
    return dec(pred_z).permute(1, 0, 2), func.nfe


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


def visualize(path, rec, func, dec, test, args, n_show=4):
    plt = pyplot()
    show = {k: (v[:n_show] if k != "t" else v) for k, v in test.items()}
    t_ext = torch.linspace(0.0, 1.5 * T_MAX, 3 * args.ngrid).to(test["t"])
    pred, _ = reconstruct(rec, func, dec, show, t_ext, args)
    truth = spiral_points(show["u0"], show["direction"], t_ext)
    inside = (t_ext <= T_MAX).cpu()   # indexes the predictions, which are moved to the CPU to plot
    fig, axes = plt.subplots(1, n_show, figsize=(3.2 * n_show, 3.4))
    for k, ax in enumerate(axes):
        obs = show["mask"][k] > 0
        truth_k, pred_k, x_k = truth[k].cpu(), pred[k].cpu(), show["x"][k][obs].cpu()
        ax.plot(truth_k[:, 0], truth_k[:, 1], color="0.6", lw=2, label="true spiral")
        ax.scatter(x_k[:, 0], x_k[:, 1], s=10, color="black", marker="o", label="observed (noisy)", zorder=3)
        ax.plot(pred_k[inside, 0], pred_k[inside, 1], color="#d62728", ls="-", label="reconstruction")
        ax.plot(pred_k[~inside, 0], pred_k[~inside, 1], color="#1f77b4", ls="--", label="extrapolation")
        ax.set_aspect("equal")
        ax.set(title=f"held-out spiral {k + 1}", xlabel="x", ylabel="y")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, -0.06), ncol=4, frameon=False)
    fig.suptitle(f"Latent ODE on held-out spirals: reconstruction and extrapolation (--reg {args.reg})")
    return save_figure(plt, fig, path)


def plot_nfe(path, rows, title):
    """Forward and regularization NFE of the training solves, and the weight of reg, over training."""
    plt = pyplot()
    fig, (ax_nfe, ax_weight) = plt.subplots(1, 2, figsize=(10, 3.5))
    itrs, every = [r["itr"] for r in rows], max(1, len(rows) // 12)
    ax_nfe.plot(itrs, [r["nfe_forward"] for r in rows], color="#1f77b4", marker="o", markevery=every, markersize=5,
                lw=1.2, label="solve (forward)")
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
        args.niters, args.nspiral, args.batch_size, args.ngrid, args.nobs = 4, 32, 16, 20, 8
        args.rtol = args.atol = 1e-4
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)  # the models are tiny: one thread is fastest
    torch.manual_seed(args.seed)
    device = torch.device('cuda:' + str(args.gpu) if torch.cuda.is_available() else 'cpu')
    solve = odeint_adjoint if args.adjoint else odeint
    data_gen = torch.Generator().manual_seed(args.seed)
    train = {k: v.to(device) for k, v in make_spirals(args.nspiral, args, data_gen).items()}
    test = {k: v.to(device) for k, v in make_spirals(N_TEST, args, data_gen).items()}
    ts = train["t"]
    batches = torch.Generator().manual_seed(args.seed + 1)
    sampler = torch.Generator().manual_seed(args.seed + 2)
    # The weight of reg: AutoWeight by default, NFEBudget with --target_nfe, a constant with --reg_weight,
    # none with --reg none.
    control = None
    if args.reg != "none" and args.reg_weight is None:
        control = localreg.AutoWeight() if args.target_nfe is None else \
            localreg.NFEBudget(target_nfe=args.target_nfe, rate=args.budget_rate, min_weight=args.budget_min_weight)
    os.makedirs(args.train_dir, exist_ok=True)
    print(f"settings: {vars(args)}")

    func = LatentODEfunc(args.latent_dim).to(device)
    rec = RecognitionRNN(args.latent_dim).to(device)
    dec = Decoder(args.latent_dim).to(device)
    params = list(func.parameters()) + list(rec.parameters()) + list(dec.parameters())
    optimizer = torch.optim.Adam(params, lr=args.lr)
    noise_logvar = torch.full((1,), 2 * math.log(args.noise_std), device=device)

    rows = []
    steps = range(1, args.niters + 1)
    bar = tqdm(steps, desc=f"latent_ode --reg {args.reg}", disable=True if args.smoke else None) if tqdm else steps
    for itr in bar:
        start = time.perf_counter()
        optimizer.zero_grad()
        idx = torch.randint(args.nspiral, (args.batch_size,), generator=batches).to(device)
        x, mask = train["x"][idx], train["mask"][idx]
        qz0_mean, qz0_logvar = rec(x, mask, ts)
        z0 = qz0_mean + torch.randn_like(qz0_mean) * (0.5 * qz0_logvar).exp()
        with localreg.regularize(strategy=args.reg, stiffness_weight=args.stiffness_weight, generator=sampler) as r:
            pred_z = solve(func, z0, ts, rtol=args.rtol, atol=args.atol, method=args.method).permute(1, 0, 2)
        pred_x = dec(pred_z)
        logpx = (log_normal_pdf(x, pred_x, noise_logvar) * mask[..., None]).sum(dim=(1, 2))
        analytic_kl = normal_kl(qz0_mean, qz0_logvar).sum(dim=-1)
        neg_elbo = torch.mean(-logpx + analytic_kl, dim=0)
        if control is not None:  # neg_elbo + weight * r.reg, without the part of reg's gradient that opposes the ELBO's
            control.backward(neg_elbo, r.reg, params)
            weight = control.weight  # the weight this step used (AutoWeight sets it in backward)
        else:
            weight = 0.0 if args.reg == "none" else args.reg_weight
            (neg_elbo + weight * r.reg).backward()
        optimizer.step()
        if control is not None:
            control.update(r.stats)
        rows.append({"itr": itr, "loss": neg_elbo.item(), "reg": r.reg.item(), "weight": weight,
                     "nfe_forward": r.nfe_forward, "nfe_reg": r.nfe_reg,
                     "nfe_backward": r.nfe_backward, "time": time.perf_counter() - start})
        if tqdm and not args.smoke:
            bar.set_postfix(loss=f"{neg_elbo.item():.1f}", nfe=r.nfe_forward, weight=f"{weight:.3g}")

    write_csv(os.path.join(args.train_dir, "log.csv"), rows)
    torch.save({"func": func.state_dict(), "rec": rec.state_dict(), "dec": dec.state_dict(), "args": vars(args)},
               os.path.join(args.train_dir, "ckpt.pt"))
    pred, test_nfe = reconstruct(rec, func, dec, test, ts, args)
    test_mse = ((pred - test["clean"]) ** 2).sum(-1).mean().item()
    figures = []
    if args.visualize:
        figures.append(visualize(os.path.join(args.train_dir, "vis.png"), rec, func, dec, test, args))
        figures.append(plot_nfe(os.path.join(args.train_dir, "nfe.png"), rows,
                                f"latent_ode: NFE over training (--reg {args.reg})"))
    last = rows[-max(1, len(rows) // 10):]
    summary = {"metric_name": "test_mse", "test_metric": test_mse, "higher_is_better": False, "test_nfe": test_nfe,
               "final_train_nfe": sum(r["nfe_forward"] for r in last) / len(last),
               "training_time_s": sum(r["time"] for r in rows), "wall_time_s": time.perf_counter() - wall_start,
               "cpu_time_s": time.process_time() - cpu_start,
               "weight_control": "none" if args.reg == "none" else (type(control).__name__ if control else "constant"),
               "final_weight": rows[-1]["weight"]}
    if isinstance(control, localreg.NFEBudget):
        summary["target_nfe"] = control.target_nfe
    print(f"final: held-out squared error to the clean spirals {test_mse:.4f}, test NFE {test_nfe}, training-solve "
          f"NFE {summary['final_train_nfe']:.1f} (last 10%), weight {summary['final_weight']:.3g}, "
          f"training {summary['training_time_s']:.1f} s, wall {summary['wall_time_s']:.1f} s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return {"rows": rows, "test_mse": test_mse, "test_nfe": test_nfe, "figures": figures, "args": args,
            "summary": summary, "control": control}


if __name__ == "__main__":
    main()
