"""ODE-Net on MNIST (as torchdiffeq's ``odenet_mnist`` example), with local regularization.

Convolutional downsampling, an ODE block whose vector field is a small convolutional network with
the time as an extra channel, and a linear classifier. The change from the plain torchdiffeq script:

    -from torchdiffeq import odeint, odeint_adjoint
    +from torchdiffeq_localreg import odeint_reg, odeint_adjoint_reg
    ...
    -out = odeint(self.odefunc, x, self.integration_time, rtol=self.tol, atol=self.tol)
    +out, self.reg, self.stats = odeint_reg(self.odefunc, x, self.integration_time, rtol=self.tol,
    +                                      atol=self.tol, strategy=strategy, return_stats=True)
    ...
    -loss = criterion(logits, y)
    +loss = criterion(logits, y) + args.reg_weight * reg

The regularization is applied in training mode only; the test pass solves plainly (strategy
"none", no extra cost) and its NFE is the test NFE reported per epoch. Defaults are scaled down
from upstream's (64 channels, SGD for 160 epochs on 60k images) to 32 channels, Adam, 3 epochs on
the first 12k images, so that a run takes minutes on a 2-core CPU.
MNIST comes from torchvision's ``datasets.MNIST`` through ``mnist_data`` (offline fallback when the
download fails; see that module).

    python examples/odenet_mnist.py                     # a few minutes on a 2-core CPU
    python examples/odenet_mnist.py --reg none          # the plain ODE-Net, for comparison
    python examples/odenet_mnist.py --smoke --viz       # seconds
"""
import argparse
import os
from pathlib import Path

import torch
import torch.nn as nn

from _common import CSVLog, Timer, add_reg_args, plot_nfe, progress, pyplot, save_figure, set_threads
from mnist_data import add_mnist_args, get_mnist_loaders
from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--network", type=str, choices=["resnet", "odenet"], default="odenet")
parser.add_argument("--tol", type=float, default=1e-3)
parser.add_argument("--adjoint", action="store_true")
parser.add_argument("--method", type=str, default="dopri5")
parser.add_argument("--downsampling-method", type=str, default="conv", choices=["conv", "res"])
parser.add_argument("--width", type=int, default=32, help="channels (upstream: 64)")
parser.add_argument("--nepochs", type=int, default=3)
parser.add_argument("--data_aug", action="store_true")
parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (upstream: SGD, 0.1)")
add_mnist_args(parser, train_subset=12000, data_root=str(ROOT / "data"))
parser.add_argument("--save", type=str, default=str(ROOT / "runs" / "odenet_mnist"))
parser.add_argument("--viz", action="store_true", help="save predictions.png and nfe.png in --save")
parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
add_reg_args(parser, reg_weight=0.1)


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

    def forward(self, t, x):
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class ODEBlock(nn.Module):
    """Integrates the features from t = 0 to 1; keeps the solve's ``reg`` and stats for the loss and log."""

    def __init__(self, odefunc, tol, method, adjoint, strategy, stiffness_weight, generator):
        super().__init__()
        self.odefunc = odefunc
        self.register_buffer("integration_time", torch.tensor([0.0, 1.0]))
        self.tol, self.method, self.adjoint = tol, method, adjoint
        self.strategy, self.stiffness_weight, self.generator = strategy, stiffness_weight, generator
        self.reg, self.stats = None, None

    def forward(self, x):
        solve = odeint_adjoint_reg if self.adjoint else odeint_reg
        strategy = self.strategy if self.training else "none"
        out, self.reg, self.stats = solve(self.odefunc, x, self.integration_time, rtol=self.tol, atol=self.tol,
                                          method=self.method, strategy=strategy,
                                          stiffness_weight=self.stiffness_weight, generator=self.generator,
                                          return_stats=True)
        return out[1]


def build_model(args, generator):
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
        feature_layers = [ODEBlock(ODEfunc(width), args.tol, args.method, args.adjoint, args.reg,
                                   args.stiffness_weight, generator)]
    else:
        feature_layers = [ResBlock(width, width) for _ in range(6)]
    fc_layers = [norm(width), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(width, 10)]
    return nn.Sequential(*downsampling_layers, *feature_layers, *fc_layers)


def solver_stats(model):
    """(reg, stats of each ODE block) of the model's last forward pass; reg is 0 for the ResNet."""
    blocks = [m for m in model.modules() if isinstance(m, ODEBlock)]
    reg = sum((b.reg for b in blocks), torch.zeros(()))
    return reg, [b.stats for b in blocks]


