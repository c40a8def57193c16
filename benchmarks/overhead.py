"""Overhead of the plugin itself: odeint_reg against plain torchdiffeq, measured in one run.

On the benchmarks' two vector fields at initialisation (the MNIST neural ODE's 785-100-784
concat-MLP on a batch of random images; the latent ODE's spiral field on a batch of random latent
states over the 50-point grid), times and counts the function evaluations (NFE) of

- ``torchdiffeq.odeint`` against ``odeint_reg(strategy="none" | "unbiased" | "biased")``, and
- ``torchdiffeq.odeint_adjoint`` against ``odeint_adjoint_reg(...)`` with the same strategies,

forward only and forward + backward (loss = mean of the squared end state, + reg). The repeats of
all variants are interleaved (round-robin, in a rotating order) to spread machine drift evenly; the
median time of each is divided by the median of the plain upstream call. With ``strategy="none"``
the solve must be upstream's exactly: the script raises if its NFE or its solution differs.

Then the share of the regularization step in one training iteration of the MNIST neural ODE
(``MNISTNODE`` of ``mnist_node.py`` at initialisation, a batch of ``--train_batch`` random images and
labels; zero_grad, solve, cross-entropy + reg, backward, Adam step), timed with
``torch.utils.benchmark.Timer`` for three variants, interleaved: no regularization
(``strategy="none"``), the unbiased step on the whole batch, and on ``--reg_batch_size`` rows. The
Adam step has learning rate 0, so it does all of its work but leaves the parameters as they are and
every repeat times the same solve. The step's share is (time - time without reg) / time, each the
median of the repeats; the script raises if the solve (its NFE or its solution) differs between the
variants. Written to ``training_step.csv`` and ``training_step.md``.

    python benchmarks/overhead.py            # a few minutes
    python benchmarks/overhead.py --smoke    # a few seconds
"""
import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn as nn
import torchdiffeq
from torch.utils.benchmark import Timer

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _plots  # noqa: E402
from _harness import iqr, markdown_table, start_run, write_csv  # noqa: E402
from latent_ode_spirals import LatentODE  # noqa: E402
from mnist_node import MNISTNODE, ODEFunc  # noqa: E402
from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg  # noqa: E402

