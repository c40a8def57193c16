"""The weight-control protocol: every problem and run length through the experiment scripts,
resumption, and the acceptance table (criteria (a) and (b) of issue 19) on synthetic rows."""
import math
from pathlib import Path

import pytest

from problems import import_isolated, write_random_mnist

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
M = import_isolated(BENCH, ("_harness", "_plots", "_train", "_regularizers", "_sde", "mnist_data", "quickstart",
                            "rings", "mnist_node", "mnist_sde", "latent_ode_spirals", "spiral_sde", "lotka_volterra",
                            "weight_control"))
wc = M["weight_control"]
_harness = M["_harness"]


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    return write_random_mnist(tmp_path_factory.mktemp("mnist"), M["mnist_data"])


def test_smoke_every_problem(mnist_root, tmp_path):
    verdicts = wc.main(["--smoke", "--out", str(tmp_path), "--data_root", mnist_root, "--methods", "vanilla", "auto",
                        "--lengths", "short"])
    assert [(v["problem"], v["length"]) for v in verdicts] == [(p, "200 steps") for p in wc.PROBLEMS]
    for problem in wc.PROBLEMS:
        runs = wc._harness.read_rows(wc.folder(tmp_path, problem, "short") / "runs.csv")
        assert [r["method"] for r in runs] == ["vanilla", "auto"], problem
        assert all(int(r["test_nfe"]) > 0 and math.isfinite(float(r["test_metric"])) for r in runs)
    assert (tmp_path / "pareto_short.png").stat().st_size > 0


