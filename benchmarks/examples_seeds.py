"""The six examples over paired seeds: each example's default command (``AutoWeight()``) against
the same command with ``--reg none``, seed by seed.

The weight-control protocol (``weight_control.py``) judges ``AutoWeight()`` on six problems at two
run lengths; the examples are other runs, short and at their own tolerances, and the first a user
tries. On 2026-12-05 a share that the protocol had accepted cost accuracy there (the latent ODE
example 1.23x plain training's error over 10 seeds), so a default is judged on these runs too.

Each run is the example's own process (``python examples/<name>.py --seed S --json ...``, plus
``--reg none`` for the plain run), with ``OMP_NUM_THREADS`` set to ``--threads``; its outputs go to
a temporary folder, its final numbers (the example's ``--json``) to a row of ``runs.csv``. Rows are
appended as runs finish, and a rerun trains only the (example, run, seed) it does not have yet.
``summary.md`` / ``summary.csv`` pair the two runs of each seed: the change of the means (error
ratio, or accuracy difference in points) with its 90% bootstrap interval, the change on a typical
seed, on how many seeds AutoWeight is worse, and the NFE and training-time ratios;
``examples.png`` shows every seed, and the means of the constant weights. ``--weights`` adds runs
at constant weights (the example's ``--reg_weight``, run ``weight@W``), each judged against plain
training in a second table: the weight 1e-4 is a noise reference (its regularization is too small
to matter, so its change is what the seeds alone move), the others show whether any constant cuts
the NFE without cost. ``--plain_lrs`` adds plain training at other learning rates (run
``plain@lr=X``; one example per command): a learning rate a millionth from the default is a noise
reference with no regularization at all. Further tables pair AutoWeight() with each noise
reference's runs (the weight 1e-4's, each learning rate's) instead of plain training's.

    python benchmarks/examples_seeds.py --jobs 2 --data_root data          # every example, default seeds
    python benchmarks/examples_seeds.py --examples latent_ode --seeds 0 1 2
    python benchmarks/examples_seeds.py --examples ode_demo --weights 0.0001 0.01 0.1 --runs_only
    python benchmarks/examples_seeds.py --examples ode_demo --plain_lrs 0.001000001 --runs_only
    python benchmarks/examples_seeds.py --summarize                         # tables and plot only
"""
import argparse
import concurrent.futures
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402
import _plots  # noqa: E402
from weight_control import (ACCURACY_TOLERANCE, ERROR_TOLERANCE, interval_text, metric_text,  # noqa: E402
                            paired_runs, relative_text, typical_text)

