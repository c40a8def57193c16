"""benchmarks/examples_seeds.py: the examples over paired seeds, plain against AutoWeight(): the
commands, the paired comparison on synthetic rows, a smoke run with resumption, and bad input."""
import math
from pathlib import Path

import pytest

from problems import import_isolated

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
M = import_isolated(BENCH, ("_harness", "_plots", "_train", "_regularizers", "_sde", "mnist_data", "quickstart",
                            "rings", "mnist_node", "mnist_sde", "latent_ode_spirals", "spiral_sde", "lotka_volterra",
                            "weight_control", "examples_seeds"))
es = M["examples_seeds"]


def _row(example, run, seed, metric, nfe, higher=False, time=10.0):
    return {"example": example, "run": run, "seed": str(seed), "metric_name": "acc" if higher else "loss",
            "higher_is_better": str(higher), "test_metric": str(metric), "test_nfe": str(nfe),
            "training_time_s": str(time)}


def test_commands_follow_each_example():
    args = es.build_parser().parse_args(["--data_root", "mnist_here"])
    plain = es.command("odenet_mnist", "plain", 3, args, Path("/scratch"))
    assert plain[1].endswith("examples/odenet_mnist.py") and plain[plain.index("--seed") + 1] == "3"
    assert plain[-2:] == ["--reg", "none"] and plain[plain.index("--data_root") + 1] == "mnist_here"
    assert plain[plain.index("--save") + 1] == str(Path("/scratch/out"))
    auto = es.command("latent_sde", "auto", 0, args, Path("/scratch"))
    assert "--reg" not in auto and "--data_root" not in auto and "--train-dir" in auto  # the default command
    smoke = es.build_parser().parse_args(["--smoke"])
    assert es.command("cnf", "auto", 0, smoke, Path("/s"))[-1] == "--smoke"


def test_default_seeds_and_resumption_plan():
    args = es.build_parser().parse_args(["--examples", "odenet_mnist", "cnf"])
    specs = es.todo(args, [_row("cnf", "plain", 0, 1.0, 10)])
    assert [s for s in specs if s[0] == "odenet_mnist"] == [("odenet_mnist", r, s) for s in range(3) for r in es.RUNS]
    assert ("cnf", "plain", 0) not in specs and ("cnf", "auto", 0) in specs and len(specs) == 6 + 19


def test_compare_pairs_seeds_in_closed_form():
    rows = [_row("latent_ode", "plain", 0, 0.1, 100), _row("latent_ode", "auto", 0, 0.2, 50),
            _row("latent_ode", "plain", 1, 0.3, 100), _row("latent_ode", "auto", 1, 0.25, 70),
            _row("latent_ode", "plain", 2, 0.5, 80)]  # seed 2 has no auto run: left out
    c = es.compare("latent_ode", rows)
    assert c["seeds"] == 2 and c["kind"] == "error"
    assert c["change"] == pytest.approx((0.2 + 0.25) / (0.1 + 0.3))  # 1.125x: outside (a)'s 10%
    assert c["typical"] == pytest.approx(math.sqrt(2.0 * 0.25 / 0.3)) and c["worse"] == 1
    assert c["nfe_ratio"] == pytest.approx(60 / 100) and c["meets_a"] is False
    acc = [_row("odenet_mnist", "plain", 0, 0.90, 60, True), _row("odenet_mnist", "auto", 0, 0.91, 50, True),
           _row("odenet_mnist", "plain", 1, 0.92, 60, True), _row("odenet_mnist", "auto", 1, 0.905, 40, True)]
    a = es.compare("odenet_mnist", acc)
    assert a["kind"] == "accuracy" and a["change"] == pytest.approx(-0.0025) and a["worse"] == 1
    assert a["meets_a"] is True and "| -0.25 pt |" in es.summary_markdown([a])  # within 0.3 points
    assert es.compare("cnf", rows) is None


def test_constant_weights_run_with_reg_weight_and_are_judged_against_plain(tmp_path, monkeypatch):
    args = es.build_parser().parse_args(["--examples", "ode_demo", "--seeds", "0", "1", "--weights", "0.0001", "0.1",
                                         "--runs_only"])
    assert es.runs_of(args) == ["plain", "weight@0.0001", "weight@0.1"]
    specs = es.todo(args, [_row("ode_demo", "plain", 0, 1.0, 10)])
    assert ("ode_demo", "plain", 1) in specs and ("ode_demo", "weight@0.0001", 0) in specs
    assert not any(run == "auto" for _, run, _ in specs) and len(specs) == 5
    cmd = es.command("ode_demo", "weight@0.0001", 0, args, Path("/s"))
    assert cmd[-2:] == ["--reg_weight", "0.0001"] and "--reg" not in cmd
    rows = [_row("ode_demo", "plain", 0, 0.2, 100), _row("ode_demo", "auto", 0, 0.3, 100),
            _row("ode_demo", "weight@0.0001", 0, 0.22, 100), _row("ode_demo", "weight@0.1", 0, 0.4, 50),
            _row("ode_demo", "weight@0.1", 0, 0.4, 50)]   # a run appended twice counts once
    es._harness.write_csv(rows, tmp_path / "runs.csv")
    saved = {}
    monkeypatch.setattr(es._plots, "_save", lambda plt_, fig, path: saved.setdefault(Path(path).name, fig) and path)
    comparisons = es.summarize(tmp_path)
    assert [(c["run"], c["seeds"]) for c in comparisons] == [("auto", 1)]
    text = (tmp_path / "summary.md").read_text()
    assert "### Constant weights against plain training" in text
    assert "| `ode_demo.py` | weight 0.0001 | loss | 1 | 0.2 | 0.22 | 1.10x |" in text
    assert "| `ode_demo.py` | weight 0.1 | loss | 1 | 0.2 | 0.4 | 2.00x |" in text
    # AutoWeight() paired with the noise reference's runs as well: 0.3 against 0.22 on seed 0.
    assert "### `AutoWeight()` against the noise reference weight 0.0001" in text
    assert ("| `ode_demo.py` | loss | 1 | 0.22 | 0.3 | 1.36x |" in text
            and "| test NFE weight 0.0001 -> AutoWeight() |" in text)
    written = [(r["run"], r["base"]) for r in es._harness.read_rows(tmp_path / "summary.csv")]
    assert sorted(written) == [("auto", "plain"), ("auto", "weight@0.0001"), ("weight@0.0001", "plain"),
                               ("weight@0.1", "plain")]
    # The figure: the seeds and AutoWeight()'s means, and a named diamond at each constant's means.
    panel = saved["examples.png"].axes[0]
    assert sorted(t.get_text() for t in panel.texts) == ["weight 0.0001", "weight 0.1"]
    diamonds = sorted(tuple(c.get_offsets()[0]) for c in panel.collections
                      if c.get_label() == "means of a constant weight")
    assert diamonds == [pytest.approx((0.5, 2.0)), pytest.approx((1.0, 1.1))]
    names = [t.get_text() for t in saved["examples.png"].legends[0].get_texts()]
    assert names == ["one seed", "AutoWeight()'s means", "means of a constant weight"]
    es._plots.pyplot().close(saved["examples.png"])