VARIANTS = ("torchdiffeq", "none", "unbiased", "biased")
PAPER = {"claim": "one extra solver step per sample (about 6-7 evaluations for dopri5) and its backward, "
                  "independent of the length of the solve; no overhead measurement is reported"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="*", default=["mnist_node", "spiral"], choices=["mnist_node", "spiral"],
                        help="solves to compare with upstream (none: only the training iteration)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--n_times", type=int, default=50, help="output times of the spiral problem")
    parser.add_argument("--tol", type=float, default=1e-5, help="rtol = atol")
    parser.add_argument("--repeats", type=int, default=25, help="timed repeats of every variant (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--train_batch", type=int, default=256, help="batch of the MNIST training iteration")
    parser.add_argument("--reg_batch_size", type=int, default=32, help="rows of the sub-batch regularization step")
    parser.add_argument("--train_repeats", type=int, default=15, help="timed training iterations per variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=str, default=None, help="results folder (default benchmarks/results/overhead/)")
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds (used by the tests)")
    return parser


class _Counted(nn.Module):
    """Counts evaluations of the plain upstream solves (used in an untimed call only)."""

    def __init__(self, func: nn.Module):
        super().__init__()
        self.func, self.nfe = func, 0

    def forward(self, t, y):
        self.nfe += 1
        return self.func(t, y)


def make_problem(name: str, batch_size: int, n_times: int, generator: torch.Generator):
    """``(func, y0, t)`` of a benchmark's vector field at initialisation."""
    if name == "mnist_node":
        return ODEFunc(), torch.rand(batch_size, 784, generator=generator), torch.tensor([0.0, 1.0])
    field = LatentODE(latent=4, hidden=32).func
    return field, torch.randn(batch_size, 4, generator=generator), torch.linspace(0.0, 2.0, n_times)


def make_call(variant: str, adjoint: bool, backward: bool, func: nn.Module, y0, t, tol: float) -> Callable:
    """A function ``call(count) -> (nfe, solution)``; ``count=True`` also counts the plain solve's NFE."""
    kwargs = dict(rtol=tol, atol=tol, method="dopri5")

    def call(count: bool = False):
        if variant == "torchdiffeq":
            f = _Counted(func) if count else func
            solve = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
            sol, reg, stats = solve(f, y0, t, **kwargs), None, None
        else:
            solve = odeint_adjoint_reg if adjoint else odeint_reg
            generator = torch.Generator(device=y0.device).manual_seed(0)  # the same sample every repeat
            sol, reg, stats = solve(func, y0, t, strategy=variant, generator=generator, return_stats=True, **kwargs)
        if backward:
            loss = sol[-1].pow(2).mean()
            (loss if reg is None else loss + reg).backward()
            func.zero_grad(set_to_none=True)
        nfe = (f.nfe if count else None) if stats is None else stats.nfe_total
        return nfe, sol.detach()

    return call


def interleaved(calls: Dict[str, Callable], warmup: int, repeats: int) -> Dict[str, List[float]]:
    """Seconds of ``repeats`` calls of each of ``calls`` after ``warmup`` untimed rounds, round-robin in a
    rotating order (machine drift spreads evenly), each timed by ``torch.utils.benchmark.Timer``."""
    names = list(calls)
    timers = {v: Timer(stmt="call()", globals={"call": calls[v]}, num_threads=torch.get_num_threads())
              for v in names}
    times: Dict[str, List[float]] = {v: [] for v in names}
    for r in range(warmup + repeats):
        shift = r % len(names)
        for v in names[shift:] + names[:shift]:
            seconds = timers[v].timeit(1).raw_times[0]
            if r >= warmup:
                times[v].append(seconds)
    return times


def measure_group(problem: str, adjoint: bool, backward: bool, func, y0, t, args) -> List[Dict]:
    calls = {v: make_call(v, adjoint, backward, func, y0, t, args.tol) for v in VARIANTS}
    counted = {v: calls[v](count=True) for v in VARIANTS}
    base_nfe, base_sol = counted["torchdiffeq"]
    none_nfe, none_sol = counted["none"]
    label = f"{problem}, {'odeint_adjoint' if adjoint else 'odeint'}, {'forward+backward' if backward else 'forward'}"
    if none_nfe != base_nfe:
        raise RuntimeError(f"{label}: strategy='none' used {none_nfe} evaluations, upstream {base_nfe}.")
    if not torch.equal(none_sol, base_sol):
        raise RuntimeError(f"{label}: strategy='none' changed the solution.")
    times = interleaved({v: calls[v] for v in VARIANTS}, args.warmup, args.repeats)
    base_time = statistics.median(times["torchdiffeq"])
    rows = []
    for v in VARIANTS:
        median = statistics.median(times[v])
        rows.append({"problem": problem, "grad": "adjoint" if adjoint else "direct",
                     "mode": "forward+backward" if backward else "forward", "variant": v, "nfe": counted[v][0],
                     "nfe_ratio": counted[v][0] / base_nfe, "time_ms": 1e3 * median, "time_ratio": median / base_time,
                     "time_iqr_ms": 1e3 * iqr(times[v])})
    print(f"  {label}: " + "  ".join(f"{r['variant']} {r['time_ratio']:.3f}x (NFE {r['nfe']})" for r in rows),
          flush=True)
    return rows


TRAIN_VARIANTS = ("no reg", "full batch", "reg_batch_size")


def make_training_step(variant: str, model: nn.Module, x, labels, t, tol: float, reg_batch_size: int) -> Callable:
    """One training iteration of ``model`` on ``(x, labels)``; returns ``(stats, solution)``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)   # all of Adam's work, parameters unchanged

    def step():
        optimizer.zero_grad(set_to_none=True)
        if variant == "no reg":
            kwargs = dict(strategy="none")
        else:
            kwargs = dict(strategy="unbiased", generator=torch.Generator().manual_seed(0),   # the same sample every repeat
                          reg_batch_size=None if variant == "full batch" else reg_batch_size)
        zs, reg, stats = odeint_reg(model.func, x, t, rtol=tol, atol=tol, method="dopri5", return_stats=True,
                                    **kwargs)
        loss = nn.functional.cross_entropy(model.classifier(zs[-1]), labels) + reg
        loss.backward()
        optimizer.step()
        return stats, zs.detach()

    return step


def measure_training_step(args) -> List[Dict]:
    """The regularization step's share of a training iteration of the MNIST neural ODE."""
    torch.manual_seed(args.seed)
    model = MNISTNODE()
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.train_batch, 784, generator=generator)
    labels = torch.randint(10, (args.train_batch,), generator=generator)
    t = torch.tensor([0.0, 1.0])
    steps = {v: make_training_step(v, model, x, labels, t, args.tol, args.reg_batch_size) for v in TRAIN_VARIANTS}
    checked = {v: steps[v]() for v in TRAIN_VARIANTS}
    base_stats, base_sol = checked["no reg"]
    for v, (stats, sol) in checked.items():
        if stats.nfe_forward != base_stats.nfe_forward or not torch.equal(sol, base_sol):
            raise RuntimeError(f"training step: the solve of {v!r} differs from the one without regularization.")
    times = interleaved(steps, args.warmup, args.train_repeats)
    base = statistics.median(times["no reg"])
    rows = []
    for v in TRAIN_VARIANTS:
        median = statistics.median(times[v])
        stats = checked[v][0]
        rows.append({"variant": v, "rows": args.train_batch if v == "full batch" else
                     (args.reg_batch_size if v == "reg_batch_size" else 0),
                     "nfe_forward": stats.nfe_forward, "nfe_reg": stats.nfe_reg, "time_ms": 1e3 * median,
                     "time_iqr_ms": 1e3 * iqr(times[v]), "time_ratio": median / base,
                     "reg_share": (median - base) / median})
    print("  MNIST NODE training iteration, batch {}: ".format(args.train_batch) + "  ".join(
        f"{r['variant']} {r['time_ms']:.1f} ms (reg share {100 * r['reg_share']:.1f}%)" for r in rows), flush=True)
    return rows


