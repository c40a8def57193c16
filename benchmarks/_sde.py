"""Training and evaluation shared by the neural SDE benchmarks (``mnist_sde.py``, ``spiral_sde.py``).

Every method trains the same model (same initialisation, same data order, same Brownian paths,
same optimiser and number of iterations for a given seed) with ``sdeint_reg`` and direct backprop
through torchsde's adaptive solve; only the extra loss term differs:

- ``vanilla``: none (``strategy="none"``: the plain solve, no extra evaluation);
- ``unbiased`` / ``biased``: local regularization (ours), ``reg_weight * reg``;
- ``global``: the 2021 baseline, ``strategy="global"``: the step-doubling error of every accepted
  step, backpropagated through the solve;
- ``steer``: STEER's random end time (``steer_times``), no loss term;
- ``rnode``: RNODE for an SDE, see :class:`RNODESDE`.

After training each model predicts with plain ``torchsde.sdeint`` (adaptive, same tolerances) on
a ``BrownianInterval`` with a fixed seed; the test NFE counts drift evaluations of that solve and
the prediction time is its median wall time.

Same noise: every Brownian motion here is a ``BrownianInterval`` seeded by ``entropy`` (per seed
and iteration in training, one fixed value in evaluation), so all methods draw the same increment
over the whole span; the values inside it are drawn as Brownian bridges at the times the solver
asks for, so where two models' solvers step differently their paths agree in law, not point for
point. torchsde's order-independent path (``halfway_tree=True``) would make them identical, but
it made the prediction solve 5-8x slower in our measurement, which would swamp the prediction
times this benchmark is about.
"""
import argparse
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchsde
from torchsde import BaseBrownian, BrownianInterval

from _harness import median_time, pareto_plot, pyplot, start_run, summarize, write_csv, write_results
from _regularizers import RNODEDynamics, steer_times
from torchdiffeq_localreg import sdeint_reg

METHODS = ("vanilla", "unbiased", "biased", "global", "steer", "rnode")
LOCAL = ("unbiased", "biased")
_STRATEGY = {"unbiased": "unbiased", "biased": "biased", "global": "global"}
SDE_METHODS = ("euler", "milstein", "srk")
# Seeds of the Brownian motions: training iteration ``itr`` of seed ``s`` uses _TRAIN_BM * s + itr;
# every evaluation uses _EVAL_BM (the same noise for every method and seed).
_TRAIN_BM = 1_000_003
_EVAL_BM = 20230302


class NeuralSDE(nn.Module):
    """A diagonal-noise Ito SDE: drift ``drift(y)``, diffusion ``sigma_max * sigmoid(diffusion(y))``.

    The sigmoid keeps the diffusion positive and below ``sigma_max``. ``nfe`` counts drift
    evaluations (every torchsde method evaluates the drift through ``f``).
    """

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, drift: nn.Module, diffusion: nn.Module, sigma_max: float):
        super().__init__()
        self.drift, self.diffusion, self.sigma_max = drift, diffusion, sigma_max
        self.nfe = 0

    def f(self, t, y):
        self.nfe += 1
        return self.drift(y)

    def g(self, t, y):
        return self.sigma_max * torch.sigmoid(self.diffusion(y))


class _Drift(nn.Module):
    """The drift of an SDE as a vector field ``func(t, z)``, for :class:`RNODEDynamics`."""

    def __init__(self, sde: NeuralSDE):
        super().__init__()
        self.sde = sde

    def forward(self, t, z):
        return self.sde.f(t, z)


class RNODESDE(nn.Module):
    """RNODE (Finlay et al. 2020) for a diagonal-noise SDE, as an augmented SDE.

    The state is ``[z, kinetic, jacobian]`` (``d + 2`` columns). The drift of ``z`` is the SDE's
    drift f; the drifts of the two extra columns are RNODE's integrands of f, ``||f(z)||^2`` and
    ``||eps^T df/dz||^2`` (Hutchinson, one Gaussian ``eps`` per solve, from
    :class:`RNODEDynamics`); their diffusion is zero. Along every sample path the two columns
    therefore integrate exactly ``int ||f||^2 dt`` and ``int ||eps^T df/dz||^2 dt``, with no Ito
    correction (no noise enters them). This regularizes the drift only, the part an ODE solver
    would see; the diffusion is left free, as RNODE has no term for it. Under adaptive stepping
    the two columns also enter torchsde's error norm (as the augmented states of RNODE do for an
    ODE solver). Solve it with :class:`PaddedBrownian` so that ``z`` sees the same noise as the
    unaugmented SDE.
    """

    def __init__(self, sde: NeuralSDE):
        super().__init__()
        self.sde = sde
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self.dynamics = RNODEDynamics(_Drift(sde))

    def resample(self, z: torch.Tensor, generator: Optional[torch.Generator] = None) -> None:
        self.dynamics.resample(z, generator)

    @staticmethod
    def initial_state(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, z.new_zeros(z.shape[0], 2)], dim=1)

    def f(self, t, y):
        z = y[:, :-2]
        f, kinetic, jacobian = self.dynamics(t, (z, None, None))
        return torch.cat([f, kinetic[:, None], jacobian[:, None]], dim=1)

    def g(self, t, y):
        z = y[:, :-2]
        return torch.cat([self.sde.g(t, z), z.new_zeros(z.shape[0], 2)], dim=1)


