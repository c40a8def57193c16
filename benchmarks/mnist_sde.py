"""Benchmark, experiment 2: MNIST classification with a neural SDE (torchsde, adaptive).

Model (the paper's): Linear 784 -> 32; a diagonal-noise Ito SDE on t in [0, 1] with drift
MLP 32 -> 64 (tanh) -> 32 and diffusion ``sigma_max * sigmoid(Linear 32 -> 32)``; classifier
32 -> 10 on the state at t = 1; cross-entropy loss. Every method (vanilla, unbiased, biased,
global, STEER, RNODE, the weight control ``budget``; see ``_sde.py``) trains it with the same initialisation, data order,
Brownian paths, optimiser and number of iterations per seed. Each model then classifies the test
subset with plain ``torchsde.sdeint`` on a fixed Brownian seed; the table gives accuracies, test
NFE (drift evaluations of that solve), prediction time, training time and ratios to vanilla.

    python benchmarks/mnist_sde.py --jobs 2    # every method, seeds 0 1 2
    python benchmarks/mnist_sde.py --smoke     # a few seconds

Resumable and written as ``mnist_node.py``, under ``benchmarks/results/mnist_sde/``.
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402,F401  (puts examples/ on sys.path for mnist_data)
import _train  # noqa: E402
import mnist_data  # noqa: E402
from _sde import METHODS, NeuralSDE, SDEProblem, add_sde_args, check_sde_args  # noqa: E402

PAPER = {"data": "MNIST 60k/10k", "model": "784-32, drift 32-64(tanh)-32, diffusion Linear 32-32, 32-10",
         "tol": "rtol=atol=0.14 (adaptive)", "reg_weight": 1000, "optimizer": "Adam lr 0.01, inverse decay",
         "batch": 512, "steps": 4000, "seeds": "several"}

SMOKE = dict(niters=2, batch_size=16, train_subset=64, test_subset=32, seeds=[0], reg_weights=[0.1], pred_repeats=1)
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--data_root", type=str, default="data/", help=mnist_data.DATA_ROOT_HELP)
parser.add_argument("--train_subset", type=int, default=60000, help="training images used (first N)")
parser.add_argument("--test_subset", type=int, default=10000, help="test images used (first N)")
# Measured on a 2-core CPU (one thread per run, two runs at a time): with these settings vanilla's
# training NFE grows from about 10 to 42 drift evaluations per solve over 2000 iterations (84 on the
# 10k test images), a run takes about 45 s and the full default command about 13 min. The weights:
# at 0.02 and below the NFE falls a little (0.8-0.95x), at 0.03 and above the model collapses to
# one adaptive step; the sweep brackets that edge.
_train.add_args(parser, methods=METHODS, niters=2000, batch_size=128, lr=1e-2, lr_decay=1e-5, tol=0.02,
                reg_weights=(0.01, 0.015, 0.02, 0.03, 0.1), global_weight=0.1, steer_b=0.5, rnode_weight=0.01)
add_sde_args(parser, dt=1.0, sigma_max=0.5)


def _tensors(root: str, train: bool, n: int, device):
    data = mnist_data.get_mnist(root, train=train)
    x = data.data[:n].to(device=device, dtype=torch.float32).flatten(1).div(255.0)
    return (x - 0.1307) / 0.3081, data.targets[:n].to(device)


class MNISTSDE(nn.Module):
    def __init__(self, sigma_max: float, hidden: int = 32):
        super().__init__()
        self.encoder = nn.Linear(784, hidden)
        self.sde = NeuralSDE(nn.Sequential(nn.Linear(hidden, 64), nn.Tanh(), nn.Linear(64, hidden)),
                             nn.Linear(hidden, hidden), sigma_max)
        self.classifier = nn.Linear(hidden, 10)


class MNISTTask(SDEProblem):
    metric_name = "accuracy"

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.ts = torch.tensor([0.0, 1.0])
        self.x_train, self.y_train = _tensors(args.data_root, True, args.train_subset, args.device)
        self.x_test, self.y_test = _tensors(args.data_root, False, args.test_subset, args.device)
        # Training accuracy is measured on as many training images as there are test images.
        self.x_train_eval = self.x_train[:len(self.x_test)]
        self.y_train_eval = self.y_train[:len(self.x_test)]

    def make_model(self):
        return MNISTSDE(self.args.sigma_max)

    def batch(self, batch_size, generator):
        idx = torch.randint(len(self.x_train), (batch_size,), generator=generator).to(self.x_train.device)
        return self.x_train[idx], self.y_train[idx]

    def initial(self, model, batch):
        return model.encoder(batch[0])

    def loss(self, model, ys, batch):
        return F.cross_entropy(model.classifier(ys[-1]), batch[1])

    def test_initial(self, model):
        return model.encoder(self.x_test)

    def metrics(self, model, predict, ys_test):
        ys_train = predict(model.encoder(self.x_train_eval))
        accuracy = lambda ys, y: (model.classifier(ys[-1]).argmax(1) == y).float().mean().item()  # noqa: E731
        return {"train_metric": accuracy(ys_train, self.y_train_eval), "test_metric": accuracy(ys_test, self.y_test)}


def main(argv=None):
    args = _train.parse_args(parser, argv, SMOKE)
    _train.check_args(args, METHODS)
    check_sde_args(args)
    for name in ("train_subset", "test_subset"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    settings = {"data": f"MNIST train {args.train_subset} / test {args.test_subset} (first N)",
                "model": "784-32, drift 32-64(tanh)-32, diffusion sigma_max*sigmoid(Linear 32-32), 32-10",
                **_train.settings_of(args)}
    notes = ("RNODE regularizes the drift only (kinetic energy and Jacobian norm integrated along each sample path "
             "as two zero-diffusion state columns); it has no term for the diffusion.")
    return _train.run_benchmark("mnist_sde", lambda: MNISTTask(args), args, argv, __file__, settings, PAPER,
                                "MNIST neural SDE", notes)


if __name__ == "__main__":
    main()
