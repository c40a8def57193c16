"""Run the README's Python snippets as a user would: each in its own interpreter, from a working
directory outside the repository, importing the package from the installed environment.

Every ```python block that compiles is a snippet and is run; blocks that do not compile (signature
sketches such as the API section's) are listed as skipped. Each snippet runs as
``python -I snippet.py`` with the working directory given: isolated mode ignores PYTHONPATH and the
user site, so the package must come from the environment's own site-packages.

Usage: python tools/readme_snippets.py README.md --workdir DIR [--outside REPO] [--timeout S]
  --outside REPO  also fail if ``torchdiffeq_localreg`` is imported from inside REPO (for a check
                  of an installed wheel, where an import from the source tree would hide a broken
                  wheel).
Exits 1 if a snippet fails, if there is no snippet, or if the --outside check fails.
"""
import argparse
import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def snippets(readme: str) -> Tuple[List[Tuple[int, str]], List[int]]:
    """(line, code) of each runnable ```python block, and the lines of the blocks skipped."""
    runnable, skipped = [], []
    for match in FENCE.finditer(readme):
        line = readme.count("\n", 0, match.start()) + 1
        code = match.group(1)
        try:
            ast.parse(code)
        except SyntaxError:
            skipped.append(line)
            continue
        runnable.append((line, code))
    return runnable, skipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", type=Path)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--outside", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    if not workdir.is_dir():
        parser.error(f"--workdir {workdir} is not a directory")

    def run(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-I", str(path)], cwd=workdir, capture_output=True, text=True,
                              timeout=args.timeout, env={**os.environ, "MPLBACKEND": "Agg"})

    if args.outside is not None:
        probe = workdir / "_where.py"
        probe.write_text("import torchdiffeq_localreg\nprint(torchdiffeq_localreg.__file__)\n")
        out = run(probe)
        if out.returncode != 0:
            print(f"cannot import torchdiffeq_localreg from {workdir}:\n{out.stderr}", file=sys.stderr)
            return 1
        where = Path(out.stdout.strip()).resolve()
        if args.outside.resolve() in where.parents:
            print(f"torchdiffeq_localreg was imported from {where}, inside {args.outside}", file=sys.stderr)
            return 1
        print(f"torchdiffeq_localreg imported from {where}")

    runnable, skipped = snippets(args.readme.read_text(encoding="utf-8"))
    for line in skipped:
        print(f"{args.readme}:{line}: skipped (does not compile: a sketch, not a program)")
    if not runnable:
        print(f"{args.readme}: no runnable ```python snippet", file=sys.stderr)
        return 1
    failed = 0
    for line, code in runnable:
        path = workdir / f"readme_snippet_line{line}.py"
        path.write_text(code, encoding="utf-8")
        out = run(path)
        status = "ok" if out.returncode == 0 else f"FAILED (exit {out.returncode})"
        print(f"{args.readme}:{line}: {status}")
        if out.returncode != 0:
            failed += 1
            print(out.stdout + out.stderr, file=sys.stderr)
    print(f"README snippets: {len(runnable)} run, {failed} failing, {len(skipped)} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
