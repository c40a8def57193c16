"""ODE-Net on MNIST (as torchdiffeq's ``odenet_mnist`` example), with local regularization.

Convolutional downsampling, an ODE block whose vector field is a small convolutional network with
the time as an extra channel, and a linear classifier. Upstream's flags and values work as they
are (``--adjoint True``, ``--data_aug False``, ``--gpu 0``, ``--tol``, ``--save``). The change from
the plain torchdiffeq script (the model code keeps upstream's ``odeint`` calls, one-import mode):

    -from torchdiffeq import odeint, odeint_adjoint
    +from torchdiffeq_localreg import odeint, odeint_adjoint
    +import torchdiffeq_localreg as localreg
    +auto = localreg.AutoWeight()
    ...
    -logits = model(x)
    +with localreg.regularize() as r:          # every odeint inside model(x)
    +    logits = model(x)
     loss = criterion(logits, y)
    -loss.backward()
    +auto.backward(loss, r.reg, model.parameters())   # instead of loss.backward()
     optimizer.step()
    +auto.update(r.stats)

``AutoWeight`` sets the weight of ``r.reg`` at every step from the two gradients: the
regularization's pull is a share of the cross-entropy's, projected so that it never works against
it; there is no number to choose. ``--target_nfe N`` puts ``NFEBudget(target_nfe=N,
rate=--budget_rate, min_weight=--budget_min_weight)`` in its place (the script calls either
``control``), for a budget of N evaluations per training solve of the ODE block.
``--reg_weight W`` uses a constant weight instead, with the plain
``(loss + W * r.reg).backward()``; ``--reg none`` is the plain ODE-Net. ``--network resnet``
(upstream's ResNet baseline) has no solve: it trains outside any ``regularize()`` block (one that
saw no solve would warn), with ``r.reg = 0`` and no weight control. The test pass runs under
``torch.no_grad()``, where the solves are plain (no regularization step, no extra cost); its mean
NFE per batch, counted by the vector field as upstream does (``ODEfunc.nfe``), is the test NFE,
printed per epoch. The training log's NFE columns are the block's ``r.nfe_forward``, ``r.nfe_reg``
and ``r.nfe_backward``: the regularization step's evaluations are counted apart.

Defaults are scaled down from upstream's (64 channels, SGD with step decay for 160 epochs on 60k
images, tol 1e-3) to 16 channels, Adam at 5e-3, 3 epochs on the first 12k images, so that a run
takes minutes on one CPU thread; the tolerance is tighter (1e-5), because at upstream's 1e-3 the
NFE of so short a run does not grow, at 1e-5 it does (test NFE 56, 62, 68 after epochs 1-3 of
the plain run). MNIST comes from torchvision's ``datasets.MNIST``; when ``mnist_data.py`` (beside
this file in the repository) is importable, it builds the files offline if the download fails.

    python examples/odenet_mnist.py                     # regularized, weight set by AutoWeight
    python examples/odenet_mnist.py --reg none          # the plain ODE-Net, same settings
    python examples/odenet_mnist.py --target_nfe N      # weight set by NFEBudget for N evaluations per solve
    python examples/odenet_mnist.py --smoke --viz       # seconds
    torchrun --standalone --nproc_per_node 2 examples/odenet_mnist.py --ddp    # 2 processes

``--ddp`` trains with ``DistributedDataParallel`` (gloo on CPU, nccl on CUDA, one GPU per process,
``cuda:$LOCAL_RANK``), launched by torchrun as above. Each process reads its own part of the
training set (``DistributedSampler``; ``--batch_size`` is per process), solves its own batch, and
adds its own ``r.reg`` to its own loss; DDP averages the gradients, so the update follows the mean
of the processes' regularization gradients. There the control is ``AutoWeight(combine="sum")``
(``NFEBudget(..., combine="sum")`` with ``--target_nfe``), so ``control.backward`` is the plain
``(loss + control.weight * r.reg).backward()`` with the weight of the previous steps: a projection
would act on each process's own gradient before DDP's averaging, different on every process, and
put them out of step (``backward`` refuses ``combine="project"`` with several processes). Each
process samples with its own generator (seed ``--seed`` + rank). The weight is the same on every
process: each calls ``control.update(r.stats)``, then the control's state of rank 0 is broadcast
(``broadcast_object_list``) and loaded by all, so every process uses the weight that rank 0 set.
Rank 0 evaluates, prints and writes the outputs.

Outputs, relative to the working directory, in ``--save`` (default ``runs/odenet_mnist``):
``log.csv`` (per iteration), ``test.csv`` (per epoch), ``model.pt`` and with ``--viz``
``predictions.png`` and ``nfe.png``.
"""
import argparse
import contextlib
import csv
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn

