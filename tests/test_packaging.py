"""Packaging: one version, what the sdist and the wheel contain, and the typed API. (The README's and
the docs' code blocks: tests/test_docs.py.)"""
import importlib.util
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import torchdiffeq_localreg

ROOT = Path(__file__).resolve().parents[1]
VERSION = torchdiffeq_localreg.__version__


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:   # Python < 3.11
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomllib or tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_is_single_sourced():
    pyproject = _pyproject()
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "torchdiffeq_localreg.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    assert f"## [{VERSION}]" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The sdist and the wheel, built as ``python -m build`` does (the wheel from the sdist)."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the build frontend is not installed (it is in the [test] extra)")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: no download; the [test] extra provides setuptools>=77, which `build` checks.
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "Missing dependencies" in proc.stdout + proc.stderr:
        pytest.skip(f"the build backend is unavailable: {(proc.stdout + proc.stderr).strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    return sdist, wheel


def test_wheel_contents(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = f"torchdiffeq_localreg-{VERSION}.dist-info"
        metadata = zf.read(f"{dist_info}/METADATA").decode()
        license_text = zf.read(f"{dist_info}/licenses/LICENSE").decode()
    modules = {f"torchdiffeq_localreg/{p.name}" for p in (ROOT / "torchdiffeq_localreg").glob("*.py")}
    assert modules | {"torchdiffeq_localreg/py.typed"} <= names
    assert not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names)
    assert "MIT License" in license_text
    assert f"\nVersion: {VERSION}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    for requirement in ("torch<3,>=2.0", "torchdiffeq<0.3,>=0.2.4", "torchsde<0.3,>=0.2.6"):
        assert f"\nRequires-Dist: {requirement}\n" in metadata


def test_sdist_has_no_tests_and_the_license(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml", "CITATION.cff", "CHANGELOG.md",
            "torchdiffeq_localreg/py.typed"} <= names
    assert not any(n.startswith(("tests/", "examples/", "benchmarks/", "tools/")) for n in names)


def test_mypy_clean_and_api_typed():
    """mypy on the package and on tests/typing_cases.py (the return types each call gets, and wrong
    calls it must reject), with the configuration in pyproject.toml. mypy's own cache (.mypy_cache,
    which ignores itself in git) keeps repeated runs to seconds; a cold run takes about 20 s of CPU."""
    pytest.importorskip("mypy", reason="mypy is in the [test] extra")
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
