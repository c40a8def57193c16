"""The documentation: every Python block of README.md and docs/*.md runs (or is marked not-run with
a reason), the README's links work on PyPI (absolute), the site builds in strict mode, and the
tools behind both do what they say."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
sys.path.insert(0, str(ROOT / "tools"))

import doc_snippets  # noqa: E402

REPO_URL = "https://github.com/torchdiffeq-localreg/torchdiffeq_localreg/blob/main/"
RAW_URL = "https://raw.githubusercontent.com/torchdiffeq-localreg/torchdiffeq_localreg/main/"


def run_snippets(files, workdir, *extra):
    return subprocess.run([sys.executable, "-I", str(ROOT / "tools" / "doc_snippets.py"), *map(str, files),
                           "--workdir", str(workdir), *extra], cwd=workdir, capture_output=True, text=True, timeout=900)


def test_every_python_block_runs_from_outside_the_repository(tmp_path):
    """Each ```python block of README.md and docs/*.md, run as a user would (an isolated interpreter
    whose working directory is outside the repository: the package comes from the environment)."""
    proc = run_snippets([ROOT / "README.md", *DOCS], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = re.search(r"snippets: (\d+) run, 0 failing, (\d+) not run", proc.stdout)
    assert ran, proc.stdout
    listed = proc.stdout.count(": ok (") + proc.stdout.count(": not run (")
    assert listed == sum(len(doc_snippets.blocks(p.read_text())) for p in [ROOT / "README.md", *DOCS])
    assert int(ran.group(1)) >= 10, proc.stdout
    code = "".join(p.read_text() for p in tmp_path.glob("snippet_*.py"))
    for name in ("odeint_reg", "odeint_adjoint_reg", "sdeint_reg", "regularize", "odeint_event_reg"):
        assert name in code, name


def test_marker_convention(tmp_path):
    """An unmarked block runs (and fails the check when it fails); a marked one is listed with its
    reason; a marker without a reason and a block that does not compile fail."""
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "# t", "```python", "x = 1", "print('first', x)", "```", "",
        "<!-- not-run: needs two processes -->", "```python", "raise RuntimeError('not run')", "```", "",
        "- a list item", "", "    ```python", "    import math", "    print(math.tau > 6)", "    ```", "",
    ]))
    proc = run_snippets([page], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "page.md:2: ok" in proc.stdout and "page.md:14: ok" in proc.stdout
    assert "page.md:8: not run (needs two processes)" in proc.stdout
    assert "snippets: 2 run, 0 failing, 1 not run" in proc.stdout

    for body, expected in ((["```python", "def f(:", "```"], "SyntaxError"),
                           (["```python", "raise ValueError('boom')", "```"], "ValueError: boom"),
                           (["<!-- not-run: -->", "```python", "x = 1", "```"], "needs a reason")):
        page.write_text("\n".join(["# t", "```python", "y = 2", "```", *body, ""]))
        proc = run_snippets([page], tmp_path)
        assert proc.returncode == 1 and expected in proc.stdout, proc.stdout + proc.stderr
        assert "page.md:2: ok" in proc.stdout   # the other blocks still run


def test_no_block_at_all_fails(tmp_path):
    page = tmp_path / "empty.md"
    page.write_text("# nothing\n\n```bash\necho hi\n```\n")
    proc = run_snippets([page], tmp_path)
    assert proc.returncode == 1 and "snippets: 0 run" in proc.stdout


LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)[^)]*\)|^\s*\[[^\]]+\]:\s*(\S+)|<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"",
                  re.M)


def readme_links():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)   # code is not a link
    return [next(g for g in m.groups() if g) for m in LINK.finditer(text)]


def test_readme_links_are_absolute():
    """PyPI shows README.md as the project description, where a relative link or image is broken."""
    links = readme_links()
    assert len(links) >= 5
    relative = [link for link in links if not link.startswith(("https://", "http://", "mailto:"))]
    assert not relative, relative


def test_readme_links_to_this_repository_name_existing_files():
    """Absolute links into this repository point to files that exist (on the main branch, once pushed)."""
    for link in readme_links():
        for prefix in (REPO_URL, RAW_URL):
            if link.startswith(prefix):
                path = link[len(prefix):].split("#", 1)[0]
                assert (ROOT / path).exists(), link


def test_readme_fits_two_screens():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 160


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is in the [docs] extra")
def test_site_builds_in_strict_mode(tmp_path):
    """`mkdocs build --strict`: a warning (a broken link or anchor, a page outside the nav, a
    docstring the API reference cannot render) fails the build. No network is needed."""
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    import torchdiffeq_localreg
    for name in torchdiffeq_localreg.__all__:
        assert f'id="torchdiffeq_localreg.{name}"' in api, name
    bench = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    images = re.findall(r'<img[^>]+src="([^"]+)"', bench)
    assert images and all((site / "benchmarks" / src).resolve().is_file() for src in images), images
    assert "Keep a Changelog" in (site / "changelog" / "index.html").read_text(encoding="utf-8")


def test_rst_markup_becomes_markdown():
    pytest.importorskip("griffe", reason="griffe comes with mkdocstrings, in the [docs] extra")
    import griffe_rst

    text = "\n".join(["Use :func:`odeint_reg` with ``strategy=\"none\"``, :class:`~pkg.NFEBudget`::", "",
                      "    x = odeint_reg(f, y0, t)", "        indented()", "", "Then:", "", ".. math::", "",
                      "    a = b", "", "After."])
    assert griffe_rst.rst_to_markdown(text).split("\n") == [
        'Use `odeint_reg` with `strategy="none"`, `NFEBudget`:', "", "```python", "x = odeint_reg(f, y0, t)",
        "    indented()", "```", "", "Then:", "", "```text", "a = b", "```", "", "After."]


def _markdown_table(text: str, header: str) -> str:
    """The markdown table of ``text`` whose header row starts with ``header``: its rows, joined."""
    lines = text.splitlines()
    start = next((k for k, line in enumerate(lines) if line.startswith(header)), None)
    assert start is not None, header
    end = next((k for k in range(start, len(lines)) if not lines[k].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


BOTH = ("benchmarks/README.md", "docs/choosing-the-strength.md")


@pytest.mark.parametrize("header, docs, rows", [
    ("| problem | run | seeds | vanilla | AutoWeight() |", BOTH, 12),  # one row per cell
    ("| problem | run | weight 1e-4 against vanilla |", ("benchmarks/README.md",), 12),
    ("| problem | run | criterion | AutoWeight() |", BOTH, 1)])  # one row per missed criterion
def test_the_protocols_tables_in_the_docs_are_the_committed_summarys(header, docs, rows):
    """The weight-control protocol's tables, copied into the documentation, equal those that
    ``benchmarks/weight_control.py --summarize`` last wrote (results/weight_control/summary.md)."""
    summary = _markdown_table((ROOT / "benchmarks/results/weight_control/summary.md").read_text(), header)
    assert summary.count("\n") >= rows + 1  # a header, its rule and the rows
    for doc in docs:
        assert _markdown_table((ROOT / doc).read_text(), header) == summary, doc
