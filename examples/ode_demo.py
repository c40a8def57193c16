"""Spiral ODE demo with local regularization (torchdiffeq's ``examples/ode_demo.py``, regularized).

A small network learns the vector field of the cubic spiral dy/dt = (y**3) @ A from short random
windows of one observed trajectory, exactly as in torchdiffeq's demo (same flags, same values:
``--adjoint``, ``--viz``, ``--gpu 0``, ...). The change from the plain version:

    -from torchdiffeq import odeint
    +from torchdiffeq_localreg import odeint_reg, AutoWeight
    +auto = AutoWeight()
    ...
    -pred_y = odeint(func, batch_y0, batch_t, method=args.method)
    +pred_y, reg, stats = odeint_reg(func, batch_y0, batch_t, method=args.method, return_stats=True)
     loss = torch.mean(torch.abs(pred_y - batch_y))
    -loss.backward()
    +auto.backward(loss, reg, func.parameters())   # instead of loss.backward()
     optimizer.step()
    +auto.update(stats)

(with ``--adjoint``, ``odeint_adjoint`` becomes ``odeint_adjoint_reg``). ``AutoWeight`` sets the
weight of ``reg`` at every step from the two gradients: the regularization's pull is a share of
the task's, projected so that it never works against the task; there is no number to choose.
``--target_nfe N`` puts ``NFEBudget(target_nfe=N, rate=--budget_rate,
min_weight=--budget_min_weight)`` in its place (the script calls either ``control``), for a budget
of N evaluations per training solve (a window of ``--batch_time`` observations, as
``stats.nfe_forward`` counts them; the test solve covers the whole trajectory and costs about 40
times more). ``--reg_weight W`` uses a constant weight instead, with the plain
``(loss + W * reg).backward()``; ``--reg none`` runs the same call with ``strategy="none"``: the
plain solve, ``reg = 0``. Every ``--test_freq`` iterations the whole trajectory is predicted with a
plain solve; its loss and NFE (``stats.nfe_forward``) are the test loss and test NFE.

    python examples/ode_demo.py --viz                 # regularized, weight set by AutoWeight
    python examples/ode_demo.py --reg none --viz      # the plain demo, same settings
    python examples/ode_demo.py --target_nfe N        # weight set by NFEBudget for N evaluations per window
    python examples/ode_demo.py --smoke               # a few seconds

Outputs, relative to the working directory, in ``--out_dir`` (default ``runs/ode_demo``):
``log.csv`` (per iteration: task loss, reg, weight, forward/regularization/backward NFE, time),
``test.csv`` (per test: trajectory loss and NFE) and with ``--viz`` ``spiral.png`` (fit, phase
portrait, learned field) and ``nfe.png`` (NFE over training).
"""
import argparse
import csv
import json
import os
import time

import torch
import torch.nn as nn

from torchdiffeq_localreg import AutoWeight, NFEBudget, odeint_adjoint_reg, odeint_reg

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
parser.add_argument("--method", type=str, default="dopri5",
                    help="a torchdiffeq method (adams is not supported by torchdiffeq_localreg)")
parser.add_argument("--data_size", type=int, default=1000)
parser.add_argument("--batch_time", type=int, default=10)
parser.add_argument("--batch_size", type=int, default=20)
parser.add_argument("--niters", type=int, default=1000, help="upstream: 2000")
parser.add_argument("--test_freq", type=int, default=20)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--rtol", type=float, default=1e-7, help="torchdiffeq's default")
parser.add_argument("--atol", type=float, default=1e-9, help="torchdiffeq's default")
parser.add_argument("--viz", "--visualize", dest="viz", type=str2bool, nargs="?", const=True, default=False)
parser.add_argument("--gpu", type=int, default=0)
parser.add_argument("--adjoint", type=str2bool, nargs="?", const=True, default=False)
parser.add_argument("--out_dir", type=str, default=os.path.join("runs", "ode_demo"))
group = parser.add_argument_group("local regularization (torchdiffeq_localreg)")
group.add_argument("--reg", type=str, choices=("none", "unbiased", "biased", "global"), default="unbiased",
                   help="where to regularize: a local strategy, the 2021 global baseline, or none (plain)")
group.add_argument("--target_nfe", type=float, default=None,
                   help="a budget: NFEBudget sets the weight instead of AutoWeight, for this many evaluations per "
                        "training solve (stats.nfe_forward; about 0.6 x the final_train_nfe of a --reg none run "
                        "is a good budget) (default: None, AutoWeight)")
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

TRUE_A = [[-0.1, 2.0], [-2.0, -0.1]]


