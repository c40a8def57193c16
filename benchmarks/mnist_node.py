"""Experiment 1: MNIST classification with a neural ODE, every cost regularizer against vanilla.

The reference model of the paper: the ODE acts on the flattened 784-pixel image, its vector field
is a time-concatenated MLP 785 -> 100 (tanh) -> 784 (time appended to each layer's input), and a
linear classifier 784 -> 10 reads the state at t = 1. Each method (vanilla, local unbiased/biased
at each of ``--reg_weights``, the weight control ``budget``, global, STEER, RNODE; the stiffness
variant ``unbiased_stiff`` on request) trains the same initialisation on the same batches with the
same optimiser and budget; afterwards the test set is predicted with plain ``torchdiffeq.odeint``
and its NFE and prediction time are measured. The defaults are the realistic scale: the full
60k/10k, 1500 steps of 128, dopri5 at 1e-6 (vanilla's NFE grows during training).

    python benchmarks/mnist_node.py --jobs 2                       # every method, seeds 0 1 2
    python benchmarks/mnist_node.py --methods vanilla budget --seeds 0 1 2 --jobs 2   # a piece of it
    python benchmarks/mnist_node.py --device cuda --niters 7500 --batch_size 512      # the paper's scale
    python benchmarks/mnist_node.py --smoke                        # a few seconds

Resumable: each finished run appends its row to ``runs.csv``; a rerun skips the rows there. Writes
runs.csv, curves.csv, summary.csv, summary.md, settings.json, nfe_training.png and pareto.png under
``benchmarks/results/mnist_node/`` (or ``--out``).
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402,F401  (puts examples/ on sys.path)
import _train  # noqa: E402
import mnist_data  # noqa: E402

PAPER = {"solver": "Tsit5", "rtol=atol": 1.4e-8, "grad": "interpolating adjoint", "optimizer": "Adam",
         "lr": 1e-3, "batch_size": 512, "niters": 7500, "reg_weight": "2.5 -> 1.0 (exponential decay)",
         "stiffness variant weight": 0.1, "train/test": "60000/10000"}
METHODS = ("vanilla", "unbiased", "biased", "budget", "global", "steer", "rnode")
SMOKE = dict(niters=3, batch_size=16, train_subset=64, test_subset=32, train_eval_subset=32, tol=1e-3, seeds=[0],
             reg_weights=[1.0], pred_repeats=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _train.add_args(parser, methods=METHODS, niters=1500, batch_size=128, lr=1e-3, tol=1e-6,
                    reg_weights=(0.1, 0.3, 1.0), global_weight=0.1, steer_b=0.5, rnode_weight=0.01)
    _train.add_ode_args(parser, stiffness_weight=0.1)
    parser.add_argument("--data_root", type=str, default="data/", help=mnist_data.DATA_ROOT_HELP)
    parser.add_argument("--train_subset", type=int, default=60000, help="training images used (first N)")
    parser.add_argument("--test_subset", type=int, default=10000, help="test images used (first N)")
    parser.add_argument("--train_eval_subset", type=int, default=2000,
                        help="training images whose accuracy is reported (first N)")
    return parser


class ConcatLinear(nn.Module):
    """A linear layer with the time appended to its input."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in + 1, dim_out)

    def forward(self, t, x):
        return self.linear(torch.cat([x, t.to(x).expand(x.shape[0], 1)], dim=1))


class ODEFunc(nn.Module):
    def __init__(self, dim: int = 784, hidden: int = 100):
        super().__init__()
        self.layer1, self.layer2 = ConcatLinear(dim, hidden), ConcatLinear(hidden, dim)

    def forward(self, t, x):
        return self.layer2(t, torch.tanh(self.layer1(t, x)))


class MNISTNODE(nn.Module):
    def __init__(self):
        super().__init__()
        self.func = ODEFunc()
        self.classifier = nn.Linear(784, 10)


def load_split(root: str, train: bool, subset: int):
    """The first ``subset`` images (flattened, in [0, 1]) and labels of a split."""
    ds = mnist_data.get_mnist(root, train=train)
    n = min(subset, len(ds.targets))
    return ds.data[:n].reshape(n, -1).float() / 255.0, ds.targets[:n].clone()


class MNISTProblem(_train.Problem):
    metric_name = "accuracy"

    def __init__(self, x_train, y_train, x_test, y_test, eval_size: int):
        self.x_train, self.y_train = x_train, y_train
        self.train_eval = (x_train[:eval_size], y_train[:eval_size])
        self.test = (x_test, y_test)
        self.t = torch.tensor([0.0, 1.0])

    def make_model(self):
        return MNISTNODE()

    def batch(self, batch_size, generator):
        idx = torch.randint(len(self.x_train), (batch_size,), generator=generator)
        return self.x_train[idx], self.y_train[idx]

    def initial(self, model, batch, generator):
        x = batch[0]
        return x, self.t.to(x), torch.zeros((), dtype=x.dtype, device=x.device)

    def loss(self, model, zs, batch):
        return nn.functional.cross_entropy(model.classifier(zs[-1]), batch[1])

    def metric(self, model, zs, batch):
        return (model.classifier(zs[-1]).argmax(1) == batch[1]).float().mean().item()


def main(argv=None):
    args = _train.parse_args(build_parser(), argv, SMOKE)
    _train.check_args(args)
    for name in ("train_subset", "test_subset", "train_eval_subset"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")

    def make_problem():
        x_train, y_train = load_split(args.data_root, True, args.train_subset)
        x_test, y_test = load_split(args.data_root, False, args.test_subset)
        return MNISTProblem(x_train, y_train, x_test, y_test, eval_size=args.train_eval_subset)

    settings = {"model": "ODE on 784 pixels, concat-MLP 785-100(tanh)-784, linear 784-10, t in [0, 1]",
                "train_subset": args.train_subset, "test_subset": args.test_subset,
                "train_eval_subset": args.train_eval_subset, **_train.settings_of(args)}
    return _train.run_benchmark("mnist_node", make_problem, args, argv, __file__, settings, PAPER, "MNIST neural ODE")


if __name__ == "__main__":
    main()
