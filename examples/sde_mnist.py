"""A neural SDE classifier on MNIST (torchsde), with local regularization.

The image is encoded linearly into a 32-dimensional state, which follows an Ito SDE with diagonal
noise (drift: an MLP with one tanh layer; diffusion: a linear layer) from t = 0 to 1; a linear
classifier reads the end state. These are the sizes of the paper's MNIST neural SDE; its other
settings (tolerance 0.14, weight 1000, batch 512, 4000 steps) are scaled for one CPU thread below.
The change from the plain torchsde script (the model code keeps torchsde's ``sdeint`` call,
one-import mode):

    -from torchsde import sdeint, sdeint_adjoint
    +from torchdiffeq_localreg import sdeint, sdeint_adjoint
    +import torchdiffeq_localreg as localreg
    +auto = localreg.AutoWeight()
    ...
    -logits = model(x, bm)
    +with localreg.regularize() as r:          # the sdeint inside model(x, bm)
    +    logits = model(x, bm)
     loss = criterion(logits, y)
    -loss.backward()
    +auto.backward(loss, r.reg, model.parameters())   # instead of loss.backward()
     optimizer.step()
    +auto.update(r.stats)

(with ``--adjoint``, the same with ``sdeint_adjoint``). ``AutoWeight`` sets the weight of
``r.reg`` at every step from the two gradients: the regularization's pull is a share of the
cross-entropy's, projected so that it never works against it; there is no number to choose.
``--target_nfe N`` puts ``NFEBudget(target_nfe=N, rate=--budget_rate,
min_weight=--budget_min_weight)`` in its place (the script calls either ``control``), for a budget
of N drift evaluations per training solve as ``nfe_forward`` of ``r.stats`` counts them (an
adaptive SDE solve's NFE depends on the batch size: a training batch's count is not a test
batch's). ``--reg_weight W`` uses a constant weight instead, with the plain
``(loss + W * r.reg).backward()``; ``--reg none`` runs the same block with ``strategy="none"`` (the
plain neural SDE). The log's NFE columns are the block's
``r.nfe_forward``, ``r.nfe_reg``, ``r.nfe_backward`` and the diffusion's ``nfe_diffusion_forward``
summed over ``r.stats``. Each batch gets a fresh ``torchsde.BrownianInterval``. The test pass runs
the same ``sdeint`` under ``torch.no_grad()``, where the solve is plain (no regularization step, no
extra cost), with one Brownian sample per batch; its mean drift NFE per batch, counted by the SDE
itself (``SDEFunc.nfe``), is the test NFE. The flags ``--adjoint`` (also ``--adjoint True``),
``--viz``/``--visualize`` and ``--gpu N`` take upstream's forms. ``--viz`` draws test digits with
their class probabilities over several Brownian samples, and the NFE over training.

The defaults (adaptive Milstein, tolerance 0.02, first step 1.0: the error estimate, not the first
step, limits the step size) let the solver take as few steps as the dynamics allow. MNIST comes
from torchvision's ``datasets.MNIST``; when ``mnist_data.py`` (beside this file in the repository)
is importable, it builds the files offline if the download fails.

    python examples/sde_mnist.py                    # regularized, weight set by AutoWeight
    python examples/sde_mnist.py --reg none         # the plain neural SDE, same settings
    python examples/sde_mnist.py --target_nfe N     # weight set by NFEBudget for N drift evaluations per solve
    python examples/sde_mnist.py --no-adaptive --dt 0.05 --method euler
    python examples/sde_mnist.py --smoke --viz      # seconds

Outputs, relative to the working directory, in ``--save`` (default ``runs/sde_mnist``): ``log.csv``
(per iteration), ``test.csv`` (per epoch), ``model.pt`` and with ``--viz`` ``probabilities.png``
and ``nfe.png``.
"""
import argparse
import csv
import json
import os
import time

import torch
import torch.nn as nn
import torchsde

import torchdiffeq_localreg as localreg
from torchdiffeq_localreg import sdeint, sdeint_adjoint

try:
    from mnist_data import get_mnist  # optional: builds MNIST offline when the download fails