import torchdiffeq_localreg as localreg
from torchdiffeq_localreg import odeint, odeint_adjoint

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
parser.add_argument("--network", type=str, choices=["resnet", "odenet"], default="odenet")
parser.add_argument("--tol", type=float, default=1e-5, help="rtol and atol (upstream: 1e-3)")
parser.add_argument("--adjoint", type=str2bool, nargs="?", const=True, default=False)
parser.add_argument("--method", type=str, default="dopri5")
parser.add_argument("--downsampling-method", type=str, default="conv", choices=["conv", "res"])
parser.add_argument("--width", type=int, default=16, help="channels (upstream: 64)")
parser.add_argument("--nepochs", type=int, default=3, help="upstream: 160")
parser.add_argument("--data_aug", type=str2bool, nargs="?", const=True, default=False, help="upstream: True")
parser.add_argument("--lr", type=float, default=5e-3, help="Adam's constant learning rate (upstream: SGD, 0.1, step decay)")
parser.add_argument("--batch_size", type=int, default=128)
parser.add_argument("--test_batch_size", type=int, default=1000)
parser.add_argument("--train_subset", type=int, default=12000, help="first N training images (0: all 60k)")
parser.add_argument("--test_subset", type=int, default=0, help="first N test images (0: all 10k)")
parser.add_argument("--data_root", type=str, default="data",
                    help="MNIST folder, relative to the working directory (default data); on first use "
                         "55 MB are written there")
parser.add_argument("--save", type=str, default=os.path.join("runs", "odenet_mnist"))
parser.add_argument("--viz", "--visualize", dest="viz", type=str2bool, nargs="?", const=True, default=False,
                    help="save predictions.png and nfe.png in --save")
parser.add_argument("--gpu", type=int, default=0)
group = parser.add_argument_group("local regularization (torchdiffeq_localreg)")
group.add_argument("--reg", type=str, choices=("none", "unbiased", "biased", "global"), default="unbiased",
                   help="where to regularize: a local strategy, the 2021 global baseline, or none (plain)")
group.add_argument("--target_nfe", type=float, default=None,
                   help="a budget: NFEBudget sets the weight instead of AutoWeight, for this many evaluations per "
                        "training solve of the ODE block (r.nfe_forward; about 0.6 x the final_train_nfe of a "
                        "--reg none run is a good budget) (default: None, AutoWeight)")
group.add_argument("--budget_rate", type=float, default=0.05,
                   help="with --target_nfe only: NFEBudget's rate, the largest change of log(weight) per step "
                        "(default 0.05, the package's: in this 3-epoch run the model still learns while the weight "
                        "climbs, and the examples' faster 0.1 cut the NFE to 0.65x at 10 points of accuracy, 0.05 "
                        "to 0.82x at 2)")
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
parser.add_argument("--ddp", action="store_true",
                    help="DistributedDataParallel over the processes torchrun starts (see the docstring)")


