#!/usr/bin/env bash
# Check the wheel as a user gets it: build it (from the sdist, as `python -m build` does), install it
# into a fresh virtual environment outside the repository that sees its dependencies and no other
# package, and from a folder outside the repository run the Python blocks of README.md (then, with
# torchcde added, those of docs/*.md) and type-check the public API (tests/typing_cases.py) against
# the installed copy: mypy sees its types only through py.typed.
#
# Usage: tools/check_wheel.sh
# Environment: PYTHON, an interpreter with the [test] extra installed (build, mypy); default python.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! "$python" -m build --outdir "$tmp/dist" "$repo" > "$tmp/build.log" 2>&1; then
    cat "$tmp/build.log"
    exit 1
fi
wheel=$(ls "$tmp"/dist/*.whl)
echo "== built $(basename "$wheel") and $(basename "$(ls "$tmp"/dist/*.tar.gz)")"

# A plain venv (no system site-packages) from the same base interpreter. A second copy of torch
# would take about 6 GB of disk, so the wheel's installed dependencies (their closure, and nothing
# from the extras) are linked in from $python's environment instead (tools/link_deps.py), the
# wheel goes in without them, and pip check confirms that they satisfy its requirements.
"$python" -m venv "$tmp/venv"
site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$python" "$repo/tools/link_deps.py" "$wheel" "$tmp/deps"
echo "$tmp/deps" > "$site/wheel-deps.pth"
# The venv's bundled setuptools would shadow the linked one that torch requires.
"$tmp/venv/bin/python" -m pip uninstall --quiet --yes setuptools
"$tmp/venv/bin/python" -m pip install --quiet --no-deps "$wheel"
"$tmp/venv/bin/python" -m pip check
"$tmp/venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(torch|torchdiffeq|torchsde|torchdiffeq-localreg) '

mkdir "$tmp/work"
cd "$tmp/work"
echo "== Python blocks of README.md, from $tmp/work, with the wheel and its dependencies only"
"$tmp/venv/bin/python" -I "$repo/tools/doc_snippets.py" "$repo/README.md" --workdir . --outside "$repo"
echo "== Python blocks of docs/*.md, with torchcde added (the one-import page's torchcde example imports it)"
"$tmp/venv/bin/python" -m pip install --quiet "torchcde>=0.2.5"
"$tmp/venv/bin/python" -I "$repo/tools/doc_snippets.py" "$repo"/docs/*.md --workdir . --outside "$repo"
echo "== mypy on tests/typing_cases.py against the installed wheel"
"$python" -m mypy --python-executable "$tmp/venv/bin/python" --warn-unused-ignores --cache-dir "$tmp/mypy-cache" \
    "$repo/tests/typing_cases.py"