except ImportError:
    get_mnist = None

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
parser.add_argument("--method", type=str, default="milstein", help="a torchsde method for Ito SDEs with diagonal noise")
parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=True)
parser.add_argument("--dt", type=float, default=1.0, help="step size (the initial one when adaptive)")
parser.add_argument("--tol", type=float, default=0.02, help="rtol and atol of the adaptive steps (paper: 0.14)")
parser.add_argument("--adjoint", type=str2bool, nargs="?", const=True, default=False)
parser.add_argument("--state_dim", type=int, default=32)
parser.add_argument("--hidden", type=int, default=64)
parser.add_argument("--nepochs", type=int, default=2)
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--lr_decay", type=float, default=1e-3, help="inverse decay: lr / (1 + lr_decay * itr)")
parser.add_argument("--batch_size", type=int, default=128)
parser.add_argument("--test_batch_size", type=int, default=1000)
parser.add_argument("--train_subset", type=int, default=20000, help="first N training images (0: all 60k)")
parser.add_argument("--test_subset", type=int, default=0, help="first N test images (0: all 10k)")
parser.add_argument("--data_root", type=str, default="data",
                    help="MNIST folder, relative to the working directory (default data); on first use "
                         "55 MB are written there")
parser.add_argument("--save", type=str, default=os.path.join("runs", "sde_mnist"))
parser.add_argument("--viz", "--visualize", dest="viz", type=str2bool, nargs="?", const=True, default=False,
                    help="save probabilities.png and nfe.png in --save")
parser.add_argument("--gpu", type=int, default=0)
group = parser.add_argument_group("local regularization (torchdiffeq_localreg)")
group.add_argument("--reg", type=str, choices=("none", "unbiased", "biased", "global"), default="unbiased",
                   help="where to regularize: a local strategy, the 2021 global baseline, or none (plain)")
group.add_argument("--target_nfe", type=float, default=None,
                   help="a budget: NFEBudget sets the weight instead of AutoWeight, for this many drift evaluations "
                        "per training solve (stats.nfe_forward; about 0.6 x the final_train_nfe of a --reg none "
                        "run is a good budget) (default: None, AutoWeight)")
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


class SDEFunc(nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, dim, hidden):
        super().__init__()
        self.drift = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        self.diffusion = nn.Linear(dim, dim)
        self.nfe, self.nfe_diffusion = 0, 0  # drift and diffusion evaluations since the last reset

    def f(self, t, y):
        self.nfe += 1
        return self.drift(y)

    def g(self, t, y):
        self.nfe_diffusion += 1
        return self.diffusion(y)


class SDEClassifier(nn.Module):
    """Encoder, SDE solve from t = 0 to 1 (regularized inside a ``localreg.regularize()`` block), classifier."""

    def __init__(self, args):
        super().__init__()
        self.encoder = nn.Linear(28 * 28, args.state_dim)
        self.sde = SDEFunc(args.state_dim, args.hidden)
        self.classifier = nn.Linear(args.state_dim, 10)
        self.register_buffer("ts", torch.tensor([0.0, 1.0]))
        self.args = args

    def forward(self, x, bm):
        args = self.args
        h0 = self.encoder(x.flatten(1))
        if args.adjoint:
            ys = sdeint_adjoint(self.sde, h0, self.ts, bm=bm, method=args.method, dt=args.dt, adaptive=args.adaptive,
                                rtol=args.tol, atol=args.tol, adjoint_params=tuple(self.sde.parameters()))
        else:
            ys = sdeint(self.sde, h0, self.ts, bm=bm, method=args.method, dt=args.dt, adaptive=args.adaptive,
                        rtol=args.tol, atol=args.tol)
        return self.classifier(ys[-1])


def brownian(x, args, seeds):
    """A fresh Brownian motion for a batch, its entropy drawn from the generator ``seeds``."""
    entropy = int(torch.randint(2 ** 31 - 1, (1,), generator=seeds))
    levy = "foster" if args.method == "log_ode" else "space-time"
    return torchsde.BrownianInterval(t0=0.0, t1=1.0, size=(x.shape[0], args.state_dim), dtype=x.dtype,
                                     device=x.device, entropy=entropy, levy_area_approximation=levy)


@torch.no_grad()
def evaluate(model, loader, device, seeds):
    """Test accuracy (one Brownian sample per image) and the mean drift NFE per batch of the plain solve
    (outside any ``regularize()`` block and without gradients: upstream's ``sdeint``)."""
    correct, total, nfe, batches = 0, 0, 0, 0
    for x, y in loader:
        x = x.to(device)
        model.sde.nfe = 0
        logits = model(x, brownian(x, model.args, seeds))
        correct += (logits.argmax(1).cpu() == y).sum().item()
        total += len(y)
        nfe += model.sde.nfe
        batches += 1
    return correct / total, nfe / max(batches, 1)