def test_plain_training_at_another_learning_rate_is_a_run_judged_against_plain(tmp_path, monkeypatch):
    args = es.build_parser().parse_args(["--examples", "ode_demo", "--seeds", "0", "--plain_lrs", "0.001000001",
                                         "--runs_only"])
    es.check_args(args)
    assert es.runs_of(args) == ["plain", "plain@lr=0.001000001"]
    cmd = es.command("ode_demo", "plain@lr=0.001000001", 0, args, Path("/s"))
    assert cmd[-4:] == ["--reg", "none", "--lr", "0.001000001"] and "--reg_weight" not in cmd
    rows = [_row("ode_demo", "plain", 0, 0.2, 100), _row("ode_demo", "auto", 0, 0.3, 100),
            _row("ode_demo", "plain@lr=0.001000001", 0, 0.25, 101)]
    es._harness.write_csv(rows, tmp_path / "runs.csv")
    saved = {}
    monkeypatch.setattr(es._plots, "_save", lambda plt_, fig, path: saved.setdefault(Path(path).name, fig) and path)
    es.summarize(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "| `ode_demo.py` | plain, lr 0.001000001 | loss | 1 | 0.2 | 0.25 | 1.25x |" in text
    assert "### `AutoWeight()` against the noise reference plain, lr 0.001000001" in text
    assert "| `ode_demo.py` | loss | 1 | 0.25 | 0.3 | 1.20x |" in text   # 0.3 against 0.25
    panel = saved["examples.png"].axes[0]
    (square,) = [c for c in panel.collections if c.get_label() == "means of plain training at another lr"]
    assert tuple(square.get_offsets()[0]) == pytest.approx((1.01, 1.25))
    es._plots.pyplot().close(saved["examples.png"])


def test_constant_weights_alone_are_summarized_without_autoweight_runs(tmp_path):
    rows = [_row("ode_demo", "plain", 0, 0.2, 100), _row("ode_demo", "weight@0.1", 0, 0.4, 50)]
    es._harness.write_csv(rows, tmp_path / "runs.csv")
    assert es.summarize(tmp_path) == []
    text = (tmp_path / "summary.md").read_text()
    assert "No AutoWeight() run is paired with a plain one yet." in text
    assert "| `ode_demo.py` | weight 0.1 | loss | 1 | 0.2 | 0.4 | 2.00x |" in text
    assert not (tmp_path / "examples.png").exists()   # its panels are AutoWeight()'s


def test_bad_arguments_are_refused_by_name():
    for argv, name in ((["--jobs", "0"], "--jobs"), (["--threads", "0"], "--threads"), (["--seeds", "-1"], "--seeds"),
                       (["--weights", "0"], "--weights"), (["--weights", "nan"], "--weights"),
                       (["--runs_only"], "--runs_only"), (["--plain_lrs", "-1", "--examples", "cnf"], "--plain_lrs"),
                       (["--plain_lrs", "0.01"], "--plain_lrs"), (["--plain_lrs", "0.01", "--examples", "cnf",
                                                                   "latent_ode"], "--plain_lrs")):
        with pytest.raises(ValueError, match=name):
            es.check_args(es.build_parser().parse_args(argv))
    with pytest.raises(SystemExit):
        es.build_parser().parse_args(["--examples", "nope"])


def test_smoke_run_appends_rows_and_resumes(tmp_path):
    argv = ["--smoke", "--examples", "ode_demo", "--seeds", "0", "--out", str(tmp_path)]
    comparisons = es.main(argv)
    rows = es._harness.read_rows(tmp_path / "runs.csv")
    assert sorted(r["run"] for r in rows) == ["auto", "plain"]
    assert all(int(r["test_nfe"]) > 0 and math.isfinite(float(r["test_metric"])) for r in rows)
    assert {r["run"]: r["weight_control"] for r in rows} == {"plain": "none", "auto": "AutoWeight"}
    metric = {r["run"]: float(r["test_metric"]) for r in rows}
    assert comparisons[0]["change"] == pytest.approx(metric["auto"] / metric["plain"])
    assert (tmp_path / "examples.png").stat().st_size > 0 and "`ode_demo.py`" in (tmp_path / "summary.md").read_text()
    es.main(argv)  # nothing left to run: no row is added
    assert len(es._harness.read_rows(tmp_path / "runs.csv")) == 2
