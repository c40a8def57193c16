"""_upstream: the one door to torchdiffeq's and torchsde's internals, checked at import."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torchdiffeq_localreg"
RANGE = "torchdiffeq>=0.2.4,<0.3 and torchsde>=0.2.6,<0.3"


def test_private_names_come_through_upstream_only():
    private = re.compile(r"^\s*(from|import)\s+(torchdiffeq\._impl|torchsde\._core|torchsde\.settings|torchsde\.types)",
                         re.MULTILINE)
    offenders = [p.name for p in PACKAGE.glob("*.py") if p.name != "_upstream.py" and private.search(p.read_text())]
    assert offenders == []
    assert private.search((PACKAGE / "_upstream.py").read_text())


def test_tested_range_matches_pyproject():
    from torchdiffeq_localreg._upstream import TESTED_RANGE
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    for requirement in TESTED_RANGE.split(" and "):
        assert f'"{requirement}"' in pyproject


# (module, class or None, attribute deleted, what the error must name)
MISSING = {
    "torchdiffeq-name": ("torchdiffeq._impl.misc", None, "_compute_error_ratio", "_compute_error_ratio"),
    "torchdiffeq-method": ("torchdiffeq._impl.rk_common", "RKAdaptiveStepsizeODESolver", "_interp_fit",
                           "RKAdaptiveStepsizeODESolver._interp_fit"),
    "torchsde-function": ("torchsde._core.misc", None, "assert_no_grad", "torchsde._core.misc.assert_no_grad"),
}

# One fresh interpreter for all cases (each costs an import of torch): every case deletes its name,
# imports the package as an installed torchdiffeq/torchsde outside the tested range would make it,
# then puts the name back and forgets every module of ours, so the next case imports afresh.
_IMPORT_EACH_WITHOUT = """
import importlib, json, sys
import torchdiffeq, torchsde
cases, results = json.loads(sys.argv[1]), {}
for case, (module, owner, attr, _) in cases.items():
    target = importlib.import_module(module)
    target = getattr(target, owner) if owner else target
    saved = getattr(target, attr)
    delattr(target, attr)
    try:
        import torchdiffeq_localreg
    except ImportError as error:
        results[case] = str(error)
    else:
        results[case] = "imported"
    finally:
        setattr(target, attr, saved)
        for name in [n for n in sys.modules if n.split(".")[0] == "torchdiffeq_localreg"]:
            del sys.modules[name]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def import_errors():
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH_WITHOUT, json.dumps(MISSING)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", MISSING)
def test_missing_internal_raises_import_error_naming_the_range(case, import_errors):
    """As an installed torchdiffeq/torchsde outside the tested range would: deleted before our import."""
    message = import_errors[case]
    assert RANGE in message and MISSING[case][3] in message, message
