"""Quickstart: a neural ODE classifier trained without and with local regularization.

The task is the classic one where neural ODEs get slow: classify points of the plane as inside a
disk or on a ring around it. The ODE flows an augmented state (the point plus zeros, as in
augmented neural ODEs) for t in [0, 1]; a linear layer reads the class off the end state. Many
flows separate the classes equally well, and plain training drifts to ones that are expensive to
integrate: the solver's number of function evaluations (NFE) grows as it trains. Local
regularization adds the solver's own error estimate at one sampled step to the loss, with a
weight that :class:`~torchdiffeq_localreg.AutoWeight` sets at every step from the two gradients:
the regularization's pull is a share of the task's, projected so that it never works against the
task; there is no number to choose. The change from plain torchdiffeq is:

    -from torchdiffeq import odeint
    +from torchdiffeq_localreg import odeint_reg, AutoWeight
    +auto = AutoWeight()
    ...
    -y = odeint(func, y0, t)
    +y, reg, stats = odeint_reg(func, y0, t, return_stats=True)
     loss = task_loss(y)
    -loss.backward()
    +auto.backward(loss, reg, model.parameters())   # instead of loss.backward()
     optimizer.step()
    +auto.update(stats)

Both models train from the same initialisation on the same batches; the plain one first.
``--target_nfe N`` trains the second with ``NFEBudget(target_nfe=N)`` instead, for a budget of N
evaluations per training solve. Afterwards both models predict the test set with plain
``torchdiffeq.odeint``; the table shows test accuracy, prediction NFE, prediction time and
training time.

    python examples/quickstart.py                 # about a minute on an idle 2-core CPU
    python examples/quickstart.py --viz           # also saves runs/quickstart/quickstart_nfe.png
    python examples/quickstart.py --json out.json # also writes the table as JSON
    python examples/quickstart.py --smoke         # a few seconds
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torchdiffeq

from torchdiffeq_localreg import AutoWeight, NFEBudget, odeint_reg

try:
    from tqdm import tqdm
except ImportError:  # the progress bar is optional
    tqdm = None

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--niters", type=int, default=600)
parser.add_argument("--batch_size", type=int, default=256)
parser.add_argument("--lr", type=float, default=1e-2)
parser.add_argument("--tol", type=float, default=1e-5, help="rtol and atol of every solve")
parser.add_argument("--method", type=str, default="dopri5")
parser.add_argument("--augment", type=int, default=2, help="zero dimensions appended to each point")
parser.add_argument("--strategy", type=str, default="unbiased", choices=["unbiased", "biased"])
parser.add_argument("--target_nfe", type=float, default=None,
                    help="a budget: NFEBudget sets the weight instead of AutoWeight, for this many evaluations per "
                         "training solve (default: None, AutoWeight)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--viz", action="store_true", help="save quickstart_nfe.png (NFE over training) in --out_dir")
parser.add_argument("--out_dir", type=str, default=os.path.join("runs", "quickstart"),
                    help="folder of the --viz figure, relative to the working directory (default runs/quickstart)")
parser.add_argument("--json", type=str, default=None, metavar="PATH", help="write the results as JSON")
parser.add_argument("--smoke", action="store_true", help="tiny run, for CI")


def make_data(n, generator):
    """Points of the disk |x| < 1 (label 1) and of the ring 1.5 < |x| < 2.5 (label 0), half each."""
    inner = n // 2
    radius = torch.cat([torch.rand(inner, generator=generator),
                        1.5 + torch.rand(n - inner, generator=generator)])
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    y = (radius < 1).float()
    return x, y


class ODEFunc(nn.Module):
    def __init__(self, dim, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, dim))

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=-1))


class Classifier(nn.Module):
    def __init__(self, augment):
        super().__init__()
        self.augment = augment
        self.func = ODEFunc(2 + augment)
        self.readout = nn.Linear(2 + augment, 1)

    def initial(self, x):
        return torch.cat([x, x.new_zeros(x.shape[0], self.augment)], dim=1)


class NFE(nn.Module):
    """Counts evaluations of the wrapped field (for the plain prediction solve)."""

    def __init__(self, func):
        super().__init__()
        self.func, self.count = func, 0

    def forward(self, t, y):
        self.count += 1
        return self.func(t, y)


def train(args, control, x_train, y_train):
    """Trains one model; ``control`` None is the plain run. Returns the model, time and NFE curve."""
    torch.manual_seed(args.seed)
    model = Classifier(args.augment)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    t = torch.tensor([0.0, 1.0])
    order = torch.Generator().manual_seed(args.seed)
    sampler = torch.Generator().manual_seed(args.seed + 1)
    name = "plain" if control is None else "regularized"
    steps = range(1, args.niters + 1)
    # disable=None: tqdm's convention, no bar when stderr is not a terminal (a log file, CI)
    bar = tqdm(steps, desc=name, leave=False, disable=True if args.smoke else None) if tqdm else steps
    curve, train_time = [], 0.0
    for _ in bar:
        idx = torch.randint(len(x_train), (args.batch_size,), generator=order)
        start = time.perf_counter()
        y, reg, stats = odeint_reg(model.func, model.initial(x_train[idx]), t, rtol=args.tol, atol=args.tol,
                                   method=args.method, strategy="none" if control is None else args.strategy,
                                   generator=sampler, return_stats=True)
        loss = nn.functional.binary_cross_entropy_with_logits(model.readout(y[-1]).squeeze(1), y_train[idx])
        optimizer.zero_grad()
        if control is None:
            loss.backward()
        else:
            control.backward(loss, reg, model.parameters())
        optimizer.step()
        if control is not None:
            control.update(stats)
        train_time += time.perf_counter() - start
        curve.append(stats.nfe_forward)
        if tqdm and not args.smoke:
            weight = 0.0 if control is None else control.weight
            bar.set_postfix(loss=f"{loss.item():.3f}", nfe=stats.nfe_forward, weight=f"{weight:.3g}")
    return model, train_time, curve


@torch.no_grad()
def evaluate(args, model, x_test, y_test, repeats=5):
    """Test accuracy, NFE and median wall time of the prediction with plain ``torchdiffeq.odeint``."""
    counted = NFE(model.func)
    t = torch.tensor([0.0, 1.0])
    times = []
    for _ in range(repeats):
        counted.count = 0
        start = time.perf_counter()
        y = torchdiffeq.odeint(counted, model.initial(x_test), t, rtol=args.tol, atol=args.tol, method=args.method)
        logits = model.readout(y[-1]).squeeze(1)
        times.append(time.perf_counter() - start)
    accuracy = ((logits > 0).float() == y_test).float().mean().item()
    return accuracy, counted.count, sorted(times)[len(times) // 2]


def save_nfe_plot(curves, path, label, target=None):
    """The NFE of each training solve, plain and regularized (a running mean over 1/30 of the run), and
    NFEBudget's target when there is one; returns the legend's labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"plain": "plain odeint", "regularized": label}
    styles = {"plain": {"color": "#1f77b4", "marker": "o"}, "regularized": {"color": "#d62728", "marker": "s"}}
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for name, curve in curves.items():
        window = max(1, len(curve) // 30)
        smooth = [sum(curve[max(0, i - window + 1):i + 1]) / len(curve[max(0, i - window + 1):i + 1])
                  for i in range(len(curve))]
        ax.plot(range(1, len(curve) + 1), smooth, label=names[name], markevery=max(1, len(curve) // 12),
                markersize=5, lw=1.5, **styles[name])
    if target is not None:
        ax.axhline(target, color="0.3", ls="--", lw=1, label=f"NFEBudget target ({target:.3g})")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("function evaluations per solve (NFE)")
    ax.set_title("Quickstart: solver cost of each training solve, plain vs regularized")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [text.get_text() for text in legend.get_texts()]


def main(argv=None):
    args = parser.parse_args(argv)
    if args.smoke:
        args.niters, args.batch_size, args.tol = 8, 32, 1e-3
    for name in ("niters", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    gen = torch.Generator().manual_seed(1234)
    n_train, n_test = (128, 128) if args.smoke else (4096, 4096)
    x_train, y_train = make_data(n_train, gen)
    x_test, y_test = make_data(n_test, gen)
    print(f"settings: method={args.method} tol={args.tol} niters={args.niters} batch={args.batch_size} "
          f"lr={args.lr} augment={args.augment} strategy={args.strategy} seed={args.seed} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")

    # The weight control of the regularized run: AutoWeight, or NFEBudget with --target_nfe.
    if args.target_nfe is None:
        control, label = AutoWeight(), "odeint_reg + AutoWeight"
    else:
        control, label = NFEBudget(target_nfe=args.target_nfe), f"odeint_reg + NFEBudget (target {args.target_nfe:g})"
    print(f"regularized: {label}")
    results, curves = {}, {}
    for name in ("plain", "regularized"):
        model, train_time, curves[name] = train(args, control if name == "regularized" else None, x_train, y_train)
        accuracy, nfe, pred_time = evaluate(args, model, x_test, y_test)
        results[name] = {"metric_name": "accuracy", "test_metric": accuracy, "higher_is_better": True,
                         "prediction_nfe": nfe, "prediction_time_s": pred_time, "training_time_s": train_time,
                         "weight_control": "none" if name == "plain" else type(control).__name__}
    results["regularized"]["final_weight"] = control.weight
    if isinstance(control, NFEBudget):
        results["regularized"]["target_nfe"] = control.target_nfe

    print()
    print("| model | test accuracy | prediction NFE | prediction time (s) | training time (s) |")
    print("|---|---|---|---|---|")
    for name, text in (("plain", "plain odeint"), ("regularized", label)):
        r = results[name]
        print(f"| {text} | {r['test_metric']:.4f} | {r['prediction_nfe']} | {r['prediction_time_s']:.4f} | "
              f"{r['training_time_s']:.1f} |")
    ratio = results["regularized"]["prediction_nfe"] / results["plain"]["prediction_nfe"]
    print(f"\nNFE ratio (regularized / plain): {ratio:.3f}")
    if args.viz:
        os.makedirs(args.out_dir, exist_ok=True)
        path = os.path.join(args.out_dir, "quickstart_nfe.png")
        save_nfe_plot(curves, path, label, args.target_nfe)
        print(f"saved {path}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
