"""Weight-control protocol: AutoWeight against vanilla, a constant-weight sweep and NFEBudget.

Six problems, each at the benchmarks' realistic number of training steps and in a short run of
200 steps, every method from the same initialisation on the same batches (the experiment scripts'
own harness, ``_train.run_benchmark``):

- ``rings``: the quickstart's disk-vs-ring classifier (``rings.py``), 600 steps;
- ``mnist_node``: the paper's MNIST neural ODE (``mnist_node.py``), 1500 steps;
- ``mnist_sde``: the MNIST neural SDE (``mnist_sde.py``), 2000 steps;
- ``latent_ode``: latent ODE on irregular spirals (``latent_ode_spirals.py``), 1000 steps;
- ``spiral_sde``: the spiral SDE fit (``spiral_sde.py``), 1000 steps;
- ``lotka_volterra``: a Lotka-Volterra field learned from noisy trajectories (``lotka_volterra.py``),
  1000 steps: a regression whose plain NFE grows during training.

Methods: ``vanilla``; ``unbiased`` at a sweep of constant weights (at least 4 over two decades
around the best, :data:`SWEEPS`); ``budget`` (``NFEBudget``, target 0.6 x vanilla's training NFE
of the same seed); ``auto`` (``AutoWeight()``; its ``weight`` column is the share c, the default
``AutoWeight.FRACTION`` unless ``--auto_fractions`` says otherwise) and the candidates of
``_train.AUTO_CANDIDATES``; ``vanilla_lr`` (vanilla at the learning rate x(1 + 1e-6)), a seed-noise
reference beside the weight 1e-4 (:data:`LR_NOISE`). Seeds are paired: 5 where vanilla's metric
spreads widely across seeds (MNIST SDE, latent ODE, spiral SDE, Lotka-Volterra: vanilla's error
ranges 0.013-0.099 over its first three seeds), 3 elsewhere (:data:`SEEDS`).

Acceptance (issue 19), per problem and run length, against vanilla on the same seeds:
(a) mean accuracy within 0.3 points of vanilla's, or mean error within 10% of vanilla's;
(b) AutoWeight's mean test NFE at most that of the cheapest constant meeting (a), plus one solver
step (:data:`STEP_NFE`); and on the two ODE classifiers at most 0.65x vanilla's NFE.

Resumable: each run appends its row to ``<folder>/runs.csv`` under
``benchmarks/results/weight_control/<problem>`` (``<problem>_short`` for 200 steps); a rerun skips
finished runs. ``--summarize`` writes ``summary.md``, ``summary.csv``, ``pareto.png`` and
``pareto_short.png`` there from every row (``pareto_candidates.png``: with every candidate still in
the code; ``pareto_removed.png``: those removed after they lost, beside AutoWeight()), and
``task_loss.md``, each method's training task loss at the end of its runs against vanilla's.

    python benchmarks/weight_control.py --problems latent_ode spiral_sde --jobs 2
    python benchmarks/weight_control.py --problems mnist_node --lengths short --methods vanilla auto
    python benchmarks/weight_control.py --summarize
    python benchmarks/weight_control.py --smoke          # seconds (used by the tests)
"""
import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402
import _plots  # noqa: E402
import _train  # noqa: E402
import latent_ode_spirals  # noqa: E402
import lotka_volterra  # noqa: E402
import mnist_node  # noqa: E402
import mnist_sde  # noqa: E402
import rings  # noqa: E402
import spiral_sde  # noqa: E402

# problem -> (experiment script, metric kind, whether it is an ODE classifier)
PROBLEMS = {
    "rings": (rings, "accuracy", True),
    "mnist_node": (mnist_node, "accuracy", True),
    "mnist_sde": (mnist_sde, "accuracy", False),
    "latent_ode": (latent_ode_spirals, "error", False),
    "spiral_sde": (spiral_sde, "error", False),
    "lotka_volterra": (lotka_volterra, "error", False),
}
SWEEPS = {
    "rings": (0.03, 0.1, 0.3, 1.0, 3.0),
    "mnist_node": (0.01, 0.1, 0.3, 1.0),
    "mnist_sde": (0.003, 0.01, 0.015, 0.02, 0.03, 0.1, 0.3),
    "latent_ode": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
    "spiral_sde": (0.03, 0.1, 0.3, 1.0, 3.0),
    "lotka_volterra": (0.01, 0.03, 0.1, 0.3, 1.0),
}
TITLES = {"rings": "disk vs ring (neural ODE classifier)", "mnist_node": "MNIST neural ODE",
          "mnist_sde": "MNIST neural SDE", "latent_ode": "latent ODE, irregular spirals",
          "spiral_sde": "spiral SDE fit", "lotka_volterra": "Lotka-Volterra field from noisy data"}
