"""Quickstart: the same neural ODE trained without and with local regularization.

A neural ODE learns a nonlinear map of the plane (only the end state at t = 1 is supervised,
so many vector fields fit the data equally well; some are much cheaper to integrate). It is
trained twice from the same initialisation and data order: once plainly, once with the
solver's local error estimate added to the loss. The change from plain torchdiffeq is:

    -from torchdiffeq import odeint
    +from torchdiffeq_localreg import odeint_reg
    ...
    -pred = odeint(func, x, t)[-1]
    -loss = mse(pred, y)
    +pred, reg = odeint_reg(func, x, t)
    +loss = mse(pred[-1], y) + reg_weight * reg

Afterwards both models predict the test set with plain ``torchdiffeq.odeint``; the table shows
the test loss, the number of function evaluations (NFE) of that prediction solve, and its time.

    python examples/quickstart.py            # about a minute on a 2-core CPU
    python examples/quickstart.py --smoke    # a few seconds
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torchdiffeq

from torchdiffeq_localreg import odeint_reg

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--niters", type=int, default=400)
parser.add_argument("--batch_size", type=int, default=256)
parser.add_argument("--lr", type=float, default=1e-2)
parser.add_argument("--tol", type=float, default=1e-5, help="rtol and atol of the solver")
parser.add_argument("--method", type=str, default="dopri5")
parser.add_argument("--strategy", type=str, default="unbiased", choices=["unbiased", "biased", "global"])
parser.add_argument("--reg_weight", type=float, default=1.0)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--smoke", action="store_true", help="tiny run, for CI")


def target_map(x):
    """The map to learn: a twist whose angle grows with the radius, then a shear."""
    r = x.norm(dim=-1, keepdim=True)
    angle = 1.5 * r
    c, s = torch.cos(angle), torch.sin(angle)
    twisted = torch.cat([c * x[:, :1] - s * x[:, 1:], s * x[:, :1] + c * x[:, 1:]], dim=-1)
    return twisted + 0.3 * torch.sin(2 * twisted.flip(-1))


class ODEFunc(nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2))

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=-1))


class NFE(nn.Module):
    """Counts evaluations of the wrapped field (used for the plain prediction solve)."""

    def __init__(self, func):
        super().__init__()
        self.func, self.count = func, 0

    def forward(self, t, y):
        self.count += 1
        return self.func(t, y)


def train(args, reg_weight, x_train, y_train):
    torch.manual_seed(args.seed)
    func = ODEFunc()
    optimizer = torch.optim.Adam(func.parameters(), lr=args.lr)
    t = torch.tensor([0.0, 1.0])
    order = torch.Generator().manual_seed(args.seed)
    sampler = torch.Generator().manual_seed(args.seed + 1)
    start = time.perf_counter()
    for itr in range(1, args.niters + 1):
        idx = torch.randint(len(x_train), (args.batch_size,), generator=order)
        strategy = args.strategy if reg_weight > 0 else "none"
        pred, reg, stats = odeint_reg(func, x_train[idx], t, rtol=args.tol, atol=args.tol, method=args.method,
                                      strategy=strategy, generator=sampler, return_stats=True)
        loss = nn.functional.mse_loss(pred[-1], y_train[idx])
        optimizer.zero_grad()
        (loss + reg_weight * reg).backward()
        optimizer.step()
        if itr % max(1, args.niters // 5) == 0 or itr == args.niters:
            print(f"  [{'reg' if reg_weight > 0 else 'plain'}] iter {itr:4d}  loss {loss.item():.4f}  "
                  f"reg {reg.item():.4f}  NFE {stats.nfe_forward}", flush=True)
    return func, time.perf_counter() - start


@torch.no_grad()
def evaluate(args, func, x_test, y_test, repeats=5):
    counted = NFE(func)
    t = torch.tensor([0.0, 1.0])
    times = []
    for _ in range(repeats):
        counted.count = 0
        start = time.perf_counter()
        pred = torchdiffeq.odeint(counted, x_test, t, rtol=args.tol, atol=args.tol, method=args.method)[-1]
        times.append(time.perf_counter() - start)
    return nn.functional.mse_loss(pred, y_test).item(), counted.count, sorted(times)[len(times) // 2]


def main(argv=None):
    args = parser.parse_args(argv)
    if args.smoke:
        args.niters, args.batch_size, args.tol = 6, 32, 1e-3
    torch.set_num_threads(min(2, torch.get_num_threads()))
    gen = torch.Generator().manual_seed(1234)
    n_train, n_test = (256, 256) if args.smoke else (4096, 2048)
    x_train = (torch.rand(n_train, 2, generator=gen) * 2 - 1) * math.sqrt(2)
    x_test = (torch.rand(n_test, 2, generator=gen) * 2 - 1) * math.sqrt(2)
    y_train, y_test = target_map(x_train), target_map(x_test)
    print(f"settings: method={args.method} tol={args.tol} niters={args.niters} batch={args.batch_size} "
          f"lr={args.lr} strategy={args.strategy} reg_weight={args.reg_weight} seed={args.seed} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")

    rows = []
    for name, weight in (("plain odeint", 0.0), (f"odeint_reg ({args.strategy}, weight {args.reg_weight:g})",
                                                 args.reg_weight)):
        func, train_time = train(args, weight, x_train, y_train)
        test_loss, nfe, pred_time = evaluate(args, func, x_test, y_test)
        rows.append((name, test_loss, nfe, pred_time, train_time))

    print()
    print(f"| {'model':<32} | test MSE | prediction NFE | prediction time (s) | training time (s) |")
    print(f"|{'-' * 34}|----------|----------------|---------------------|-------------------|")
    for name, test_loss, nfe, pred_time, train_time in rows:
        print(f"| {name:<32} | {test_loss:8.4f} | {nfe:14d} | {pred_time:19.4f} | {train_time:17.1f} |")
    base_nfe, reg_nfe = rows[0][2], rows[1][2]
    print(f"\nNFE ratio (regularized / plain): {reg_nfe / base_nfe:.3f}")
    return rows


if __name__ == "__main__":
    main()