class PaddedBrownian(BaseBrownian):
    """``bm`` with ``pad`` extra channels that are always zero (for the zero-diffusion RNODE columns),
    so the augmented SDE sees exactly ``bm``'s noise in its first channels."""

    def __init__(self, bm: BaseBrownian, pad: int):
        self.bm, self.pad = bm, pad

    def _padded(self, x):
        return F.pad(x, (0, self.pad) * (x.dim() - 1))

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        out = self.bm(ta, tb, return_U=return_U, return_A=return_A)
        return self._padded(out) if torch.is_tensor(out) else tuple(self._padded(x) for x in out)

    def __repr__(self):
        return f"PaddedBrownian({self.bm!r}, pad={self.pad})"

    @property
    def dtype(self):
        return self.bm.dtype

    @property
    def device(self):
        return self.bm.device

    @property
    def shape(self):
        return (self.bm.shape[0], self.bm.shape[1] + self.pad)

    @property
    def levy_area_approximation(self):
        return self.bm.levy_area_approximation


def brownian(t0: float, t1: float, like: torch.Tensor, entropy: int, sde_method: str) -> BrownianInterval:
    """A ``BrownianInterval`` on [t0, t1] shaped like ``like``, seeded by ``entropy``
    (with the space-time Levy area that ``srk`` needs)."""
    return BrownianInterval(t0=t0, t1=t1, size=tuple(like.shape), dtype=like.dtype, device=like.device,
                            entropy=entropy,
                            levy_area_approximation="space-time" if sde_method == "srk" else "none")


