"""Training and evaluation shared by the ODE benchmarks (MNIST neural ODE, latent ODE on spirals).

A benchmark describes its problem with a :class:`Problem` (model, data, how a batch becomes an
initial state and a loss); this module trains it once per (method, seed) with the same model
initialisation, data order, optimiser and budget, evaluates it with plain ``torchdiffeq.odeint``,
and writes the tables and plots. The methods:

- ``vanilla``: no regularization.
- ``unbiased``, ``biased``: local regularization (ours), ``loss + reg_weight * reg``.
- ``unbiased_stiff``: as ``unbiased`` with the stiffness estimate inside reg (``stiffness_weight``).
- ``global``: the 2021 baseline, ``strategy="global"``; it backpropagates through the solver, so it
  always uses direct backprop, whatever ``--grad`` says.
- ``steer``: STEER's random end time.
- ``rnode``: RNODE's kinetic energy and Jacobian Frobenius norm as an augmented state.

Every training solve goes through ``odeint_reg`` / ``odeint_adjoint_reg`` (with ``strategy="none"``
for the methods that do not use reg, which is the plain upstream solve) so that NFE is counted the
same way for all methods.
"""
import argparse
import math
import statistics
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torchdiffeq
from tqdm import tqdm

from _harness import median_time, pareto_plot, pyplot, start_run, summarize, write_csv, write_results
from _regularizers import RNODEDynamics, steer_times
from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg

METHODS = ("vanilla", "unbiased", "biased", "unbiased_stiff", "global", "steer", "rnode")
LOCAL = ("unbiased", "biased")
TAYNODE_NOTE = ("TayNODE (Kelly et al. 2020) is not compared: it regularizes higher-order total derivatives "
                "through Taylor-mode automatic differentiation, which PyTorch does not have.")
METRICS = ("train_metric", "test_metric", "train_time", "pred_time", "test_nfe", "final_train_nfe")