@torch.no_grad()
def evaluate(model, loader, device):
    """Test accuracy and the mean NFE per batch of the plain (unregularized) prediction solve."""
    model.eval()
    correct, total, nfe, batches = 0, 0, 0, 0
    for x, y in loader:
        logits = model(x.to(device))
        correct += (logits.argmax(1).cpu() == y).sum().item()
        total += len(y)
        nfe += sum(s.nfe_forward for s in solver_stats(model)[1])
        batches += 1
    model.train()
    return correct / total, nfe / max(batches, 1)


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
    return save_figure(fig, path)


def main(argv=None):
    args = parser.parse_args(argv)
    if args.smoke:
        args.nepochs, args.width, args.batch_size, args.test_batch_size = 1, 8, 16, 32
        args.train_subset, args.test_subset = 64, 32
    set_threads(1 if args.smoke else 2)  # tiny smoke tensors gain nothing from threads
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    os.makedirs(args.save, exist_ok=True)
    train_loader, test_loader = get_mnist_loaders(args.data_root, args.batch_size, args.test_batch_size,
                                                  data_aug=args.data_aug, train_subset=args.train_subset,
                                                  test_subset=args.test_subset, seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = build_model(args, generator).to(device)
    print(f"settings: {vars(args)}")
    print(f"number of parameters: {sum(p.numel() for p in model.parameters())}")

    criterion = nn.CrossEntropyLoss()
    # Upstream trains with SGD (lr 0.1, momentum 0.9) for 160 epochs; over our few hundred steps at
    # width 32 that barely learns, Adam does.
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    # Upstream divides the learning rate by 10 at epochs 60, 100 and 140 of 160; the same fractions here.
    total = args.nepochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[int(total * f) for f in (60 / 160, 100 / 160, 140 / 160)], gamma=0.1)
    log = CSVLog(args.log or os.path.join(args.save, "log.csv"),
                 ["itr", "epoch", "loss", "reg", "nfe_forward", "nfe_reg", "nfe_backward", "time"])
    test_log = CSVLog(os.path.join(args.save, "test.csv"),
                      ["epoch", "train_acc", "test_acc", "test_nfe", "epoch_time"])
    best_acc, itr = 0.0, 0
    for epoch in range(1, args.nepochs + 1):
        correct, seen = 0, 0
        with Timer() as epoch_timer:
            for x, y in progress(train_loader, desc=f"epoch {epoch}/{args.nepochs}", disable=args.smoke):
                itr += 1
                x, y = x.to(device), y.to(device)
                with Timer() as timer:
                    logits = model(x)
                    reg, stats = solver_stats(model)
                    loss = criterion(logits, y)
                    optimizer.zero_grad()
                    (loss + args.reg_weight * reg).backward()
                    optimizer.step()
                    scheduler.step()
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                log.write(itr=itr, epoch=epoch, loss=loss.item(), reg=reg.item(),
                          nfe_forward=sum(s.nfe_forward for s in stats), nfe_reg=sum(s.nfe_reg for s in stats),
                          nfe_backward=sum(s.nfe_backward for s in stats), time=timer.seconds)
            test_acc, test_nfe = evaluate(model, test_loader, device)
        test_log.write(epoch=epoch, train_acc=correct / seen, test_acc=test_acc, test_nfe=test_nfe,
                       epoch_time=epoch_timer.seconds)
        print(f"Epoch {epoch:03d} | Time {epoch_timer.seconds:.1f}s | Train Acc {correct / seen:.4f} | "
              f"Test Acc {test_acc:.4f} | Test NFE {test_nfe:.1f} | last batch: loss {loss.item():.4f} "
              f"reg {reg.item():.4f} NFE-F {log.rows[-1]['nfe_forward']} NFE-B {log.rows[-1]['nfe_backward']}",
              flush=True)
        if test_acc >= best_acc:
            best_acc = test_acc
            torch.save({"state_dict": model.state_dict(), "args": vars(args)}, os.path.join(args.save, "model.pt"))

    figures = []
    if args.viz:
        figures.append(save_predictions(model, test_loader, device, os.path.join(args.save, "predictions.png")))
        figures.append(plot_nfe(log.rows, os.path.join(args.save, "nfe.png"), title=f"ODE-Net MNIST, reg={args.reg}"))
    return {"rows": log.rows, "test": test_log.rows, "figures": figures, "args": args}


if __name__ == "__main__":
    main()
