"""The benchmarks' plots, and the names and styles of their series.

Every figure names a series as a reader says it (:func:`display_name`: ``unbiased@0.3`` is
"local, unbiased, weight 0.3") and gives it a colour and a marker that no other series of the same
figure has (:func:`styles`); legends sit outside the axes. The figures:

- :func:`pareto`: test metric against test NFE, one point per method and weight;
- :func:`training_nfe`: the NFE of the training solve over the iterations, one panel per family
  of methods, vanilla in each as the reference;
- :func:`bars`: grouped bars (the plugin's overhead);
- :func:`experiment_plots`: both plots of one results folder from its ``summary.csv`` and
  ``curves.csv``, and in a crowded folder ``pareto_candidates.png`` for AutoWeight's candidates
  (``python benchmarks/replot.py`` redraws every committed folder with it).
"""
import csv
import math
import statistics
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

# Distinguishable colours (Okabe-Ito and Tol's palettes, then darker and lighter extras); vanilla
# is always black. 19 colours and 16 markers: series i gets colour i % 19 and marker i % 16, so two
# series of one figure share neither up to 16 series, and never share both below 304.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#882255", "#44AA99", "#332288",
           "#999933", "#AA4499", "#117733", "#661100", "#6699CC", "#B8860B", "#888888", "#00CED1",
           "#8B4513")
MARKER_CYCLE = ("o", "s", "D", "^", "v", "<", ">", "P", "X", "p", "h", "d", "H", "8", "+")
VANILLA_STYLE = {"color": "#000000", "marker": "s"}
AUTO_STYLE = {"color": "#E41A1C", "marker": "*"}  # AutoWeight() (method "auto"): its own look, drawn on top

# The order in which families are listed, and their names in legends and panel titles.
FAMILIES = {
    "vanilla": "vanilla (no regularization)",
    "vanilla_lr": "vanilla, learning rate perturbed",
    "unbiased": "local, unbiased",
    "biased": "local, biased",
    "unbiased_stiff": "local, unbiased + stiffness",
    "const": "local, unbiased",
    "budget": "NFEBudget",
    "auto": "AutoWeight",
    "share": "AutoWeight, first design (each step's own norms)",
    "global": "global",
    "steer": "STEER",
    "rnode": "RNODE",
}
CONTROLS = ("budget", "auto", "share")  # the weight controls' families (drawn larger in the Pareto plots)
# Variants of the weight controls (``budget_<variant>``, ``auto_<variant>``), as a reader says them.
VARIANTS = {
    "sum": "plain sum", "project": "projection", "cap": "capped gradient", "gentle": "gentle", "r02": "rate 0.02",
    "notrend": "no trend", "noleak": "no leak", "nohold": "no hold", "slow": "slow", "rows32": "reg_batch_size 32",
    "biased": "biased", "nocap": "no cap", "nomom": "no momentum projection", "drift": "drift share",
    "conflict": "conflict-scaled",
    "conflict_nocap": "conflict-scaled, no cap", "k30": "ceiling 30x", "k100": "ceiling 100x", "k3": "ceiling 3x",
    "peak": "against the task's peak norm", "c": "share", "med": "median calibration",
    "med_k20": "median calibration, ceiling 20x", "guard": "task-loss guard",
    "guard_k30": "task-loss guard, ceiling 30x", "dec": "pull outside Adam",
    "dec_k30": "pull outside Adam, ceiling 30x", "front": "at its ceiling from step 10",
    "loss": "ceiling rising as the task loss falls", "grow": "ceiling rising with the task's gradient",
    "flat": "flat ceiling (the default until 2026-12-04)",
    "arc": "ceiling rising once the task's gradient has risen and fallen",
    "mednorm": "medians of recent gradient norms",
    "medcal": "ceiling from the median norms of the calibration",
    "hold": "median-calibrated ceiling, weight held at its largest",
    "clip": "norms clipped at 100x their average", "init": "first 10 steps' pull 3x the task's",
    "prev": "before 2026-12-03 (SDE share 0.1)", "allnorm": "all-parameter norm", "smooth": "smoothed",
    "mproj": "projected against the task's moving average only", "fixed": "fixed weight (= c), projected",
    "noproj": "not projected", "total": "whole step kept from reversing the task's",
    "sig": "share of the task's averaged gradient",
    "calsum": "calibrated weight held, plain sum",
    "cos1": "weight times (1 + conflict)", "cos2": "weight times (1 + conflict) squared",
    "cost": "conflict factor on SDE solves too", "cost6": "conflict factor from -0.6 (SDEs too)",
    "eps": "shares 1e-6 larger (a noise reference)",
    "noconf": "no conflict factor (the default until 2026-12-05)",
    "epsnc": "no conflict factor, shares 1e-6 larger",
    "cnp": "pull not projected",
    "cf": "with the conflict factor, share",
    "cfeps": "with the conflict factor, shares 1e-6 larger, share",
}
# Variants that ran at AutoWeight()'s shares (0.3 for ODEs, 0.05 for SDEs): named without a share.
AT_DEFAULT_SHARES = ("eps", "cos1", "cos2", "cost", "cost6", "noconf", "epsnc", "cnp")


