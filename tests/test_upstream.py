"""_upstream: the one door to torchdiffeq's and torchsde's internals, checked at import."""
import re
import subprocess
import sys
import textwrap
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


@pytest.mark.parametrize("patch,missing", [
    ("import torchdiffeq._impl.misc as m; del m._compute_error_ratio", "_compute_error_ratio"),
    ("from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver as c; del c._interp_fit",
     "RKAdaptiveStepsizeODESolver._interp_fit"),
    ("import torchsde._core.misc as m; del m.assert_no_grad", "torchsde._core.misc.assert_no_grad"),
], ids=["torchdiffeq-name", "torchdiffeq-method", "torchsde-function"])
def test_missing_internal_raises_import_error_naming_the_range(patch, missing):
    """As an installed torchdiffeq/torchsde outside the tested range would: patched before our import."""
    code = textwrap.dedent(f"""
        {patch}
        try:
            import torchdiffeq_localreg
        except ImportError as error:
            print(error)
        else:
            raise SystemExit("imported")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert RANGE in result.stdout and missing in result.stdout, result.stdout
