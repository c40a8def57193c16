"""Spiral ODE demo with local regularization (torchdiffeq's ``examples/ode_demo.py``, regularized).

A small network learns the vector field of the cubic spiral dy/dt = (y**3) @ A from short random
windows of one observed trajectory, exactly as in torchdiffeq's demo (same flags). The change from
the plain version is three lines:

    -from torchdiffeq import odeint
    +from torchdiffeq_localreg import odeint_reg as odeint
    ...
    -pred_y = odeint(func, batch_y0, batch_t, method=args.method)
    -loss = torch.mean(torch.abs(pred_y - batch_y))
    +pred_y, reg, stats = odeint(func, batch_y0, batch_t, method=args.method, strategy=args.reg, ...)
    +loss = torch.mean(torch.abs(pred_y - batch_y)) + args.reg_weight * reg

(with ``--adjoint``, ``odeint_adjoint`` becomes ``odeint_adjoint_reg``). ``--reg none`` runs the
same call with ``strategy="none"``: the plain solve, ``reg = 0``. Every ``--test_freq`` iterations
the whole trajectory is predicted with a plain solve and its loss and NFE are logged.

    python examples/ode_demo.py --viz                  # about 35 s of CPU time (1 thread)
    python examples/ode_demo.py --reg none --viz       # the baseline: about 80 s, its test solves are long
    python examples/ode_demo.py --smoke                # a few seconds

Outputs in ``--out_dir`` (default ``runs/ode_demo``): ``log.csv`` (per iteration: task loss, reg,
forward/regularization/backward NFE, wall time), ``test.csv`` (per test: trajectory loss and NFE)
and with ``--viz`` ``spiral.png`` (fit, phase portrait, learned field) and ``nfe.png``.
"""
import argparse
import os

import torch
import torch.nn as nn

from _common import (CSVLog, Timer, add_reg_args, plot_nfe, progress, pyplot, save_figure, set_threads,
                     training_summary)
from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg

METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "rk4", "midpoint", "euler")
LOG_FIELDS = ("itr", "loss", "reg", "nfe_forward", "nfe_reg", "nfe_backward", "time")

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--method", type=str, choices=METHODS, default="dopri5")
parser.add_argument("--data_size", type=int, default=1000)
parser.add_argument("--batch_time", type=int, default=10)
parser.add_argument("--batch_size", type=int, default=20)
parser.add_argument("--niters", type=int, default=1000)
parser.add_argument("--test_freq", type=int, default=20)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--rtol", type=float, default=1e-7, help="torchdiffeq's default")
parser.add_argument("--atol", type=float, default=1e-9, help="torchdiffeq's default")
parser.add_argument("--viz", action="store_true")
parser.add_argument("--adjoint", action="store_true")
parser.add_argument("--out_dir", type=str, default=os.path.join("runs", "ode_demo"))
parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
add_reg_args(parser, reg_weight=0.1)

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


def visualize(path, t, true_y, pred_y, func):
    plt = pyplot()
    fig, (ax_traj, ax_phase, ax_field) = plt.subplots(1, 3, figsize=(12, 4))
    ts, true_y, pred_y = t.cpu(), true_y.cpu()[:, 0], pred_y.cpu()[:, 0]
    ax_traj.plot(ts, true_y[:, 0], "g-", ts, true_y[:, 1], "b-")
    ax_traj.plot(ts, pred_y[:, 0], "g--", ts, pred_y[:, 1], "b--")
    ax_traj.set(title="Trajectories", xlabel="t", ylabel="x, y")
    ax_phase.plot(true_y[:, 0], true_y[:, 1], "g-", label="true")
    ax_phase.plot(pred_y[:, 0], pred_y[:, 1], "b--", label="learned")
    ax_phase.set(title="Phase portrait", xlabel="x", ylabel="y", xlim=(-2, 2), ylim=(-2, 2))
    ax_phase.legend(loc="upper right")
    grid = torch.linspace(-2, 2, 21)
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([gx, gy], dim=-1).reshape(-1, 2)
    param = next(func.parameters())
    with torch.no_grad():
        field = func(None, points.to(param)).cpu()
    field = field / field.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    ax_field.streamplot(gx.numpy(), gy.numpy(), field[:, 0].reshape(gx.shape).numpy(),
                        field[:, 1].reshape(gx.shape).numpy(), color="black")
    ax_field.set(title="Learned vector field", xlabel="x", ylabel="y", xlim=(-2, 2), ylim=(-2, 2))
    return save_figure(fig, path)


def main(argv=None):
    args = parser.parse_args(argv)
    if args.smoke:
        args.data_size, args.batch_size, args.niters, args.test_freq = 200, 8, 4, 2
    set_threads(1)  # the models are tiny: one thread is fastest, and spares a shared 2-core machine
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    odeint = odeint_adjoint_reg if args.adjoint else odeint_reg
    t, true_y0, true_y = make_data(args, device)
    batches = torch.Generator().manual_seed(args.seed)
    sampler = torch.Generator().manual_seed(args.seed + 1)

    os.makedirs(args.out_dir, exist_ok=True)
    log = CSVLog(args.log or os.path.join(args.out_dir, "log.csv"), LOG_FIELDS)
    test_log = CSVLog(os.path.join(os.path.dirname(log.path), "test.csv"), ("itr", "test_loss", "test_nfe"))
    print(f"settings: {vars(args)}")

    func = ODEFunc().to(device)
    optimizer = torch.optim.RMSprop(func.parameters(), lr=args.lr)
    for itr in progress(range(1, args.niters + 1), total=args.niters, desc="ode_demo"):
        with Timer() as timer:
            optimizer.zero_grad()
            batch_y0, batch_t, batch_y = get_batch(args, t, true_y, batches)
            pred_y, reg, stats = odeint(func, batch_y0, batch_t, rtol=args.rtol, atol=args.atol,
                                        method=args.method, strategy=args.reg,
                                        stiffness_weight=args.stiffness_weight, generator=sampler,
                                        return_stats=True)
            loss = torch.mean(torch.abs(pred_y - batch_y))
            (loss + args.reg_weight * reg).backward()
            optimizer.step()
        log.write(itr=itr, loss=loss.item(), reg=reg.item(), nfe_forward=stats.nfe_forward,
                  nfe_reg=stats.nfe_reg, nfe_backward=stats.nfe_backward, time=timer.seconds)

        if itr % args.test_freq == 0 or itr == args.niters:
            with torch.no_grad():
                test_y, _, test_stats = odeint_reg(func, true_y0, t, rtol=args.rtol, atol=args.atol,
                                                   method=args.method, strategy="none", return_stats=True)
                test_loss = torch.mean(torch.abs(test_y - true_y)).item()
            test_log.write(itr=itr, test_loss=test_loss, test_nfe=test_stats.nfe_forward)

    figures = []
    if args.viz:
        figures.append(visualize(os.path.join(args.out_dir, "spiral.png"), t, true_y, test_y, func))
        figures.append(plot_nfe(log.rows, os.path.join(args.out_dir, "nfe.png"),
                                title=f"ode_demo: NFE over training (--reg {args.reg})"))
    final = test_log.rows[-1]
    print(f"final: test loss {final['test_loss']:.4f}, test NFE {final['test_nfe']}, "
          f"{training_summary(log.rows)}")
    return {"rows": log.rows, "test": test_log.rows, "figures": figures, "args": args}


if __name__ == "__main__":
    main()
