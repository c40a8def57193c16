"""Run the Python code blocks of Markdown files (README.md, docs/*.md) as a user would.

Every ```python (or ```py) block runs, unless the line just before its opening fence is

    <!-- not-run: REASON -->

with a reason that says why (a sketch with ``...``, a multi-process command, a download). A block
that neither runs nor is marked fails the check, and so does a marker without a reason, so a block
can stop running only on purpose. Blocks indented inside a list count too.

All blocks run in one fresh interpreter (``python -I``: isolated mode ignores PYTHONPATH and the
user site, so the package comes from the environment's site-packages; one interpreter, so torch is
imported once), from the working directory given, one after another, each in a namespace of its
own as if it were a script (``__name__ == "__main__"``), with ``MPLBACKEND=Agg``.

Usage: python tools/doc_snippets.py FILE... --workdir DIR [--outside REPO] [--timeout S]
  --outside REPO  also fail if ``torchdiffeq_localreg`` is imported from inside REPO (for a check
                  of an installed wheel, where an import from the source tree would hide a broken
                  wheel).
Prints one line per block (``FILE:LINE: ok (SECONDS s)``, ``FAILED`` with the traceback, or
``not run (REASON)``) and a summary ``snippets: N run, F failing, M not run``. Exits 1 if a block fails, if a
marker has no reason, if no block ran at all, or if the --outside check fails.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>python|py)[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"^\s*<!--\s*not-run:(?P<reason>.*?)-->\s*$")


class Block(NamedTuple):
    line: int                 # line of the opening fence, 1-based
    code: str
    not_run: Optional[str]    # the marker's reason; None for a block that runs


def blocks(text: str) -> List[Block]:
    """Every ```python block of a Markdown text, dedented, with the reason of its not-run marker."""
    found = []
    lines = text.split("\n")
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        indent = len(match.group("indent"))
        code = "\n".join(row[indent:] if row[:indent].strip() == "" else row
                         for row in match.group("code").split("\n"))
        marker = MARKER.match(lines[line - 2]) if line >= 2 else None
        found.append(Block(line, code, marker.group("reason").strip() if marker else None))
    return found


# Runs in the snippets' interpreter: each block from its own file (tracebacks show its lines), in a
# namespace of its own; one JSON line per block on stdout after the block's own output.
RUNNER = r"""
import json, sys, time, traceback
for path in json.load(open(sys.argv[1])):
    namespace = {"__name__": "__main__", "__file__": path}
    start = time.perf_counter()
    try:
        exec(compile(open(path).read(), path, "exec"), namespace)
        status = None
    except SystemExit as exit:
        status = None if exit.code in (None, 0) else f"SystemExit({exit.code!r})"
    except BaseException:
        status = traceback.format_exc()
    sys.stdout.flush()
    print("\n@@snippet@@" + json.dumps({"path": path, "error": status, "seconds": time.perf_counter() - start}),
          flush=True)
"""


def run_files(files: List[Path], workdir: Path, timeout: float) -> tuple:
    """Runs the blocks of the files, all in one interpreter; returns (ran, failing, not_run, messages)."""
    messages, failing, not_run = [], 0, 0
    paths = {}
    for markdown in files:
        for block in blocks(markdown.read_text(encoding="utf-8")):
            where = f"{markdown}:{block.line}"
            if block.not_run is not None:
                if block.not_run:
                    messages.append(f"{where}: not run ({block.not_run})")
                    not_run += 1
                else:
                    messages.append(f"{where}: FAILED: a not-run marker needs a reason")
                    failing += 1
                continue
            path = workdir / f"snippet_{markdown.parent.name}_{markdown.stem}_line{block.line}.py"
            path.write_text(block.code, encoding="utf-8")
            paths[str(path)] = where
    if not paths:
        return 0, failing, not_run, messages
    listing = workdir / "snippets.json"
    listing.write_text(json.dumps(list(paths)))
    proc = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(listing)], cwd=workdir, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "MPLBACKEND": "Agg"})
    reported = {}
    for chunk in proc.stdout.split("\n@@snippet@@")[1:]:
        result = json.loads(chunk.split("\n", 1)[0])
        reported[result["path"]] = result
    for path, where in paths.items():
        result = reported.get(path)
        if result is None:
            failing += 1
            messages.append(f"{where}: FAILED: the interpreter stopped before this block finished "
                            f"(exit {proc.returncode}):\n{proc.stderr}")
        elif result["error"] is None:
            messages.append(f"{where}: ok ({result['seconds']:.1f} s)")
        else:
            failing += 1
            messages.append(f"{where}: FAILED\n{result['error']}")
    return len(paths), failing, not_run, messages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--outside", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for all blocks together")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    if not workdir.is_dir():
        parser.error(f"--workdir {workdir} is not a directory")

    if args.outside is not None:
        out = subprocess.run([sys.executable, "-I", "-c", "import torchdiffeq_localreg; print(torchdiffeq_localreg.__file__)"],
                             cwd=workdir, capture_output=True, text=True, timeout=args.timeout)
        if out.returncode != 0:
            print(f"cannot import torchdiffeq_localreg from {workdir}:\n{out.stderr}", file=sys.stderr)
            return 1
        where = Path(out.stdout.strip()).resolve()
        if args.outside.resolve() in where.parents:
            print(f"torchdiffeq_localreg was imported from {where}, inside {args.outside}", file=sys.stderr)
            return 1
        print(f"torchdiffeq_localreg imported from {where}")

    ran, failing, not_run, messages = run_files(args.files, workdir, args.timeout)
    for message in messages:
        print(message)
    print(f"snippets: {ran} run, {failing} failing, {not_run} not run")
    if ran == 0:
        print("no runnable ```python block in " + ", ".join(map(str, args.files)), file=sys.stderr)
        return 1
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