def mnist_loaders(args):
    """Training and test loaders over torchvision's MNIST (pixels in [0, 1]), on the first N images if asked."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    sets = []
    for train in (True, False):
        if get_mnist is not None:
            dataset = get_mnist(args.data_root, train=train, transform=transforms.ToTensor())
        else:
            dataset = datasets.MNIST(args.data_root, train=train, transform=transforms.ToTensor(), download=True)
        subset = args.train_subset if train else args.test_subset
        sets.append(Subset(dataset, range(min(subset, len(dataset)))) if subset else dataset)
    train_loader = DataLoader(sets[0], batch_size=args.batch_size, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(args.seed))
    test_loader = DataLoader(sets[1], batch_size=args.test_batch_size, shuffle=False)
    return train_loader, test_loader


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
def save_probabilities(model, loader, device, seeds, path, n=8, samples=16):
    """Test digits and their class probabilities: mean over Brownian samples, with the min-max range."""
    plt = pyplot()
    x, y = next(iter(loader))
    x, y = x[:n].to(device), y[:n]
    probs = torch.stack([model(x, brownian(x, model.args, seeds)).softmax(-1).cpu()
                         for _ in range(samples)])
    fig, axes = plt.subplots(2, len(x), figsize=(1.6 * len(x), 3.4), squeeze=False)
    classes = torch.arange(10)
    for i in range(len(x)):
        axes[0, i].imshow(x[i, 0].cpu().numpy(), cmap="gray")
        axes[0, i].set_title(f"label {y[i].item()}", fontsize=9)
        axes[0, i].axis("off")
        mean, low, high = probs[:, i].mean(0), probs[:, i].min(0).values, probs[:, i].max(0).values
        axes[1, i].bar(classes.numpy(), mean.numpy(), yerr=torch.stack([mean - low, high - mean]).numpy(),
                       color="tab:blue", ecolor="gray", capsize=1)
        axes[1, i].set_ylim(0, 1)
        axes[1, i].set_xticks([0, 5, 9])
        axes[1, i].tick_params(labelsize=7)
        axes[1, i].set_xlabel("class", fontsize=8)
    axes[1, 0].set_ylabel("probability", fontsize=8)
    fig.suptitle(f"class probabilities over {samples} Brownian samples (mean, min-max)")
    return save_figure(plt, fig, path)


def plot_nfe(path, rows, test_rows, title):
    """Forward NFE of the training solves and the weight of reg per iteration; test NFE per epoch."""
    plt = pyplot()
    fig, (ax_nfe, ax_weight) = plt.subplots(1, 2, figsize=(10, 3.5))
    per_epoch = len(rows) / max(1, len(test_rows))
    ax_nfe.plot([r["itr"] for r in rows], [r["nfe_forward"] for r in rows], color="#1f77b4", marker="o",
                markevery=max(1, len(rows) // 12), markersize=5, lw=1.0, label="training solve (per batch)")
    ax_nfe.plot([r["epoch"] * per_epoch for r in test_rows], [r["test_nfe"] for r in test_rows], color="#2ca02c",
                marker="D", ls="--", label="test solve (end of epoch, per batch)")
    ax_nfe.set(xlabel="training iteration", ylabel="drift evaluations (NFE)", title="solver cost, training and test")
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
        args.nepochs, args.batch_size, args.test_batch_size = 1, 16, 32
        args.train_subset, args.test_subset, args.dt, args.tol = 64, 32, 0.25, 0.5
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(args.seed)
    device = torch.device('cuda:' + str(args.gpu) if torch.cuda.is_available() else 'cpu')
    os.makedirs(args.save, exist_ok=True)
    train_loader, test_loader = mnist_loaders(args)
    generator = torch.Generator().manual_seed(args.seed)
    train_seeds, test_seeds = torch.Generator().manual_seed(args.seed + 1), torch.Generator()
    model = SDEClassifier(args).to(device)
    # The weight of reg: AutoWeight by default, NFEBudget with --target_nfe, a constant with --reg_weight,
    # none with --reg none.
    control = None
    if args.reg != "none" and args.reg_weight is None:
        control = localreg.AutoWeight() if args.target_nfe is None else \
            localreg.NFEBudget(target_nfe=args.target_nfe, rate=args.budget_rate, min_weight=args.budget_min_weight)
    print(f"settings: {vars(args)}")
    print("paper's settings: Linear 784->32, drift 32->64 (tanh)->32, diffusion Linear 32->32, classifier 32->10, "
          "rtol = atol = 0.14, weight 1000, Adam lr 0.01 with inverse decay, batch 512, 4000 steps")

    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda n: 1.0 / (1.0 + args.lr_decay * n))
    rows, test_rows, itr = [], [], 0
    for epoch in range(1, args.nepochs + 1):
        correct, seen, epoch_start = 0, 0, time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{args.nepochs}", disable=True if args.smoke else None) \
            if tqdm else train_loader
        for x, y in bar:
            itr += 1
            x, y = x.to(device), y.to(device)
            start = time.perf_counter()
            bm = brownian(x, args, train_seeds)
            with localreg.regularize(strategy=args.reg, stiffness_weight=args.stiffness_weight,
                                     generator=generator) as r:
                logits = model(x, bm)
            task_loss = criterion(logits, y)
            optimizer.zero_grad()
            if control is not None:  # task_loss + weight * r.reg, without the part of reg's gradient that opposes it
                control.backward(task_loss, r.reg, model.parameters())
                weight = control.weight  # the weight this step used (AutoWeight sets it in backward)
            else:
                weight = 0.0 if args.reg == "none" else args.reg_weight
                (task_loss + weight * r.reg).backward()
            optimizer.step()
            scheduler.step()
            if control is not None:
                control.update(r.stats)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            rows.append({"itr": itr, "epoch": epoch, "loss": task_loss.item(), "reg": r.reg.item(), "weight": weight,
                         "nfe_forward": r.nfe_forward, "nfe_reg": r.nfe_reg, "nfe_backward": r.nfe_backward,
                         "nfe_diffusion_forward": sum(s.nfe_diffusion_forward for s in r.stats),
                         "time": time.perf_counter() - start})
            if tqdm and not args.smoke:
                bar.set_postfix(loss=f"{task_loss.item():.3f}", nfe=r.nfe_forward, weight=f"{weight:.3g}")
        test_seeds.manual_seed(args.seed + 2)  # the same test Brownian paths every epoch
        test_acc, test_nfe = evaluate(model, test_loader, device, test_seeds)
        test_rows.append({"epoch": epoch, "train_acc": correct / seen, "test_acc": test_acc, "test_nfe": test_nfe,
                          "epoch_time": time.perf_counter() - epoch_start})
        print(f"Epoch {epoch:03d} | Time {test_rows[-1]['epoch_time']:.1f}s | Train Acc {correct / seen:.4f} | "
              f"Test Acc {test_acc:.4f} | Test NFE {test_nfe:.1f} | last batch: loss {task_loss.item():.4f} "
              f"reg {r.reg.item():.4f} weight {weight:.3g} NFE-F {r.nfe_forward} NFE-B {r.nfe_backward}",
              flush=True)
    torch.save({"state_dict": model.state_dict(), "args": vars(args)}, os.path.join(args.save, "model.pt"))

    write_csv(os.path.join(args.save, "log.csv"), rows)
    write_csv(os.path.join(args.save, "test.csv"), test_rows)
    figures = []
    if args.viz:
        figures.append(save_probabilities(model, test_loader, device, test_seeds,
                                          os.path.join(args.save, "probabilities.png")))
        figures.append(plot_nfe(os.path.join(args.save, "nfe.png"), rows, test_rows,
                                f"neural SDE MNIST, --reg {args.reg}"))
    last = rows[-max(1, len(rows) // 10):]
    summary = {"metric_name": "test_accuracy", "test_metric": test_rows[-1]["test_acc"], "higher_is_better": True,
               "test_nfe": test_rows[-1]["test_nfe"],
               "final_train_nfe": sum(r["nfe_forward"] for r in last) / len(last),
               "training_time_s": sum(r["time"] for r in rows), "wall_time_s": time.perf_counter() - wall_start,
               "cpu_time_s": time.process_time() - cpu_start,
               "weight_control": "none" if args.reg == "none" else (type(control).__name__ if control else "constant"),
               "final_weight": rows[-1]["weight"]}
    if isinstance(control, localreg.NFEBudget):
        summary["target_nfe"] = control.target_nfe
    print(f"final: test accuracy {summary['test_metric']:.4f}, test NFE {summary['test_nfe']:.1f}, training-solve "
          f"NFE {summary['final_train_nfe']:.1f} (last 10%), weight {summary['final_weight']:.3g}, "
          f"training {summary['training_time_s']:.1f} s, wall {summary['wall_time_s']:.1f} s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return {"rows": rows, "test": test_rows, "figures": figures, "args": args, "summary": summary, "control": control}


if __name__ == "__main__":
    main()
