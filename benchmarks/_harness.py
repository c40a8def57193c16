"""Plumbing shared by the benchmark scripts: machine report, timing, seed aggregation, tables, plots.

Every benchmark prints its settings and the machine it ran on, and writes its raw rows (one per
method and seed) and its summary (mean and spread over seeds, ratios to vanilla) as CSV and
markdown, plus PNG plots, under ``benchmarks/results/<name>/``.
"""
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# The examples' data module (MNIST with the offline fallback) is shared with the benchmarks.
if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))


def pyplot():
    """matplotlib's pyplot on the Agg backend (figures go to files; no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def machine_info() -> Dict[str, str]:
    """CPU model, cores, threads and library versions of this run."""
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
    }


def start_run(name: str, settings: Dict, paper_settings: Optional[Dict] = None, out_dir: Optional[str] = None) -> Path:
    """Prints the settings (beside the paper's) and the machine; creates and returns the results folder.

    The settings and machine are also saved as ``settings.json`` in that folder.
    """
    out = Path(out_dir) if out_dir else RESULTS / name
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    print(f"== benchmark {name} ==")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    if paper_settings:
        print("paper:    " + ", ".join(f"{k}={v}" for k, v in paper_settings.items()))
    print("machine:  " + ", ".join(f"{k}={v}" for k, v in machine.items()))
    with open(out / "settings.json", "w") as f:
        json.dump({"settings": settings, "paper_settings": paper_settings or {}, "machine": machine,
                   "command": " ".join(sys.argv)}, f, indent=2, default=str)
    return out


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def summarize(rows: Sequence[Dict], metrics: Sequence[str], group: str = "method",
              baseline: Optional[str] = "vanilla", ratios: Sequence[str] = ()) -> List[Dict]:
    """Mean and standard deviation of ``metrics`` over the rows of each ``group`` value (the seeds).

    For each metric in ``ratios``, adds ``<metric>_ratio``: the group's mean over the baseline
    group's mean (NaN when there is no baseline row).
    """
    groups: Dict[str, List[Dict]] = {}
    for row in rows:
        groups.setdefault(row[group], []).append(row)
    means = {g: {m: statistics.fmean(float(r[m]) for r in rs) for m in metrics} for g, rs in groups.items()}
    out = []
    for g, rs in groups.items():
        summary = {group: g, "seeds": len(rs)}
        for m in metrics:
            values = [float(r[m]) for r in rs]
            summary[f"{m}_mean"] = means[g][m]
            summary[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        for m in ratios:
            base = means.get(baseline, {}).get(m) if baseline else None
            summary[f"{m}_ratio"] = means[g][m] / base if base else float("nan")
        out.append(summary)
    return out


def write_results(out: Path, rows: Sequence[Dict], summary: Sequence[Dict], columns: Optional[Sequence[str]] = None,
                  title: str = "") -> str:
    """Writes ``runs.csv`` (raw rows), ``summary.csv`` and ``summary.md``; prints and returns the markdown."""
    write_csv(rows, out / "runs.csv")
    write_csv(summary, out / "summary.csv")
    table = markdown_table(summary, columns)
    text = (f"## {title}\n\n" if title else "") + table
    (out / "summary.md").write_text(text)
    print(text)
    return text


def pareto_plot(points: Sequence[Dict], x: str, y: str, path: Path, label: str = "method",
                xlabel: str = "", ylabel: str = "", title: str = "") -> Path:
    """Scatter of ``y`` against ``x`` (e.g. test accuracy against test NFE), one labelled point per row,
    with error bars from ``<x>_std`` / ``<y>_std`` when present."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for p in points:
        ax.errorbar(p[f"{x}_mean"], p[f"{y}_mean"], xerr=p.get(f"{x}_std", 0.0), yerr=p.get(f"{y}_std", 0.0),
                    fmt="o", capsize=3)
        ax.annotate(str(p[label]), (p[f"{x}_mean"], p[f"{y}_mean"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
