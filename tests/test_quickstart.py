"""The README's main job runs and reports both models."""
import importlib.util
import math
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_smoke(capsys):
    spec = importlib.util.spec_from_file_location("quickstart", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--smoke"])
    out = capsys.readouterr().out
    assert [r[0].split(" ")[0] for r in rows] == ["plain", "odeint_reg"]
    for name, test_loss, nfe, pred_time, train_time in rows:
        assert math.isfinite(test_loss) and nfe > 0 and pred_time > 0 and train_time > 0
    assert "prediction NFE" in out and "NFE ratio" in out