from torchdiffeq_localreg import AutoWeight  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
# Each example, the flag that names its output folder, whether it reads MNIST, and its default seeds
# (the MNIST ODE-Net takes about two minutes a run on one core, the others under one).
EXAMPLES: Dict[str, Tuple[str, bool, int]] = {
    "ode_demo": ("--out_dir", False, 10),
    "latent_ode": ("--train_dir", False, 10),
    "cnf": ("--results_dir", False, 10),
    "odenet_mnist": ("--save", True, 3),
    "sde_mnist": ("--save", True, 10),
    "latent_sde": ("--train-dir", False, 10),
}
RUNS = ("plain", "auto")  # --reg none, and the default command
WEIGHT_RUN = "weight@"    # a run at a constant weight: "weight@0.0001" is --reg_weight 0.0001
NOISE_RUN = WEIGHT_RUN + "0.0001"  # the noise reference: a regularization too small to matter
LR_RUN = "plain@lr="       # plain training at another learning rate: "plain@lr=0.001000001" is --reg none --lr ...
FIELDS = ("example", "run", "seed", "metric_name", "higher_is_better", "test_metric", "test_nfe", "final_train_nfe",
          "weight_control", "final_weight", "training_time_s", "wall_time_s", "cpu_time_s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", nargs="+", choices=tuple(EXAMPLES), default=list(EXAMPLES),
                        help="examples to run (default: all six)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="seeds (default: 10 for each example, 3 for odenet_mnist)")
    parser.add_argument("--weights", nargs="+", type=float, default=[],
                        help="constant weights to run too (the example's --reg_weight), each against plain "
                             "training; 0.0001 is a noise reference (default: none)")
    parser.add_argument("--plain_lrs", nargs="+", type=float, default=[],
                        help="plain training at these learning rates too (the example's --lr; one example per "
                             "command), each against plain training at the default: one a millionth from the "
                             "default is a noise reference with no regularization at all (default: none)")
    parser.add_argument("--runs_only", action="store_true",
                        help="with --weights or --plain_lrs: run those (and plain where missing) only, not "
                             "AutoWeight()")
    _harness.add_session_args(
        parser, out_help="results folder (default benchmarks/results/examples/, examples_smoke/ with --smoke)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Raises ValueError, naming the argument, before anything runs or is written."""
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}.")
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}.")
    if args.seeds is not None and any(s < 0 for s in args.seeds):
        raise ValueError(f"--seeds must be non-negative integers, got {args.seeds}.")
    if any(not (math.isfinite(w) and w > 0) for w in args.weights):
        raise ValueError(f"--weights must be finite numbers > 0, got {args.weights}.")
    if any(not (math.isfinite(lr) and lr > 0) for lr in args.plain_lrs):
        raise ValueError(f"--plain_lrs must be finite numbers > 0, got {args.plain_lrs}.")
    if args.plain_lrs and len(args.examples) != 1:
        raise ValueError(f"--plain_lrs needs exactly one of --examples (learning rates differ between the examples), "
                         f"got {args.examples}.")
    if args.runs_only and not (args.weights or args.plain_lrs):
        raise ValueError("--runs_only needs --weights or --plain_lrs (it runs those only).")


def runs_of(args: argparse.Namespace) -> List[str]:
    """The runs asked for: plain, AutoWeight() (unless --runs_only), each constant weight and each
    other learning rate of plain training."""
    return (["plain"] + ([] if args.runs_only else ["auto"]) + [f"{WEIGHT_RUN}{w:g}" for w in args.weights]
            + [f"{LR_RUN}{lr:.12g}" for lr in args.plain_lrs])


def todo(args: argparse.Namespace, rows: Sequence[Dict]) -> List[Tuple[str, str, int]]:
    """The (example, run, seed) asked for that ``rows`` does not hold yet, plain first."""
    done = {(r["example"], r["run"], int(r["seed"])) for r in rows}
    specs = []
    for example in args.examples:
        seeds = args.seeds if args.seeds is not None else range(EXAMPLES[example][2])
        specs += [(example, run, seed) for seed in seeds for run in runs_of(args) if (example, run, seed) not in done]
    return specs


def command(example: str, run: str, seed: int, args: argparse.Namespace, scratch: Path) -> List[str]:
    """The example's command line for one run, its outputs under ``scratch``."""
    out_flag, mnist, _ = EXAMPLES[example]
    cmd = [sys.executable, str(REPO / "examples" / f"{example}.py"), "--seed", str(seed),
           "--json", str(scratch / "final.json"), out_flag, str(scratch / "out")]
    if mnist:
        cmd += ["--data_root", args.data_root]
    if run == "plain":
        cmd += ["--reg", "none"]
    elif run.startswith(WEIGHT_RUN):
        cmd += ["--reg_weight", run[len(WEIGHT_RUN):]]
    elif run.startswith(LR_RUN):
        cmd += ["--reg", "none", "--lr", run[len(LR_RUN):]]
    if args.smoke:
        cmd.append("--smoke")
    return cmd


def execute(example: str, run: str, seed: int, args: argparse.Namespace) -> Dict:
    """Runs one example in its own process and returns its row; a failed run raises RuntimeError with
    the end of its output."""
    with tempfile.TemporaryDirectory(prefix=f"{example}_{run}_{seed}_") as scratch:
        scratch = Path(scratch)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        done = subprocess.run(command(example, run, seed, args, scratch), cwd=REPO, env=env, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{example} ({run}, seed {seed}) failed with exit code {done.returncode}:\n"
                               + (done.stdout + done.stderr)[-3000:])
        final = json.loads((scratch / "final.json").read_text())
    return {"example": example, "run": run, "seed": seed, **{k: final.get(k, "") for k in FIELDS[3:]}}


