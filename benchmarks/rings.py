"""Experiment 0: the quickstart's disk-vs-ring classification, in the benchmark harness.

The problem of ``examples/quickstart.py``: points of the plane inside a disk or on a ring around
it, an augmented neural ODE (the point plus ``--augment`` zeros) on t in [0, 1] with a
time-concatenated MLP field, a linear read-out; 4096 training and 4096 test points. Many flows
separate the classes equally well and plain training drifts to expensive ones, so vanilla's NFE
grows. Methods, measurements, resumption and outputs as in ``mnist_node.py``:

    python benchmarks/rings.py --jobs 2      # every method, seeds 0 1 2
    python benchmarks/rings.py --smoke       # a few seconds
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
import quickstart  # noqa: E402

PAPER = {"note": "not in the paper: the quickstart's problem (augmented neural ODE classifier on 2-D points)"}
METHODS = ("vanilla", "unbiased", "biased", "budget", "global", "steer", "rnode")
SMOKE = dict(niters=3, batch_size=16, n_train=64, n_test=64, tol=1e-3, seeds=[0], reg_weights=[1.0], pred_repeats=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _train.add_args(parser, methods=METHODS, niters=600, batch_size=256, lr=1e-2, tol=1e-5,
                    reg_weights=(0.01, 0.03, 0.1, 0.3, 1.0), global_weight=0.1, steer_b=0.5, rnode_weight=0.01)
    _train.add_ode_args(parser, stiffness_weight=0.1)
    parser.add_argument("--n_train", type=int, default=4096, help="training points")
    parser.add_argument("--n_test", type=int, default=4096, help="test points")
    parser.add_argument("--augment", type=int, default=2, help="zero dimensions appended to each point")
    return parser


class RingsProblem(_train.Problem):
    """The quickstart's classification, in the harness's terms."""

    metric_name = "accuracy"

    def __init__(self, n_train: int, n_test: int, augment: int):
        data = torch.Generator().manual_seed(1234)  # the same data set for every seed and method
        self.x_train, self.y_train = quickstart.make_data(n_train, data)
        self.test = quickstart.make_data(n_test, data)
        self.train_eval = (self.x_train[:2048], self.y_train[:2048])
        self.augment = augment
        self.t = torch.tensor([0.0, 1.0])

    def make_model(self):
        return quickstart.Classifier(self.augment)

    def batch(self, batch_size, generator):
        idx = torch.randint(len(self.x_train), (batch_size,), generator=generator)
        return self.x_train[idx], self.y_train[idx]

    def initial(self, model, batch, generator):
        x = batch[0]
        return model.initial(x), self.t.to(x), torch.zeros((), dtype=x.dtype, device=x.device)

    def loss(self, model, zs, batch):
        return nn.functional.binary_cross_entropy_with_logits(model.readout(zs[-1]).squeeze(1), batch[1])

    def metric(self, model, zs, batch):
        return ((model.readout(zs[-1]).squeeze(1) > 0).float() == batch[1]).float().mean().item()


def main(argv=None):
    args = _train.parse_args(build_parser(), argv, SMOKE)
    _train.check_args(args)
    for name in ("n_train", "n_test"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.augment < 0:
        raise ValueError(f"--augment must be >= 0, got {args.augment}.")

    def make_problem():
        return RingsProblem(args.n_train, args.n_test, args.augment)

    settings = {"data": "disk |x| < 1 against ring 1.5 < |x| < 2.5, uniform radius and angle",
                "n_train": args.n_train, "n_test": args.n_test,
                "model": f"augmented NODE (2 + {args.augment} dims), concat-MLP field 32-32 (tanh), linear read-out",
                **_train.settings_of(args)}
    return _train.run_benchmark("rings", make_problem, args, argv, __file__, settings, PAPER,
                                "Disk vs ring (the quickstart)")


if __name__ == "__main__":
    main()