def split_label(label: str) -> Tuple[str, Optional[str]]:
    """``"unbiased@0.3"`` -> ``("unbiased", "0.3")``; ``"vanilla"`` -> ``("vanilla", None)``."""
    method, _, weight = label.partition("@")
    return method, (weight or None)


def family(label: str) -> str:
    """The family of a series: its method without a weight control's variant (``budget_sum`` -> ``budget``)."""
    method = split_label(label)[0]
    if method in FAMILIES:
        return method
    head = method.split("_", 1)[0]
    return head if head in CONTROLS else method


def display_name(label: str) -> str:
    """A series' name as a reader says it, from the benchmarks' label ``method`` or ``method@weight``.

    ``vanilla`` -> "vanilla (no regularization)"; ``unbiased@0.3`` -> "local, unbiased, weight 0.3";
    ``const@1`` (the weight-control protocol's constant) -> "local, unbiased, weight 1";
    ``budget@0.6`` -> "NFEBudget 0.6x" (the target as a fraction of vanilla's NFE); ``budget`` ->
    "NFEBudget"; ``budget_sum`` -> "NFEBudget, plain sum"; ``auto`` -> "AutoWeight"; ``auto@0.3``
    -> "AutoWeight()" (the package's defaults); ``auto_c@0.1`` -> "AutoWeight, share c=0.1";
    ``vanilla_lr@1e-06`` -> "vanilla, learning rate x(1 + 1e-06) (a noise reference)";
    ``global@0.1`` -> "global, weight 0.1"; ``steer@0.5`` -> "STEER b=0.5"; ``rnode@0.01``
    -> "RNODE 0.01". A label it does not know is returned as it is.
    """
    method, weight = split_label(label)
    fam = family(label)
    if fam not in FAMILIES:
        return label
    if method == "vanilla":
        return FAMILIES["vanilla"]
    name = FAMILIES[fam]
    variant = method[len(fam) + 1:] if method != fam and fam in CONTROLS else ""
    if variant:
        name += ", " + VARIANTS.get(variant, variant)
    if weight is None:
        return name
    if fam in ("unbiased", "biased", "unbiased_stiff", "const", "global"):
        return f"{name}, weight {weight}"
    if fam == "budget":
        return f"NFEBudget {weight}x" + name[len("NFEBudget"):]
    if fam == "vanilla_lr":
        return f"vanilla, learning rate x(1 + {float(weight):g}) (a noise reference)"
    if method == "auto":
        return "AutoWeight()"  # the package's defaults; its weight column is the default share
    if fam == "auto" and variant in AT_DEFAULT_SHARES:
        return f"AutoWeight(), {VARIANTS[variant]}"
    if fam in ("auto", "share"):
        return f"{name} c={weight}"
    if fam == "steer":
        return f"{name} b={weight}"
    return f"{name} {weight}"