def train(args: argparse.Namespace, out: Path) -> int:
    """Runs what ``runs.csv`` lacks, ``--jobs`` at a time, appending each row as its run ends."""
    specs = todo(args, _harness.read_rows(out / "runs.csv"))
    print(f"{len(specs)} runs to do in {out}")
    added = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(execute, *spec, args): spec for spec in specs}
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            _harness.append_rows(out / "runs.csv", [row], FIELDS)
            added += 1
            print(f"[{added}/{len(specs)}] {row['example']} {row['run']} seed {row['seed']}: "
                  f"{row['metric_name']} {float(row['test_metric']):.4g}, test NFE {row['test_nfe']}", flush=True)
    return added


def kind_of(rows: Sequence[Dict]) -> str:
    """``accuracy`` where higher is better, else ``error`` (weight_control's two kinds of metric)."""
    return "accuracy" if str(rows[0]["higher_is_better"]) == "True" else "error"


def compare(example: str, rows: Sequence[Dict], run: str = "auto", base: str = "plain") -> Optional[Dict]:
    """The paired comparison of one example's ``run`` (``auto``, ``weight@W`` or ``plain@lr=X``)
    against its ``base`` runs, plain training's or a noise reference's (:data:`NOISE_RUN`, a
    ``plain@lr=X``); None without a seed that has both. ``metric`` and ``nfe`` are the run's means,
    ``base_metric`` and ``base_nfe`` the base's."""
    by_run = {name: {int(r["seed"]): r for r in _harness.first_per_seed([r for r in rows if r["example"] == example
                                                                         and r["run"] == name])}
              for name in (base, run)}
    seeds = sorted(set(by_run[base]) & set(by_run[run]))
    if not seeds:
        return None
    plain, auto = ([by_run[name][s] for s in seeds] for name in (base, run))
    kind = kind_of(plain)
    c = paired_runs(kind, auto, plain)
    time_p, time_a = (statistics.fmean(float(r["training_time_s"]) for r in runs) for runs in (plain, auto))
    return {"example": example, "run": run, "base": base, "metric_name": plain[0]["metric_name"], "kind": kind,
            "seeds": len(seeds),
            "base_metric": c["vanilla_metric"], "metric": c["metric"], "change": c["change"], "interval": c["interval"],
            "typical": c["typical"], "worse": c["worse"], "meets_a": c["a"], "base_nfe": c["vanilla_nfe"],
            "nfe": c["nfe"], "nfe_ratio": c["nfe_ratio"], "train_time_ratio": time_a / time_p,
            "per_seed": [(s, pr, ar) for s, pr, ar in zip(seeds, plain, auto)]}


def run_name(run: str) -> str:
    """``auto`` -> "AutoWeight()"; ``weight@0.0001`` -> "weight 0.0001"; ``plain@lr=0.001000001`` ->
    "plain, lr 0.001000001"."""
    return "AutoWeight()" if run == "auto" else run.replace(WEIGHT_RUN, "weight ").replace(LR_RUN, "plain, lr ")