SEEDS = {"rings": 3, "mnist_node": 3, "mnist_sde": 5, "latent_ode": 5, "spiral_sde": 5, "lotka_volterra": 5}
# NFE of one solver step of the prediction solve: dopri5 takes 6 evaluations per step; torchsde's
# adaptive Milstein with step doubling takes 3 drift evaluations per step (one full, two halves).
STEP_NFE = {"rings": 6, "mnist_node": 6, "mnist_sde": 3, "latent_ode": 6, "spiral_sde": 3, "lotka_volterra": 6}
LENGTHS = {"realistic": None, "short": 200}  # None: the script's own default number of steps
METHODS = ("vanilla", "unbiased", "budget", "auto")
ACCURACY_TOLERANCE = 0.003  # (a): 0.3 points of accuracy
ERROR_TOLERANCE = 0.10      # (a): 10% of vanilla's mean error
CLASSIFIER_NFE_RATIO = 0.65
INTERVAL_LEVEL = 0.9        # the paired bootstrap interval shown beside each mean change
INTERVAL_RESAMPLES = 2000
# A constant weight too small to matter (weight * reg is about 1e-10 of the latent ODE's task loss): where it
# ran, its change against vanilla is the seed noise of (a) itself, what a mere perturbation of training moves.
PERTURBATION = "unbiased@0.0001"
# A second seed-noise reference that leaves the loss untouched: vanilla at a learning rate 1e-6 larger.
LR_NOISE = f"vanilla_lr@{_train.LR_PERTURBATION:g}"
# AutoWeight()'s own noise: the same rule with its share 1e-6 larger (the candidate auto_eps). Its regularization
# enters whole, so where training is chaotic it moves single seeds far more than PERTURBATION moves vanilla's.
OWN_NOISE = "auto_eps"
SMOKE = ["--smoke", "--pred_repeats", "1"]
# The task-loss table: each run's training task loss (the logged loss less weight x reg) averaged over
# the last fifth of its logged steps, where accuracy hides what a classifier's fit gave up.
TASK_LOSS_TAIL = 0.2


def folder(out: Path, problem: str, length: str) -> Path:
    return out / (problem if length == "realistic" else f"{problem}_{length}")


def command(problem: str, length: str, args: argparse.Namespace, out: Path) -> List[str]:
    """The experiment script's arguments for one (problem, length) of the protocol."""
    argv = ["--out", str(folder(out, problem, length)), "--methods", *args.methods]
    seeds = args.seeds if args.seeds is not None else [0] if args.smoke else list(range(SEEDS[problem]))
    weights = args.reg_weights or (SWEEPS[problem][-1:] if args.smoke else SWEEPS[problem])
    argv += ["--seeds", *map(str, seeds), "--reg_weights", *map(str, weights)]
    if args.auto_fractions:
        argv += ["--auto_fractions", *map(str, args.auto_fractions)]
    if args.smoke:
        argv += SMOKE + ["--niters", "3" if length == "realistic" else "2"]
    elif LENGTHS[length] is not None:
        argv += ["--niters", str(LENGTHS[length])]
    if problem in ("mnist_node", "mnist_sde"):
        argv += ["--data_root", args.data_root]
    return argv + ["--jobs", str(args.jobs), "--threads", str(args.threads)]


# ---- the acceptance table ----------------------------------------------------------------------

def _paired(rows: Sequence[Dict], label: str, seeds: Sequence[str]) -> List[Dict]:
    return [r for r in rows if _plots.run_label(r["method"], r["weight"]) == label and r["seed"] in seeds]


def meets_a(kind: str, metric: float, vanilla: float) -> bool:
    """Criterion (a): no worse than vanilla beyond its seed noise."""
    if kind == "accuracy":
        return metric >= vanilla - ACCURACY_TOLERANCE
    return metric <= vanilla * (1.0 + ERROR_TOLERANCE)


def paired_interval(kind: str, values: Sequence[float], bases: Sequence[float], level: float = INTERVAL_LEVEL,
                    resamples: int = INTERVAL_RESAMPLES) -> Tuple[float, float]:
    """A percentile bootstrap interval of a method's change against vanilla over paired seeds
    (``values[i]`` and ``bases[i]`` share seed ``i``): of the ratio of mean errors, or of the
    difference of mean accuracies. Resampled with a fixed seed, so that a summary is reproducible.
    With few seeds it is rough (3 seeds have 10 distinct resamples), but it shows how far the seeds
    alone move the verdict of (a)."""
    if len(values) != len(bases) or not values:
        raise ValueError(f"values and bases must be paired and non-empty, got {len(values)} and {len(bases)}.")
    rng = random.Random(0)
    n = len(values)
    changes = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        value = statistics.fmean(values[i] for i in picks)
        base = statistics.fmean(bases[i] for i in picks)
        changes.append(value - base if kind == "accuracy" else (value / base if base > 0 else math.inf))
    changes.sort()
    tail = (1.0 - level) / 2
    return changes[int(tail * (resamples - 1))], changes[int(round((1.0 - tail) * (resamples - 1)))]


