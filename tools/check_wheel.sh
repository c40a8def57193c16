#!/usr/bin/env bash
# Check the wheel as a user gets it: build it (from the sdist, as `python -m build` does), install it
# with its dependencies into a fresh virtual environment outside the repository, and from a folder
# outside the repository run the Python blocks of README.md (then, with torchcde added, those of
# docs/*.md) and type-check the public API (tests/typing_cases.py) against the installed copy: mypy
# sees its types only through py.typed.
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

# A plain venv (no system site-packages) from the same base interpreter; pip resolves the
# dependencies as it would for a user.
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet "$wheel"
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
