"""Plumbing shared by the benchmark scripts: machine report, settings, timing, the results writer.

Every benchmark prints its settings beside the paper's and the machine it runs on, appends one row
per finished run to ``runs.csv`` (so that a rerun skips what is there), and writes its summary
(mean and spread over seeds, ratios to vanilla on the same seeds) as ``summary.csv`` and
``summary.md`` under ``benchmarks/results/<name>/``. Plots are in :mod:`_plots`.
"""
import argparse
import contextlib
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.benchmark import Timer

try:  # serialises appends of concurrent processes (--jobs); absent on Windows, where runs are sequential
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# The examples' data module (MNIST with the offline fallback) is shared with the benchmarks.
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))


def machine_info(device: str = "cpu") -> Dict[str, str]:
    """CPU model, cores, threads, GPU, library versions, and ``device`` when it is not the CPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torchdiffeq
    import torchsde
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchdiffeq": getattr(torchdiffeq, "__version__", "?"),
        "torchsde": getattr(torchsde, "__version__", "?"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        **({} if device == "cpu" else {"device": device}),
    }


def add_session_args(parser: argparse.ArgumentParser, *, out_help: str, data_root: str = "data") -> None:
    """The options of a benchmark that runs many trainings, each in its own process, into one results
    folder and summarizes it: ``--jobs``, ``--threads``, ``--data_root``, ``--out``, ``--summarize``
    and ``--smoke``."""
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each run's process")
    parser.add_argument("--data_root", type=str, default=data_root, help="MNIST folder (downloaded or built offline)")
    parser.add_argument("--out", type=str, default=None, help=out_help)
    parser.add_argument("--summarize", action="store_true", help="train nothing: write the tables and plots")
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds (used by the tests)")


def start_run(name: str, settings: Dict, paper_settings: Optional[Dict] = None, out_dir: Optional[str] = None,
              selection: Optional[Dict] = None, device: str = "cpu") -> Path:
    """Prints the settings (beside the paper's) and the machine; creates and returns the results folder.

    Without ``selection``, ``settings.json`` in that folder holds the settings, the paper's, the
    machine and the command. With ``selection`` (the runs this command asks for: a resumable
    benchmark), it holds the settings, the paper's, and one entry per command that wrote to the
    folder (command, ``selection``, machine, date, and ``finished``: null until :func:`finish_run`
    sets it, so that an entry still null names a command that was stopped or is running); a
    folder with runs under other ``settings`` is refused, as its rows would not be comparable.
    """
    out = Path(out_dir) if out_dir else RESULTS / name
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(device)
    print(f"== benchmark {name} ==")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    if paper_settings:
        print("paper:    " + ", ".join(f"{k}={v}" for k, v in paper_settings.items()))
    if selection:
        print("runs:     " + ", ".join(f"{k}={v}" for k, v in selection.items()))
    print("machine:  " + ", ".join(f"{k}={v}" for k, v in machine.items()))
    path = out / "settings.json"
    if selection is None:
        content = {"settings": settings, "paper_settings": paper_settings or {}, "machine": machine,
                   "command": " ".join(sys.argv)}
    else:
        settings = json.loads(json.dumps(settings, default=str))  # as it reads back from the file
        sessions = []
        if path.exists() and (out / "runs.csv").exists():
            old = json.loads(path.read_text())
            changed = sorted(k for k in set(old["settings"]) | set(settings)
                             if old["settings"].get(k) != settings.get(k))
            if changed:
                key = changed[0]
                raise ValueError(f"{out} holds runs with other settings ({key}: {old['settings'].get(key)!r} "
                                 f"there, {settings.get(key)!r} now); pass another --out or remove that folder.")
            sessions = old.get("sessions", [])
        sessions.append({"command": " ".join(sys.argv), "runs": selection, "machine": machine,
                         "date": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": os.getpid(), "finished": None})
        content = {"settings": settings, "paper_settings": paper_settings or {}, "sessions": sessions}
    path.write_text(json.dumps(content, indent=2, default=str) + ("" if selection is None else "\n"))
    return out


@contextlib.contextmanager
def folder_lock(out: Path) -> Iterator[Path]:
    """Holds ``out`` (a results folder, created if needed) for one command: a second command writing
    into the same folder at the same time would train the runs that neither has finished twice,
    append their rows twice, and rewrite ``settings.json`` under the first. It is refused instead,
    with the holder's pid, by an exclusive lock on ``out/.lock`` (released when the command ends,
    however it ends; not on Windows, where ``fcntl`` is absent).

    Raises:
        RuntimeError: another process holds ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield out
        return
    with open(out / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process"
            raise RuntimeError(f"{out} is in use by another benchmark command ({holder}): wait until it ends, "
                               f"or pass another --out.") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        try:
            yield out
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def finish_run(out: Path, rows_added: int) -> None:
    """Marks this process's entry of ``out/settings.json`` (written by :func:`start_run` with a
    selection) as finished: the date, and how many rows it added to runs.csv."""
    path = Path(out) / "settings.json"
    content = json.loads(path.read_text())
    # Entries older than finish_run have no "finished" key and are never this process's.
    mine = [s for s in content.get("sessions", []) if s.get("pid") == os.getpid() and "finished" in s
            and s["finished"] is None]
    if not mine:
        raise ValueError(f"{path} has no unfinished entry of this process (pid {os.getpid()}); start_run writes it.")
    mine[-1]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    mine[-1]["rows_added"] = rows_added
    path.write_text(json.dumps(content, indent=2, default=str) + "\n")


def time_prediction(fn: Callable[[], object], repeats: int) -> Tuple[float, float]:
    """Median and interquartile range (seconds) of ``repeats`` timed calls of ``fn()``, after one untimed call.

    Timed with ``torch.utils.benchmark.Timer``, which synchronises CUDA before reading the clock, so
    the times are those of the computation on any device, not of the kernel launches.
    """
    fn()
    times = [time_call(fn) for _ in range(repeats)]
    return statistics.median(times), iqr(times)


def time_call(fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn()``, timed with ``torch.utils.benchmark.Timer`` (CUDA-synchronised)."""
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).timeit(1).raw_times[0]


def significant(value: Any, digits: int = 6) -> Any:
    """A float rounded to ``digits`` significant digits (anything else as it is): what the curves
    store, since they only feed plots and a float32 loss printed in full takes 17 digits."""
    return float(f"{value:.{digits}g}") if isinstance(value, float) else value


def iqr(values: Sequence[float]) -> float:
    """Interquartile range (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def read_rows(path: Path) -> List[Dict]:
    """The rows of a CSV file (values as strings); none when it does not exist."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_rows(path: Path, rows: Iterable[Dict], fields: Sequence[str]) -> None:
    """Appends ``rows`` (the columns ``fields``) to a CSV file, writing the header if the file is new.

    Several processes may append to the same file (``--jobs``): the file is locked while written.
    """
    with open(path, "a", newline="") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            writer = csv.DictWriter(f, fieldnames=list(fields))
            if f.tell() == 0:
                writer.writeheader()
            writer.writerows({k: row[k] for k in fields} for row in rows)
            f.flush()
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def write_csv(rows: Sequence[Dict], path: Path) -> Path:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Dict], columns: Optional[Sequence[str]] = None) -> str:
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def first_per_seed(runs: Sequence[Dict]) -> List[Dict]:
    """``runs`` (of one method and weight) with each seed once, its first row: a run that was trained
    twice (two commands asking for it at once) counts as one seed, not two."""
    first: Dict[str, Dict] = {}
    for r in runs:
        first.setdefault(str(r["seed"]), r)
    return list(first.values())


def summarize_runs(rows: Sequence[Dict], group: Sequence[str] = ("method", "weight"),
                   means: Sequence[str] = ()) -> List[Dict]:
    """One summary row per value of the ``group`` columns of ``rows`` (the runs of ``runs.csv``), in
    order of appearance; each seed counts once (:func:`first_per_seed`).

    Columns: the group's, ``seeds``, ``metric_name``, mean and standard deviation of ``test_metric``
    and ``test_nfe``, the mean of each of ``means``, and against vanilla (method ``vanilla``) on the
    same seeds (paired, so that seeds run for some methods only do not tilt the comparison):
    ``nfe_ratio``, ``pred_time_ratio``, ``train_time_ratio`` (ratios of the means) and
    ``metric_change`` (difference of the means); NaN without vanilla rows on those seeds.
    """
    groups: Dict[Tuple, List[Dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in group), []).append(row)
    summary = []
    for key, runs in groups.items():
        runs = first_per_seed(runs)
        seeds = {str(r["seed"]) for r in runs}
        vanilla = first_per_seed([r for r in rows if r["method"] == "vanilla" and str(r["seed"]) in seeds])

        def mean(column, of=runs):
            return statistics.fmean(float(r[column]) for r in of)

        def std(column):
            return statistics.stdev(float(r[column]) for r in runs) if len(runs) > 1 else 0.0

        s = {**dict(zip(group, key)), "seeds": len(runs), "metric_name": runs[0]["metric_name"],
             "test_metric_mean": mean("test_metric"), "test_metric_std": std("test_metric"),
             "test_nfe_mean": mean("test_nfe"), "test_nfe_std": std("test_nfe")}
        for column in means:
            s[f"{column}_mean"] = mean(column)
        for column, name in (("test_nfe", "nfe_ratio"), ("pred_time", "pred_time_ratio"),
                             ("train_time", "train_time_ratio")):
            s[name] = mean(column) / mean(column, vanilla) if vanilla else float("nan")
        s["metric_change"] = mean("test_metric") - mean("test_metric", vanilla) if vanilla else float("nan")
        summary.append(s)
    return summary
