#!/usr/bin/env bash
# Run the test suite at the dependency floors: a fresh virtual environment (in a temporary
# folder, removed afterwards) with the lowest torchdiffeq and torchsde that pyproject.toml admits,
# this package (editable) and its test extra, then `python -m pytest -q` from the repository.
#
# Usage: tools/check_floor.sh [--torch-floor] [pytest arguments...]
#   --torch-floor  pin torch to its floor as well (with numpy<2: torch before 2.3 was built
#                  against numpy 1; and setuptools<82: torch 2.0 imports pkg_resources, which
#                  setuptools 82 removed). Without it pip picks the newest torch in range: an old
#                  torch is a download of several GB, so by default only torchdiffeq and torchsde
#                  are pinned.
# Environment: PYTHON, the interpreter for the environment (default python3).
# Prints the pinned versions, what was installed, the date, the machine and pytest's summary;
# exits with pytest's status.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
torch_floor=0
if [[ "${1:-}" == "--torch-floor" ]]; then
    torch_floor=1
    shift
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# pyproject's lower bounds (">=X") become pins ("==X"); torch only with --torch-floor.
"$python" - "$repo/pyproject.toml" "$torch_floor" > "$tmp/floors.txt" <<'PY'
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
if block is None:
    sys.exit("check_floor: no `dependencies = [...]` list found in pyproject.toml")
for name, floor in re.findall(r'"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,"]*)', block.group(1)):
    if name == "torch" and sys.argv[2] != "1":
        continue
    print(f"{name}=={floor}")
    if name == "torch":
        print("numpy<2")
        # torch 2.0's torch.utils.cpp_extension (imported by torch.utils.benchmark) does
        # `from pkg_resources import packaging`; setuptools 82 removed pkg_resources.
        print("setuptools<82")
PY
echo "== floors (pip constraints)"
cat "$tmp/floors.txt"

"$python" -m venv "$tmp/venv"
venv_python="$tmp/venv/bin/python"
# torchsde 0.2.5's metadata is rejected by pip >= 24.1: check what a current pip can install.
"$venv_python" -m pip install --quiet --upgrade "pip>=24.1"
"$venv_python" -m pip install --quiet -c "$tmp/floors.txt" -e "$repo[test]"

echo "== installed"
"$venv_python" -m pip --version
"$venv_python" -m pip list 2>/dev/null | grep -iE '^(torch|torchdiffeq|torchsde|torchvision|numpy|scipy) '
echo "== date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "== machine: $(uname -sm), $(getconf _NPROCESSORS_ONLN) cores, $("$venv_python" -c 'import platform; print("Python", platform.python_version())')"
echo "== pytest"
cd "$repo"
"$venv_python" -m pytest -q "$@"