def test_smoke_both_lengths_every_method_then_resume(tmp_path):
    args = ["--smoke", "--out", str(tmp_path), "--problems", "rings", "--methods", "vanilla", "unbiased", "budget",
            "auto"]
    verdicts = wc.main(args)
    assert [(v["problem"], v["length"]) for v in verdicts] == [("rings", "realistic"), ("rings", "200 steps")]
    rows = {}
    for length in wc.LENGTHS:
        runs = wc._harness.read_rows(wc.folder(tmp_path, "rings", length) / "runs.csv")
        assert [r["method"] for r in runs] == ["vanilla", "unbiased", "budget", "auto"], length
        assert float(runs[1]["weight"]) == wc.SWEEPS["rings"][-1]
        assert int(runs[0]["niters"]) == (3 if length == "realistic" else 2)
        rows[length] = runs
    for name in ("summary.md", "summary.csv", "pareto.png", "pareto_short.png", "task_loss.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "| AutoWeight() | 1 |" in (tmp_path / "task_loss.md").read_text()
    assert f"| {wc.TITLES['rings']} | realistic |" in (tmp_path / "summary.md").read_text()
    assert not (tmp_path / "pareto_candidates.png").exists()  # only the protocol's methods ran
    wc.main(args)  # a second run trains nothing and adds no rows
    for length, runs in rows.items():
        assert wc._harness.read_rows(wc.folder(tmp_path, "rings", length) / "runs.csv") == runs


def test_commands_follow_the_protocol(tmp_path):
    args = wc.build_parser().parse_args([])
    argv = wc.command("latent_ode", "short", args, tmp_path)
    assert argv[argv.index("--seeds") + 1:argv.index("--reg_weights")] == ["0", "1", "2", "3", "4"]
    assert argv[argv.index("--niters") + 1] == "200"
    assert argv[argv.index("--out") + 1] == str(tmp_path / "latent_ode_short")
    weights = [float(w) for w in argv[argv.index("--reg_weights") + 1:argv.index("--niters")]]
    assert len(weights) >= 4 and max(weights) / min(weights) >= 100  # two decades
    realistic = wc.command("mnist_node", "realistic", args, tmp_path)
    assert "--niters" not in realistic and realistic[realistic.index("--seeds") + 1:][:4] == ["0", "1", "2", "--reg_weights"]
    for problem in wc.PROBLEMS:
        assert len(wc.SWEEPS[problem]) >= 4 and max(wc.SWEEPS[problem]) / min(wc.SWEEPS[problem]) >= 100


def _rows(spec):
    """Synthetic runs.csv rows: {label: [(metric, nfe) per seed]}."""
    rows = []
    for label, values in spec.items():
        method, _, weight = label.partition("@")
        for seed, (metric, nfe) in enumerate(values):
            rows.append({"method": method, "weight": weight or "0.0", "seed": str(seed), "test_metric": str(metric),
                         "test_nfe": str(nfe), "metric_name": "mse"})
    return rows


def test_judge_applies_criteria_a_and_b():
    rows = _rows({"vanilla": [(1.0, 60), (2.0, 80)],
                  "unbiased@0.1": [(1.5, 50), (1.6, 60)],     # mean 1.55 <= 1.65: meets (a), NFE 55
                  "unbiased@1": [(2.0, 20), (1.5, 20)],       # mean 1.75 > 1.65: fails (a)
                  "unbiased@0.03": [(1.4, 62), (1.5, 62)],    # meets (a), NFE 62
                  "auto@0.1": [(1.6, 58), (1.6, 62)]})        # mean 1.6: (a); NFE 60 <= 55 + 6: (b)
    v = wc.judge("latent_ode", rows, "auto@0.1")
    assert v["best_constant"] == "unbiased@0.1" and v["best_constant_nfe"] == 55
    assert v["auto_a"] and v["auto_b"] and v["classifier_ok"] is None
    assert v["auto_nfe_ratio"] == pytest.approx(60 / 70)
    rows = [r for r in rows if r["method"] != "auto"] + _rows({"auto@0.1": [(1.6, 62), (1.6, 68)]})
    assert not wc.judge("latent_ode", rows, "auto@0.1")["auto_b"]  # 65 > 61
    rows = [r for r in rows if r["method"] != "auto"] + _rows({"auto@0.1": [(1.7, 20), (1.7, 20)]})
    assert not wc.judge("latent_ode", rows, "auto@0.1")["auto_a"]  # 1.7 > 1.65


def test_a_run_appended_twice_counts_as_one_seed():
    rows = _rows({"vanilla": [(0.9193, 38), (0.9174, 38), (0.9126, 38)],
                  "budget@0.6": [(0.9143, 26), (0.9173, 26), (0.9153, 26)],
                  "auto@0.3": [(0.92, 26), (0.92, 26), (0.92, 26)]})
    twice = rows + [dict(r) for r in rows if r["method"] == "budget" and r["seed"] in ("1", "2")]
    entry = wc.judge("mnist_node", twice, "auto@0.3")["table"]["budget@0.6"]
    assert entry["seeds"] == 3 and entry["worse"] == 2            # seeds 0 and 1, not 3 of 5 rows
    assert entry["metric_ratio"] == pytest.approx((0.9143 + 0.9173 + 0.9153 - 0.9193 - 0.9174 - 0.9126) / 3)
    assert entry == wc.judge("mnist_node", rows, "auto@0.3")["table"]["budget@0.6"]
    timed = [{**r, "pred_time": "1.0", "train_time": "1.0"} for r in twice]
    summary = {s["method"]: s for s in _harness.summarize_runs(timed)}
    assert summary["budget"]["seeds"] == 3
    assert summary["budget"]["metric_change"] == pytest.approx(entry["metric_ratio"])


def test_paired_change_is_what_both_tables_print():
    c = wc.paired_change("error", [2.0, 1.0], [1.0, 1.0], [30.0, 50.0], [60.0, 60.0])
    assert c["change"] == pytest.approx(1.5) and c["typical"] == pytest.approx(2 ** 0.5) and c["worse"] == 1
    assert not c["a"] and c["nfe_ratio"] == pytest.approx(40 / 60) and c["vanilla_nfe"] == 60.0
    assert c["interval"][0] <= 1.5 <= c["interval"][1]
    c = wc.paired_change("accuracy", [0.95, 0.97], [0.96, 0.96], [26.0, 26.0], [44.0, 44.0])
    assert c["change"] == pytest.approx(0.0) and c["a"] and c["worse"] == 1
    with pytest.raises(ValueError, match="paired"):
        wc.paired_change("error", [1.0], [1.0, 2.0], [1.0], [1.0])


def test_judge_accuracy_and_the_classifier_bound():
    rows = _rows({"vanilla": [(0.960, 44), (0.962, 44)], "unbiased@0.1": [(0.962, 26), (0.960, 26)],
                  "unbiased@1": [(0.950, 20), (0.949, 20)], "auto@0.1": [(0.9585, 32), (0.9595, 26)]})
    v = wc.judge("mnist_node", rows, "auto@0.1")
    assert v["auto_a"]  # -0.25 points
    assert v["best_constant"] == "unbiased@0.1" and v["auto_b"]  # 29 <= 26 + 6
    assert v["classifier_ok"] is False  # 29 / 44 = 0.66 > 0.65
    assert wc.judge("mnist_node", [r for r in rows if r["method"] != "auto"], "auto@0.1") is None


def test_shortfall_table_names_each_missed_criterion_and_by_how_much():
    classifier = wc.judge("mnist_node", _rows({"vanilla": [(0.960, 44), (0.962, 44)],
                                               "unbiased@0.1": [(0.962, 26), (0.960, 26)],
                                               "auto@0.1": [(0.9585, 32), (0.9595, 26)]}), "auto@0.1")
    fits = {"vanilla": [(1.0, 60), (2.0, 80)], "unbiased@0.1": [(1.5, 50), (1.6, 60)]}
    too_dear = wc.judge("latent_ode", _rows({**fits, "auto@0.1": [(1.6, 62), (1.6, 68)]}), "auto@0.1")
    too_rough = wc.judge("latent_ode", _rows({**fits, "auto@0.1": [(1.7, 20), (1.7, 20)]}), "auto@0.1")
    met = wc.judge("latent_ode", _rows({**fits, "auto@0.1": [(1.6, 58), (1.6, 62)]}), "auto@0.1")
    less_accurate = wc.judge("mnist_node", _rows({"vanilla": [(0.960, 44), (0.962, 44)],
                                                  "unbiased@0.1": [(0.962, 26), (0.960, 26)],
                                                  "auto@0.1": [(0.957, 26), (0.957, 26)]}), "auto@0.1")
    for v, length in ((classifier, "realistic"), (too_dear, "realistic"), (too_rough, "200 steps"), (met, "x"),
                      (less_accurate, "200 steps")):
        v["length"] = length
    lines = wc.shortfall_markdown([classifier, too_dear, too_rough, met, less_accurate]).splitlines()
    assert lines[0] == ("(a) holds on 3 of 5 cells, (b) on 4 of 5, and the 0.65x mark on 1 of the 2 "
                        "classifier cells.")
    assert lines[4:] == [
        "| MNIST neural ODE | realistic | NFE <= 0.65x vanilla's | 0.66x (NFE 29.0) | 0.65x (NFE 28.6) | "
        "0.4 evaluations |",
        "| latent ODE, irregular spirals | realistic | (b) | NFE 65.0 | NFE 61.0 (weight 0.1's 55.0 + 6) | "
        "4.0 evaluations |",
        "| latent ODE, irregular spirals | 200 steps | (a) | 1.13x | 1.10x | 0.03 of vanilla's error |",
        "| MNIST neural ODE | 200 steps | (a) | -0.40 pt | -0.30 pt | 0.10 points |"]
    no_constant = wc.judge("latent_ode", _rows({"vanilla": [(1.0, 60), (2.0, 80)],
                                                "unbiased@1": [(2.0, 20), (1.5, 20)],  # fails (a)
                                                "auto@0.1": [(1.5, 80), (1.5, 80)]}), "auto@0.1")
    no_constant["length"] = "realistic"
    # (b)'s bound is then vanilla's NFE plus one step
    assert wc.shortfall_markdown([no_constant]).splitlines()[-1] == (
        "| latent ODE, irregular spirals | realistic | (b) | NFE 80.0 | NFE 76.0 (vanilla's 70.0 + 6) | "
        "4.0 evaluations |")
    assert wc.shortfall_markdown([met]) == ("(a) holds on 1 of 1 cells, (b) on 1 of 1, and the 0.65x mark on 0 of "
                                            "the 0 classifier cells.\n")


def test_paired_interval_brackets_the_change_and_widens_with_the_spread():
    # Identical ratios on every seed: every resample gives that ratio.
    assert wc.paired_interval("error", [0.2, 0.4, 0.6], [0.1, 0.2, 0.3]) == pytest.approx((2.0, 2.0))
    # Paired: a method that halves vanilla's error on each seed keeps ratio 0.5 whatever vanilla's spread.
    assert wc.paired_interval("error", [0.005, 0.5, 0.05], [0.01, 1.0, 0.1]) == pytest.approx((0.5, 0.5))
    low, high = wc.paired_interval("error", [0.01, 0.5, 0.05, 0.2], [0.1, 0.1, 0.1, 0.1])
    assert 0.01 / 0.1 <= low < 1.9 < high <= 0.5 / 0.1  # brackets the ratio of means, 0.19 / 0.1
    narrow = wc.paired_interval("error", [0.15, 0.2, 0.18, 0.23], [0.1, 0.1, 0.1, 0.1])  # the same mean, less spread
    assert low < narrow[0] < 1.9 < narrow[1] < high
    low, high = wc.paired_interval("accuracy", [0.95, 0.96, 0.97], [0.96, 0.96, 0.96])
    assert -0.01 <= low < 0.0 < high <= 0.01  # a difference of accuracies, not a ratio
    assert wc.paired_interval("error", [0.01, 0.5], [0.1, 0.1]) == wc.paired_interval("error", [0.01, 0.5], [0.1, 0.1])
    with pytest.raises(ValueError, match="paired"):
        wc.paired_interval("error", [0.1], [0.1, 0.2])


def test_summary_tables_show_the_interval(tmp_path):
    rows = _rows({"vanilla": [(1.0, 60), (2.0, 80), (1.5, 70)], "unbiased@0.1": [(1.0, 50), (2.0, 60), (1.5, 60)],
                  "auto@0.3": [(0.5, 40), (1.0, 50), (0.75, 45)]})
    wc.folder(tmp_path, "latent_ode", "realistic").mkdir()
    wc._harness.write_csv(rows, wc.folder(tmp_path, "latent_ode", "realistic") / "runs.csv")
    v, = wc.summarize(tmp_path, "auto@0.3")
    assert (v["auto_low"], v["auto_high"]) == pytest.approx((0.5, 0.5))
    text = (tmp_path / "summary.md").read_text()
    assert "| 0.50-0.50x | 0.50x, worse on 0/3 | 0.64 |" in text  # the acceptance row: interval, per seed, NFE ratio
    assert "| AutoWeight() | 3 | 0.75 | 0.50x | 0.50-0.50x | 0.50x, worse on 0/3 | 45.0 |" in text


def test_per_seed_change_is_robust_to_one_far_seed():
    # 10% better on 9 seeds, 20x worse on one: the ratio of the means is 2.8x, the typical seed 1.23x.
    bases = [1.0] * 10
    values = [0.9] * 9 + [20.0]
    assert sum(values) / sum(bases) == pytest.approx(2.81)
    typical, worse = wc.per_seed("error", values, bases)
    assert typical == pytest.approx(math.exp((9 * math.log(0.9) + math.log(20.0)) / 10)) and worse == 1
    typical, worse = wc.per_seed("error", [2.0, 0.5], [1.0, 1.0])
    assert typical == pytest.approx(1.0) and worse == 1   # doubled on one seed, halved on the other
    assert wc.per_seed("accuracy", [0.95, 0.97, 0.99], [0.96, 0.96, 0.96]) == (pytest.approx(0.01), 1)
    with pytest.raises(ValueError, match="paired"):
        wc.per_seed("error", [0.1], [0.1, 0.2])


def test_summary_plots_the_protocol_apart_from_the_candidates(tmp_path, monkeypatch):
    rows = _rows({"vanilla": [(1.0, 60)], "unbiased@0.1": [(1.0, 50)], "budget@0.6": [(1.2, 40)],
                  "auto@0.3": [(0.9, 45)], "auto_c@0.1": [(0.8, 55)], "auto_peak@0.3": [(0.7, 35)],
                  "auto_prev@0.1": [(0.95, 40)]})
    wc.folder(tmp_path, "latent_ode", "realistic").mkdir()
    wc._harness.write_csv(rows, wc.folder(tmp_path, "latent_ode", "realistic") / "runs.csv")
    drawn = {}
    monkeypatch.setattr(wc._plots, "pareto", lambda plotted, path, **kw: drawn.setdefault(Path(path).name, plotted))
    wc.summarize(tmp_path, "auto@0.3")
    assert sorted(drawn) == ["pareto.png", "pareto_candidates.png", "pareto_removed.png"]
    assert sorted(r["label"] for r in drawn["pareto.png"]) == ["auto@0.3", "budget@0.6", "unbiased@0.1", "vanilla"]
    assert len(drawn["pareto_candidates.png"]) == 5   # the protocol's four and auto_c, still in the code
    assert sorted(r["label"] for r in drawn["pareto_removed.png"]) == ["auto@0.3", "auto_peak@0.3", "auto_prev@0.1",
                                                                       "vanilla"]
    assert {r["problem"] for r in drawn["pareto.png"]} == {wc.TITLES["latent_ode"]}


def test_summary_plots_each_method_against_vanilla_on_its_own_seeds(tmp_path, monkeypatch):
    # vanilla ran on seeds 0-2, AutoWeight() on seed 0 only: its own mean (0.5) beside vanilla's mean over
    # three seeds (2.0) would read as a 4x cut; against vanilla on seed 0 it is 0.5x the error and NFE.
    rows = _rows({"vanilla": [(1.0, 60), (2.0, 80), (3.0, 100)], "auto@0.3": [(0.5, 30)]})
    wc.folder(tmp_path, "latent_ode", "realistic").mkdir()
    wc._harness.write_csv(rows, wc.folder(tmp_path, "latent_ode", "realistic") / "runs.csv")
    drawn = {}
    monkeypatch.setattr(wc._plots, "pareto", lambda plotted, path, **kw: drawn.setdefault(Path(path).name,
                                                                                         (plotted, kw)))
    wc.summarize(tmp_path, "auto@0.3")
    plotted, kw = drawn["pareto.png"]
    points = {r["label"]: (r["test_nfe_mean"], r["test_metric_mean"], r["metric_name"]) for r in plotted}
    assert points == {"vanilla": (pytest.approx(1.0), pytest.approx(1.0), "error ratio"),
                      "auto@0.3": (pytest.approx(0.5), pytest.approx(0.5), "error ratio")}
    assert "vanilla" in kw["xlabel"]


def test_summary_plots_accuracy_as_a_change_in_points(tmp_path, monkeypatch):
    rows = [dict(r, metric_name="accuracy") for r in _rows({"vanilla": [(0.9, 60), (0.8, 50)],
                                                             "auto@0.3": [(0.95, 30), (0.7, 20)]})]
    wc.folder(tmp_path, "rings", "realistic").mkdir()
    wc._harness.write_csv(rows, wc.folder(tmp_path, "rings", "realistic") / "runs.csv")
    drawn = {}
    monkeypatch.setattr(wc._plots, "pareto", lambda plotted, path, **kw: drawn.setdefault(Path(path).name, plotted))
    wc.summarize(tmp_path, "auto@0.3")
    auto, = [r for r in drawn["pareto.png"] if r["label"] == "auto@0.3"]
    assert auto["metric_name"] == "accuracy change"
    assert auto["test_metric_mean"] == pytest.approx(-0.025) and auto["test_nfe_mean"] == pytest.approx(50 / 110)
    label, scale = wc._plots.metric_axis("accuracy change")
    assert scale == 100.0 and "points" in label


def _write_with_and_without(out, rows, method):
    """The latent ODE's realistic folder under ``out`` with every row, the spiral SDE's without ``method``'s."""
    for problem in ("latent_ode", "spiral_sde"):
        wc.folder(out, problem, "realistic").mkdir()
        wc._harness.write_csv(rows if problem == "latent_ode" else [r for r in rows if r["method"] != method],
                              wc.folder(out, problem, "realistic") / "runs.csv")


def test_acceptance_table_shows_the_seed_noise_of_a_perturbation(tmp_path):
    # The weight 1e-4 (a perturbation of training) moved the error 1.5x on one seed: the acceptance row shows
    # its change and interval, next to AutoWeight()'s; a problem where it did not run says so.
    rows = _rows({"vanilla": [(1.0, 60), (2.0, 80)], "unbiased@0.0001": [(1.5, 60), (2.0, 80)],
                  "auto@0.3": [(1.0, 40), (2.0, 50)]})
    _write_with_and_without(tmp_path, rows, "unbiased")
    with_noise, without = wc.summarize(tmp_path, "auto@0.3")
    assert with_noise["noise_seeds"] == 2 and with_noise["noise_change"] == pytest.approx(3.5 / 3.0)
    assert with_noise["noise_low"] == pytest.approx(1.0) and with_noise["noise_high"] == pytest.approx(1.5)
    assert without["noise_seeds"] == 0 and math.isnan(without["noise_change"])
    text = (tmp_path / "summary.md").read_text()
    assert "| yes | 1.17x (1.00-1.50x), 2 seeds |" in text
    assert "| yes | not run |" in text


def test_noise_table_sets_the_learning_rate_reference_beside_the_weight_1e4(tmp_path):
    # vanilla_lr (vanilla at a learning rate 1e-6 larger) against vanilla, and AutoWeight() against it on the
    # seeds they share; a cell whose runs are missing says so.
    rows = _rows({"vanilla": [(1.0, 60), (2.0, 80)], "unbiased@0.0001": [(1.0, 60), (2.0, 80)],
                  "vanilla_lr@1e-06": [(2.0, 60), (2.0, 80)], "auto@0.3": [(1.0, 40), (3.0, 50)]})
    _write_with_and_without(tmp_path, rows, "vanilla_lr")
    with_lr, without = wc.summarize(tmp_path, "auto@0.3")
    assert wc.LR_NOISE == "vanilla_lr@1e-06"
    assert with_lr["lr_noise_seeds"] == 2 and with_lr["lr_noise_change"] == pytest.approx(4.0 / 3.0)
    assert with_lr["lr_noise_typical"] == pytest.approx(math.sqrt(2.0)) and with_lr["lr_noise_worse"] == 1
    assert with_lr["auto_vs_lr_change"] == pytest.approx(1.0) and with_lr["auto_vs_lr_worse"] == 1
    assert with_lr["auto_vs_lr_typical"] == pytest.approx(math.sqrt(0.5 * 1.5))
    assert with_lr["auto_change"] == pytest.approx(4.0 / 3.0)
    assert without["lr_noise_seeds"] == without["auto_vs_lr_seeds"] == 0 and math.isnan(without["lr_noise_change"])
    assert "vanilla_lr@1e-06" not in (with_lr["best_constant"], without["best_constant"])
    text = (tmp_path / "summary.md").read_text()
    assert ("| latent ODE, irregular spirals | realistic | 1.00x (1.00-1.00x); 1.00x, worse on 0/2 | "
            "1.33x (1.00-2.00x); 1.41x, worse on 1/2 | 1.33x (1.00-1.50x); 1.22x, worse on 1/2 | "
            "1.00x (0.50-1.50x); 0.87x, worse on 1/2 |") in text
    assert "| spiral SDE fit | realistic | 1.00x (1.00-1.00x); 1.00x, worse on 0/2 | not run |" in text
    assert "| vanilla, learning rate x(1 + 1e-06) (a noise reference) | 2 |" in text


def test_acceptance_table_shows_autoweights_own_noise(tmp_path):
    # AutoWeight() with its share 1e-6 larger (auto_eps at AutoWeight()'s share): its change against vanilla,
    # and how far it moved single seeds against AutoWeight() itself (here 0.5x and 2x); a problem where it did
    # not run says so.
    rows = _rows({"vanilla": [(1.0, 60), (2.0, 80)], "auto@0.3": [(2.0, 40), (1.0, 50)],
                  "auto_eps@0.3": [(1.0, 40), (2.0, 50)], "auto_eps@0.1": [(9.0, 40), (9.0, 50)]})
    _write_with_and_without(tmp_path, rows, "auto_eps")
    with_own, without = wc.summarize(tmp_path, "auto@0.3")
    assert with_own["own_seeds"] == 2 and with_own["own_change"] == pytest.approx(1.0)
    assert with_own["own_vs_auto_min"] == pytest.approx(0.5) and with_own["own_vs_auto_max"] == pytest.approx(2.0)
    assert without["own_seeds"] == 0 and math.isnan(without["own_change"])
    text = (tmp_path / "summary.md").read_text()
    assert with_own["own_nfe"] == pytest.approx(45.0)
    assert "| 1.00x (1.00-1.00x), NFE 45.0, 2 seeds; per seed 0.50-2.00x AutoWeight()'s |" in text
    assert "| not run | not run |" in text


def test_own_noise_of_an_accuracy_is_in_points():
    rows = _rows({"vanilla": [(0.90, 60), (0.92, 80)], "auto@0.3": [(0.91, 40), (0.92, 50)],
                  "auto_eps@0.3": [(0.90, 40), (0.93, 50)]})
    verdict = wc.judge("rings", rows, "auto@0.3")
    assert verdict["own_vs_auto_min"] == pytest.approx(-0.01) and verdict["own_vs_auto_max"] == pytest.approx(0.01)
    verdict["length"] = "realistic"
    assert "+0.50 pt (+0.00 to +1.00 pt), NFE 45.0, 2 seeds; per seed -1.00 to +1.00 pt AutoWeight()'s" in \
        wc.acceptance_markdown([verdict])


def test_the_perturbation_control_is_not_a_swept_constant():
    # The weight 1e-4 meets (a) and is cheaper than the constant 0.1: it still is no bound of (b), which only
    # the swept constants set.
    rows = _rows({"vanilla": [(1.0, 60), (2.0, 80)], "unbiased@0.0001": [(1.0, 50), (2.0, 50)],
                  "unbiased@0.1": [(1.0, 55), (2.0, 55)], "auto@0.3": [(1.0, 58), (2.0, 58)]})
    verdict = wc.judge("latent_ode", rows, "auto@0.3")
    assert verdict["table"]["unbiased@0.0001"]["a"] and verdict["noise_seeds"] == 2
    assert verdict["best_constant"] == "unbiased@0.1" and verdict["best_constant_nfe"] == pytest.approx(55.0)
    assert verdict["auto_b"]  # NFE 58 is within one step (6) of the constant 0.1's 55, not of the control's 50


def test_the_noise_reference_is_autoweight_with_both_shares_a_millionth_larger():
    train = M["_train"]
    share = train.AutoWeight.FRACTION
    auto, eps, cand = train.make_auto("auto", share), train.make_auto("auto_eps", share), train.make_auto("auto_c", 0.3)
    assert eps.FRACTION == pytest.approx(auto.FRACTION * (1 + 1e-6), rel=1e-12) and eps.FRACTION != auto.FRACTION
    assert eps.FRACTION_SDE == pytest.approx(auto.FRACTION_SDE * (1 + 1e-6), rel=1e-12)
    assert cand.FRACTION_SDE == 0.3  # the other candidates take one share for ODEs and SDEs alike
    with pytest.raises(ValueError, match="auto_eps runs AutoWeight"):
        train.make_auto("auto_eps", 0.1)
    # auto_cf at another share, and its own noise reference: that share a millionth larger, for ODEs and SDEs
    cf, cfeps = train.make_auto("auto_cf", 0.5), train.make_auto("auto_cfeps", 0.5)
    assert (cf.FRACTION, cf.FRACTION_SDE) == (0.5, 0.5)
    assert cfeps.FRACTION == cfeps.FRACTION_SDE == 0.5 * (1 + 1e-6) != cf.FRACTION


def _curve(label, seed, itr, loss, penalty, current_weight):
    method, _, weight = label.partition("@")
    return {"method": method, "weight": weight or "0.0", "seed": str(seed), "itr": str(itr), "loss": str(loss),
            "penalty": str(penalty), "current_weight": str(current_weight)}


def test_task_losses_remove_the_weighted_penalty_over_the_last_fifth():
    curves = [_curve("auto@0.3", 0, itr, 1.0 + 0.5 * 2.0 if itr > 8 else 9.0, 2.0, 0.5) for itr in range(1, 11)]
    curves += [_curve("vanilla", 0, itr, float(itr), 0.0, 0.0) for itr in range(1, 11)]
    curves.append(_curve("vanilla", 0, 10, 4.0, 0.0, 0.0))  # step 10 logged again (a rerun): the last counts
    losses = wc.task_losses(curves)
    assert losses["auto@0.3"] == {"0": pytest.approx(1.0)}  # steps 9 and 10: loss 2 less 0.5 x 2
    assert losses["vanilla"] == {"0": pytest.approx((9.0 + 4.0) / 2)}


def test_task_loss_table_pairs_seeds_with_vanilla():
    losses = {"vanilla": {"0": 1.0, "1": 2.0, "2": 4.0}, "auto@0.3": {"0": 2.0, "1": 1.0},
              "unbiased@3": {"0": -1.0, "1": 1.0}, "unbiased@0.1": {"5": 1.0}}
    text = wc.task_loss_markdown("a problem", losses, ["vanilla", "auto@0.3", "unbiased@3", "unbiased@0.1"])
    assert "| AutoWeight() | 2 | 1.5 | 1.5 | 1.00x, worse on 1/2 |" in text  # ratios 2 and 0.5 on seeds 0 and 1
    assert "| local, unbiased, weight 3 | 2 | 0 | 1.5 | n/a |" in text  # a negative loss has no ratio
    assert "weight 0.1" not in text  # no seed shared with vanilla
