"""The one training loop and runner of every benchmark, ODE and SDE.

A benchmark describes its problem with a :class:`Task` (model, data, one training solve, the
evaluation): :class:`Problem` for a neural ODE (solved with ``odeint_reg`` / ``odeint_adjoint_reg``,
evaluated with plain ``torchdiffeq.odeint``), ``_sde.SDEProblem`` for a neural SDE. :func:`train_run`
trains it once per (method, weight, seed) with the same model initialisation, data order, optimiser
and budget, and :func:`run_benchmark` runs every (method, weight, seed) a command asks for,
appending each finished run's row to ``runs.csv`` (a rerun skips what is there), one process at a
time or ``--jobs`` at once, then writes the summary and the plots. The methods:

- ``vanilla``: no regularization.
- ``vanilla_lr``: no regularization, at the learning rate ``lr * (1 + LR_PERTURBATION)`` (its ``weight``
  column is that relative change, 1e-6): a noise reference that leaves the loss itself untouched.
- ``unbiased``, ``biased``: local regularization (ours), ``loss + weight * reg``, at every weight
  of ``--reg_weights``.
- ``unbiased_stiff``: as ``unbiased`` with the stiffness estimate inside reg (``stiffness_weight``).
- ``budget``: ``unbiased`` with the weight set by ``NFEBudget`` (its default settings), target
  ``--budget_ratio`` (0.6) x vanilla's training NFE of the same seed (``final_train_nfe``: the mean
  over its last 10% of steps, the number the control itself sees); its ``weight`` column is that ratio.
- ``global``: the 2021 baseline, ``strategy="global"``; it backpropagates through the solver, so it
  always uses direct backprop, whatever ``--grad`` says.
- ``steer``: STEER's random end time (``weight`` is its half-width b).
- ``rnode``: RNODE's kinetic energy and Jacobian Frobenius norm as an augmented state.

Every training solve goes through the package's entry points (with ``strategy="none"`` for the
methods that do not use reg, which is the plain upstream solve) so that NFE is counted the same way
for all methods.
"""
import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torchdiffeq
from tqdm import tqdm

import _plots
from _harness import (RESULTS, append_rows, finish_run, folder_lock, iqr, markdown_table, read_rows, significant,
                      start_run, summarize_runs, time_call, time_prediction, write_csv)
from _regularizers import RNODEDynamics, steer_times
from torchdiffeq_localreg import AutoWeight, NFEBudget, odeint_adjoint_reg, odeint_reg

METHODS = ("vanilla", "vanilla_lr", "unbiased", "biased", "unbiased_stiff", "budget", "auto", "auto_c", "auto_nomom",
           "auto_nocap", "auto_k30", "auto_k100", "auto_eps", "auto_cf", "auto_cfeps", "share", "share_nocap", "global",
           "steer", "rnode")
# Rows of methods no longer trained (candidates removed after they lost; their commits are named in
# benchmarks/README.md) are still summarized, after these.
# AutoWeight and the candidates of the weight-control protocol: its class settings overridden
# (benchmarks/weight_control.py); the run's ``weight`` is the fraction c (AutoWeight.FRACTION).
AUTO_CANDIDATES: Dict[str, Dict[str, object]] = {
    "auto": {},                                       # AutoWeight() itself
    "auto_c": {},                                     # its design at one share c for ODEs and SDEs alike
    "auto_nomom": {"MOMENTUM": 0.0},                  # projected against this step's task gradient only
    "auto_nocap": {"CEILING": math.inf},
    "auto_k30": {"CEILING": 30.0},
    "auto_k100": {"CEILING": 100.0},
    "auto_eps": {},                                 # AutoWeight() with its shares 1e-6 larger: its own noise
    "auto_cf": {},                                  # AutoWeight() (with its conflict factor) at the share c
    "auto_cfeps": {},                               # auto_cf with the share c 1e-6 larger: its noise reference
    "share": {"NORM_SMOOTHING": 0.0, "MOMENTUM": 0.0},  # the first design: each step's own gradient norms
    "share_nocap": {"NORM_SMOOTHING": 0.0, "MOMENTUM": 0.0, "CEILING": math.inf},
}
REG_WEIGHTED = ("unbiased", "biased", "unbiased_stiff")  # trained at every weight of --reg_weights
LR_PERTURBATION = 1e-6  # vanilla_lr: the learning rate larger by this fraction
# The training solve's strategy of the methods that do not use the package's strategy of their name.
STRATEGIES = {"vanilla": "none", "vanilla_lr": "none", "steer": "none", "unbiased_stiff": "unbiased"}
TAYNODE_NOTE = ("TayNODE (Kelly et al. 2020) is not compared: it regularizes higher-order total derivatives "
                "through Taylor-mode automatic differentiation, which PyTorch does not have.")
# The columns of runs.csv (a problem's extra_metrics follow) and of curves.csv.
FIELDS = ("method", "weight", "seed", "metric_name", "train_metric", "test_metric", "test_nfe", "final_train_nfe",
          "target_nfe", "final_weight", "train_time", "pred_time", "pred_time_iqr", "niters")
CURVE_FIELDS = ("method", "weight", "seed", "itr", "loss", "penalty", "nfe_forward", "nfe_backward", "nfe_reg",
                "current_weight")
CURVE_POINTS = 100  # rows of curves.csv per run (every niters // 100 iterations)
TIMINGS = ("train_time", "pred_time", "pred_time_iqr")  # the columns that differ between two identical runs


class Task:
    """What the runner needs of a benchmark problem.

    ``metric_name`` names the metric (``accuracy``, or an error: lower is better); ``extra_metrics``
    names further per-run columns that :meth:`evaluate` returns.
    """

    metric_name = "metric"
    extra_metrics: Tuple[str, ...] = ()

    def make_model(self) -> nn.Module:
        raise NotImplementedError

    def batch(self, batch_size: int, generator: torch.Generator):
        """The training batch of one iteration, drawn with ``generator`` (the data order)."""
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch, method: str, weight: float, args, generator: torch.Generator,
                      itr: int, seed: int):
        """``(task_loss, weighted_penalty, stats)`` of iteration ``itr`` of ``method`` at ``weight``;
        ``generator`` draws every sample of the method (reg samples, STEER times, RNODE probes)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, args) -> Dict[str, float]:
        """``train_metric``, ``test_metric``, ``test_nfe`` (the NFE of the prediction of the test set) and
        the ``extra_metrics``."""
        raise NotImplementedError

    def predictor(self, model: nn.Module, args) -> Callable[[], object]:
        """The prediction of the test set with the plain upstream solver, as timed."""
        raise NotImplementedError

    def to(self, device: torch.device) -> None:
        """Moves the problem's tensors (and tuples of tensors) to ``device``."""
        for name, value in vars(self).items():
            if torch.is_tensor(value):
                setattr(self, name, value.to(device))
            elif isinstance(value, tuple) and value and all(torch.is_tensor(v) for v in value):
                setattr(self, name, tuple(v.to(device) for v in value))