def per_seed(kind: str, values: Sequence[float], bases: Sequence[float]) -> Tuple[float, int]:
    """The change on a typical seed and the number of seeds on which the method is worse than
    vanilla (``values[i]`` and ``bases[i]`` share a seed): for an error, the geometric mean of the
    paired ratios; for an accuracy, the median of the paired differences. Unlike the change of the
    means, which (a) judges, neither is moved much by a few seeds with errors far above the rest."""
    if len(values) != len(bases) or not values:
        raise ValueError(f"values and bases must be paired and non-empty, got {len(values)} and {len(bases)}.")
    if kind == "accuracy":
        return statistics.median(v - b for v, b in zip(values, bases)), sum(v < b for v, b in zip(values, bases))
    if min(values) <= 0 or min(bases) <= 0:
        return math.nan, sum(v > b for v, b in zip(values, bases))
    typical = math.exp(statistics.fmean(math.log(v / b) for v, b in zip(values, bases)))
    return typical, sum(v > b for v, b in zip(values, bases))


def paired_change(kind: str, values: Sequence[float], bases: Sequence[float], nfes: Sequence[float],
                  base_nfes: Sequence[float]) -> Dict:
    """A method against vanilla over paired seeds (entry ``i`` of each sequence is seed ``i``'s): the
    means (``metric``, ``vanilla_metric``, ``nfe``, ``vanilla_nfe``), the ``change`` of the metric's
    means (ratio of errors, or difference of accuracies) with its bootstrap ``interval``, the
    ``typical`` change and the number of seeds it is ``worse`` on (:func:`per_seed`), whether it
    meets criterion ``a``, and ``nfe_ratio``. The weight-control protocol and the examples' seeds
    both judge with it."""
    if not len(values) == len(bases) == len(nfes) == len(base_nfes):
        raise ValueError(f"the sequences must be paired, got lengths {len(values)}, {len(bases)}, {len(nfes)} and "
                         f"{len(base_nfes)}.")
    metric, base = statistics.fmean(values), statistics.fmean(bases)
    nfe, base_nfe = statistics.fmean(nfes), statistics.fmean(base_nfes)
    typical, worse = per_seed(kind, values, bases)
    return {"metric": metric, "vanilla_metric": base, "change": metric - base if kind == "accuracy" else metric / base,
            "interval": paired_interval(kind, values, bases), "typical": typical, "worse": worse,
            "a": meets_a(kind, metric, base), "nfe": nfe, "vanilla_nfe": base_nfe, "nfe_ratio": nfe / base_nfe}


def paired_runs(kind: str, runs: Sequence[Dict], bases: Sequence[Dict]) -> Dict:
    """:func:`paired_change` of result rows (their ``test_metric`` and ``test_nfe``): ``runs[i]`` and
    ``bases[i]`` are one seed's run of the method and of vanilla."""
    def column(rows: Sequence[Dict], key: str) -> List[float]:
        return [float(r[key]) for r in rows]

    return paired_change(kind, column(runs, "test_metric"), column(bases, "test_metric"), column(runs, "test_nfe"),
                         column(bases, "test_nfe"))


def versus(kind: str, rows: Sequence[Dict], label: str, base_label: str) -> Optional[Dict]:
    """:func:`paired_runs` of ``label``'s rows against ``base_label``'s on the seeds both ran (the first
    row of each seed), as a table entry: ``label``, ``seeds``, ``metric_ratio`` (the change) and the
    rest of :func:`paired_change`'s entries (``vanilla_*`` hold the base's means); None without a
    shared seed."""
    base = {r["seed"]: r for r in _harness.first_per_seed(_paired(rows, base_label, {r["seed"] for r in rows}))}
    runs = _harness.first_per_seed(_paired(rows, label, set(base)))
    if not runs:
        return None
    change = paired_runs(kind, runs, [base[r["seed"]] for r in runs])
    return {"label": label, "seeds": len(runs), "metric_ratio": change.pop("change"), **change}


