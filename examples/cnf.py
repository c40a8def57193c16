"""Continuous normalizing flow on 2-D data, with local regularization.

In the spirit of torchdiffeq's ``examples/cnf.py``: a neural ODE transports a standard normal to a
2-D data set (two moons or two circles, made with torch). A data point x at t = 1 is carried back
to z at t = 0 together with the instantaneous change of variables,

    d z / dt = f(t, z),      d logp / dt = -tr(df/dz),

so that log p(x) = log N(z; 0, I) - logp(0) with logp(1) = 0. In 2-D the trace is exact: two
autograd calls give the two diagonal entries of the Jacobian. The ODE state is the tuple (z, logp).
Upstream's flags work as they are (``--adjoint``, ``--viz``, ``--gpu 0``). The change from the
plain version (the solve keeps upstream's ``odeint`` call, one-import mode):

    -from torchdiffeq import odeint
    +from torchdiffeq_localreg import odeint
    +import torchdiffeq_localreg as localreg
    +auto = localreg.AutoWeight()
    ...
    -z_t, logp_diff_t = odeint(func, (x, logp_diff_t1), t, atol=args.tol, rtol=args.tol)
    +with localreg.regularize() as r:
    +    z_t, logp_diff_t = odeint(func, (x, logp_diff_t1), t, atol=args.tol, rtol=args.tol)
     ...
     loss = -logp_x.mean(0)
    -loss.backward()
    +auto.backward(loss, r.reg, func.parameters())   # instead of loss.backward()
     optimizer.step()
    +auto.update(r.stats)

(with ``--adjoint``, the same with ``odeint_adjoint``). ``AutoWeight`` sets the weight of
``r.reg`` at every step from the two gradients: the regularization's pull is a share of the
task's (the negative log-likelihood, the ``logp`` terms included), projected so that it never
works against the task; there is no number to choose. ``--target_nfe N`` puts
``NFEBudget(target_nfe=N, rate=--budget_rate, min_weight=--budget_min_weight)`` in its place (the
script calls either ``control``), for a budget of N evaluations per training solve.
``--reg_weight W`` uses a constant weight instead, with the plain
``(loss + W * r.reg).backward()``; ``--reg none`` runs the same block with ``strategy="none"`` (the
plain CNF). The log's NFE columns are the block's ``r.nfe_forward``, ``r.nfe_reg`` and
``r.nfe_backward``. After training the held-out negative log-likelihood and the NFE of its solve
(plain under ``torch.no_grad()``, counted by the dynamics, ``CNF.nfe``) are the test metric and the
test NFE.

    python examples/cnf.py --viz                   # regularized, weight set by AutoWeight
    python examples/cnf.py --reg none --viz        # the plain CNF, same settings
    python examples/cnf.py --target_nfe N          # weight set by NFEBudget for N evaluations per solve
    python examples/cnf.py --smoke                 # a few seconds

Outputs, relative to the working directory, in ``--results_dir`` (default ``runs/cnf``):
``log.csv`` (per iteration: negative log-likelihood, reg, weight, forward/regularization/backward
NFE, time) and with ``--viz`` ``cnf.png`` (data, learned density, samples) and ``nfe.png``.
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


DATASETS = ("moons", "circles")
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--adjoint", type=str2bool, nargs="?", const=True, default=False)
parser.add_argument("--viz", "--visualize", dest="viz", type=str2bool, nargs="?", const=True, default=False)
parser.add_argument("--niters", type=int, default=300, help="upstream: 1000")
parser.add_argument("--lr", type=float, default=1e-2)
parser.add_argument("--num_samples", type=int, default=256, help="batch size")
parser.add_argument("--hidden_dim", type=int, default=64)
parser.add_argument("--data", type=str, choices=DATASETS, default="moons")
parser.add_argument("--method", type=str, default="dopri5")
parser.add_argument("--tol", type=float, default=1e-5, help="rtol and atol")
parser.add_argument("--results_dir", type=str, default=os.path.join("runs", "cnf"))
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
        self.nfe = 0

    def forward(self, t, state):
        self.nfe += 1
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
    func.nfe = 0
    z, logp_diff = odeint(func, (x, torch.zeros(x.shape[0], 1).to(x)), t, rtol=args.tol, atol=args.tol,
                          method=args.method)
    return base_log_prob(z[-1]) - logp_diff[-1, :, 0], func.nfe


@torch.no_grad()
def sample(func, n, args, like):
    z0 = torch.randn(n, 2).to(like)
    t = torch.tensor([0.0, T1]).to(like)
    z, _ = odeint(func, (z0, torch.zeros(n, 1).to(like)), t, rtol=args.tol, atol=args.tol, method=args.method)
    return z[-1]


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


def visualize(path, func, data, args, lim=2.5):
    plt = pyplot()
    n_grid, n_samples = (30, 500) if args.smoke else (80, 2000)
    grid = torch.linspace(-lim, lim, n_grid)
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([gx, gy], dim=-1).reshape(-1, 2).to(data)
    logp, _ = log_likelihood(func, points, args)
    samples = sample(func, n_samples, args, data).cpu()
    fig, (ax_data, ax_density, ax_samples) = plt.subplots(1, 3, figsize=(12, 4))
    ax_data.scatter(data[:, 0].cpu(), data[:, 1].cpu(), s=2, color="#1f77b4")
    ax_data.set_title("held-out data")
    mesh = ax_density.pcolormesh(gx.numpy(), gy.numpy(), logp.exp().reshape(n_grid, n_grid).cpu().numpy(),
                                 shading="auto")
    fig.colorbar(mesh, ax=ax_density, fraction=0.046, pad=0.04, label="density")
    ax_density.set_title("learned density")
    ax_samples.scatter(samples[:, 0], samples[:, 1], s=2, color="#d62728")
    ax_samples.set_title("samples of the learned flow")
    for ax in (ax_data, ax_density, ax_samples):
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="x1", ylabel="x2")
    fig.suptitle(f"CNF on {args.data}: data, learned density and samples (--reg {args.reg})")
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
        args.niters, args.num_samples, args.hidden_dim, args.tol = 4, 64, 16, 1e-3
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)  # the model is tiny: one thread is fastest
    torch.manual_seed(args.seed)
    device = torch.device('cuda:' + str(args.gpu) if torch.cuda.is_available() else 'cpu')
    solve = odeint_adjoint if args.adjoint else odeint
    data_gen = torch.Generator().manual_seed(args.seed)
    test_x = sample_data(args.data, 512 if args.smoke else 2048, data_gen).to(device)
    sampler = torch.Generator().manual_seed(args.seed + 1)
    # The weight of reg: AutoWeight by default, NFEBudget with --target_nfe, a constant with --reg_weight,
    # none with --reg none.
    control = None
    if args.reg != "none" and args.reg_weight is None:
        control = localreg.AutoWeight() if args.target_nfe is None else \
            localreg.NFEBudget(target_nfe=args.target_nfe, rate=args.budget_rate, min_weight=args.budget_min_weight)
    os.makedirs(args.results_dir, exist_ok=True)
    print(f"settings: {vars(args)}")

    func = CNF(args.hidden_dim).to(device)
    optimizer = torch.optim.Adam(func.parameters(), lr=args.lr)
    t = torch.tensor([T1, 0.0], device=device)
    rows = []
    steps = range(1, args.niters + 1)
    bar = tqdm(steps, desc=f"cnf --reg {args.reg}", disable=True if args.smoke else None) if tqdm else steps
    for itr in bar:
        start = time.perf_counter()
        optimizer.zero_grad()
        x = sample_data(args.data, args.num_samples, data_gen).to(device)
        logp_diff_t1 = torch.zeros(args.num_samples, 1, device=device)
        with localreg.regularize(strategy=args.reg, stiffness_weight=args.stiffness_weight, generator=sampler) as r:
            z_t, logp_diff_t = solve(func, (x, logp_diff_t1), t, rtol=args.tol, atol=args.tol, method=args.method)
        logp_x = base_log_prob(z_t[-1]) - logp_diff_t[-1, :, 0]
        nll = -logp_x.mean(0)
        if control is not None:  # nll + weight * r.reg, without the part of reg's gradient that opposes the nll's
            control.backward(nll, r.reg, func.parameters())
            weight = control.weight  # the weight this step used (AutoWeight sets it in backward)
        else:
            weight = 0.0 if args.reg == "none" else args.reg_weight
            (nll + weight * r.reg).backward()
        optimizer.step()
        if control is not None:
            control.update(r.stats)
        rows.append({"itr": itr, "loss": nll.item(), "reg": r.reg.item(), "weight": weight,
                     "nfe_forward": r.nfe_forward, "nfe_reg": r.nfe_reg,
                     "nfe_backward": r.nfe_backward, "time": time.perf_counter() - start})
        if tqdm and not args.smoke:
            bar.set_postfix(nll=f"{nll.item():.3f}", nfe=r.nfe_forward, weight=f"{weight:.3g}")

    write_csv(os.path.join(args.results_dir, "log.csv"), rows)
    test_logp, test_nfe = log_likelihood(func, test_x, args)
    test_nll = -test_logp.mean().item()
    figures = []
    if args.viz:
        figures.append(visualize(os.path.join(args.results_dir, "cnf.png"), func, test_x, args))
        figures.append(plot_nfe(os.path.join(args.results_dir, "nfe.png"), rows,
                                f"cnf: NFE over training (--reg {args.reg})"))
    last = rows[-max(1, len(rows) // 10):]
    summary = {"metric_name": "test_nll", "test_metric": test_nll, "higher_is_better": False, "test_nfe": test_nfe,
               "final_train_nfe": sum(r["nfe_forward"] for r in last) / len(last),
               "training_time_s": sum(r["time"] for r in rows), "wall_time_s": time.perf_counter() - wall_start,
               "cpu_time_s": time.process_time() - cpu_start,
               "weight_control": "none" if args.reg == "none" else (type(control).__name__ if control else "constant"),
               "final_weight": rows[-1]["weight"]}
    if isinstance(control, localreg.NFEBudget):
        summary["target_nfe"] = control.target_nfe
    print(f"final: held-out NLL {test_nll:.4f}, test NFE {test_nfe}, training-solve NFE "
          f"{summary['final_train_nfe']:.1f} (last 10%), weight {summary['final_weight']:.3g}, "
          f"training {summary['training_time_s']:.1f} s, wall {summary['wall_time_s']:.1f} s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return {"rows": rows, "test_nll": test_nll, "test_nfe": test_nfe, "figures": figures, "args": args,
            "summary": summary, "control": control}


if __name__ == "__main__":
    main()