def plot_ratios(rows: List[Dict], path) -> Path:
    groups = list(dict.fromkeys((r["problem"], r["grad"], r["mode"]) for r in rows))
    names = {"none": "strategy none (no regularization)", "unbiased": "local, unbiased", "biased": "local, biased"}
    series = {names[v]: [next(r["time_ratio"] for r in rows
                              if (r["problem"], r["grad"], r["mode"]) == g and r["variant"] == v) for g in groups]
              for v in VARIANTS[1:]}
    return _plots.bars(groups, series, path, ylabel="median time / plain torchdiffeq's (ratio)",
                       title="Time of odeint_reg / odeint_adjoint_reg relative to plain torchdiffeq (1 = no overhead)")


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.batch_size, args.n_times, args.tol, args.repeats, args.warmup = 8, 5, 1e-3, 2, 0
        args.train_batch, args.reg_batch_size, args.train_repeats = 8, 2, 1
    for name in ("batch_size", "repeats", "threads", "train_batch", "train_repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if not 1 <= args.reg_batch_size <= args.train_batch:
        raise ValueError(f"--reg_batch_size must be in [1, --train_batch], got {args.reg_batch_size}.")
    if args.n_times < 2:
        raise ValueError(f"--n_times must be >= 2, got {args.n_times}.")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}.")
    if not args.tol > 0:
        raise ValueError(f"--tol must be > 0, got {args.tol}.")
    torch.set_num_threads(args.threads)
    settings = {"problems": " ".join(args.problems), "spiral_times": args.n_times, "fields": "at initialisation (seed below)",
                "batch_size": args.batch_size, "solver": "dopri5", "rtol=atol": args.tol, "dtype": "float32",
                "repeats": args.repeats, "warmup": args.warmup, "seed": args.seed, "threads": torch.get_num_threads(),
                "train_batch": args.train_batch, "reg_batch_size": args.reg_batch_size,
                "train_repeats": args.train_repeats, "smoke": args.smoke}
    out = start_run("overhead", settings, PAPER, args.out)
    rows = []
    for problem in args.problems:
        torch.manual_seed(args.seed)
        func, y0, t = make_problem(problem, args.batch_size, args.n_times, torch.Generator().manual_seed(args.seed))
        for adjoint in (False, True):
            for backward in (False, True):
                rows += measure_group(problem, adjoint, backward, func, y0, t, args)
    if rows:
        write_csv(rows, out / "runs.csv")
        write_csv(rows, out / "summary.csv")
        table = ("## Overhead: time and NFE relative to plain torchdiffeq (median of "
                 f"{args.repeats} interleaved repeats)\n\n" + markdown_table(rows))
        (out / "summary.md").write_text(table)
        print(table)
        plot_ratios(rows, out / "overhead.png")
    train_rows = measure_training_step(args)
    write_csv(train_rows, out / "training_step.csv")
    table = (f"## MNIST NODE training iteration, batch {args.train_batch}: the regularization step's share "
             f"(median of {args.train_repeats} interleaved repeats)\n\n" + markdown_table(train_rows))
    (out / "training_step.md").write_text(table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
