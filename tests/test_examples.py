"""The ODE example scripts (spiral demo, latent ODE, CNF) run their --smoke setting and keep their promises."""
import math

import pytest

from problems import load_example, read_csv

LOG_FIELDS = ["itr", "loss", "reg", "nfe_forward", "nfe_reg", "nfe_backward", "time"]

# name -> (output-directory flag, visualization flag, figures it writes)
SCRIPTS = {
    "ode_demo": ("--out_dir", "--viz", ("spiral.png", "nfe.png")),
    "latent_ode": ("--train_dir", "--visualize", ("vis.png", "nfe.png")),
    "cnf": ("--results_dir", "--viz", ("cnf.png", "nfe.png")),
}


def run(name, out_dir, *flags):
    dir_flag = SCRIPTS[name][0]
    return load_example(name).main(["--smoke", dir_flag, str(out_dir), *flags])


def check_log(result, out_dir):
    """The CSV log has the promised columns and one row per iteration, matching the returned rows."""
    fields, rows = read_csv(out_dir / "log.csv")
    assert fields == LOG_FIELDS
    niters = result["args"].niters
    assert [row["itr"] for row in rows] == list(range(1, niters + 1))
    assert len(result["rows"]) == niters
    for row, returned in zip(rows, result["rows"]):
        assert row["loss"] == pytest.approx(returned["loss"])
        assert math.isfinite(row["loss"]) and math.isfinite(row["reg"])
        assert row["nfe_forward"] > 0 and row["time"] > 0
    return rows


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Each example's default (unbiased) smoke run with figures, run once and shared."""
    cache = {}

    def get(name):
        if name not in cache:
            out_dir = tmp_path_factory.mktemp(name)
            cache[name] = (run(name, out_dir, SCRIPTS[name][1]), out_dir)
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_smoke_regularized_with_figures(name, smoke_runs):
    result, out_dir = smoke_runs(name)
    rows = check_log(result, out_dir)
    for row in rows:
        assert row["reg"] > 0
        assert row["nfe_reg"] > 0
        assert row["nfe_backward"] == 0  # direct backprop evaluates nothing again
    for figure in SCRIPTS[name][2]:
        path = out_dir / figure
        assert str(path) in result["figures"]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_reg_none_is_the_plain_solve(name, smoke_runs, tmp_path):
    result = run(name, tmp_path, "--reg", "none")
    rows = check_log(result, tmp_path)
    assert all(row["reg"] == 0 and row["nfe_reg"] == 0 for row in rows)
    assert not list(tmp_path.glob("*.png"))
    # Same seeds: the first iteration's solve and task loss are the regularized run's.
    regularized = smoke_runs(name)[0]["rows"]
    assert rows[0]["nfe_forward"] == regularized[0]["nfe_forward"]
    assert rows[0]["loss"] == pytest.approx(regularized[0]["loss"], rel=1e-6)
    # ... and + reg_weight * reg really entered the updates (Adam's first step is sign-like, so look at the last).
    assert rows[-1]["loss"] != regularized[-1]["loss"]


@pytest.mark.parametrize("name", ["ode_demo", "cnf"])
def test_adjoint_counts_backward_evaluations(name, tmp_path):
    rows = check_log(run(name, tmp_path, "--adjoint"), tmp_path)
    assert all(row["nfe_backward"] > 0 and row["reg"] > 0 for row in rows)


@pytest.mark.parametrize("strategy", ["biased", "global"])
def test_other_strategies(strategy, tmp_path):
    rows = check_log(run("ode_demo", tmp_path, "--reg", strategy), tmp_path)
    assert all(row["reg"] > 0 for row in rows)


def test_global_with_adjoint_is_refused(tmp_path):
    with pytest.raises(ValueError, match="global"):
        run("ode_demo", tmp_path, "--adjoint", "--reg", "global")


def test_ode_demo_logs_test_trajectory(smoke_runs):
    result, out_dir = smoke_runs("ode_demo")
    fields, rows = read_csv(out_dir / "test.csv")
    assert fields == ["itr", "test_loss", "test_nfe"]
    args = result["args"]
    assert [row["itr"] for row in rows] == list(range(args.test_freq, args.niters + 1, args.test_freq))
    assert all(math.isfinite(row["test_loss"]) and row["test_nfe"] > 0 for row in rows)


@pytest.mark.parametrize("name,metric", [("latent_ode", "test_mse"), ("cnf", "test_nll")])
def test_final_metrics(name, metric, smoke_runs):
    result = smoke_runs(name)[0]
    assert math.isfinite(result[metric]) and result["test_nfe"] > 0