def summary_markdown(comparisons: Sequence[Dict], name: str = "AutoWeight()", base: str = "plain") -> str:
    """The table of ``comparisons`` (of :func:`compare`); ``name`` heads the compared run's columns
    and ``base`` the columns of the runs it is compared with, and with ``name="run"`` each row names
    its run (the constant weights' table)."""
    per_row = name == "run"
    lines = [f"| example | {'run | ' if per_row else ''}metric | seeds | {base} | {name} | change | 90% interval | "
             f"per seed | within (a) | test NFE {base} -> {name} | NFE ratio | training time ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if per_row else "")]
    for c in comparisons:
        k = c["kind"]
        lines.append(f"| `{c['example']}.py` | {run_name(c['run']) + ' | ' if per_row else ''}{c['metric_name']} | "
                     f"{c['seeds']} | {metric_text(k, c['base_metric'])} | "
                     f"{metric_text(k, c['metric'])} | {relative_text(k, c['change'])} | "
                     f"{interval_text(k, c['interval'])} | "
                     f"{typical_text(k, c['typical'], c['worse'], c['seeds'])} | "
                     f"{'yes' if c['meets_a'] else '**no**'} | {c['base_nfe']:.1f} -> {c['nfe']:.1f} | "
                     f"{c['nfe_ratio']:.2f} | {c['train_time_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(comparisons: Sequence[Dict], path: Path, constants: Sequence[Dict] = ()) -> Path:
    """One panel per example: every seed's NFE ratio against its change (error ratio or accuracy
    difference), AutoWeight() against plain training of the same seed, and the means of the
    ``constants`` (:func:`compare` of the constant weights and the other learning rates) of that
    example, each named."""
    plt = _plots.pyplot()
    cols = 3
    rows_n = math.ceil(len(comparisons) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.4 * rows_n), squeeze=False)
    for ax, c in zip(axes.flat, comparisons):
        acc = c["kind"] == "accuracy"
        xs = [float(a["test_nfe"]) / float(p["test_nfe"]) for _, p, a in c["per_seed"]]
        ys = [(float(a["test_metric"]) - float(p["test_metric"])) * 100 if acc
              else float(a["test_metric"]) / float(p["test_metric"]) for _, p, a in c["per_seed"]]
        ax.scatter(xs, ys, s=28, color="tab:red", edgecolor="black", linewidth=0.5, zorder=3, label="one seed")
        ax.scatter([c["nfe_ratio"]], [100 * c["change"] if acc else c["change"]], marker="*", s=180, color="gold",
                   edgecolor="black", zorder=4, label="AutoWeight()'s means")
        marks = [(k["nfe_ratio"], 100 * k["change"] if acc else k["change"], k["run"])
                 for k in constants if k["example"] == c["example"]]
        for x, y, run in marks:
            lr = run.startswith(LR_RUN)
            ax.scatter([x], [y], marker="s" if lr else "D", s=46, color="white", edgecolor="black", linewidth=1.0,
                       zorder=4, label="means of plain training at another lr" if lr else "means of a constant weight")
        ax.axhline(0.0 if acc else 1.0, color="gray", linestyle="--", linewidth=0.8)
        ax.axvline(1.0, color="gray", linestyle="--", linewidth=0.8)
        middle = sum(ax.get_xlim()) / 2
        for i, (x, y, run) in enumerate(marks):  # towards the middle, above and below in turn
            ax.annotate(run_name(run), (x, y), xytext=(6 if x < middle else -6, (5, -11, 15, -21, 25, -31)[i % 6]),
                        fontsize=7, textcoords="offset points", ha="left" if x < middle else "right")
        ax.set_title(f"{c['example']}.py ({c['seeds']} seeds)", fontsize=10)
        ax.set_xlabel("test NFE / plain's, same seed")
        ax.set_ylabel("accuracy - plain's (points)" if acc else f"{c['metric_name']} / plain's (lower is better)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(comparisons):]:
        ax.axis("off")
    fig.suptitle("The examples: AutoWeight() against plain training, seed by seed (dashed: plain)", fontsize=11,
                 x=0.02, ha="left")
    legend = {}
    for ax in axes.flat:  # each kind of marker once, from whichever panel has it
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    return _plots._save(plt, fig, path)


def summarize(out: Path) -> List[Dict]:
    """Writes ``summary.md``, ``summary.csv`` and ``examples.png`` from every row of ``out/runs.csv``."""
    rows = _harness.read_rows(out / "runs.csv")
    comparisons = [c for c in (compare(e, rows) for e in EXAMPLES) if c is not None]
    others = [run for prefix in (WEIGHT_RUN, LR_RUN)  # constant weights, then other learning rates, each ascending
              for run in sorted({r["run"] for r in rows if r["run"].startswith(prefix)},
                                key=lambda run, n=len(prefix): float(run[n:]))]
    constants = [c for c in (compare(e, rows, run) for e in EXAMPLES for run in others) if c is not None]
    if not comparisons and not constants:
        print(f"no runs paired with plain ones under {out}")
        return []
    text = ("## The examples over paired seeds: `AutoWeight()` against plain training\n\n"
            "Each example's default command against the same command with `--reg none`, same seed. Change: the "
            "ratio of the mean errors, or the difference of the mean accuracies; its 90% interval a percentile "
            "bootstrap over the paired seeds. Per seed: the change on a typical seed (the geometric mean of the "
            "paired error ratios, or the median accuracy difference) and on how many seeds AutoWeight() is worse. "
            f"Within (a): the weight-control protocol's margin (mean error within {100 * ERROR_TOLERANCE:.0f}%, "
            f"mean accuracy within {100 * ACCURACY_TOLERANCE:.1f} points). `AutoWeight()`'s shares: "
            f"{AutoWeight.FRACTION:g} (ODE), {AutoWeight.FRACTION_SDE:g} (SDE).\n\n"
            + (summary_markdown(comparisons) if comparisons
               else "No AutoWeight() run is paired with a plain one yet.\n"))
    if constants:
        text += ("\n### Constant weights against plain training\n\n"
                 "The same commands with `--reg_weight W` instead of AutoWeight(), against plain training on the same "
                 "seeds. The weight 0.0001 is a noise reference: its regularization is too small to matter, so its "
                 "change is what the seeds alone move the comparison. `plain, lr X`: plain training (`--reg none`) at "
                 "the learning rate X instead of the example's default; one a millionth from the default is a noise "
                 "reference with no regularization at all.\n\n" + summary_markdown(constants, "run"))
    against_noise = []
    for base in [NOISE_RUN] + [run for run in others if run.startswith(LR_RUN)]:
        paired = [c for c in (compare(e, rows, "auto", base) for e in EXAMPLES) if c is not None]
        if paired:
            text += (f"\n### `AutoWeight()` against the noise reference {run_name(base)}\n\n"
                     f"AutoWeight()'s runs paired with the runs \"{run_name(base)}\" on the same seeds instead of "
                     "plain training's: where a negligible change already moves the comparison with plain training "
                     "(training that is chaotic, or plain runs that happen to be good on these seeds), this is what "
                     "AutoWeight() changes beyond it. (a)'s margin is applied as above.\n\n"
                     + summary_markdown(paired, base=run_name(base)))
            against_noise += paired
    (out / "summary.md").write_text(text)
    _harness.write_csv([{k: v for k, v in c.items() if k != "per_seed"} for c in comparisons + constants
                        + against_noise],
                       out / "summary.csv")
    if comparisons:  # one panel per example that has AutoWeight() runs
        plot(comparisons, out / "examples.png", constants)
    print(text)
    return comparisons


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    args = build_parser().parse_args(argv)
    check_args(args)
    out = Path(args.out) if args.out else RESULTS / ("examples" + "_smoke" * args.smoke)
    if not args.summarize:
        with _harness.folder_lock(out):
            settings = {"commands": "each example's default command; plain: the same with --reg none",
                        "threads": args.threads, "smoke": args.smoke,
                        "share_ode": AutoWeight.FRACTION, "share_sde": AutoWeight.FRACTION_SDE}
            selection = {"examples": " ".join(args.examples),
                         "seeds": "default" if args.seeds is None else " ".join(map(str, args.seeds)),
                         "runs": " ".join(runs_of(args)), "jobs": args.jobs}
            _harness.start_run("examples", settings, out_dir=str(out), selection=selection)
            added = train(args, out)
            _harness.finish_run(out, added)
    return summarize(out)


if __name__ == "__main__":
    main()