class SDETask:
    """What a benchmark provides; :func:`train` and :func:`run` do the rest.

    Attributes set by subclasses: ``name``, ``ts`` (output times of a solve, a 1-D tensor),
    ``metrics`` (names of the evaluation metrics, besides ``test_nfe`` and ``pred_time``),
    ``pareto_y`` (the metric drawn against the test NFE) and ``pareto_ylabel``.
    """

    name: str
    ts: torch.Tensor
    metrics: Sequence[str]
    pareto_y: str
    pareto_ylabel: str

    def make_model(self) -> nn.Module:
        """A fresh model with an ``sde`` attribute (a :class:`NeuralSDE`)."""
        raise NotImplementedError

    def batch(self, generator: torch.Generator):
        """The next training batch (drawn with ``generator``: the data order)."""
        raise NotImplementedError

    def initial(self, model: nn.Module, batch) -> torch.Tensor:
        """The SDE's initial state ``(batch, d)`` for ``batch``."""
        raise NotImplementedError

    def loss(self, model: nn.Module, ys: torch.Tensor, batch) -> torch.Tensor:
        """The task loss of the solution ``ys`` (shape ``(len(ts), batch, d)``)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, predict: Callable[[torch.Tensor], torch.Tensor],
                 ys_test: torch.Tensor) -> Dict[str, float]:
        """The task metrics, given ``ys_test`` (the prediction from :meth:`test_initial`);
        ``predict(y0)`` solves from other initial states on the same evaluation Brownian motion."""
        raise NotImplementedError

    def test_initial(self, model: nn.Module) -> torch.Tensor:
        """The initial states of the test set (the prediction that is timed and whose NFE is counted)."""
        raise NotImplementedError


def add_sde_args(parser: argparse.ArgumentParser, *, niters: int, batch_size: int, lr: float, tol: float,
                 dt: float, sigma_max: float, reg_weight: float, sweep_weights: Sequence[float],
                 rnode_weight: float, steer_b: float, sde_method: str = "milstein") -> argparse.ArgumentParser:
    """The arguments common to both SDE benchmarks (the defaults are each benchmark's calibrated ones)."""
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--niters", type=int, default=niters, help="training iterations per run")
    parser.add_argument("--batch_size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr, help="Adam learning rate")
    parser.add_argument("--lr_decay", type=float, default=1e-5, help="inverse decay: lr / (1 + lr_decay * itr)")
    parser.add_argument("--sde_method", choices=SDE_METHODS, default=sde_method, help="torchsde method")
    parser.add_argument("--tol", type=float, default=tol, help="rtol = atol of the adaptive solves")
    parser.add_argument("--dt", type=float, default=dt, help="initial step of the adaptive solves")
    parser.add_argument("--sigma_max", type=float, default=sigma_max, help="bound of the learned diffusion")
    parser.add_argument("--reg_weight", type=float, default=reg_weight,
                        help="weight of reg for unbiased, biased and global")
    parser.add_argument("--sweep", action="store_true",
                        help="also train unbiased and biased at each --sweep_weights (for the Pareto plot)")
    parser.add_argument("--sweep_weights", type=float, nargs="+", default=list(sweep_weights))
    parser.add_argument("--sweep_seeds", type=int, default=None, help="seeds of the sweep runs (default: --seeds)")
    parser.add_argument("--rnode_weight", type=float, default=rnode_weight,
                        help="weight of the kinetic and of the Jacobian term of RNODE")
    parser.add_argument("--steer_b", type=float, default=steer_b, help="STEER: end time drawn from T +- b")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the prediction (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=str, default=None, help="results folder (default benchmarks/results/<name>/)")
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds (used by the tests)")
    return parser


def check_sde_args(args: argparse.Namespace) -> None:
    """Raises ``ValueError`` naming the argument for out-of-range values."""
    positive = {"seeds": args.seeds, "niters": args.niters, "batch_size": args.batch_size, "lr": args.lr,
                "tol": args.tol, "dt": args.dt, "sigma_max": args.sigma_max, "repeats": args.repeats,
                "threads": args.threads}
    for name, value in positive.items():
        if not value > 0:
            raise ValueError(f"--{name} must be > 0, got {value}.")
    for name in ("reg_weight", "rnode_weight", "steer_b", "lr_decay"):
        if not getattr(args, name) >= 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}.")
    if any(not w >= 0 for w in args.sweep_weights):
        raise ValueError(f"--sweep_weights must all be >= 0, got {args.sweep_weights}.")
    if args.sweep_seeds is not None and args.sweep_seeds < 1:
        raise ValueError(f"--sweep_seeds must be >= 1, got {args.sweep_seeds}.")


def train(task: SDETask, method: str, weight: float, seed: int, args: argparse.Namespace,
          log: Optional[List[Dict]] = None) -> Tuple[nn.Module, float]:
    """Trains a fresh model of ``task`` with ``method``; returns it and the training wall time (s).

    ``weight`` is the weight of ``reg`` (unbiased, biased, global); RNODE uses ``args.rnode_weight``
    and STEER ``args.steer_b``. One row per iteration (drift evaluations of the solve and of the
    regularization, losses) is appended to ``log``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    torch.manual_seed(seed)
    model = task.make_model().to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 / (1.0 + args.lr_decay * i))
    order = torch.Generator().manual_seed(seed)
    sampler = torch.Generator().manual_seed(seed + 1)
    other = torch.Generator().manual_seed(seed + 2)  # STEER's end times, RNODE's probes
    ts = task.ts.to(args.device)
    t1 = float(ts[-1]) + args.steer_b  # every method draws the same Brownian path, long enough for STEER
    augmented = RNODESDE(model.sde) if method == "rnode" else None
    start = time.perf_counter()
    for itr in range(1, args.niters + 1):
        batch = task.batch(order)
        y0 = task.initial(model, batch)
        bm = brownian(float(ts[0]), t1, y0, _TRAIN_BM * seed + itr, args.sde_method)
        solve_ts = steer_times(ts, args.steer_b, other) if method == "steer" else ts
        kwargs = dict(method=args.sde_method, dt=args.dt, adaptive=True, rtol=args.tol, atol=args.tol,
                      generator=sampler, return_stats=True)
        if augmented is not None:
            augmented.resample(y0, other)
            ys, reg, stats = sdeint_reg(augmented, augmented.initial_state(y0), solve_ts, bm=PaddedBrownian(bm, 2),
                                        strategy="none", **kwargs)
            penalty = args.rnode_weight * ys[-1, :, -2:].sum(1).mean()
            ys = ys[:, :, :-2]
        else:
            ys, reg, stats = sdeint_reg(model.sde, y0, solve_ts, bm=bm, strategy=_STRATEGY.get(method, "none"),
                                        **kwargs)
            penalty = weight * reg
        task_loss = task.loss(model, ys, batch)
        optimizer.zero_grad()
        (task_loss + penalty).backward()
        optimizer.step()
        schedule.step()
        if log is not None:
            log.append({"itr": itr, "nfe_forward": stats.nfe_forward, "nfe_reg": stats.nfe_reg,
                        "loss": task_loss.item(), "penalty": penalty.item()})
    return model, time.perf_counter() - start


def _predictor(model: nn.Module, ts: torch.Tensor, args: argparse.Namespace):
    """``predict(y0)``: plain ``torchsde.sdeint`` from ``y0`` on the fixed evaluation Brownian motion."""
    def predict(y0):
        bm = brownian(float(ts[0]), float(ts[-1]), y0, _EVAL_BM, args.sde_method)
        return torchsde.sdeint(model.sde, y0, ts, bm=bm, method=args.sde_method, dt=args.dt, adaptive=True,
                               rtol=args.tol, atol=args.tol)
    return predict


@torch.no_grad()
def evaluate(task: SDETask, model: nn.Module, args: argparse.Namespace) -> Dict[str, float]:
    """Task metrics, test NFE (drift evaluations of one plain adaptive solve of the test set) and
    prediction time (median over ``args.repeats``) of that solve."""
    ts = task.ts.to(args.device)
    predict = _predictor(model, ts, args)
    model.sde.nfe = 0
    ys_test = predict(task.test_initial(model))
    nfe = model.sde.nfe
    result = dict(task.evaluate(model, predict, ys_test))
    result["test_nfe"] = nfe
    result["pred_time"] = median_time(lambda: predict(task.test_initial(model)), repeats=args.repeats)
    return result


def _runs(args: argparse.Namespace) -> List[Tuple[str, str, float, int]]:
    """(label, method, weight, seed) of every training run, main methods first, then the sweep."""
    runs = [(m, m, args.reg_weight if m in _STRATEGY else 0.0, s) for s in range(args.seeds) for m in args.methods]
    if args.sweep:
        seeds = args.sweep_seeds or args.seeds
        for w in args.sweep_weights:
            if w == args.reg_weight:
                continue
            for m in LOCAL:
                runs += [(f"{m} w={w:g}", m, w, s) for s in range(seeds)]
    return runs


def plot_training_nfe(logs: Dict[str, List[Dict]], path: Path, title: str, window: int = 10) -> Path:
    """Drift evaluations of the training solve over the iterations, one line per method (moving average)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, rows in logs.items():
        nfe = [r["nfe_forward"] for r in rows]
        smooth = [statistics.fmean(nfe[max(0, i - window + 1):i + 1]) for i in range(len(nfe))]
        ax.plot([r["itr"] for r in rows], smooth, label=label)
    ax.set_xlabel("training iteration")
    ax.set_ylabel(f"drift evaluations per solve (mean of {window})")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(task: SDETask, args: argparse.Namespace, settings: Dict, paper_settings: Dict,
        notes: str = "") -> Tuple[List[Dict], List[Dict]]:
    """Trains and evaluates every (method, seed) and sweep run; writes the results; returns (rows, summary)."""
    out = start_run(task.name, settings, paper_settings, args.out)
    rows, logs = [], {}
    for label, method, weight, seed in _runs(args):
        log: List[Dict] = []
        model, train_time = train(task, method, weight, seed, args, log)
        model.eval()
        row = {"method": label, "strategy": method, "reg_weight": weight, "seed": seed, "train_time": train_time,
               "train_nfe_first": statistics.fmean(r["nfe_forward"] for r in log[:10]),
               "train_nfe_last": statistics.fmean(r["nfe_forward"] for r in log[-10:]),
               **evaluate(task, model, args)}
        rows.append(row)
        write_csv(rows, out / "runs.csv")  # partial results survive an interrupted run
        if seed == 0:
            logs[label] = log
        print(f"  {label:<18} seed {seed}  " + "  ".join(
            f"{k} {row[k]:.4g}" for k in ("train_time", "train_nfe_first", "train_nfe_last", *task.metrics,
                                           "test_nfe", "pred_time")), flush=True)
    write_csv([{"method": k, **r} for k, rs in logs.items() for r in rs], out / "train_log.csv")
    metrics = ["train_time", "train_nfe_first", "train_nfe_last", *task.metrics, "test_nfe", "pred_time"]
    summary = summarize(rows, metrics, baseline="vanilla" if "vanilla" in args.methods else None,
                        ratios=("test_nfe", "pred_time", "train_time"))
    columns = ["method", "seeds", *(f"{m}_{s}" for m in metrics for s in ("mean", "std")),
               "test_nfe_ratio", "pred_time_ratio", "train_time_ratio"]
    write_results(out, rows, summary, columns, title=f"{task.name} ({settings_line(settings)})")
    if notes:
        with open(out / "summary.md", "a") as f:
            f.write("\n" + notes + "\n")
        print(notes)
    pareto_plot(summary, "test_nfe", task.pareto_y, out / "pareto.png", xlabel="test NFE (drift evaluations)",
                ylabel=task.pareto_ylabel, title=f"{task.name}: {task.pareto_ylabel} against test NFE")
    plot_training_nfe(logs, out / "nfe_training.png", title=f"{task.name}: NFE during training (seed 0)")
    return rows, summary


def settings_line(settings: Dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())