class Spiral(nn.Module):
    """The true dynamics, dy/dt = (y**3) @ A."""

    def __init__(self, A):
        super().__init__()
        self.register_buffer("A", A)

    def forward(self, t, y):
        return (y ** 3) @ self.A


class ODEFunc(nn.Module):
    """The learned field: an MLP on y**3, as in upstream's demo."""

    def __init__(self, hidden=50):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.1)
                nn.init.zeros_(m.bias)

    def forward(self, t, y):
        return self.net(y ** 3)


def make_data(args, device):
    t = torch.linspace(0.0, 25.0, args.data_size, device=device)
    true_y0 = torch.tensor([[2.0, 0.0]], device=device)
    with torch.no_grad():
        true_y, _ = odeint_reg(Spiral(torch.tensor(TRUE_A, device=device)), true_y0, t, method="dopri5",
                               strategy="none")
    return t, true_y0, true_y


def get_batch(args, t, true_y, generator):
    """``batch_size`` windows of ``batch_time`` consecutive observations, from random starts."""
    starts = torch.randint(args.data_size - args.batch_time, (args.batch_size,), generator=generator)
    idx = (starts[None, :] + torch.arange(args.batch_time)[:, None]).to(true_y.device)
    return true_y[idx[0]], t[:args.batch_time], true_y[idx]  # (M, 1, D), (T,), (T, M, 1, D)


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


def visualize(path, t, true_y, pred_y, func, reg):
    plt = pyplot()
    fig, (ax_traj, ax_phase, ax_field) = plt.subplots(1, 3, figsize=(13, 4.2))
    ts, true_y, pred_y = t.cpu(), true_y.cpu()[:, 0], pred_y.cpu()[:, 0]
    # x in blue, y in orange; the true curve solid, the learned one dashed
    ax_traj.plot(ts, true_y[:, 0], color="#1f77b4", ls="-", label="x, true")
    ax_traj.plot(ts, pred_y[:, 0], color="#1f77b4", ls="--", label="x, learned")
    ax_traj.plot(ts, true_y[:, 1], color="#ff7f0e", ls="-", label="y, true")
    ax_traj.plot(ts, pred_y[:, 1], color="#ff7f0e", ls="--", label="y, learned")
    ax_traj.set(title="Trajectories", xlabel="time t", ylabel="state (x or y)")
    ax_traj.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    ax_phase.plot(true_y[:, 0], true_y[:, 1], color="#2ca02c", ls="-", label="true")
    ax_phase.plot(pred_y[:, 0], pred_y[:, 1], color="#d62728", ls="--", label="learned")
    ax_phase.set(title="Phase portrait", xlabel="x", ylabel="y", xlim=(-2, 2), ylim=(-2, 2))
    ax_phase.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    grid = torch.linspace(-2, 2, 21)
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([gx, gy], dim=-1).reshape(-1, 2)
    param = next(func.parameters())
    with torch.no_grad():
        field = func(None, points.to(param)).cpu()
    field = field / field.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ax_field.streamplot(gx.numpy(), gy.numpy(), field[:, 0].reshape(gx.shape).numpy(),
                        field[:, 1].reshape(gx.shape).numpy(), color="black")
    ax_field.set(title="Learned vector field (direction)", xlabel="x", ylabel="y", xlim=(-2, 2), ylim=(-2, 2))
    fig.suptitle(f"ode_demo: the true spiral and the learned model on the whole trajectory (--reg {reg})")
    return save_figure(plt, fig, path)