class Problem:
    """What a benchmark provides. ``metric_name`` names the metric (``accuracy`` or ``mse``).

    Subclasses implement :meth:`make_model` (an ``nn.Module`` with the vector field as ``.func``),
    :meth:`batch` (the training batch of one iteration, drawn with ``generator``),
    :meth:`initial` (batch -> initial state, output times and an extra loss term, e.g. a KL),
    :meth:`loss` (solution -> task loss) and :meth:`metric` (solution -> metric, a float averaged over the batch).
    ``train_eval`` and ``test`` are the evaluation sets (tuples of tensors, batch first).
    """

    metric_name = "metric"
    train_eval: Tuple[torch.Tensor, ...] = ()
    test: Tuple[torch.Tensor, ...] = ()

    def make_model(self) -> nn.Module:
        raise NotImplementedError

    def batch(self, batch_size: int, generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def initial(self, model: nn.Module, batch, generator: Optional[torch.Generator]):
        """Returns ``(z0, t, extra_loss)``; ``generator`` is None at evaluation (no sampling)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, zs: torch.Tensor, batch) -> torch.Tensor:
        raise NotImplementedError

    def metric(self, model: nn.Module, zs: torch.Tensor, batch) -> float:
        raise NotImplementedError


def add_args(parser: argparse.ArgumentParser, *, niters: int, batch_size: int, lr: float, tol: float,
             reg_weight: float, stiffness_weight: float, global_weight: float, steer_b: float,
             rnode_weight: float, sweep_weights: Sequence[float]) -> argparse.ArgumentParser:
    """The flags every ODE benchmark has, with the benchmark's own defaults."""
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--niters", type=int, default=niters, help="training iterations per run")
    parser.add_argument("--batch_size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr, help="Adam learning rate")
    parser.add_argument("--tol", type=float, default=tol, help="rtol = atol of the training solves")
    parser.add_argument("--eval_tol", type=float, default=None, help="rtol = atol of the prediction solve (default: --tol)")
    parser.add_argument("--grad", choices=("direct", "adjoint"), default="direct",
                        help="gradient of the solve: backprop through the solver or odeint_adjoint "
                             "(global always uses direct)")
    parser.add_argument("--reg_weight", type=float, default=reg_weight, help="weight of reg for the local strategies")
    parser.add_argument("--stiffness_weight", type=float, default=stiffness_weight,
                        help="weight of the stiffness estimate inside reg for unbiased_stiff")
    parser.add_argument("--global_weight", type=float, default=global_weight, help="weight of the global reg")
    parser.add_argument("--steer_b", type=float, default=steer_b, help="STEER: end time drawn from [T-b, T+b]")
    parser.add_argument("--rnode_weight", type=float, default=rnode_weight,
                        help="RNODE: weight of the kinetic and of the Jacobian term (the same for both)")
    parser.add_argument("--sweep", action="store_true", help="also train the local strategies at --sweep_weights")
    parser.add_argument("--sweep_weights", nargs="+", type=float, default=list(sweep_weights))
    parser.add_argument("--pred_repeats", type=int, default=5, help="repeats of the timed prediction solve")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=str, default=None, help="results folder (default benchmarks/results/<name>/)")
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds (used by the tests)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    for name in ("niters", "batch_size", "pred_repeats", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    for name in ("lr", "tol"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name} must be > 0, got {getattr(args, name)}.")
    for name in ("reg_weight", "stiffness_weight", "global_weight", "steer_b", "rnode_weight"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"--{name} must be a finite number >= 0, got {value}.")
    if any(not (math.isfinite(w) and w >= 0) for w in args.sweep_weights):
        raise ValueError(f"--sweep_weights must be finite numbers >= 0, got {args.sweep_weights}.")
    if not args.seeds:
        raise ValueError("--seeds needs at least one seed.")


def run_specs(args: argparse.Namespace) -> List[Tuple[str, str, float]]:
    """``(label, method, weight)`` of every run: each method at its default weight, then the sweep."""
    weights = {"vanilla": 0.0, "unbiased": args.reg_weight, "biased": args.reg_weight,
               "unbiased_stiff": args.reg_weight, "global": args.global_weight, "steer": args.steer_b,
               "rnode": args.rnode_weight}
    specs = [(m, m, weights[m]) for m in args.methods]
    if args.sweep:
        for method in LOCAL:
            specs += [(f"{method}@{w:g}", method, w) for w in args.sweep_weights if w != args.reg_weight]
    return specs


def _solve(func, z0, t, args, strategy: str, stiffness_weight: float = 0.0,
           generator: Optional[torch.Generator] = None):
    kwargs = dict(rtol=args.tol, atol=args.tol, method="dopri5", strategy=strategy, stiffness_weight=stiffness_weight,
                  generator=generator, return_stats=True)
    if strategy in ("unbiased", "biased") and getattr(args, "reg_batch_size", None):
        kwargs["reg_batch_size"] = args.reg_batch_size  # the regularization step on that many rows
    if args.grad == "adjoint" and strategy != "global":
        return odeint_adjoint_reg(func, z0, t, **kwargs)
    return odeint_reg(func, z0, t, **kwargs)


def training_step(problem: Problem, model: nn.Module, batch, method: str, weight: float, args,
                  generator: torch.Generator):
    """Task loss and weighted penalty of one iteration of ``method``, and the stats of its solve."""
    z0, t, extra = problem.initial(model, batch, generator)
    func = model.func
    penalty = torch.zeros((), dtype=z0.dtype, device=z0.device)
    if method == "rnode":
        dynamics = RNODEDynamics(func)
        dynamics.resample(z0, generator)
        (zs, kinetic, jacobian), _, stats = _solve(dynamics, RNODEDynamics.initial_state(z0), t, args, "none")
        penalty = weight * (kinetic[-1].mean() + jacobian[-1].mean())
    else:
        if method == "steer":
            t = steer_times(t, weight, generator)
        strategy = {"vanilla": "none", "steer": "none", "unbiased_stiff": "unbiased"}.get(method, method)
        stiffness = args.stiffness_weight if method == "unbiased_stiff" else 0.0
        zs, reg, stats = _solve(func, z0, t, args, strategy, stiffness, generator)
        if strategy != "none":
            penalty = weight * reg
    return problem.loss(model, zs, batch) + extra, penalty, stats


COMBINE = ("sum", "project", "cap")


def combined_backward(params: Sequence[torch.Tensor], task: torch.Tensor, penalty: torch.Tensor, mode: str) -> None:
    """Sets ``.grad`` of ``params`` to the gradient of ``task`` plus that of ``penalty``, combined by ``mode``.

    The local regularizer's graph is separate from the solve's, so its gradient comes apart from
    the task's at the price of one more (cheap) backward pass. ``"sum"``: the plain gradient of
    ``task + penalty``. ``"project"``: when the two gradients conflict (negative inner product),
    the component of the penalty's gradient along the task's is removed (PCGrad, Yu et al. 2020),
    so the regularization never opposes the task to first order. ``"cap"``: the penalty's gradient
    is scaled down to at most the task gradient's norm, so no weight can drown the task.
    """
    if mode not in COMBINE:
        raise ValueError(f"mode must be one of {COMBINE}, got {mode!r}.")
    params = [p for p in params if p.requires_grad]
    if mode == "sum" or not penalty.requires_grad:
        grads = torch.autograd.grad(task + penalty, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        return
    g_task = [torch.zeros_like(p) if g is None else g
              for p, g in zip(params, torch.autograd.grad(task, params, allow_unused=True))]
    g_reg = [torch.zeros_like(p) if g is None else g
             for p, g in zip(params, torch.autograd.grad(penalty, params, allow_unused=True))]
    dot = sum((a * b).sum() for a, b in zip(g_task, g_reg))
    task_sq = sum((a * a).sum() for a in g_task)
    if mode == "project":
        if dot < 0 and task_sq > 0:
            g_reg = [b - (dot / task_sq) * a for a, b in zip(g_task, g_reg)]
    else:
        reg_norm = sum((b * b).sum() for b in g_reg).sqrt()
        scale = torch.clamp(task_sq.sqrt() / reg_norm, max=1.0) if reg_norm > 0 else 1.0
        g_reg = [b * scale for b in g_reg]
    for p, a, b in zip(params, g_task, g_reg):
        p.grad = a + b


@torch.no_grad()
def evaluate(problem: Problem, model: nn.Module, data, tol: float, repeats: int = 0) -> Dict[str, float]:
    """Metric and NFE of the prediction solve of ``data`` (one batch) at ``tol``; with ``repeats > 0``
    also the median wall time of the prediction (encoder, plain ``torchdiffeq.odeint``, read-out).

    NFE is read from ``odeint_reg(strategy="none")``, whose solve is bit-identical to the plain one.
    """
    z0, t, _ = problem.initial(model, data, None)
    zs, _, stats = odeint_reg(model.func, z0, t, rtol=tol, atol=tol, method="dopri5", strategy="none",
                              return_stats=True)
    out = {"metric": problem.metric(model, zs, data), "nfe": stats.nfe_forward}

    def predict():
        z0, t, _ = problem.initial(model, data, None)
        return problem.metric(model, torchdiffeq.odeint(model.func, z0, t, rtol=tol, atol=tol, method="dopri5"), data)

    if repeats > 0:  # the counting solve above was the warm-up
        out["time"] = median_time(predict, repeats=repeats, warmup=0)
    return out


def train_run(problem: Problem, label: str, method: str, weight: float, seed: int, args,
              control=None, progress: bool = False) -> Tuple[Dict, List[Dict]]:
    """Trains one model; returns its result row and its per-iteration curve.

    With ``control`` (an object with a float ``weight`` and ``update(stats)``, such as
    :class:`torchdiffeq_localreg.NFEBudget`), the weight of each iteration is ``control.weight``
    and ``control.update(stats)`` follows each optimizer step; ``weight`` is then ignored.
    ``progress`` shows a tqdm bar over the iterations.
    """
    torch.manual_seed(seed)
    model = problem.make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    data_order = torch.Generator().manual_seed(seed)       # the same batches for every method
    sampling = torch.Generator().manual_seed(10_000 + seed)  # reg samples, STEER times, RNODE probes
    curve = []
    train_time = 0.0
    iterations = range(1, args.niters + 1)
    bar = tqdm(iterations, desc=f"{label} seed {seed}", disable=not progress, leave=False, dynamic_ncols=True)
    for itr in bar:
        batch = problem.batch(args.batch_size, data_order)
        start = time.perf_counter()
        if control is not None:
            weight = control.weight
        task, penalty, stats = training_step(problem, model, batch, method, weight, args, sampling)
        loss = task.detach() + penalty.detach()
        optimizer.zero_grad()
        combined_backward(list(model.parameters()), task, penalty, getattr(args, "combine", "sum"))
        optimizer.step()
        if control is not None:
            control.update(stats)
        train_time += time.perf_counter() - start
        if progress:
            bar.set_postfix(loss=f"{loss.item():.3g}", nfe=stats.nfe_forward, weight=f"{weight:.3g}")
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{label} seed {seed}: loss is {loss.item()} at iteration {itr}.")
        curve.append({"method": label, "seed": seed, "itr": itr, "loss": loss.item(), "nfe_forward": stats.nfe_forward,
                      "nfe_backward": stats.nfe_backward, "nfe_reg": stats.nfe_reg, "weight": weight})
    model.eval()
    eval_tol = args.eval_tol or args.tol
    train_eval = evaluate(problem, model, problem.train_eval, eval_tol)
    test_eval = evaluate(problem, model, problem.test, eval_tol, repeats=args.pred_repeats)
    tail = curve[-max(1, len(curve) // 10):]
    row = {"method": label, "base_method": method, "weight": weight, "seed": seed,
           "train_metric": train_eval["metric"], "test_metric": test_eval["metric"], "train_time": train_time,
           "pred_time": test_eval["time"], "test_nfe": test_eval["nfe"],
           "final_train_nfe": statistics.fmean(r["nfe_forward"] for r in tail)}
    print(f"  {label:>16s} seed {seed}: train {problem.metric_name} {row['train_metric']:.4f}  "
          f"test {problem.metric_name} {row['test_metric']:.4f}  test NFE {row['test_nfe']}  "
          f"train NFE (last 10%) {row['final_train_nfe']:.1f}  train {train_time:.1f}s  "
          f"predict {row['pred_time'] * 1e3:.1f}ms", flush=True)
    return row, curve


def plot_training_nfe(curves: Sequence[Dict], path, title: str = ""):
    """Forward NFE over training, averaged over seeds and smoothed, one line per method."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    by_method: Dict[str, Dict[int, List[float]]] = {}
    for r in curves:
        by_method.setdefault(r["method"], {}).setdefault(r["itr"], []).append(r["nfe_forward"])
    for method, per_itr in by_method.items():
        itrs = sorted(per_itr)
        means = [statistics.fmean(per_itr[i]) for i in itrs]
        window = max(1, len(means) // 20)
        smooth = [statistics.fmean(means[max(0, i - window + 1):i + 1]) for i in range(len(means))]
        ax.plot(itrs, smooth, label=method, lw=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("forward NFE (training solve)")
    ax.set_title(title or "NFE over training")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_benchmark(name: str, problem: Problem, args, settings: Dict, paper_settings: Dict, title: str) -> Dict:
    """Trains every (method, seed), writes runs.csv, summary.csv/.md, training.csv and the plots."""
    settings = {**settings, "methods": " ".join(args.methods), "seeds": " ".join(map(str, args.seeds)),
                "niters": args.niters, "batch_size": args.batch_size, "lr": args.lr, "optimizer": "Adam",
                "solver": "dopri5", "rtol=atol": args.tol, "eval_tol": args.eval_tol or args.tol, "dtype": "float32",
                "grad": args.grad + (" (global: direct, it backpropagates through the solver)"
                                     if args.grad == "adjoint" else ""),
                "reg_weight": args.reg_weight, "stiffness_weight": args.stiffness_weight,
                "global_weight": args.global_weight, "steer_b": args.steer_b, "rnode_weight": args.rnode_weight,
                "sweep_weights": " ".join(map(str, args.sweep_weights)) if args.sweep else "off",
                "pred_repeats": args.pred_repeats, "threads": torch.get_num_threads(), "smoke": args.smoke}
    out = start_run(name, settings, paper_settings, args.out)
    print(TAYNODE_NOTE)
    rows, curves = [], []
    wall = time.perf_counter()
    for label, method, weight in run_specs(args):
        for seed in args.seeds:
            row, curve = train_run(problem, label, method, weight, seed, args)
            rows.append(row)
            curves += curve
    print(f"total wall time {time.perf_counter() - wall:.1f}s")
    summary = summarize(rows, METRICS, ratios=("test_nfe", "pred_time", "train_time"))
    for s in summary:
        s["weight"] = next(r["weight"] for r in rows if r["method"] == s["method"])
    m = problem.metric_name
    columns = ["method", "weight", "seeds", "train_metric_mean", "test_metric_mean", "test_metric_std", "test_nfe_mean",
               "test_nfe_std", "test_nfe_ratio", "pred_time_mean", "pred_time_ratio", "train_time_mean",
               "train_time_ratio", "final_train_nfe_mean"]
    text = write_results(out, rows, summary, columns, title=f"{title} (metric: {m})")
    with open(out / "summary.md", "a") as f:
        f.write(f"\n{TAYNODE_NOTE}\n")
    write_csv(curves, out / "training.csv")
    plot_training_nfe(curves, out / "nfe_training.png", title=f"{title}: NFE over training")
    pareto_plot(summary, "test_nfe", "test_metric", out / "pareto.png", xlabel="test NFE (plain odeint)",
                ylabel=f"test {m}", title=f"{title}: test {m} vs test NFE")
    return {"rows": rows, "summary": summary, "curves": curves, "out": out, "markdown": text}