def norm(dim):
    # Upstream's GroupNorm(min(32, dim), dim) has 2 channels per group at its width 64. At our smaller
    # widths that rule gives 1 channel per group, whose output (zero mean over the image) loses most of
    # the signal before the global average pooling, so keep at least 2 channels per group.
    return nn.GroupNorm(min(32, max(1, dim // 2)), dim)


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class ResBlock(nn.Module):
    """Pre-activation residual block (the ``resnet`` network and ``--downsampling-method res``)."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.norm1, self.norm2 = norm(inplanes), norm(planes)
        self.conv1, self.conv2 = conv3x3(inplanes, planes, stride), conv3x3(planes, planes)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.norm1(x))
        shortcut = self.downsample(out) if self.downsample is not None else x
        out = self.conv2(torch.relu(self.norm2(self.conv1(out))))
        return out + shortcut


class ConcatConv2d(nn.Module):
    """A convolution that sees the time t as one more input channel."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.conv = nn.Conv2d(dim_in + 1, dim_out, kernel_size=3, padding=1)

    def forward(self, t, x):
        tt = t.to(x).expand(x.shape[0], 1, *x.shape[2:])
        return self.conv(torch.cat([tt, x], dim=1))


class ODEfunc(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = norm(dim), norm(dim), norm(dim)
        self.conv1, self.conv2 = ConcatConv2d(dim, dim), ConcatConv2d(dim, dim)
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class ODEBlock(nn.Module):
    """Integrates the features from t = 0 to 1 (regularized inside a ``localreg.regularize()`` block)."""

    def __init__(self, odefunc, tol, method, adjoint):
        super().__init__()
        self.odefunc = odefunc
        self.register_buffer("integration_time", torch.tensor([0.0, 1.0]))
        self.tol, self.method, self.adjoint = tol, method, adjoint

    def forward(self, x):
        solve = odeint_adjoint if self.adjoint else odeint
        out = solve(self.odefunc, x, self.integration_time, rtol=self.tol, atol=self.tol, method=self.method)
        return out[1]


def build_model(args):
    width = args.width
    if args.downsampling_method == "conv":
        downsampling_layers = [
            nn.Conv2d(1, width, 3, 1), norm(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 4, 2, 1), norm(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 4, 2, 1),
        ]
    else:
        downsampling_layers = [
            nn.Conv2d(1, width, 3, 1),
            ResBlock(width, width, stride=2, downsample=nn.Conv2d(width, width, 1, 2)),
            ResBlock(width, width, stride=2, downsample=nn.Conv2d(width, width, 1, 2)),
        ]
    if args.network == "odenet":
        feature_layers = [ODEBlock(ODEfunc(width), args.tol, args.method, args.adjoint)]
    else:
        feature_layers = [ResBlock(width, width) for _ in range(6)]
    fc_layers = [norm(width), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(width, 10)]
    return nn.Sequential(*downsampling_layers, *feature_layers, *fc_layers)


def count_nfe(model, reset=False):
    """Evaluations of the ODE blocks' vector fields since the last reset (upstream's ``nfe`` counter)."""
    funcs = [m for m in model.modules() if isinstance(m, ODEfunc)]
    total = sum(f.nfe for f in funcs)
    if reset:
        for f in funcs:
            f.nfe = 0
    return total


def mnist_loaders(args, rank=0, world=1):
    """Training and test loaders over torchvision's MNIST (pixels in [0, 1]), on the first N images if asked."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    augment = [transforms.RandomCrop(28, padding=4)] if args.data_aug else []
    sets = []
    for train, transform in ((True, transforms.Compose(augment + [transforms.ToTensor()])),
                             (False, transforms.ToTensor())):
        if get_mnist is not None:
            dataset = get_mnist(args.data_root, train=train, transform=transform)
        else:
            dataset = datasets.MNIST(args.data_root, train=train, transform=transform, download=True)
        subset = args.train_subset if train else args.test_subset
        sets.append(Subset(dataset, range(min(subset, len(dataset)))) if subset else dataset)
    if args.ddp:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(sets[0], num_replicas=world, rank=rank, shuffle=True, seed=args.seed,
                                     drop_last=True)
        train_loader = DataLoader(sets[0], batch_size=args.batch_size, sampler=sampler, drop_last=True)
    else:
        train_loader = DataLoader(sets[0], batch_size=args.batch_size, shuffle=True, drop_last=True,
                                  generator=torch.Generator().manual_seed(args.seed))
    test_loader = DataLoader(sets[1], batch_size=args.test_batch_size, shuffle=False)
    return train_loader, test_loader


@torch.no_grad()
def evaluate(model, loader, device):
    """Test accuracy and the mean NFE per batch of the plain (unregularized) prediction solve."""
    model.eval()
    correct, total, nfe, batches = 0, 0, 0, 0
    for x, y in loader:
        count_nfe(model, reset=True)
        logits = model(x.to(device))
        correct += (logits.argmax(1).cpu() == y).sum().item()
        total += len(y)
        nfe += count_nfe(model)
        batches += 1
    model.train()
    return correct / total, nfe / max(batches, 1)


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


def save_predictions(model, loader, device, path, n=16):
    plt = pyplot()
    x, y = next(iter(loader))
    x, y = x[:n], y[:n]
    model.eval()
    with torch.no_grad():
        pred = model(x.to(device)).argmax(1).cpu()
    model.train()
    cols = 8
    fig, axes = plt.subplots((len(x) + cols - 1) // cols, cols, figsize=(cols * 1.2, 1.5 * ((len(x) + cols - 1) // cols)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, p, label in zip(axes.flat, x, pred, y):
        ax.imshow(image[0].numpy(), cmap="gray")
        ax.set_title(f"{p.item()} ({label.item()})", color="black" if p == label else "red", fontsize=9)
    fig.suptitle("test digits: prediction (label)")
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
    ax_nfe.set(xlabel="training iteration", ylabel="function evaluations (NFE)", title="solver cost, training and test")
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
        args.nepochs, args.width, args.batch_size, args.test_batch_size = 1, 8, 16, 32
        args.train_subset, args.test_subset, args.tol = 64, 32, 1e-3
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(args.seed)
    rank, world, gpu = 0, 1, args.gpu
    if args.ddp:
        # torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address.
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, world, gpu = dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device('cuda:' + str(gpu) if torch.cuda.is_available() else 'cpu')
    lead = rank == 0  # the process that evaluates, prints and writes
    os.makedirs(args.save, exist_ok=True)
    train_loader, test_loader = mnist_loaders(args, rank, world)
    generator = torch.Generator().manual_seed(args.seed + rank)
    net = build_model(args).to(device)
    model = nn.parallel.DistributedDataParallel(net, device_ids=[gpu] if device.type == "cuda" else None) \
        if args.ddp else net
    solves = args.network == "odenet"  # the ResNet has no solve to regularize
    # The weight of reg: AutoWeight by default, NFEBudget with --target_nfe, a constant with --reg_weight,
    # none with --reg none (or with the ResNet).
    control = None
    if args.reg != "none" and args.reg_weight is None and solves:
        # Under --ddp the plain sum: the projection would act on each rank's own gradient (before
        # DDP averages them), differently on every rank, and desynchronise the ranks;
        # backward refuses combine="project" with several processes.
        combine = "sum" if args.ddp else "project"
        control = localreg.AutoWeight(combine=combine) if args.target_nfe is None else \
            localreg.NFEBudget(target_nfe=args.target_nfe, rate=args.budget_rate, min_weight=args.budget_min_weight,
                               combine=combine)
    if lead:
        print(f"settings: {vars(args)}, processes: {world}")
        print(f"number of parameters: {sum(p.numel() for p in net.parameters())}")

    criterion = nn.CrossEntropyLoss()
    # Upstream trains with SGD (lr 0.1, momentum 0.9) for 160 epochs and divides the learning rate by
    # 10 at epochs 60, 100 and 140; over our few hundred steps SGD barely learns and any decay comes
    # too early, so Adam at a constant learning rate.
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    rows, test_rows, best_acc, itr = [], [], 0.0, 0
    for epoch in range(1, args.nepochs + 1):
        if args.ddp:
            train_loader.sampler.set_epoch(epoch)
        correct, seen, epoch_start = 0, 0, time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{args.nepochs}",
                   disable=True if args.smoke or not lead else None) \
            if tqdm else train_loader
        for x, y in bar:
            itr += 1
            x, y = x.to(device), y.to(device)
            start = time.perf_counter()
            r = localreg.regularize(strategy=args.reg, stiffness_weight=args.stiffness_weight, generator=generator)
            # The ResNet runs outside the block (one that saw no solve would warn); r.reg stays 0 there.
            with r if solves else contextlib.nullcontext():
                logits = model(x)
            task_loss = criterion(logits, y)
            optimizer.zero_grad()
            if control is not None:  # task_loss + weight * r.reg; with "project", never against task_loss
                control.backward(task_loss, r.reg, model.parameters())
                weight = control.weight  # the weight this step used (AutoWeight sets it in backward)
            else:
                weight = (args.reg_weight or 0.0) if args.reg != "none" else 0.0
                (task_loss + weight * r.reg).backward()
            optimizer.step()
            if control is not None:
                control.update(r.stats)
                if args.ddp:  # every process takes rank 0's control, so all use the same weight
                    state = [control.state_dict()]
                    dist.broadcast_object_list(state, src=0)
                    control.load_state_dict(state[0])
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            rows.append({"itr": itr, "epoch": epoch, "loss": task_loss.item(), "reg": r.reg.item(), "weight": weight,
                         "nfe_forward": r.nfe_forward, "nfe_reg": r.nfe_reg, "nfe_backward": r.nfe_backward,
                         "time": time.perf_counter() - start})
            if tqdm and lead and not args.smoke:
                bar.set_postfix(loss=f"{task_loss.item():.3f}", nfe=rows[-1]["nfe_forward"], weight=f"{weight:.3g}")
        if not lead:
            continue
        # The inner module: DDP's forward would wait for the other processes, which do not evaluate.
        test_acc, test_nfe = evaluate(net, test_loader, device)
        test_rows.append({"epoch": epoch, "train_acc": correct / seen, "test_acc": test_acc, "test_nfe": test_nfe,
                          "epoch_time": time.perf_counter() - epoch_start})
        print(f"Epoch {epoch:03d} | Time {test_rows[-1]['epoch_time']:.1f}s | Train Acc {correct / seen:.4f} | "
              f"Test Acc {test_acc:.4f} | Test NFE {test_nfe:.1f} | last batch: loss {task_loss.item():.4f} "
              f"reg {r.reg.item():.4f} weight {weight:.3g} NFE-F {rows[-1]['nfe_forward']} "
              f"NFE-B {rows[-1]['nfe_backward']}", flush=True)
        if test_acc >= best_acc:
            best_acc = test_acc
            torch.save({"state_dict": net.state_dict(), "args": vars(args)}, os.path.join(args.save, "model.pt"))

    if args.ddp:
        # The other processes wait here while rank 0 evaluates: tearing gloo down on one rank while
        # another still holds its connections has aborted a rank at exit ("terminate called without
        # an active exception", seen once in CI).
        dist.barrier()
        dist.destroy_process_group()
    if not lead:
        return {"rows": rows, "args": args, "control": control}

    write_csv(os.path.join(args.save, "log.csv"), rows)
    write_csv(os.path.join(args.save, "test.csv"), test_rows)
    figures = []
    if args.viz:
        figures.append(save_predictions(net, test_loader, device, os.path.join(args.save, "predictions.png")))
        figures.append(plot_nfe(os.path.join(args.save, "nfe.png"), rows, test_rows,
                                f"ODE-Net MNIST, --reg {args.reg}"))
    last = rows[-max(1, len(rows) // 10):]
    summary = {"metric_name": "test_accuracy", "test_metric": test_rows[-1]["test_acc"], "higher_is_better": True,
               "test_nfe": test_rows[-1]["test_nfe"],
               "final_train_nfe": sum(r["nfe_forward"] for r in last) / len(last),
               "training_time_s": sum(r["time"] for r in rows), "wall_time_s": time.perf_counter() - wall_start,
               "cpu_time_s": time.process_time() - cpu_start,
               "weight_control": type(control).__name__ if control else ("constant" if weight else "none"),
               "final_weight": rows[-1]["weight"], "processes": world}
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