def _order(label: str) -> Tuple[int, float, str]:
    method, weight = split_label(label)
    fam = family(label)
    rank = list(FAMILIES).index(fam) if fam in FAMILIES else len(FAMILIES)
    try:
        value = float(weight) if weight is not None else -math.inf
    except ValueError:
        value = math.inf
    return rank, value, method


def ordered(labels: Iterable[str]) -> List[str]:
    """The distinct labels in legend order: by family (vanilla first), then by weight."""
    return sorted(set(labels), key=_order)


def styles(labels: Iterable[str]) -> Dict[str, Dict[str, str]]:
    """A ``{"color", "marker"}`` style per label: vanilla black squares, AutoWeight() red stars, the
    others a colour and a marker of their own, given in legend order, so that the same set of labels
    gets the same styles in every figure of an experiment."""
    out, i = {}, 0
    for label in ordered(labels):
        fixed = VANILLA_STYLE if label == "vanilla" else AUTO_STYLE if _is_auto_weight(label) else None
        if fixed is not None:
            out[label] = dict(fixed)
            continue
        out[label] = {"color": PALETTE[i % len(PALETTE)], "marker": MARKER_CYCLE[i % len(MARKER_CYCLE)]}
        i += 1
    return out


def _is_auto_weight(label: str) -> bool:
    """Whether a series is AutoWeight() at its defaults (method ``auto``, not a candidate)."""
    return split_label(label)[0] == "auto"


def _zorder(label: str) -> float:
    """AutoWeight() on top of the series it can coincide with (a candidate at the same settings)."""
    return 3 if _is_auto_weight(label) else 2