def judge(problem: str, rows: Sequence[Dict], auto_label: str) -> Optional[Dict]:
    """The acceptance row of one (problem, length): every method's means on the seeds it shares with
    vanilla, the cheapest constant meeting (a), and the verdicts of ``auto_label``."""
    kind = PROBLEMS[problem][1]
    labels = list(dict.fromkeys(_plots.run_label(r["method"], r["weight"]) for r in rows))
    table = {label: entry for label in labels if (entry := versus(kind, rows, label, "vanilla")) is not None}
    if "vanilla" not in table or auto_label not in table:
        return None
    full = max(s["seeds"] for s in table.values())
    # The perturbation control measures the seeds' noise (its own column); it is not one of the constants swept.
    constants = [s for k, s in table.items()
                 if k.startswith("unbiased@") and k != PERTURBATION and s["a"] and s["seeds"] == full]
    best = min(constants, key=lambda s: (s["nfe"], -s["metric"] if kind == "accuracy" else s["metric"]),
               default=None)
    auto = table[auto_label]
    bound = best["nfe"] + STEP_NFE[problem] if best else table["vanilla"]["nfe"] + STEP_NFE[problem]
    verdict = {"problem": problem, "kind": kind, "seeds": auto["seeds"], "vanilla_metric": auto["vanilla_metric"],
               "vanilla_nfe": auto["vanilla_nfe"], "auto_metric": auto["metric"], "auto_nfe": auto["nfe"],
               "auto_nfe_ratio": auto["nfe_ratio"], "auto_a": auto["a"],
               **_noise(auto, "auto"), **_noise(table.get(PERTURBATION)), **_noise(table.get(LR_NOISE), "lr_noise"),
               **_noise(versus(kind, rows, auto_label, LR_NOISE), "auto_vs_lr"),
               **_own_noise(kind, rows, table, auto_label),
               "best_constant": best["label"] if best else "none", "best_constant_nfe": best["nfe"] if best else math.nan,
               "best_constant_metric": best["metric"] if best else math.nan,
               "b_bound": bound, "auto_b": auto["nfe"] <= bound,
               "classifier_ok": (auto["nfe_ratio"] <= CLASSIFIER_NFE_RATIO) if PROBLEMS[problem][2] else None,
               "table": table}
    return verdict


def _noise(entry: Optional[Dict], prefix: str = "noise") -> Dict:
    """The acceptance row's columns ``<prefix>_seeds``, ``_change``, ``_low``, ``_high`` (its interval),
    ``_typical`` and ``_worse`` of a table entry (:func:`versus`): by default the seed noise, the change
    of :data:`PERTURBATION` against vanilla."""
    if entry is None:
        return {f"{prefix}_seeds": 0, **{f"{prefix}_{k}": math.nan for k in ("change", "low", "high", "typical")},
                f"{prefix}_worse": 0}
    return {f"{prefix}_seeds": entry["seeds"], f"{prefix}_change": entry["metric_ratio"],
            f"{prefix}_low": entry["interval"][0], f"{prefix}_high": entry["interval"][1],
            f"{prefix}_typical": entry["typical"], f"{prefix}_worse": entry["worse"]}


def own_noise_label(auto_label: str) -> str:
    """The label of :data:`OWN_NOISE` at ``auto_label``'s share (``auto@0.3`` -> ``auto_eps@0.3``)."""
    return f"{OWN_NOISE}@{_plots.split_label(auto_label)[1]}"


def _own_noise(kind: str, rows: Sequence[Dict], table: Dict[str, Dict], auto_label: str) -> Dict:
    """The acceptance row's columns of :data:`OWN_NOISE` at ``auto_label``'s share: its change against
    vanilla and interval, its test NFE, and the range over seeds of its change against ``auto_label``
    itself (error ratio, or accuracy difference)."""
    label = own_noise_label(auto_label)
    if label not in table:
        return {"own_seeds": 0, "own_change": math.nan, "own_low": math.nan, "own_high": math.nan,
                "own_nfe": math.nan, "own_vs_auto_min": math.nan, "own_vs_auto_max": math.nan}
    own = {r["seed"]: float(r["test_metric"])
           for r in _harness.first_per_seed([r for r in rows if _plots.run_label(r["method"], r["weight"]) == label])}
    auto = {r["seed"]: float(r["test_metric"]) for r in _harness.first_per_seed(_paired(rows, auto_label, own))}
    changes = [own[s] - a if kind == "accuracy" else (own[s] / a if a > 0 else math.inf) for s, a in auto.items()]
    entry = table[label]
    return {"own_seeds": entry["seeds"], "own_change": entry["metric_ratio"], "own_low": entry["interval"][0],
            "own_high": entry["interval"][1], "own_nfe": entry["nfe"],
            "own_vs_auto_min": min(changes, default=math.nan), "own_vs_auto_max": max(changes, default=math.nan)}


def metric_text(kind: str, value: float) -> str:
    return f"{100 * value:.2f}%" if kind == "accuracy" else f"{value:.4g}"


def _change(kind: str, value: float, base: float) -> str:
    return f"{100 * (value - base):+.2f} pt" if kind == "accuracy" else f"{value / base:.2f}x"


def interval_text(kind: str, interval: Tuple[float, float]) -> str:
    low, high = interval
    if kind == "accuracy":
        return f"{100 * low:+.2f} to {100 * high:+.2f} pt"
    return f"{low:.2f}-{high:.2f}x"


def relative_text(kind: str, change: float) -> str:
    """A change already taken against vanilla: a difference of accuracies in points, or a ratio of errors."""
    return f"{100 * change:+.2f} pt" if kind == "accuracy" else f"{change:.2f}x"