class Problem(Task):
    """A neural ODE problem. Subclasses implement :meth:`make_model` (an ``nn.Module`` with the vector
    field as ``.func``), :meth:`batch`, :meth:`initial` (batch -> initial state, output times and an
    extra loss term, e.g. a KL), :meth:`loss` (solution -> task loss) and :meth:`metric` (solution ->
    metric, a float averaged over the batch). ``train_eval`` and ``test`` are the evaluation sets
    (tuples of tensors, batch first).
    """

    train_eval: Tuple[torch.Tensor, ...] = ()
    test: Tuple[torch.Tensor, ...] = ()

    def initial(self, model: nn.Module, batch, generator: Optional[torch.Generator]):
        """Returns ``(z0, t, extra_loss)``; ``generator`` is None at evaluation (no sampling)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, zs: torch.Tensor, batch) -> torch.Tensor:
        raise NotImplementedError

    def metric(self, model: nn.Module, zs: torch.Tensor, batch) -> float:
        raise NotImplementedError

    def training_step(self, model, batch, method, weight, args, generator, itr=0, seed=0):
        z0, t, extra = self.initial(model, batch, generator)
        penalty = torch.zeros((), dtype=z0.dtype, device=z0.device)
        if method == "rnode":
            dynamics = RNODEDynamics(model.func)
            dynamics.resample(z0, generator)
            (zs, kinetic, jacobian), _, stats = _solve(dynamics, RNODEDynamics.initial_state(z0), t, args, "none")
            penalty = weight * (kinetic[-1].mean() + jacobian[-1].mean())
        else:
            if method == "steer":
                t = steer_times(t, weight, generator)
            strategy = STRATEGIES.get(method, method)
            stiffness = args.stiffness_weight if method == "unbiased_stiff" else 0.0
            zs, reg, stats = _solve(model.func, z0, t, args, strategy, stiffness, generator)
            if strategy != "none":
                penalty = weight * reg
        return self.loss(model, zs, batch) + extra, penalty, stats

    def _count(self, model: nn.Module, data, tol: float) -> Tuple[float, int]:
        """Metric and NFE of the prediction solve of ``data`` (``odeint_reg(strategy="none")``, whose solve
        is bit-identical to the plain one)."""
        z0, t, _ = self.initial(model, data, None)
        zs, _, stats = odeint_reg(model.func, z0, t, rtol=tol, atol=tol, method="dopri5", strategy="none",
                                  return_stats=True)
        return self.metric(model, zs, data), stats.nfe_forward

    @torch.no_grad()
    def evaluate(self, model, args):
        tol = args.eval_tol or args.tol
        train_metric, _ = self._count(model, self.train_eval, tol)
        test_metric, nfe = self._count(model, self.test, tol)
        return {"train_metric": train_metric, "test_metric": test_metric, "test_nfe": nfe}

    def predictor(self, model, args):
        tol = args.eval_tol or args.tol

        @torch.no_grad()
        def predict():
            z0, t, _ = self.initial(model, self.test, None)
            zs = torchdiffeq.odeint(model.func, z0, t, rtol=tol, atol=tol, method="dopri5")
            return self.metric(model, zs, self.test)

        return predict


SHARE_NOISE = 1e-6  # the relative change of the shares in the noise references auto_eps and auto_cfeps
# Candidates run at their share c times a factor (the noise reference of auto_cf); the others at c.
SHARE_SCALES = {"auto_cfeps": 1 + SHARE_NOISE}


def make_auto(method: str, fraction: float) -> AutoWeight:
    """The AutoWeight of ``method`` (a key of :data:`AUTO_CANDIDATES`): ``auto`` is the package's
    class at its defaults (``fraction`` must be its FRACTION), ``auto_eps`` the same with both
    shares 1e-6 larger; the other candidates use the share ``fraction`` for ODE and SDE solves alike
    (``auto_cfeps``: ``fraction`` 1e-6 larger)."""
    if method in ("auto", "auto_eps"):
        if fraction != AutoWeight.FRACTION:
            raise ValueError(f"{method} runs AutoWeight() at its defaults (share {AutoWeight.FRACTION:g}, "
                             f"{AutoWeight.FRACTION_SDE:g} for SDEs); for the share {fraction:g} use auto_c.")
        return AutoWeight() if method == "auto" else PerturbedShare()
    share = fraction * SHARE_SCALES.get(method, 1.0)
    settings = dict(AUTO_CANDIDATES[method], FRACTION=share, FRACTION_SDE=share)
    return type(f"AutoWeight_{method}", (AutoWeight,), settings)()


class PerturbedShare(AutoWeight):
    """Candidate ``auto_eps``, a noise reference, not a design: AutoWeight() with both its shares
    larger by a factor 1 + 1e-6. The weight then differs in the sixth digit, which changes
    nothing a user would call a setting but perturbs training, as another CPU does; the spread of
    its paired errors against AutoWeight()'s is AutoWeight()'s own seed noise (the weight 1e-4 is
    vanilla's: its regularization enters only 1e-4-fold)."""

    FRACTION = AutoWeight.FRACTION * (1 + SHARE_NOISE)
    FRACTION_SDE = AutoWeight.FRACTION_SDE * (1 + SHARE_NOISE)


def _solve(func, z0, t, args, strategy: str, stiffness_weight: float = 0.0,
           generator: Optional[torch.Generator] = None):
    kwargs = dict(rtol=args.tol, atol=args.tol, method="dopri5", strategy=strategy, stiffness_weight=stiffness_weight,
                  generator=generator, return_stats=True)
    if strategy in ("unbiased", "biased") and getattr(args, "reg_batch_size", None):
        kwargs["reg_batch_size"] = args.reg_batch_size  # the regularization step on that many rows
    if args.grad == "adjoint" and strategy != "global":
        return odeint_adjoint_reg(func, z0, t, **kwargs)
    return odeint_reg(func, z0, t, **kwargs)


def capped_backward(params: Sequence[torch.Tensor], task: torch.Tensor, penalty: torch.Tensor) -> None:
    """Accumulates the gradient of ``task`` plus that of ``penalty`` scaled down to at most the task
    gradient's norm (the ``budget_cap`` candidate of the weight-control protocol; it did not earn a
    place in the package: on the disk-vs-ring task it kept the regularization from ever winning,
    and the weight ran to its bound)."""
    params = [p for p in params if p.requires_grad]
    g_task = torch.autograd.grad(task, params, allow_unused=True, retain_graph=True)
    g_reg = torch.autograd.grad(penalty, params, allow_unused=True)
    task_norm = torch.sqrt(sum((g * g).sum() for g in g_task if g is not None))
    reg_norm = torch.sqrt(sum((g * g).sum() for g in g_reg if g is not None))
    scale = torch.clamp(task_norm / reg_norm, max=1.0) if reg_norm > 0 else 1.0
    for p, a, c in zip(params, g_task, g_reg):
        parts = [g for g in (p.grad, a, None if c is None else scale * c) if g is not None]
        if parts:
            p.grad = sum(parts[1:], parts[0])


class RunStopped(Exception):
    """A run stopped at ``--time_limit``; its checkpoint holds where it got to."""


CHECKPOINT_KEYS = ("label", "seed", "niters", "itr", "model", "optimizer", "schedule", "control", "data_order",
                   "sampling", "torch_rng", "cuda_rng", "curve", "train_time")


def save_checkpoint(path: Path, state: Dict) -> None:
    """Writes ``state`` to ``path`` through a temporary file in the same folder (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path, label: str, seed: int, niters: int) -> Dict:
    """The checkpoint of run ``label``/``seed`` of ``niters`` iterations at ``path``, read with
    ``weights_only=True`` (tensors, numbers, strings and containers only) and checked to be that
    run's and to hold every entry; ``ValueError`` names the file otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint of a benchmark run: {error}") from error
    if not isinstance(state, dict) or set(state) != set(CHECKPOINT_KEYS):
        raise ValueError(f"{path} is not a checkpoint of a benchmark run (its entries are not {CHECKPOINT_KEYS}).")
    found = (state["label"], state["seed"], state["niters"])
    if found != (label, seed, niters):
        raise ValueError(f"{path} holds run {found[0]} seed {found[1]} of {found[2]} iterations, not {label} seed "
                         f"{seed} of {niters}: delete it to start this run afresh.")
    if not (isinstance(state["itr"], int) and 1 <= state["itr"] < niters and len(state["curve"]) == state["itr"]):
        raise ValueError(f"{path}: its iteration {state['itr']!r} and curve do not fit a run of {niters} iterations.")
    return state


def train_run(problem: Task, label: str, method: str, weight: float, seed: int, args,
              control=None, progress: bool = False, position: int = 0,
              save_model: Optional[Path] = None, checkpoint: Optional[Path] = None) -> Tuple[Dict, List[Dict]]:
    """Trains one model and evaluates it; returns its result row and its per-iteration curve.

    ``method`` is one of :data:`METHODS` but ``budget``. With ``control`` (an object with a float
    ``weight`` and ``update(stats)``, such as :class:`torchdiffeq_localreg.NFEBudget`), the weight of
    each iteration is ``control.weight`` and ``control.update(stats)`` follows each optimizer step;
    ``weight`` is then ignored. ``progress`` shows a tqdm bar over the iterations (on line
    ``position``). Reads ``args.niters, batch_size, lr`` and, if present, ``lr_decay`` (inverse
    decay ``lr / (1 + lr_decay * itr)``), ``combine`` (``"cap"``: :func:`capped_backward`), ``device``
    and ``pred_repeats``; the problem reads the rest. With a ``control`` that has a ``backward``
    method (``NFEBudget``), the step's backward pass is ``control.backward(task_loss, reg,
    model.parameters())``, the package's recommended step (its ``combine`` setting decides between
    the projection and the plain sum); otherwise it is ``(task_loss + weight * reg).backward()``.
    With ``save_model``, the trained model's ``state_dict`` (on the CPU) is saved there, for
    :func:`retime`. With ``checkpoint``, a run that finds a checkpoint there continues from it, and
    ``args.time_limit`` (if set) stops the run once it has trained that long (wall seconds since
    this call), after saving the checkpoint, with :class:`RunStopped`. The checkpoint holds
    everything the remaining iterations read (model, optimizer, schedule, control, the data-order
    and sampling generators, torch's random states, the curve so far), so the finished run is the
    one an uninterrupted run gives; it is deleted once the run has finished.
    """
    if method not in METHODS or method == "budget":
        raise ValueError(f"method must be one of {tuple(m for m in METHODS if m != 'budget')}, got {method!r}.")
    device = torch.device(getattr(args, "device", "cpu"))
    problem.to(device)
    torch.manual_seed(seed)
    model = problem.make_model().to(device)
    lr = args.lr * (1 + weight) if method == "vanilla_lr" else args.lr
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    lr_decay = getattr(args, "lr_decay", 0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 / (1.0 + lr_decay * i)) if lr_decay else None
    data_order = torch.Generator().manual_seed(seed)       # the same batches for every method
    sampling = torch.Generator().manual_seed(10_000 + seed)  # reg samples, STEER times, RNODE probes
    curve = []
    train_time, first, wall = 0.0, 1, time.perf_counter()
    time_limit = getattr(args, "time_limit", None)
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, label, seed, args.niters)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(state["schedule"])
        if control is not None:
            control.load_state_dict(state["control"])
        data_order.set_state(state["data_order"])
        sampling.set_state(state["sampling"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        curve, train_time, first = state["curve"], state["train_time"], state["itr"] + 1
        print(f"{label} seed {seed}: continues from iteration {state['itr']} of {args.niters} ({checkpoint})",
              flush=True)
    bar = tqdm(range(first, args.niters + 1), desc=f"{label} seed {seed}", disable=None if progress else True,
               leave=False, dynamic_ncols=True, position=position, initial=first - 1, total=args.niters)
    for itr in bar:
        batch = problem.batch(args.batch_size, data_order)
        start = time.perf_counter()
        if control is not None:
            weight = control.weight
        # With a control the step returns reg itself (weight 1) and the control applies its weight.
        scale = weight if control is not None else 1.0
        task, penalty, stats = problem.training_step(model, batch, method, 1.0 if control is not None else weight, args,
                                                     sampling, itr=itr, seed=seed)
        loss = task.detach() + scale * penalty.detach()
        optimizer.zero_grad()
        if getattr(args, "combine", "sum") == "cap":
            capped_backward(list(model.parameters()), task, scale * penalty)
        elif control is not None and hasattr(control, "backward"):
            control.backward(task, penalty, model.parameters())
        else:
            (task + scale * penalty).backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if control is not None:
            control.update(stats)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - start
        if progress:
            bar.set_postfix(loss=f"{loss.item():.3g}", nfe=stats.nfe_forward, weight=f"{weight:.3g}")
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{label} seed {seed}: loss is {loss.item()} at iteration {itr}.")
        curve.append({"method": label, "seed": seed, "itr": itr, "loss": loss.item(), "penalty": penalty.item(),
                      "nfe_forward": stats.nfe_forward, "nfe_backward": stats.nfe_backward, "nfe_reg": stats.nfe_reg,
                      "weight": weight})
        if (checkpoint is not None and time_limit is not None and itr < args.niters
                and time.perf_counter() - wall >= time_limit):
            save_checkpoint(checkpoint, {
                "label": label, "seed": seed, "niters": args.niters, "itr": itr, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": None if schedule is None else schedule.state_dict(),
                "control": None if control is None else control.state_dict(), "data_order": data_order.get_state(),
                "sampling": sampling.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "curve": curve, "train_time": train_time})
            bar.close()
            raise RunStopped(f"{label} seed {seed}: stopped at iteration {itr} of {args.niters} (--time_limit "
                             f"{time_limit:g}s); rerun the command to continue from {checkpoint}")
    bar.close()
    model.eval()
    if save_model is not None:
        save_model.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, save_model)
    result = problem.evaluate(model, args)
    pred_time, pred_iqr = time_prediction(problem.predictor(model, args), getattr(args, "pred_repeats", 3))
    tail = curve[-max(1, len(curve) // 10):]
    row = {"method": label, "base_method": method, "weight": weight, "seed": seed, **result, "train_time": train_time,
           "pred_time": pred_time, "pred_time_iqr": pred_iqr,
           "final_train_nfe": statistics.fmean(r["nfe_forward"] for r in tail)}
    return row, curve


# ---- the command line --------------------------------------------------------------------------

def add_args(parser: argparse.ArgumentParser, *, methods: Sequence[str], niters: int, batch_size: int, lr: float,
             tol: float, reg_weights: Sequence[float], global_weight: float, steer_b: float, rnode_weight: float,
             lr_decay: float = 0.0, pred_repeats: int = 3) -> argparse.ArgumentParser:
    """The flags every benchmark has, with the benchmark's own defaults (``methods``: the default
    ``--methods``, also the allowed ones besides ``unbiased_stiff`` for an ODE)."""
    parser.add_argument("--methods", nargs="+", default=list(methods), metavar="METHOD",
                        help=f"methods to train, of {' '.join(METHODS)} (default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of every method")
    parser.add_argument("--reg_weights", nargs="+", type=float, default=list(reg_weights),
                        help="weights of reg for the local strategies (each is a run)")
    parser.add_argument("--global_weight", type=float, default=global_weight, help="weight of the global reg")
    parser.add_argument("--steer_b", type=float, default=steer_b, help="STEER: end time drawn from [T-b, T+b]")
    parser.add_argument("--rnode_weight", type=float, default=rnode_weight,
                        help="RNODE: weight of the kinetic and of the Jacobian term (the same for both)")
    parser.add_argument("--budget_ratio", type=float, default=0.6,
                        help="budget: NFEBudget's target as a fraction of vanilla's training NFE of the same seed "
                             "(mean over its last 10%% of steps)")
    parser.add_argument("--auto_fractions", nargs="+", type=float, default=[AutoWeight.FRACTION],
                        help="auto and its candidates: the share c of the task's pull (AutoWeight.FRACTION; each "
                             "is a run)")
    parser.add_argument("--niters", type=int, default=niters, help="training iterations per run")
    parser.add_argument("--batch_size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr, help="Adam learning rate")
    parser.add_argument("--lr_decay", type=float, default=lr_decay, help="inverse decay: lr / (1 + lr_decay * itr)")
    parser.add_argument("--tol", type=float, default=tol, help="rtol = atol of the solves")
    parser.add_argument("--pred_repeats", type=int, default=pred_repeats,
                        help="timed repeats of the prediction of the test set (median and IQR)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of each process")
    parser.add_argument("--device", type=str, default="cpu", help="torch device of the runs (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    parser.add_argument("--out", type=str, default=None,
                        help="results folder (default benchmarks/results/<name>/, <name>_smoke/ with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds (used by the tests)")
    parser.add_argument("--run", nargs=3, default=None, metavar=("METHOD", "WEIGHT", "SEED"),
                        help="internal (--jobs): train this one run, append its row, and exit")
    parser.add_argument("--slot", type=int, default=0, help="internal (--jobs): line of the progress bar")
    parser.add_argument("--time_limit", type=float, default=None, metavar="SECONDS",
                        help="stop each run once it has trained this long (wall seconds, this command), keeping a "
                             "checkpoint under <out>/checkpoints/; rerunning the command continues it from there "
                             "and gives the row an uninterrupted run gives (for machines lent for a limited time)")
    parser.add_argument("--reproduce", action="store_true",
                        help="retrain the asked-for runs that have a row but no saved model (trained before models "
                             "were saved), check that they give their row's test NFE and metric, and save their "
                             "models; adds no rows")
    parser.add_argument("--retime", action="store_true",
                        help="train nothing: time the prediction of every saved model of the folder, interleaved "
                             "in one process (--pred_repeats rounds; run it on an otherwise idle machine), write "
                             "timing.csv and the summary")
    return parser


def add_ode_args(parser: argparse.ArgumentParser, stiffness_weight: float = 0.1) -> argparse.ArgumentParser:
    """The flags of the ODE benchmarks only."""
    parser.add_argument("--eval_tol", type=float, default=None, help="rtol = atol of the prediction solve (default: --tol)")
    parser.add_argument("--grad", choices=("direct", "adjoint"), default="direct",
                        help="gradient of the solve: backprop through the solver or odeint_adjoint "
                             "(global always uses direct)")
    parser.add_argument("--stiffness_weight", type=float, default=stiffness_weight,
                        help="weight of the stiffness estimate inside reg for unbiased_stiff")
    parser.add_argument("--reg_batch_size", type=int, default=None,
                        help="rows of the batch in the local regularization step (default: all)")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], smoke: Mapping) -> argparse.Namespace:
    """Parses ``argv``; with ``--smoke`` the defaults are first replaced by ``smoke`` (flags given still win)."""
    args = parser.parse_args(argv)
    if args.smoke:
        defaults = {k: parser.get_default(k) for k in smoke}
        parser.set_defaults(**smoke)
        try:
            args = parser.parse_args(argv)
        finally:
            parser.set_defaults(**defaults)
    return args


def settings_of(args: argparse.Namespace) -> Dict:
    """The training settings of the command (what a rerun into the same folder must not change); the
    run selection (methods, weights, seeds) and the process settings (threads, jobs) are not in it."""
    settings = {"niters": args.niters, "batch_size": args.batch_size, "optimizer": "Adam", "lr": args.lr,
                "lr_decay": args.lr_decay, "rtol=atol": args.tol, "dtype": "float32",
                "device": torch.device(args.device).type, "smoke": args.smoke}
    if hasattr(args, "grad"):  # an ODE benchmark
        settings.update(solver="dopri5", eval_tol=args.eval_tol or args.tol,
                        grad=args.grad + (" (global: direct, it backpropagates through the solver)"
                                          if args.grad == "adjoint" else ""),
                        stiffness_weight=args.stiffness_weight, reg_batch_size=args.reg_batch_size or "all")
    if hasattr(args, "sde_method"):  # an SDE benchmark
        settings.update(sde_method=f"{args.sde_method} (adaptive, step doubling)", dt0=args.dt,
                        sigma_max=args.sigma_max)
    return settings


def check_args(args: argparse.Namespace, allowed: Sequence[str] = METHODS) -> None:
    """Raises ``ValueError`` naming the flag for a value out of range."""
    # every benchmark can run the auto candidates and the learning-rate noise reference
    allowed = tuple(dict.fromkeys((*allowed, "vanilla_lr", *AUTO_CANDIDATES)))
    unknown = [m for m in args.methods if m not in allowed]
    if unknown:
        raise ValueError(f"--methods must be among {' '.join(allowed)}, got {' '.join(unknown)}.")
    for name in ("niters", "batch_size", "pred_repeats", "threads", "jobs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if not args.auto_fractions or any(not (math.isfinite(c) and c > 0) for c in args.auto_fractions):
        raise ValueError(f"--auto_fractions must be finite numbers > 0, got {args.auto_fractions}.")
    for name in ("lr", "tol", "budget_ratio"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name} must be > 0, got {getattr(args, name)}.")
    for name in ("global_weight", "steer_b", "rnode_weight", "lr_decay", "stiffness_weight"):
        value = getattr(args, name, 0.0)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"--{name} must be a finite number >= 0, got {value}.")
    if not args.reg_weights or any(not (math.isfinite(w) and w >= 0) for w in args.reg_weights):
        raise ValueError(f"--reg_weights must be finite numbers >= 0, got {args.reg_weights}.")
    if not args.seeds:
        raise ValueError("--seeds needs at least one seed.")
    time_limit = getattr(args, "time_limit", None)
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit >= 0):
        raise ValueError(f"--time_limit must be a finite number of seconds >= 0, got {time_limit}.")
    if getattr(args, "reg_batch_size", None) is not None and args.reg_batch_size < 1:
        raise ValueError(f"--reg_batch_size must be >= 1, got {args.reg_batch_size}.")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise ValueError(f"--device: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here.")


# ---- the runner --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    """One run: a method at a weight on a seed."""

    method: str
    weight: float
    seed: int

    @property
    def label(self) -> str:
        return self.method if self.method == "vanilla" else f"{self.method}@{self.weight:g}"

    @property
    def key(self) -> Tuple[str, str, int]:
        return self.method, f"{self.weight:g}", self.seed


def _key(row: Mapping) -> Tuple[str, str, int]:
    return row["method"], f"{float(row['weight']):g}", int(row["seed"])


def run_specs(args: argparse.Namespace) -> List[Spec]:
    """Every run of the command: vanilla first (the budget's target needs it; it is added when the
    budget is asked for), then each method at its weights, seed by seed."""
    weights = {"vanilla": [0.0], "vanilla_lr": [LR_PERTURBATION], "budget": [args.budget_ratio],
               "global": [args.global_weight], "steer": [args.steer_b], "rnode": [args.rnode_weight],
               **{m: args.auto_fractions for m in AUTO_CANDIDATES}}
    methods = list(dict.fromkeys(args.methods))
    if "budget" in methods or "vanilla" in methods:
        methods = ["vanilla"] + [m for m in methods if m != "vanilla"]
    return [Spec(m, w, s) for m in methods for w in dict.fromkeys(weights.get(m, args.reg_weights))
            for s in args.seeds]


def _run_file(out: Path, folder: str, spec: Spec) -> Path:
    return out / folder / f"{spec.method}_{spec.weight:g}_seed{spec.seed}.pt"


def model_path(out: Path, spec: Spec) -> Path:
    """Where a run's trained model is saved (``models/`` is not tracked by git)."""
    return _run_file(out, "models", spec)


def checkpoint_path(out: Path, spec: Spec) -> Path:
    """Where a run stopped by ``--time_limit`` keeps its checkpoint (not tracked by git)."""
    return _run_file(out, "checkpoints", spec)


def _waits_for_stopped_vanilla(spec: Spec, todo: Sequence[Spec], attempted: Sequence[Spec], done) -> bool:
    """Whether ``spec`` is a budget run whose vanilla run (of this command) was trained and stopped
    at ``--time_limit`` without a row: it has no target to start from until a later command; says so."""
    waits = spec.method == "budget" and any(s.method == "vanilla" and s.seed == spec.seed and s.key not in done
                                            for s in todo if s in attempted)
    if waits:
        print(f"  {spec.label:>18s} seed {spec.seed}: waits for vanilla seed {spec.seed} (stopped)", flush=True)
    return waits


def _train_spec(problem: Task, spec: Spec, args: argparse.Namespace, out: Path, position: int = 0,
                resumable: bool = False):
    """Trains one run (a budget run reads its target from vanilla's row) and saves its model;
    returns its result row, its curve, the control (None but for budget) and the target. A
    ``resumable`` run continues from its checkpoint and may stop at ``--time_limit``
    (:class:`RunStopped`)."""
    control, target, method = None, float("nan"), spec.method
    if spec.method == "budget":
        vanilla = [r for r in read_rows(out / "runs.csv") if _key(r) == ("vanilla", "0", spec.seed)]
        if not vanilla:
            raise RuntimeError(f"budget seed {spec.seed} needs the vanilla row of the same seed in {out / 'runs.csv'}.")
        # The control sees the training solves' NFE, so its target is in those units; for an ODE it is
        # the test NFE (MNIST NODE: 44.0 and 44), for an SDE it is not (MNIST SDE: about 20 and 38).
        target = spec.weight * float(vanilla[0]["final_train_nfe"])
        control, method = NFEBudget(target_nfe=target), "unbiased"
    elif spec.method in AUTO_CANDIDATES:
        control, method = make_auto(spec.method, spec.weight), "unbiased"
    result, curve = train_run(problem, spec.label, method, spec.weight, spec.seed, args, control=control,
                              progress=not args.smoke, position=position, save_model=model_path(out, spec),
                              checkpoint=checkpoint_path(out, spec) if resumable else None)
    return result, curve, control, target


def execute(problem: Task, spec: Spec, args: argparse.Namespace, out: Path, position: int = 0) -> Optional[Dict]:
    """Trains one run, saves its model, appends its curve to ``curves.csv`` (or its latest part,
    :func:`_plots.curves_file_to_append`) and then its row to
    ``runs.csv``, prints a one-line summary; returns the row. A run stopped by ``--time_limit``
    adds nothing, says so and returns None; a finished run's checkpoint is deleted."""
    try:
        result, curve, control, target = _train_spec(problem, spec, args, out, position, resumable=True)
    except RunStopped as stopped:
        print(f"  {stopped}", flush=True)
        return None
    every = max(1, args.niters // CURVE_POINTS)
    append_rows(_plots.curves_file_to_append(out), ({**{k: significant(v) for k, v in c.items()}, "method": spec.method,
                                      "weight": spec.weight, "current_weight": significant(c["weight"])}
                                     for c in curve if c["itr"] % every == 0), CURVE_FIELDS)
    row = {**result, "method": spec.method, "weight": spec.weight, "metric_name": problem.metric_name,
           "target_nfe": target, "final_weight": control.weight if control else spec.weight, "niters": args.niters}
    append_rows(out / "runs.csv", [row], FIELDS + tuple(problem.extra_metrics))
    checkpoint_path(out, spec).unlink(missing_ok=True)
    print(f"  {spec.label:>18s} seed {spec.seed}: train {problem.metric_name} {row['train_metric']:.4f}  "
          f"test {problem.metric_name} {row['test_metric']:.4f}  test NFE {row['test_nfe']}  "
          f"train NFE (last 10%) {row['final_train_nfe']:.1f}  train {row['train_time']:.1f}s  "
          f"predict {row['pred_time'] * 1e3:.1f}ms (IQR {row['pred_time_iqr'] * 1e3:.1f})", flush=True)
    return row


def reproduce(problem: Task, specs: Sequence[Spec], args: argparse.Namespace, out: Path) -> List[Spec]:
    """Retrains the runs of ``specs`` that have a row in ``runs.csv`` but no saved model (trained
    before models were saved), to save their models for :func:`retime`; adds no rows. Only the
    methods of ``args.methods`` are retrained (not the vanilla runs that ``budget`` adds to the specs),
    so that two commands can share the work. Training is
    deterministic on a given machine and device, so the retrained run must give the row's test NFE
    and test metric: otherwise its model is deleted and ``RuntimeError`` says so. Returns the runs retrained.
    """
    rows = {_key(r): r for r in read_rows(out / "runs.csv")}
    todo = [s for s in specs if s.method in args.methods and s.key in rows and not model_path(out, s).exists()]
    print(f"{len(todo)} runs to retrain for their models", flush=True)
    for spec in todo:
        result, _, _, _ = _train_spec(problem, spec, args, out)
        row = rows[spec.key]
        if int(result["test_nfe"]) != int(row["test_nfe"]) or result["test_metric"] != float(row["test_metric"]):
            model_path(out, spec).unlink()
            raise RuntimeError(f"{spec.label} seed {spec.seed} did not reproduce its row: test NFE "
                               f"{result['test_nfe']} (row {row['test_nfe']}), test {problem.metric_name} "
                               f"{result['test_metric']!r} (row {row['test_metric']}); its model is not kept.")
        print(f"  {spec.label:>18s} seed {spec.seed}: reproduced (test NFE {row['test_nfe']}, test "
              f"{problem.metric_name} {row['test_metric']}), model saved", flush=True)
    return todo


def retime(problem: Task, args: argparse.Namespace, out: Path) -> List[Dict]:
    """Times the prediction of the test set by every run's saved model, interleaved in one process:
    each of ``args.pred_repeats`` rounds times one prediction per model (``torch.utils.benchmark.Timer``,
    after one untimed call each), in a new random order per round, so that a change in the machine's
    load falls on all models alike. Writes ``timing.csv`` (per run: median and IQR over the rounds,
    the number of models timed together, the 1-minute load average before timing) and returns its
    rows. Runs without a saved model are listed and left out. Meant for an otherwise idle machine.
    """
    device = torch.device(args.device)
    problem.to(device)
    timed, missing = [], []
    for row in read_rows(out / "runs.csv"):
        spec = Spec(row["method"], float(row["weight"]), int(row["seed"]))
        path = model_path(out, spec)
        if not path.exists():
            missing.append(f"{spec.label} seed {spec.seed}")
            continue
        model = problem.make_model()
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as error:  # a file that is not this experiment's model
            raise ValueError(f"{path} is not a saved model of this experiment's runs: {error}") from error
        model.to(device).eval()
        timed.append((spec, problem.predictor(model, args)))
    if missing:
        print(f"no saved model, not timed: {', '.join(missing)} (rerun with --reproduce to save them)")
    if not timed:
        raise RuntimeError(f"no saved models in {out / 'models'}: nothing to time.")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for _, predict in timed:
        predict()
    times: List[List[float]] = [[] for _ in timed]
    order, shuffle = list(range(len(timed))), random.Random(0)
    for _ in tqdm(range(args.pred_repeats), desc=f"timing {len(timed)} models, interleaved", disable=True if args.smoke else None):
        shuffle.shuffle(order)
        for i in order:
            times[i].append(time_call(timed[i][1]))
    date = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = [{"method": spec.method, "weight": spec.weight, "seed": spec.seed,
             "pred_time_interleaved": statistics.median(t), "pred_time_interleaved_iqr": iqr(t), "rounds": len(t),
             "models": len(timed), "load_average": load, "date": date} for (spec, _), t in zip(timed, times)]
    write_csv(rows, out / "timing.csv")
    print(f"timed {len(timed)} models over {args.pred_repeats} interleaved rounds (load average before: {load:.2f}); "
          f"wrote {out / 'timing.csv'}")
    return rows


def _run_parallel(todo: List[Spec], args: argparse.Namespace, out: Path, command: List[str]) -> None:
    """Runs ``todo`` as ``args.jobs`` processes at a time, each ``command --run METHOD WEIGHT SEED``
    with one torch thread; a budget run starts once its seed's vanilla row is in ``runs.csv``."""
    pending, running, slots = list(todo), {}, list(range(args.jobs))
    try:
        while pending or running:
            done = {_key(r) for r in read_rows(out / "runs.csv")}
            finished = [s for s in todo if s not in pending and s not in running]
            for spec in list(pending):
                if _waits_for_stopped_vanilla(spec, todo, finished, done):
                    pending.remove(spec)
                    continue
                if len(running) == args.jobs:
                    break
                if spec.method == "budget" and ("vanilla", "0", spec.seed) not in done:
                    continue
                slot = slots.pop(0)
                running[spec] = (subprocess.Popen([*command, "--threads", "1", "--run", spec.method, repr(spec.weight),
                                                   str(spec.seed), "--slot", str(slot)]), slot)
                pending.remove(spec)
            if not running and not pending:
                break  # the last ones were budget runs whose vanilla runs stopped
            if not running:
                raise RuntimeError(f"no run can start: {', '.join(s.label for s in pending)} need vanilla rows.")
            time.sleep(0.2)
            for spec, (process, slot) in list(running.items()):
                if process.poll() is not None:
                    del running[spec]
                    slots.append(slot)
                    if process.returncode != 0:
                        raise RuntimeError(f"run {spec.label} seed {spec.seed} failed (exit code {process.returncode}).")
    finally:
        for process, _ in running.values():
            process.terminate()
            process.wait()


def run_benchmark(name: str, make_problem: Callable[[], Task], args: argparse.Namespace, argv: Optional[Sequence[str]],
                  script: str, settings: Dict, paper_settings: Dict, title: str, notes: str = "") -> Dict:
    """Trains every (method, weight, seed) of the command that ``runs.csv`` does not have yet, then
    writes ``summary.csv``, ``summary.md``, ``pareto.png`` and ``nfe_training.png`` from all of its rows.

    ``make_problem`` builds the problem (only where runs are trained); ``script`` and ``argv`` are
    the command, which ``--jobs`` reruns once per run in its own process.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else RESULTS / (name + "_smoke" * args.smoke)
    if args.run is not None:  # one run of --jobs: the parent wrote settings.json
        method, weight, seed = args.run
        execute(make_problem(), Spec(method, float(weight), int(seed)), args, out, position=args.slot)
        return {}
    with folder_lock(out):
        return _run_command(name, make_problem, args, argv, script, settings, paper_settings, title, notes, out)


def _run_command(name: str, make_problem: Callable[[], Task], args: argparse.Namespace, argv: List[str], script: str,
                 settings: Dict, paper_settings: Dict, title: str, notes: str, out: Path) -> Dict:
    """:func:`run_benchmark`'s command (not one run of ``--jobs``), with its results folder held."""
    specs = run_specs(args)
    selection = {"methods": " ".join(dict.fromkeys(s.method for s in specs)), "seeds": " ".join(map(str, args.seeds)),
                 "reg_weights": " ".join(map(str, args.reg_weights)), "global_weight": args.global_weight,
                 "steer_b": args.steer_b, "rnode_weight": args.rnode_weight, "budget_ratio": args.budget_ratio,
                 "jobs": args.jobs}
    if args.retime or args.reproduce:
        selection = {"mode": "--retime" if args.retime else "--reproduce", **selection}
    out = start_run(name, settings, paper_settings, str(out), selection=selection, device=args.device)
    print(TAYNODE_NOTE)
    if notes:
        print(notes)
    if args.retime:
        retime(make_problem(), args, out)
        finish_run(out, 0)
        return write_summary(out, title, notes)
    if args.reproduce:
        reproduce(make_problem(), specs, args, out)
        finish_run(out, 0)
        return write_summary(out, title, notes)
    done = {_key(r) for r in read_rows(out / "runs.csv")}
    todo = [s for s in specs if s.key not in done]
    for spec in specs:
        if spec.key in done:
            print(f"  {spec.label:>18s} seed {spec.seed}: in runs.csv, skipped")
    print(f"{len(todo)} runs to train, {len(specs) - len(todo)} already in {out / 'runs.csv'}", flush=True)
    wall = time.perf_counter()
    if args.jobs > 1 and len(todo) > 1:
        _run_parallel(todo, args, out, [sys.executable, script, *argv])
    elif todo:
        problem = make_problem()
        for k, spec in enumerate(todo):
            if not _waits_for_stopped_vanilla(spec, todo, todo[:k], {_key(r) for r in read_rows(out / "runs.csv")}):
                execute(problem, spec, args, out)
    print(f"total wall time {time.perf_counter() - wall:.1f}s")
    done = {_key(r) for r in read_rows(out / "runs.csv")}
    stopped = [s for s in todo if s.key not in done]
    if stopped:
        print(f"{len(stopped)} runs stopped at --time_limit, with checkpoints in {out / 'checkpoints'}: rerun the same "
              f"command to continue them ({', '.join(f'{s.label} seed {s.seed}' for s in stopped)})", flush=True)
    finish_run(out, len(todo) - len(stopped))
    return write_summary(out, title, notes)


SUMMARY_COLUMNS = ("label", "method", "weight", "seeds", "metric_name", "train_metric_mean", "test_metric_mean",
                   "test_metric_std", "metric_change", "test_nfe_mean", "test_nfe_std", "nfe_ratio", "pred_time_mean",
                   "pred_time_iqr_mean", "pred_time_ratio", "timed_seeds", "pred_time_interleaved_mean",
                   "pred_time_interleaved_ratio", "train_time_mean", "train_time_ratio", "final_train_nfe_mean",
                   "target_nfe_mean", "final_weight_mean")


def interleaved_ratios(rows: Sequence[Mapping], timing: Sequence[Mapping], summary: Sequence[Dict]) -> None:
    """Adds to each summary row the interleaved prediction time of :func:`retime` (``timing.csv``):
    ``timed_seeds`` (its seeds timed together with vanilla's of the same seed),
    ``pred_time_interleaved_mean`` and ``pred_time_interleaved_ratio`` (against vanilla on those
    seeds; NaN where there are none)."""
    times = {_key(t): float(t["pred_time_interleaved"]) for t in timing}
    for s in summary:
        runs = [k for k in map(_key, rows) if k[:2] == (s["method"], f"{float(s['weight']):g}")]
        pairs = [(times[k], times[("vanilla", "0", k[2])]) for k in runs if k in times and ("vanilla", "0", k[2]) in times]
        s["timed_seeds"] = len(pairs)
        s["pred_time_interleaved_mean"] = statistics.fmean(p[0] for p in pairs) if pairs else float("nan")
        s["pred_time_interleaved_ratio"] = (statistics.fmean(p[0] for p in pairs) / statistics.fmean(p[1] for p in pairs)
                                            if pairs else float("nan"))


def compact_table(summary: Sequence[Mapping]) -> str:
    """The summary as the short table of ``benchmarks/README.md``: test metric and NFE (mean ± standard
    deviation over seeds), the ratios against vanilla (prediction time: interleaved where
    :func:`retime` timed the run, else measured after training, marked ``*``) and the metric's change."""
    def metric(value: float, name: str) -> str:
        return f"{100 * value:.2f}%" if name == "accuracy" else f"{value:.3g}"

    lines = ["| method | seeds | test metric | test NFE | NFE ratio | prediction time ratio | training time ratio "
             "| metric change |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        name, f = s["metric_name"], {k: float(v) for k, v in s.items() if k.endswith(("_mean", "_std", "_ratio", "change"))}
        spread = lambda key, fmt: "" if int(s["seeds"]) < 2 else f" ± {fmt(f[key])}"  # noqa: E731
        pred = (f"{f['pred_time_interleaved_ratio']:.2f}" if math.isfinite(f.get("pred_time_interleaved_ratio", math.nan))
                else f"{f['pred_time_ratio']:.2f}*")
        change = f["metric_change"]
        change = "" if s["method"] == "vanilla" else (f"{100 * change:+.2f} pt" if name == "accuracy" else f"{change:+.3g}")
        lines.append(f"| {s['label']} | {s['seeds']} | {metric(f['test_metric_mean'], name)}"
                     f"{spread('test_metric_std', lambda v: metric(v, name).rstrip('%'))} | "
                     f"{f['test_nfe_mean']:.1f}{spread('test_nfe_std', lambda v: f'{v:.1f}')} | {f['nfe_ratio']:.2f} | "
                     f"{pred} | {f['train_time_ratio']:.2f} | {change} |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, title: str, notes: str = "") -> Dict:
    """``summary.csv`` / ``summary.md`` (one row per method and weight) and the plots, from all rows of
    ``runs.csv`` and the curves files; returns the rows, the summary and the curves."""
    rows, curves = read_rows(out / "runs.csv"), _plots.read_curves(out)
    extra = [k for k in (rows[0] if rows else {}) if k not in FIELDS]
    summary = summarize_runs(rows, means=("train_metric", "pred_time", "pred_time_iqr", "train_time",
                                          "final_train_nfe", "target_nfe", "final_weight", *extra))
    summary.sort(key=lambda s: (METHODS.index(s["method"]) if s["method"] in METHODS else len(METHODS), s["method"],
                                float(s["weight"])))
    interleaved_ratios(rows, read_rows(out / "timing.csv"), summary)
    for s in summary:
        s["label"] = Spec(s["method"], float(s["weight"]), 0).label
    write_csv(summary, out / "summary.csv")
    text = (f"## {title}\n\nMeans over seeds (`seeds` runs each); `nfe_ratio`, `pred_time_ratio`, "
            f"`train_time_ratio` and `metric_change` against vanilla on the same seeds. `pred_time`: median of "
            f"the timed predictions of the test set (`torch.utils.benchmark.Timer`), measured right after training "
            f"in the run's own process, so with `--jobs` > 1 beside another run; `pred_time_interleaved`: "
            f"median over rounds of `--retime` (every saved model's prediction timed in one process, interleaved, "
            f"see `timing.csv`), `timed_seeds` the seeds timed with vanilla's; `budget`: weight = target / "
            f"vanilla's training NFE.\n\n" + compact_table(summary) + "\nAll columns:\n\n"
            + markdown_table(summary, SUMMARY_COLUMNS) + f"\n{TAYNODE_NOTE}\n")
    if notes:
        text += f"\n{notes}\n"
    (out / "summary.md").write_text(text)
    print(text)
    if summary:
        _plots.experiment_plots(out, summary, curves, title)
    return {"rows": rows, "summary": summary, "curves": curves, "out": out, "markdown": text}