def pyplot():
    """matplotlib's pyplot on the Agg backend (figures go to files; no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")   # "tight": keeps the legends outside the axes in the file
    plt.close(fig)
    return path


def metric_axis(metric: str) -> Tuple[str, float]:
    """The y-axis label of a metric and the factor its values are shown with (accuracy in %)."""
    if metric == "accuracy":
        return "test accuracy (%), higher is better", 100.0
    if metric == "accuracy change":  # a difference of accuracies (fractions), shown in points
        return "test accuracy - vanilla's (points), higher is better", 100.0
    if metric == "error ratio":
        return "test error / vanilla's, lower is better", 1.0
    return f"test {METRIC_NAMES.get(metric, metric)}, lower is better", 1.0


METRIC_NAMES = {"mse": "MSE", "error": "error of mean and variance"}


def pareto(summary: Sequence[Mapping], path: Path, *, label: str = "label", panel: Optional[str] = None,
           xlabel: str = "test NFE (function evaluations of the prediction solve)", title: str = "",
           markers: Optional[Mapping[str, str]] = None, colors: Optional[Mapping[str, str]] = None,
           columns: Optional[int] = None, legend_title: Optional[str] = None, legend: str = "figure",
           share_axes: bool = False) -> Path:
    """Test metric against test NFE (means, with the standard deviations over seeds as error bars).

    One point per summary row, named in the legend by :func:`display_name` of its ``label`` column;
    one panel per value of the ``panel`` column (or a single panel), ``columns`` panels per row (all
    in one row by default). Dashed lines mark vanilla's NFE
    and metric, so that the better quadrant (fewer evaluations at least as good a metric) reads at
    a glance. ``markers`` and ``colors`` override :func:`styles` for the labels they name;
    ``legend_title`` replaces the legend's "mean ± std over seeds". ``legend="panels"`` gives each panel
    its own legend below it (of the series it draws) instead of one legend for the figure;
    ``share_axes`` gives the panels the same axes (panels of one problem).
    """
    if legend not in ("figure", "panels"):
        raise ValueError(f"legend must be 'figure' or 'panels', got {legend!r}.")
    plt = pyplot()
    look = styles(s[label] for s in summary)
    for key, value in (markers or {}).items():
        look.setdefault(key, {})["marker"] = value
    for key, value in (colors or {}).items():
        look.setdefault(key, {})["color"] = value
    panels = list(dict.fromkeys(s[panel] for s in summary)) if panel else [None]
    ncols = min(columns or len(panels), len(panels))
    nrows = -(-len(panels) // ncols)
    if legend == "panels":   # room below each panel for its legend, one line per series
        entries = max(len({s[label] for s in summary if s[panel] == name}) for name in panels) if panel else len(look)
        size = (4.6 * ncols, (4.2 + 0.17 * entries) * nrows)
    else:
        size = (4.6 * ncols, 4.2 * nrows) if panel else (6.8, 4.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, sharex=share_axes, sharey=share_axes)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    drawn = {}
    for ax, name in zip(axes.flat, panels):
        rows = [s for s in summary if panel is None or s[panel] == name]
        here = [s[label] for s in rows]
        ylabel, scale = metric_axis(rows[0]["metric_name"])
        for s in rows:
            key = s[label]
            control = family(key) in CONTROLS
            drawn[key] = ax.errorbar(float(s["test_nfe_mean"]), scale * float(s["test_metric_mean"]),
                                     xerr=_spread(s["test_nfe_std"]), yerr=scale * _spread(s["test_metric_std"]),
                                     fmt=look[key]["marker"], color=look[key]["color"], markersize=10 if control else 7,
                                     markeredgecolor="black" if control else look[key]["color"], capsize=3,
                                     elinewidth=1, alpha=0.9, label=display_name(key),
                                     zorder=_zorder(key))
            if key == "vanilla":
                ax.axvline(float(s["test_nfe_mean"]), color="0.5", ls="--", lw=0.8, zorder=0)
                ax.axhline(scale * float(s["test_metric_mean"]), color="0.5", ls="--", lw=0.8, zorder=0)
        values = [scale * float(s["test_metric_mean"]) for s in rows]
        if scale == 1.0 and min(values) > 0 and max(values) > 10 * min(values):
            ax.set_yscale("log")   # an error metric over more than a decade: the small ones stay apart
            ax.set_ylabel(ylabel + " (log scale)")
        ax.set_title(name if panel else (title or "test metric against test NFE"), fontsize=10)
        ax.set_xlabel(xlabel)
        if ax.get_yscale() != "log":
            ax.set_ylabel(ylabel)
            ax.ticklabel_format(axis="y", useOffset=False)  # ticks read 99.998, not an offset "+9.999e1"
        ax.grid(alpha=0.3)
        if legend == "panels":
            keys = sorted(ordered(here), key=lambda k: k != "vanilla" and not _is_auto_weight(k))  # references first
            ax.legend([drawn[k] for k in keys], [display_name(k) for k in keys], loc="upper center",
                      bbox_to_anchor=(0.5, -0.16), fontsize=7.5, frameon=False)
    if panel:
        fig.suptitle(title or "Test metric against test NFE, per problem (dashed: vanilla)", fontsize=11)
    if legend == "figure":
        keys = ordered(drawn)
        fig.legend([drawn[k] for k in keys], [display_name(k) for k in keys], loc="upper left",
                   bbox_to_anchor=(1.0, 0.93), fontsize=8, frameon=False,
                   title=legend_title or ("mean ± std over seeds\n(dashed: vanilla)" if not panel
                                          else "mean ± std over seeds"))
    fig.tight_layout()
    return _save(plt, fig, path)


def _spread(value) -> float:
    """A standard deviation as an error bar: 0 where there is none (one seed: nan or empty)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def training_nfe(curves: Sequence[Mapping], path: Path, title: str = "", label: str = "label") -> Path:
    """Forward NFE of the training solve over the iterations, averaged over seeds and smoothed.

    One panel per family of methods (local unbiased, local biased, weight controls, global,
    STEER, RNODE, ...), each with vanilla drawn in black as the reference, so that no panel has more
    than a handful of lines; lines carry their markers at staggered iterations, so that lines lying
    on the same NFE stay apart."""
    plt = pyplot()
    by_label: Dict[str, Dict[int, List[float]]] = {}
    for r in curves:
        by_label.setdefault(r[label], {}).setdefault(int(r["itr"]), []).append(float(r["nfe_forward"]))
    look = styles(by_label)
    groups: Dict[str, List[str]] = {}
    for key in ordered(by_label):
        if key != "vanilla":
            groups.setdefault(FAMILIES.get(family(key), family(key)), []).append(key)
    if not groups:
        groups = {FAMILIES["vanilla"]: []}
    groups = _split_crowded(groups)
    cols = min(3, len(groups))
    nrows = math.ceil(len(groups) / cols)
    entries = max(len(keys) for keys in groups.values()) + 1   # the longest legend, with vanilla
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, (3.0 + 0.16 * entries) * nrows), squeeze=False,
                             sharex=True, sharey=True)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, (group, keys) in zip(axes.flat, groups.items()):
        shown = (["vanilla"] if "vanilla" in by_label else []) + keys
        for j, key in enumerate(shown):
            itrs = sorted(by_label[key])
            means = [statistics.fmean(by_label[key][i]) for i in itrs]
            window = max(1, len(means) // 20)
            smooth = [statistics.fmean(means[max(0, i - window + 1):i + 1]) for i in range(len(means))]
            every = max(1, len(itrs) // 8)
            ax.plot(itrs, smooth, color=look[key]["color"], marker=look[key]["marker"],
                    markevery=((j * every) // max(1, len(shown)), every), markersize=5,
                    lw=1.6 if key == "vanilla" else 1.2, label=display_name(key), zorder=_zorder(key))
        ax.set_title(group, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), fontsize=7.5, frameon=False, ncol=1)
        ax.tick_params(labelbottom=True, labelleft=True)
        ax.set_xlabel("training iteration")
    for ax in axes[:, 0]:   # the y axis is shared: its label once per row
        ax.set_ylabel("NFE of the training solve")
    fig.suptitle((title or "NFE over training") + " (mean over seeds, smoothed; vanilla in black in every panel)",
                 fontsize=11)
    fig.tight_layout(w_pad=2.0)
    return _save(plt, fig, path)


PANEL_LINES = 8  # at most this many series in a panel of training_nfe, vanilla aside


def _split_crowded(groups: Mapping[str, List[str]]) -> Dict[str, List[str]]:
    """Each group of more than PANEL_LINES series split into panels of at most that many, titled
    "name (1/2)", ...; AutoWeight() (the package's defaults) is drawn in every one of them, as the
    reference its candidates are read against."""
    panels: Dict[str, List[str]] = {}
    for group, keys in groups.items():
        if len(keys) <= PANEL_LINES:
            panels[group] = list(keys)
            continue
        reference = [k for k in keys if _is_auto_weight(k)]
        rest = [k for k in keys if not _is_auto_weight(k)]
        size = PANEL_LINES - len(reference)
        count = math.ceil(len(rest) / size)
        per = math.ceil(len(rest) / count)   # as even as the panels can be
        for i in range(count):
            panels[f"{group} ({i + 1}/{count})"] = reference + rest[i * per:(i + 1) * per]
    return panels


def bars(groups: Sequence[Tuple[str, ...]], series: Mapping[str, Sequence[float]], path: Path, ylabel: str,
         title: str) -> Path:
    """Grouped bars: one group per tuple of ``groups`` (its parts on separate lines), one bar per series,
    each series its own colour and hatch; a line at 1 (the reference)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups)), 4))
    width = 0.8 / len(series)
    hatches = ("", "//", "..", "xx", "\\\\", "oo")
    for i, (name, values) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=name,
               color=PALETTE[i % len(PALETTE)], hatch=hatches[i % len(hatches)], edgecolor="white")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels(["\n".join(g) for g in groups], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(plt, fig, path)


def read_csv(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


CURVES_PART_BYTES = 1_500_000  # a curves file past this size continues in the next part (tracked files stay small)


def curve_files(out: Path) -> List[Path]:
    """The curves of a results folder: ``curves.csv`` and its continuations ``curves_2.csv``,
    ``curves_3.csv``, ..., those that exist, in order."""
    files, part = [], 2
    if (out / "curves.csv").exists():
        files.append(out / "curves.csv")
        while (out / f"curves_{part}.csv").exists():
            files.append(out / f"curves_{part}.csv")
            part += 1
    return files


def curves_file_to_append(out: Path) -> Path:
    """The curves file a finished run appends to: the last part, or a new one once it has passed
    :data:`CURVES_PART_BYTES`."""
    files = curve_files(out)
    if not files:
        return out / "curves.csv"
    if files[-1].stat().st_size < CURVES_PART_BYTES:
        return files[-1]
    return out / f"curves_{len(files) + 1}.csv"


def read_curves(out: Path) -> List[Dict]:
    """Every row of every curves file of ``out`` (:func:`curve_files`), in order."""
    return [row for path in curve_files(out) for row in read_csv(path)]


def run_label(method: str, weight) -> str:
    """The label of a run as the harness writes it: ``method``, or ``method@weight`` for all but vanilla."""
    return method if method == "vanilla" else f"{method}@{float(weight):g}"


PARETO_SERIES = 16  # more series than this in one results folder: the weight controls' candidates get a figure


def _is_candidate(label: str) -> bool:
    """Whether a series is a variant of AutoWeight (a candidate of the weight-control protocol, or a
    noise reference), not AutoWeight() itself."""
    return family(label) in ("auto", "share") and not _is_auto_weight(label)


def candidate_panels(rows: Sequence[Mapping], label: str = "label") -> List[Dict]:
    """The rows of AutoWeight's candidates, each with a ``panel`` column: panels of at most
    PANEL_LINES series (:func:`_split_crowded`), each with vanilla and AutoWeight() as references."""
    keys = ordered(r[label] for r in rows if _is_candidate(r[label]) or _is_auto_weight(r[label]))
    references = [r for r in rows if r[label] == "vanilla" or _is_auto_weight(r[label])]
    out = []
    for name, members in _split_crowded({FAMILIES["auto"]: keys}).items():
        out += [{**r, "panel": name} for r in references if r[label] == "vanilla" or r[label] in members]
        out += [{**r, "panel": name} for r in rows if r[label] in members and not _is_auto_weight(r[label])]
    return out


def experiment_plots(out: Path, summary: Sequence[Mapping], curves: Sequence[Mapping], title: str) -> List[Path]:
    """``pareto.png`` and ``nfe_training.png`` of one experiment's results folder; where there are more
    than PARETO_SERIES series, AutoWeight's candidates leave ``pareto.png`` for
    ``pareto_candidates.png`` (panels of a few, each beside vanilla and AutoWeight())."""
    written = []
    if summary:
        rows = [{**s, "label": s.get("label") or run_label(s["method"], s["weight"])} for s in summary]
        crowded = len(rows) > PARETO_SERIES and any(_is_candidate(r["label"]) for r in rows)
        if crowded:
            written.append(pareto(candidate_panels(rows), out / "pareto_candidates.png", panel="panel", columns=3,
                                  legend="panels", share_axes=True,
                                  title=f"{title}: AutoWeight's candidates against AutoWeight(), mean ± std over "
                                        f"seeds (dashed: vanilla)"))
            rows = [r for r in rows if not _is_candidate(r["label"])]
        what = "every method but AutoWeight's candidates (pareto_candidates.png)" if crowded else "every method"
        written.append(pareto(rows, out / "pareto.png",
                              title=f"{title}: test metric against test NFE, {what} (dashed: vanilla)"))
    if curves:
        written.append(training_nfe([{**c, "label": run_label(c["method"], c["weight"])} for c in curves],
                                    out / "nfe_training.png", title=f"{title}: NFE of the training solve"))
    return written


def replot(out: Path) -> List[Path]:
    """Redraws the plots of a results folder from its ``summary.csv`` and curves files (no training);
    the title is the heading of its ``summary.md``."""
    heading = (out / "summary.md").read_text().splitlines()[0] if (out / "summary.md").is_file() else ""
    title = heading.lstrip("#").strip() or out.name
    if out.name.endswith("_short"):   # the protocol's 200-step runs, or an experiment's old short defaults
        title += " (200 steps)" if out.parent.name == "weight_control" else " (old defaults, short runs)"
    return experiment_plots(out, read_csv(out / "summary.csv"), read_curves(out), title)
