"""Plumbing shared by the example scripts (not part of the package).

What each example adds to its upstream original is kept in the example itself: the import, the
``*_reg`` call and ``+ reg_weight * reg`` in the loss. This module holds only the rest that every
example needs the same way: the regularization flags, a CSV log, a progress bar, NFE counting for
plain solves and the NFE-over-training figure.
"""
import argparse
import csv
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn as nn

REG_CHOICES = ("none", "unbiased", "biased", "global")


def add_reg_args(parser: argparse.ArgumentParser, reg_weight: float, stiffness_weight: float = 0.0,
                 default: str = "unbiased") -> argparse.ArgumentParser:
    """Adds ``--reg``, ``--reg_weight``, ``--stiffness_weight``, ``--seed``, ``--log`` and ``--smoke``."""
    group = parser.add_argument_group("local regularization (torchdiffeq_localreg)")
    group.add_argument("--reg", type=str, choices=REG_CHOICES, default=default,
                       help="where to regularize: the local strategies, the 2021 global baseline, or none")
    group.add_argument("--reg_weight", type=float, default=reg_weight, help="weight of reg in the loss")
    group.add_argument("--stiffness_weight", type=float, default=stiffness_weight,
                       help="weight of the stiffness estimate inside reg (0: error estimate only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=str, default=None, help="CSV log file (default: <out dir>/log.csv)")
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds (used by the tests)")
    return parser


def set_threads(n: int = 2) -> None:
    """Caps torch's CPU threads (the examples are sized for a 2-core machine)."""
    torch.set_num_threads(max(1, min(n, torch.get_num_threads())))


class CSVLog:
    """Appends one row per call of :meth:`write` to a CSV file (header first), and keeps the rows."""

    def __init__(self, path: str, fields: Sequence[str]):
        self.path, self.fields = path, list(fields)
        self.rows: List[Dict[str, float]] = []
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", newline="") as f:
            csv.writer(f).writerow(self.fields)

    def write(self, **row) -> None:
        missing = set(self.fields) - set(row)
        if missing:
            raise KeyError(f"CSVLog.write: missing fields {sorted(missing)}")
        self.rows.append(row)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row[k] for k in self.fields])


def progress(iterable: Iterable, total: Optional[int] = None, desc: Optional[str] = None, disable: bool = False):
    """A tqdm progress bar when tqdm is installed, else the iterable itself."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True)


class CountNFE(nn.Module):
    """Wraps a vector field and counts its evaluations (for plain ``torchdiffeq.odeint`` solves)."""

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func = func
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.func(t, y)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def pyplot():
    """matplotlib's pyplot on the Agg backend (figures go to files; no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_nfe(rows: Sequence[Dict[str, float]], path: str, x: str = "itr", title: str = "") -> str:
    """Draws forward and backward NFE (and reg NFE) over training from CSV-log rows; saves a PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [r[x] for r in rows]
    for key, label in (("nfe_forward", "forward NFE"), ("nfe_backward", "backward NFE"), ("nfe_reg", "reg NFE")):
        if rows and key in rows[0]:
            ax.plot(xs, [r[key] for r in rows], label=label)
    ax.set_xlabel(x)
    ax.set_ylabel("function evaluations")
    ax.set_title(title or "NFE over training")
    ax.legend()
    return save_figure(fig, path)


def save_figure(fig, path: str) -> str:
    """Lays out, saves (100 dpi) and closes a matplotlib figure; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def training_summary(rows: Sequence[Dict[str, float]]) -> str:
    """One line from CSV-log rows with ``nfe_forward`` and ``time`` columns: mean NFE and total time."""
    mean_nfe = sum(r["nfe_forward"] for r in rows) / max(1, len(rows))
    return f"mean training NFE {mean_nfe:.1f}, training time {sum(r['time'] for r in rows):.1f} s"
