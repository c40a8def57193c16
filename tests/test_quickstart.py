"""The README's main job runs, reports both models and writes the promised JSON."""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
KEYS = {"metric_name", "test_metric", "higher_is_better", "prediction_nfe", "prediction_time_s", "training_time_s"}


def load():
    spec = importlib.util.spec_from_file_location("quickstart", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_smoke_json(tmp_path, capsys):
    path = tmp_path / "sub" / "out.json"
    results = load().main(["--smoke", "--json", str(path)])
    out = capsys.readouterr().out
    written = json.loads(path.read_text())
    assert set(written) == {"plain", "regularized"}
    for name in ("plain", "regularized"):
        assert KEYS <= set(written[name])
        r = written[name]
        assert r["metric_name"] == "accuracy" and r["higher_is_better"] is True
        assert 0.0 <= r["test_metric"] <= 1.0
        assert isinstance(r["prediction_nfe"], int) and r["prediction_nfe"] > 0
        assert r["prediction_time_s"] > 0 and r["training_time_s"] > 0
    assert written == json.loads(json.dumps(results))
    # AutoWeight by default: no target to choose, a weight it set itself
    assert written["plain"]["weight_control"] == "none" and "final_weight" not in written["plain"]
    regularized = written["regularized"]
    assert regularized["weight_control"] == "AutoWeight" and "target_nfe" not in regularized
    assert math.isfinite(regularized["final_weight"]) and regularized["final_weight"] > 0
    assert "| odeint_reg + AutoWeight |" in out and "NFE ratio" in out and "target" not in out


def test_quickstart_target_nfe_trains_with_budget(tmp_path, capsys, monkeypatch):
    """--target_nfe N trains the regularized model with NFEBudget(target_nfe=N), through budget.backward."""
    from torchdiffeq_localreg import AutoWeight, NFEBudget

    calls = []
    for cls in (AutoWeight, NFEBudget):
        def backward(control, *args, real=cls.backward):
            calls.append(type(control).__name__)
            return real(control, *args)
        monkeypatch.setattr(cls, "backward", backward)
    results = load().main(["--smoke", "--target_nfe", "5"])
    out = capsys.readouterr().out
    assert calls == ["NFEBudget"] * 8   # one per step of --smoke's 8
    regularized = results["regularized"]
    assert regularized["weight_control"] == "NFEBudget" and regularized["target_nfe"] == 5
    assert regularized["final_weight"] > 0
    assert "| odeint_reg + NFEBudget (target 5) |" in out


def test_quickstart_viz_writes_png(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load().main(["--smoke", "--viz"])
    png = tmp_path / "runs" / "quickstart" / "quickstart_nfe.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]   # nothing else in the working directory


def test_quickstart_viz_out_dir(tmp_path):
    load().main(["--smoke", "--viz", "--target_nfe", "5", "--out_dir", str(tmp_path / "figs")])
    assert (tmp_path / "figs" / "quickstart_nfe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("label,target,expected", [
    ("odeint_reg + AutoWeight", None, ["plain odeint", "odeint_reg + AutoWeight"]),
    ("odeint_reg + NFEBudget (target 5)", 5.0,
     ["plain odeint", "odeint_reg + NFEBudget (target 5)", "NFEBudget target (5)"]),
])
def test_quickstart_figure_names_the_control(label, target, expected, tmp_path):
    """The figure's legend names the weight control; a target line only when NFEBudget has one."""
    curves = {"plain": [10, 12, 14], "regularized": [10, 9, 8]}
    assert load().save_nfe_plot(curves, tmp_path / "nfe.png", label, target) == expected
    assert (tmp_path / "nfe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quickstart_docstring_shows_auto_weight():
    from test_examples import check_docstring_diff

    check_docstring_diff(load().__doc__)
    assert "--target_ratio" not in EXAMPLE.read_text()


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path):
    """tqdm's convention (disable=None): a redirected run writes no bar; 157 KB of it before the fix."""
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--niters", "3", "--batch_size", "16", "--tol", "1e-3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "it/s" not in proc.stderr and "s/it" not in proc.stderr and "%|" not in proc.stderr, proc.stderr[:500]
    assert "NFE ratio" in proc.stdout