def save_figure(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")   # "tight": keeps legends placed outside the axes
    plt.close(fig)
    return path


def plot_nfe(path, rows, test_rows, title):
    """Forward NFE of the training solves and of the test solves, and the weight of reg, over training."""
    plt = pyplot()
    fig, (ax_train, ax_test, ax_weight) = plt.subplots(1, 3, figsize=(14, 3.6))
    ax_train.plot([r["itr"] for r in rows], [r["nfe_forward"] for r in rows], color="#1f77b4", lw=1.0)
    ax_train.set(xlabel="training iteration", ylabel="function evaluations (NFE)",
                 title="training solve (a window of --batch_time)")
    ax_test.plot([r["itr"] for r in test_rows], [r["test_nfe"] for r in test_rows], color="#2ca02c", marker="D",
                 markersize=4)
    ax_test.set(xlabel="training iteration", ylabel="function evaluations (NFE)", title="test solve (whole trajectory)")
    for ax in (ax_train, ax_test):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
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
        args.data_size, args.batch_size, args.niters, args.test_freq = 200, 8, 4, 2
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)  # the model is tiny: one thread is fastest
    torch.manual_seed(args.seed)
    device = torch.device('cuda:' + str(args.gpu) if torch.cuda.is_available() else 'cpu')
    odeint = odeint_adjoint_reg if args.adjoint else odeint_reg
    t, true_y0, true_y = make_data(args, device)
    batches = torch.Generator().manual_seed(args.seed)
    sampler = torch.Generator().manual_seed(args.seed + 1)
    # The weight of reg: AutoWeight by default, NFEBudget with --target_nfe, a constant with --reg_weight,
    # none with --reg none.
    control = None
    if args.reg != "none" and args.reg_weight is None:
        control = AutoWeight() if args.target_nfe is None else \
            NFEBudget(target_nfe=args.target_nfe, rate=args.budget_rate, min_weight=args.budget_min_weight)
    os.makedirs(args.out_dir, exist_ok=True)
    print(f"settings: {vars(args)}")

    func = ODEFunc().to(device)
    optimizer = torch.optim.RMSprop(func.parameters(), lr=args.lr)
    rows, test_rows = [], []
    steps = range(1, args.niters + 1)
    bar = tqdm(steps, desc=f"ode_demo --reg {args.reg}", disable=True if args.smoke else None) if tqdm else steps
    for itr in bar:
        start = time.perf_counter()
        optimizer.zero_grad()
        batch_y0, batch_t, batch_y = get_batch(args, t, true_y, batches)
        pred_y, reg, stats = odeint(func, batch_y0, batch_t, rtol=args.rtol, atol=args.atol, method=args.method,
                                    strategy=args.reg, stiffness_weight=args.stiffness_weight, generator=sampler,
                                    return_stats=True)
        loss = torch.mean(torch.abs(pred_y - batch_y))
        if control is not None:  # loss + weight * reg, without the part of reg's gradient that opposes loss's
            control.backward(loss, reg, func.parameters())
            weight = control.weight  # the weight this step used (AutoWeight sets it in backward)
        else:
            weight = 0.0 if args.reg == "none" else args.reg_weight
            (loss + weight * reg).backward()
        optimizer.step()
        if control is not None:
            control.update(stats)
        rows.append({"itr": itr, "loss": loss.item(), "reg": reg.item(), "weight": weight,
                     "nfe_forward": stats.nfe_forward, "nfe_reg": stats.nfe_reg,
                     "nfe_backward": stats.nfe_backward, "time": time.perf_counter() - start})

        if itr % args.test_freq == 0 or itr == args.niters:
            with torch.no_grad():
                test_y, _, test_stats = odeint_reg(func, true_y0, t, rtol=args.rtol, atol=args.atol,
                                                   method=args.method, strategy="none", return_stats=True)
                test_loss = torch.mean(torch.abs(test_y - true_y)).item()
            test_rows.append({"itr": itr, "test_loss": test_loss, "test_nfe": test_stats.nfe_forward})
            if tqdm and not args.smoke:
                bar.set_postfix(test_loss=f"{test_loss:.3f}", test_nfe=test_stats.nfe_forward,
                                nfe=stats.nfe_forward, weight=f"{weight:.3g}")

    write_csv(os.path.join(args.out_dir, "log.csv"), rows)
    write_csv(os.path.join(args.out_dir, "test.csv"), test_rows)
    figures = []
    if args.viz:
        figures.append(visualize(os.path.join(args.out_dir, "spiral.png"), t, true_y, test_y, func, args.reg))
        figures.append(plot_nfe(os.path.join(args.out_dir, "nfe.png"), rows, test_rows,
                                f"ode_demo: NFE over training (--reg {args.reg})"))
    last = rows[-max(1, len(rows) // 10):]
    summary = {"metric_name": "test_loss", "test_metric": test_rows[-1]["test_loss"], "higher_is_better": False,
               "test_nfe": test_rows[-1]["test_nfe"],
               "final_train_nfe": sum(r["nfe_forward"] for r in last) / len(last),
               "training_time_s": sum(r["time"] for r in rows), "wall_time_s": time.perf_counter() - wall_start,
               "cpu_time_s": time.process_time() - cpu_start,
               "weight_control": "none" if args.reg == "none" else (type(control).__name__ if control else "constant"),
               "final_weight": rows[-1]["weight"]}
    if isinstance(control, NFEBudget):
        summary["target_nfe"] = control.target_nfe
    print(f"final: test loss {summary['test_metric']:.4f}, test NFE {summary['test_nfe']}, training-solve NFE "
          f"{summary['final_train_nfe']:.1f} (last 10%), weight {summary['final_weight']:.3g}, "
          f"training {summary['training_time_s']:.1f} s, wall {summary['wall_time_s']:.1f} s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return {"rows": rows, "test": test_rows, "figures": figures, "args": args, "summary": summary, "control": control}


if __name__ == "__main__":
    main()
