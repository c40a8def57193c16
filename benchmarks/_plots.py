"""The benchmarks' plots: test metric against test NFE (Pareto), and NFE over training."""
import statistics
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

MARKERS = {"vanilla": "s", "budget": "*", "unbiased": "o", "biased": "D", "unbiased_stiff": "h", "global": "^",
           "steer": "v", "rnode": "P"}


def pyplot():
    """matplotlib's pyplot on the Agg backend (figures go to files; no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def pareto(summary: Sequence[Dict], path: Path, *, label: str = "label", panel: Optional[str] = None,
           xlabel: str = "test NFE (plain odeint)", title: str = "", markers: Optional[Mapping[str, str]] = None,
           colors: Optional[Mapping[str, str]] = None) -> Path:
    """Test metric against test NFE (means, with the standard deviations over seeds as error bars).

    One point per summary row, named in the legend by its ``label`` column; one panel per value of
    the ``panel`` column (or a single panel titled ``title``). Markers and colors are looked up by
    ``label``, then by ``method``; control rows (``budget...``) are drawn larger.
    """
    plt = pyplot()
    markers = {**MARKERS, **(markers or {})}
    colors = colors or {}
    panels = list(dict.fromkeys(s[panel] for s in summary)) if panel else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.8) if panel else (6.5, 4.5),
                             squeeze=False)
    for ax, name in zip(axes[0], panels):
        rows = [s for s in summary if panel is None or s[panel] == name]
        for s in rows:
            key = s[label]
            ax.errorbar(s["test_nfe_mean"], s["test_metric_mean"], xerr=s["test_nfe_std"], yerr=s["test_metric_std"],
                        fmt=markers.get(key, markers.get(s["method"], "o")),
                        markersize=10 if "budget" in key else 7, capsize=3,
                        color=colors.get(key, colors.get(s["method"])), label=key)
        metric = rows[0]["metric_name"]
        better = "higher" if metric == "accuracy" else "lower"
        ax.set_title(f"{name} ({better} is better)" if panel else f"{title} ({better} is better)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_nfe(curves: Sequence[Dict], path: Path, title: str = "", label: str = "label") -> Path:
    """Forward NFE of the training solve over the iterations, averaged over seeds and smoothed,
    one line per ``label`` (the rows of ``curves.csv``)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    by_label: Dict[str, Dict[int, List[float]]] = {}
    for r in curves:
        by_label.setdefault(r[label], {}).setdefault(int(r["itr"]), []).append(float(r["nfe_forward"]))
    for name, per_itr in by_label.items():
        itrs = sorted(per_itr)
        means = [statistics.fmean(per_itr[i]) for i in itrs]
        window = max(1, len(means) // 20)
        smooth = [statistics.fmean(means[max(0, i - window + 1):i + 1]) for i in range(len(means))]
        ax.plot(itrs, smooth, label=name, lw=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("forward NFE (training solve)")
    ax.set_title(title or "NFE over training")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(groups: Sequence[Tuple[str, ...]], series: Mapping[str, Sequence[float]], path: Path, ylabel: str,
         title: str) -> Path:
    """Grouped bars: one group per tuple of ``groups`` (its parts on separate lines), one bar per series."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups)), 4))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels(["\n".join(g) for g in groups], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
