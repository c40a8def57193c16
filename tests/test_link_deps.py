"""tools/link_deps.py, which CI's wheel check uses to expose the wheel's installed dependencies (and
nothing else) to a fresh environment instead of installing torch a second time."""
import importlib.util
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("link_deps", ROOT / "tools" / "link_deps.py")
link_deps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(link_deps)


def fake_wheel(tmp_path, requires):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    metadata = "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo-1.0.dist-info/METADATA", metadata)
        archive.writestr("demo/__init__.py", "")
    return wheel


def test_links_the_closure_of_the_requirements_and_nothing_else(tmp_path):
    wheel = fake_wheel(tmp_path, ["torchsde>=0.2", 'pytest; extra == "test"', 'nothing-at-all; python_version < "3"'])
    assert link_deps.main([str(wheel), str(tmp_path / "deps")]) == 0
    names = {p.name for p in (tmp_path / "deps").iterdir()}
    assert {"torchsde", "torch", "scipy", "numpy"} <= names  # torchsde and what it requires, transitively
    assert "pytest" not in names and "_pytest" not in names  # an extra's requirement is not taken
    assert any(n.startswith("torch-") and n.endswith(".dist-info") for n in names)  # pip check sees the metadata
    torch_link = tmp_path / "deps" / "torch"
    assert torch_link.is_symlink() and (torch_link / "__init__.py").is_file()


def test_a_requirement_that_is_not_installed_stops_it(tmp_path):
    wheel = fake_wheel(tmp_path, ["surely-not-installed-package-xyz"])
    with pytest.raises(SystemExit, match="surely-not-installed-package-xyz"):
        link_deps.main([str(wheel), str(tmp_path / "deps")])
