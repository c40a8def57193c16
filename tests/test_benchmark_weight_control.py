"""The weight-control protocol benchmark: smoke run of every problem and method, resumption, summary."""
import math
from pathlib import Path

import pytest

from problems import import_isolated, write_random_mnist

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
M = import_isolated(BENCH, ("_harness", "_train", "_regularizers", "mnist_data", "mnist_node", "latent_ode_spirals",
                            "quickstart", "weight_control"))
wc = M["weight_control"]
read_csv = wc.read_rows


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    return write_random_mnist(tmp_path_factory.mktemp("mnist"), M["mnist_data"])


def test_smoke_every_problem_and_method_then_resume(mnist_root, tmp_path):
    # one timed prediction per run (--smoke keeps the default 3): the test checks the rows, not the timings
    args = ["--smoke", "--pred_repeats", "1", "--out", str(tmp_path), "--data_root", mnist_root]
    summary = wc.main(args)
    runs = {p: read_csv(tmp_path / f"runs_{p}.csv") for p in wc.PROBLEMS}
    for problem, rows in runs.items():
        assert [r["method"] for r in rows] == list(wc.METHODS), problem
        vanilla = next(r for r in rows if r["method"] == "vanilla")
        for r in rows:
            assert int(r["test_nfe"]) > 0 and float(r["train_time"]) > 0
            assert math.isfinite(float(r["test_metric"]))
            if r["method"].startswith("budget"):
                assert float(r["target_nfe"]) == pytest.approx(wc.TARGET_RATIO * float(vanilla["test_nfe"]))
                assert float(r["final_weight"]) > 0
            elif r["method"].startswith("const@"):
                assert float(r["final_weight"]) == float(r["method"].split("@")[1])
    assert len(summary) == len(wc.PROBLEMS) * len(wc.METHODS)
    for s in summary:
        for key in ("test_metric_mean", "test_nfe_mean", "nfe_ratio", "pred_time_ratio", "train_time_ratio",
                    "metric_change"):
            assert math.isfinite(s[key]), (s["problem"], s["method"], key)
    assert all(s["nfe_ratio"] == 1.0 for s in summary if s["method"] == "vanilla")
    for name in ("summary.csv", "summary.md", "pareto.png", "settings.json"):
        assert (tmp_path / name).stat().st_size > 0, name

    # A second run of the same command trains nothing and adds no rows.
    wc.main(args)
    assert {p: read_csv(tmp_path / f"runs_{p}.csv") for p in wc.PROBLEMS} == runs


def test_budget_needs_its_vanilla_row(tmp_path):
    """The budget's target is 0.6 x vanilla's NFE: vanilla always runs first, even if not asked for."""
    wc.main(["--smoke", "--pred_repeats", "1", "--out", str(tmp_path), "--problems", "rings", "--methods", "budget"])
    assert [r["method"] for r in read_csv(tmp_path / "runs_rings.csv")] == ["vanilla", "budget"]


def test_budget_runs_take_the_packages_backward(tmp_path, monkeypatch):
    """``budget`` trains with NFEBudget.backward and its projection, ``budget_sum`` with the plain sum
    through the same method, constants and vanilla never call it."""
    calls = []
    real = wc.NFEBudget.backward

    def spy(self, task_loss, reg, parameters):
        calls.append(self.combine)
        return real(self, task_loss, reg, parameters)

    monkeypatch.setattr(wc.NFEBudget, "backward", spy)
    common = ["--smoke", "--pred_repeats", "1", "--out", str(tmp_path), "--problems", "rings"]
    wc.main(common + ["--methods", "vanilla", "const@1"])
    assert calls == []
    wc.main(common + ["--methods", "budget"])
    assert calls == ["project"] * wc.SMOKE["niters"]
    calls.clear()
    wc.main(common + ["--methods", "budget_sum"])
    assert calls == ["sum"] * wc.SMOKE["niters"]