def typical_text(kind: str, typical: float, worse: int, seeds: int) -> str:
    return f"{relative_text(kind, typical)}, worse on {worse}/{seeds}"


def _reference_cell(v: Dict, prefix: str, per_seed: bool = True) -> str:
    """The mean change of the acceptance row's ``<prefix>_*`` columns (:func:`_noise`) and its interval,
    then either the typical seed's change and on how many seeds it is worse (the tables of
    :func:`noise_markdown`) or, with ``per_seed=False``, the number of seeds (the acceptance table's)."""
    seeds = v[f"{prefix}_seeds"]
    if not seeds:
        return "not run"
    change = f"{relative_text(v['kind'], v[f'{prefix}_change'])} "\
             f"({interval_text(v['kind'], (v[f'{prefix}_low'], v[f'{prefix}_high']))})"
    if not per_seed:
        return f"{change}, {seeds} seeds"
    return f"{change}; {typical_text(v['kind'], v[f'{prefix}_typical'], v[f'{prefix}_worse'], seeds)}"


def noise_markdown(verdicts: Sequence[Dict]) -> str:
    """The two seed-noise references side by side (the constant weight 1e-4 and vanilla at a learning
    rate 1e-6 larger, each against vanilla), and AutoWeight() against vanilla and against the
    learning-rate runs, on the seeds each pair shares."""
    lines = ["| problem | run | weight 1e-4 against vanilla | learning rate x(1 + 1e-6) against vanilla | "
             "AutoWeight() against vanilla | AutoWeight() against the learning-rate runs |",
             "|---|---|---|---|---|---|"]
    for v in verdicts:
        cells = (_reference_cell(v, prefix) for prefix in ("noise", "lr_noise", "auto", "auto_vs_lr"))
        lines.append(f"| {TITLES[v['problem']]} | {v['length']} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _own_noise_cell(v: Dict) -> str:
    if not v["own_seeds"]:
        return "not run"
    interval = interval_text(v["kind"], (v["own_low"], v["own_high"]))
    spread = (f"{100 * v['own_vs_auto_min']:+.2f} to {100 * v['own_vs_auto_max']:+.2f} pt" if v["kind"] == "accuracy"
              else f"{v['own_vs_auto_min']:.2f}-{v['own_vs_auto_max']:.2f}x")
    return (f"{relative_text(v['kind'], v['own_change'])} ({interval}), NFE {v['own_nfe']:.1f}, "
            f"{v['own_seeds']} seeds; "
            f"per seed {spread} AutoWeight()'s")


def acceptance_markdown(verdicts: Sequence[Dict]) -> str:
    lines = ["| problem | run | seeds | vanilla | AutoWeight() | 90% interval of the change | per seed | NFE ratio | "
             "(a) | seed noise: weight 1e-4 | AutoWeight()'s own noise: share 1e-6 larger | "
             "cheapest constant meeting (a) | (b) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        kind = v["kind"]
        best = ("none" if v["best_constant"] == "none" else
                f"weight {_plots.split_label(v['best_constant'])[1]}: NFE {v['best_constant_nfe']:.1f}, "
                f"{_change(kind, v['best_constant_metric'], v['vanilla_metric'])}")
        b = "yes" if v["auto_b"] else "**no**"
        if v["classifier_ok"] is not None:
            b += f"; <= {CLASSIFIER_NFE_RATIO}x: {'yes' if v['classifier_ok'] else '**no**'}"
        lines.append(f"| {TITLES[v['problem']]} | {v['length']} | {v['seeds']} | "
                     f"{metric_text(kind, v['vanilla_metric'])}, "
                     f"NFE {v['vanilla_nfe']:.1f} | {metric_text(kind, v['auto_metric'])} "
                     f"({_change(kind, v['auto_metric'], v['vanilla_metric'])}), NFE {v['auto_nfe']:.1f} | "
                     f"{interval_text(kind, (v['auto_low'], v['auto_high']))} | "
                     f"{typical_text(kind, v['auto_typical'], v['auto_worse'], v['seeds'])} | "
                     f"{v['auto_nfe_ratio']:.2f} | {'yes' if v['auto_a'] else '**no**'} | "
                     f"{_reference_cell(v, 'noise', per_seed=False)} | "
                     f"{_own_noise_cell(v)} | {best} | {b} |")
    return "\n".join(lines) + "\n"


def shortfall_markdown(verdicts: Sequence[Dict]) -> str:
    """Where the judged row misses a criterion, and by how much: (a)'s margin, (b)'s bound (``b_bound``,
    the cheapest constant's NFE plus one step) and the classifiers' NFE mark. Preceded by a line that
    counts the cells meeting each."""
    lines = ["| problem | run | criterion | AutoWeight() | the mark | short by |", "|---|---|---|---|---|---|"]
    for v in verdicts:
        kind, cell = v["kind"], f"| {TITLES[v['problem']]} | {v['length']} |"
        if not v["auto_a"]:
            if kind == "accuracy":
                mark, miss = f"-{100 * ACCURACY_TOLERANCE:.2f} pt", \
                    f"{100 * (-v['auto_change'] - ACCURACY_TOLERANCE):.2f} points"
            else:
                mark = f"{1 + ERROR_TOLERANCE:.2f}x"
                miss = f"{v['auto_change'] - 1 - ERROR_TOLERANCE:.2f} of vanilla's error"
            lines.append(f"{cell} (a) | {relative_text(kind, v['auto_change'])} | {mark} | {miss} |")
        if not v["auto_b"]:
            source = (f"vanilla's {v['vanilla_nfe']:.1f}" if v["best_constant"] == "none" else
                      f"weight {_plots.split_label(v['best_constant'])[1]}'s {v['best_constant_nfe']:.1f}")
            lines.append(f"{cell} (b) | NFE {v['auto_nfe']:.1f} | NFE {v['b_bound']:.1f} ({source} + "
                         f"{STEP_NFE[v['problem']]}) | {v['auto_nfe'] - v['b_bound']:.1f} evaluations |")
        if v["classifier_ok"] is False:
            mark = CLASSIFIER_NFE_RATIO * v["vanilla_nfe"]
            lines.append(f"{cell} NFE <= {CLASSIFIER_NFE_RATIO}x vanilla's | {v['auto_nfe_ratio']:.2f}x "
                         f"(NFE {v['auto_nfe']:.1f}) | {CLASSIFIER_NFE_RATIO}x (NFE {mark:.1f}) | "
                         f"{v['auto_nfe'] - mark:.1f} evaluations |")
    classifiers = [v for v in verdicts if v["classifier_ok"] is not None]
    count = (f"(a) holds on {sum(v['auto_a'] for v in verdicts)} of {len(verdicts)} cells, (b) on "
             f"{sum(v['auto_b'] for v in verdicts)} of {len(verdicts)}, and the {CLASSIFIER_NFE_RATIO}x mark on "
             f"{sum(bool(v['classifier_ok']) for v in classifiers)} of the {len(classifiers)} classifier cells.")
    if len(lines) == 2:
        return count + "\n"
    return count + "\n\n" + "\n".join(lines) + "\n"


def methods_markdown(verdict: Dict) -> str:
    kind = verdict["kind"]
    lines = ["| method | seeds | test metric | vs vanilla | 90% interval | per seed | test NFE | NFE ratio | meets (a) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in sorted(verdict["table"].values(), key=lambda s: _plots._order(s["label"])):
        lines.append(f"| {_plots.display_name(s['label'])} | {s['seeds']} | {metric_text(kind, s['metric'])} | "
                     f"{'' if s['label'] == 'vanilla' else _change(kind, s['metric'], s['vanilla_metric'])} | "
                     f"{'' if s['label'] == 'vanilla' else interval_text(kind, s['interval'])} | "
                     f"{'' if s['label'] == 'vanilla' else typical_text(kind, s['typical'], s['worse'], s['seeds'])} | "
                     f"{s['nfe']:.1f} | {s['nfe_ratio']:.2f} | {'yes' if s['a'] else 'no'} |")
    return "\n".join(lines) + "\n"


def task_losses(curves: Sequence[Dict]) -> Dict[str, Dict[str, float]]:
    """``{label: {seed: loss}}``: each run's training task loss, the logged loss less its
    ``current_weight * penalty`` (the weight the step used), averaged over the logged steps of the
    last :data:`TASK_LOSS_TAIL` of the run. A step logged twice (a run trained again) counts once,
    as last logged."""
    steps: Dict[Tuple[str, str], Dict[int, float]] = {}
    for c in curves:
        task = float(c["loss"]) - float(c["current_weight"]) * float(c["penalty"])
        steps.setdefault((_plots.run_label(c["method"], c["weight"]), str(c["seed"])), {})[int(c["itr"])] = task
    out: Dict[str, Dict[str, float]] = {}
    for (label, seed), by_step in steps.items():
        last = max(by_step)
        tail = [v for itr, v in by_step.items() if itr > (1.0 - TASK_LOSS_TAIL) * last]
        out.setdefault(label, {})[seed] = statistics.fmean(tail)
    return out


def task_loss_markdown(title: str, losses: Dict[str, Dict[str, float]], labels: Sequence[str]) -> str:
    """One problem's table of training task losses: each of ``labels`` (those with curves) on the
    seeds it shares with vanilla, its mean, and its change on a typical seed (:func:`per_seed`, the
    geometric mean of the paired ratios: n/a where a loss is not positive, as a likelihood may be)."""
    base = losses.get("vanilla", {})
    lines = [f"### {title}\n", "| method | seeds | task loss, last fifth of training | vanilla's | per seed |",
             "|---|---|---|---|---|"]
    for label in _plots.ordered(lb for lb in labels if lb in losses and lb != "vanilla"):
        seeds = sorted(set(losses[label]) & set(base), key=int)
        if not seeds:
            continue
        values, bases = [losses[label][s] for s in seeds], [base[s] for s in seeds]
        typical, worse = per_seed("error", values, bases)
        change = "n/a" if math.isnan(typical) else typical_text("error", typical, worse, len(seeds))
        lines.append(f"| {_plots.display_name(label)} | {len(seeds)} | {statistics.fmean(values):.4g} | "
                     f"{statistics.fmean(bases):.4g} | {change} |")
    return "\n".join(lines) + "\n"


def is_removed(label: str) -> bool:
    """Whether a row is of a candidate whose code was removed (an AutoWeight variant that is no
    longer in :data:`_train.AUTO_CANDIDATES`, such as ``auto_peak`` or ``auto_prev``)."""
    method = _plots.split_label(label)[0]
    return _plots.family(label) == "auto" and method not in _train.AUTO_CANDIDATES


def summarize(out: Path, auto_label: str) -> List[Dict]:
    """The acceptance table of every (problem, length) folder under ``out``, with each problem's
    method table; writes ``summary.md``, ``summary.csv``, the Pareto plots and, from the folders'
    curves, ``task_loss.md`` (:func:`task_losses` of the protocol's methods)."""
    verdicts, plots, losses = [], {}, []
    for length in LENGTHS:
        for problem in PROBLEMS:
            rows = _harness.read_rows(folder(out, problem, length) / "runs.csv")
            verdict = judge(problem, rows, auto_label) if rows else None
            if verdict is None:
                continue
            verdict["length"] = "realistic" if length == "realistic" else f"{LENGTHS[length]} steps"
            verdicts.append(verdict)
            curves = _plots.read_curves(folder(out, problem, length))
            if curves:
                labels = [lb for lb in verdict["table"] if lb in (auto_label, own_noise_label(auto_label))
                          or _plots.family(lb) in ("unbiased", "budget")]
                losses.append(task_loss_markdown(f"{TITLES[problem]}, {verdict['length']}", task_losses(curves),
                                                 labels))
            # Each method at its change against vanilla on the seeds they share (the tables' columns), not
            # at its own mean: methods run on different seeds, and vanilla's mean differs between seed sets.
            plots.setdefault(length, []).extend(
                {"problem": TITLES[problem], "label": s["label"],
                 "metric_name": "accuracy change" if verdict["kind"] == "accuracy" else "error ratio",
                 "test_metric_mean": s["metric_ratio"], "test_metric_std": "",
                 "test_nfe_mean": s["nfe_ratio"], "test_nfe_std": ""} for s in verdict["table"].values())
    if not verdicts:
        print(f"no results under {out}")
        return []
    text = (f"## Weight-control protocol: `{auto_label}` against vanilla, constant weights and NFEBudget\n\n"
            "Means over the seeds each method shares with vanilla (paired). (a): mean accuracy within "
            f"{100 * ACCURACY_TOLERANCE:.1f} points of vanilla's, or mean error within {100 * ERROR_TOLERANCE:.0f}% of "
            "vanilla's. The 90% interval of a change is a percentile bootstrap over the paired seeds (rough with "
            "3 seeds): how far the choice of seeds alone moves it. Per seed: the change on a typical seed (the "
            "geometric mean of the paired error ratios, or the median paired accuracy difference) and on how many "
            "seeds the method is worse than vanilla; a few seeds with errors far above the rest move the means "
            "(and so (a)) but not these. Seed noise: the change and interval of the constant weight 1e-4 where it "
            "ran, a perturbation of training too small to matter otherwise, so what the seeds alone move (a)'s "
            "statistic. AutoWeight()'s own noise: the change and test NFE of the same rule with its share 1e-6 "
            "larger, where it ran, and how far that moved single seeds against AutoWeight() itself: its "
            "regularization enters whole, so where training is chaotic this spread is far wider than the weight "
            "1e-4's. (b): test NFE at most "
            "that of the cheapest "
            "constant weight meeting (a) (every seed), plus "
            "one solver step (6 evaluations for dopri5, 3 drift evaluations for the adaptive Milstein solves); on "
            f"the two ODE classifiers also at most {CLASSIFIER_NFE_RATIO}x vanilla's NFE.\n\n"
            + acceptance_markdown(verdicts))
    text += "\n### Where AutoWeight() falls short\n\n" + shortfall_markdown(verdicts)
    text += ("\n### Seed noise: two references\n\nThe constant weight 1e-4 (the acceptance table's seed noise) "
             "and vanilla at a learning rate 1e-6 larger (no regularization at all), each against vanilla, and "
             "AutoWeight() against vanilla and against the learning-rate runs, on the seeds each pair shares: "
             "the change of the means, its 90% interval, and the typical seed's change.\n\n"
             + noise_markdown(verdicts))
    for v in verdicts:
        text += f"\n### {v['problem']}, {v['length']}\n\n" + methods_markdown(v)
    (out / "summary.md").write_text(text)
    if losses:
        (out / "task_loss.md").write_text(
            "## Weight-control protocol: the training task loss at the end of training\n\n"
            "Each run's task loss on its training batches (the logged loss less the regularization's weighted "
            f"part), averaged over the logged steps of the last {TASK_LOSS_TAIL:.0%} of the run, then over the "
            "seeds the method shares with vanilla; per seed: the geometric mean of the paired ratios against "
            "vanilla's and on how many seeds the loss is higher. Where accuracy saturates (the classifiers) this "
            "shows what a fit gave up that the test metric does not.\n\n" + "\n".join(losses))
    _harness.write_csv([{k: v for k, v in d.items() if k != "table"} for d in verdicts], out / "summary.csv")
    # the protocol's budget: the experiment scripts' default target (a fraction of vanilla's NFE)
    budget_label = f"budget@{rings.build_parser().get_default('budget_ratio'):g}"
    for length, rows in plots.items():
        name = "pareto" if length == "realistic" else f"pareto_{length}"
        steps = "the benchmarks' realistic steps" if length == "realistic" else f"{LENGTHS[length]} steps"
        title = f"Weight-control protocol ({steps}): changes against vanilla on the same seeds"
        protocol = [r for r in rows if r["label"] in (auto_label, budget_label)
                    or _plots.family(r["label"]) in ("vanilla", "unbiased")]
        # NFEBudget keeps one look whichever constants a problem's sweep has (AutoWeight()'s is fixed in _plots).
        looks = {"markers": {budget_label: "h"}, "colors": {budget_label: "#8A2BE2"},  # a colour not in _plots.PALETTE
                 "xlabel": "test NFE / vanilla's on the same seeds",
                 "legend_title": "ratio (or difference) of the means\nover the seeds shared with vanilla"}
        _plots.pareto(protocol, out / f"{name}.png", panel="problem", columns=3,
                      title=f"{title}: AutoWeight(), constant weights, NFEBudget (dashed: vanilla)", **looks)
        removed = [r for r in rows if is_removed(r["label"])]
        if len(protocol) + len(removed) < len(rows):
            _plots.pareto([r for r in rows if not is_removed(r["label"])], out / f"{name}_candidates.png",
                          panel="problem", columns=3,
                          title=f"{title}: the candidates still in the code (dashed: vanilla)", **looks)
        if removed:
            reference = [r for r in rows if r["label"] in ("vanilla", auto_label)]
            _plots.pareto(reference + removed, out / f"{name}_removed.png", panel="problem", columns=3,
                          title=f"{title}: the candidates removed after they lost, and AutoWeight() (dashed: "
                                f"vanilla)", **looks)
    print(text)
    return verdicts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--lengths", nargs="+", default=list(LENGTHS), choices=list(LENGTHS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help=f"methods of the experiment scripts (default: {' '.join(METHODS)}; candidates: "
                             f"{' '.join(m for m in _train.AUTO_CANDIDATES if m != 'auto')})")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="seeds (default: 5 on MNIST SDE, latent ODE, spiral SDE and Lotka-Volterra, 3 elsewhere)")
    parser.add_argument("--reg_weights", nargs="+", type=float, default=None,
                        help="constant weights of unbiased (default: each problem's sweep)")
    parser.add_argument("--auto_fractions", nargs="+", type=float, default=None,
                        help="shares c of AutoWeight and its candidates (default: AutoWeight.FRACTION)")
    parser.add_argument("--auto_label", type=str, default=None,
                        help="the row judged by --summarize (default: auto@<AutoWeight.FRACTION>)")
    _harness.add_session_args(parser, out_help="results folder (default benchmarks/results/weight_control/)",
                              data_root="data/")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from torchdiffeq_localreg import AutoWeight
    out = Path(args.out) if args.out else _harness.RESULTS / ("weight_control" + "_smoke" * args.smoke)
    auto_label = args.auto_label or f"auto@{AutoWeight.FRACTION:g}"
    if not args.summarize:
        wall = time.perf_counter()
        for length in args.lengths:
            for problem in args.problems:
                argv_problem = command(problem, length, args, out)
                script = PROBLEMS[problem][0]
                print(f"== {problem}, {length}: {Path(script.__file__).name} {' '.join(argv_problem)}", flush=True)
                script.main(argv_problem)
        print(f"total wall time {time.perf_counter() - wall:.1f}s")
    return summarize(out, auto_label)


if __name__ == "__main__":
    main()
