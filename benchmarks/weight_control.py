"""Weight control protocol: constant weights against NFEBudget on three problems, one fixed protocol.

For each problem every method trains the same initialisation on the same batches with the same
optimiser and budget; the prediction of the test set is then solved with plain
``torchdiffeq.odeint`` at the training tolerance. Methods:

- ``vanilla``: no regularization.
- ``const@0.1``, ``const@1``: unbiased local regularization at a constant weight.
- ``budget``: unbiased local regularization, weight from ``NFEBudget`` with its default settings and
  ``target_nfe = 0.6 x vanilla's test NFE`` (same problem and seed), each step's backward pass
  ``budget.backward(task_loss, reg, model.parameters())`` (its default ``combine="project"``: the
  part of the regularization's gradient that opposes the task's is dropped): the README's
  recommended training step.
- ``budget_sum``: ``budget`` with the plain ``(task_loss + budget.weight * reg).backward()``
  (``combine="sum"``).
- ``budget_biased``: ``budget`` with ``strategy="biased"``.
- ``budget_cap``: ``budget_sum`` with the regularization's gradient scaled to at most the task
  gradient's norm (:func:`_train.capped_backward`, a harness-only candidate).

Candidates of the controller itself, all with the plain sum (``combine="sum"``):

- ``budget_gentle``: ``anticipation=4`` and ``rate=0.03`` (the trend extrapolated twice as far, the
  weight moving 40% slower): less overshoot, at the price of holding the target less tightly from
  below on the classifier.
- ``budget_r02``: ``rate=0.02`` alone.
- ``budget_notrend``: ``anticipation=0``: reacts to the averaged NFE alone (the default before the
  anticipation was added).
- ``budget_noleak``: ``budget_notrend`` with ``leak=0`` and ``hold=False``: plain dual ascent, the first candidate.
- ``budget_nohold``: ``budget_notrend`` with ``hold=False`` (the weight may decay before the NFE first
  exceeds the target), the second candidate.
- ``budget_slow``: ``budget_nohold`` with ``rate=0.02`` (less overshoot, slower to act).
- ``budget_rows32``: ``budget_notrend`` with the regularization step on 32 random rows of the batch
  (``reg_batch_size=32``), the cheap step of the cost-floor work.

Problems:

- ``rings``: the quickstart's 2-D disk-vs-ring classification with an augmented state
  (``examples/quickstart.py``), 600 steps of 256.
- ``mnist``: the paper's MNIST neural ODE (``benchmarks/mnist_node.py``): full 60k training set,
  10k test set, 1000 steps of 128, Adam 1e-3, dopri5 tol 1e-6.
- ``spirals``: latent ODE interpolation of irregular noisy spirals (``benchmarks/latent_ode_spirals.py``),
  a regression, 1000 steps of 64.

Resumable: each finished (problem, method, seed) appends a row to ``runs_<problem>.csv`` (and its
NFE and weight every 10 iterations to ``curves_<problem>.csv``); a rerun
skips the rows that are there. Two processes can work on different problems at once.

    python benchmarks/weight_control.py --problems rings spirals --seeds 0 1 2
    python benchmarks/weight_control.py --problems mnist --seeds 0
    python benchmarks/weight_control.py --summarize          # tables and the Pareto plot only
    python benchmarks/weight_control.py --smoke              # seconds (used by the tests)

Writes ``runs_<problem>.csv``, ``summary.csv``, ``summary.md``, ``settings.json`` and
``pareto.png`` under ``benchmarks/results/weight_control/`` (or ``--out``).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn

if str(Path(__file__).resolve().parent) not in sys.path:  # imported from elsewhere (the tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # noqa: E402  (puts examples/ on sys.path)
import _plots  # noqa: E402
import _train  # noqa: E402
import latent_ode_spirals  # noqa: E402
import mnist_node  # noqa: E402
import quickstart  # noqa: E402

from torchdiffeq_localreg import NFEBudget  # noqa: E402

PROBLEMS = ("rings", "mnist", "spirals")
METHODS = ("vanilla", "const@0.1", "const@1", "budget", "budget_sum", "budget_biased", "budget_cap", "budget_gentle",
           "budget_r02", "budget_notrend", "budget_noleak", "budget_nohold", "budget_slow", "budget_rows32")
# Candidate settings of NFEBudget besides its defaults (the method name says which).
CANDIDATES = {"budget_sum": {"combine": "sum"}, "budget_cap": {"combine": "sum"},
              "budget_gentle": {"anticipation": 4.0, "rate": 0.03, "combine": "sum"},
              "budget_r02": {"rate": 0.02, "combine": "sum"},
              "budget_notrend": {"anticipation": 0.0, "combine": "sum"},
              "budget_noleak": {"leak": 0.0, "hold": False, "anticipation": 0.0, "combine": "sum"},
              "budget_nohold": {"hold": False, "anticipation": 0.0, "combine": "sum"},
              "budget_slow": {"rate": 0.02, "hold": False, "anticipation": 0.0, "combine": "sum"},
              "budget_rows32": {"anticipation": 0.0, "combine": "sum"}}
TARGET_RATIO = 0.6
FIELDS = ("problem", "method", "seed", "metric_name", "test_metric", "test_nfe", "target_nfe", "final_weight",
          "final_train_nfe", "train_time", "pred_time", "niters")
CURVE_FIELDS = ("problem", "method", "seed", "itr", "nfe_forward", "weight")
CURVE_EVERY = 10  # iterations between the rows of curves_<problem>.csv

# Per-problem training settings (the protocol): niters, batch, lr, tol.
SETTINGS = {
    "rings": dict(niters=600, batch_size=256, lr=1e-2, tol=1e-5),
    "mnist": dict(niters=1000, batch_size=128, lr=1e-3, tol=1e-6),
    "spirals": dict(niters=1000, batch_size=64, lr=1e-2, tol=1e-5),
}
SMOKE = dict(niters=4, batch_size=16, lr=1e-2, tol=1e-3)


class RingsProblem(_train.Problem):
    """The quickstart's classification, in the benchmark harness's terms."""

    metric_name = "accuracy"

    def __init__(self, n_train: int, n_test: int, augment: int = 2):
        gen = torch.Generator().manual_seed(1234)
        self.x_train, self.y_train = quickstart.make_data(n_train, gen)
        self.test = quickstart.make_data(n_test, gen)
        self.train_eval = self.test
        self.augment = augment
        self.t = torch.tensor([0.0, 1.0])

    def make_model(self):
        return quickstart.Classifier(self.augment)

    def batch(self, batch_size, generator):
        idx = torch.randint(len(self.x_train), (batch_size,), generator=generator)
        return self.x_train[idx], self.y_train[idx]

    def initial(self, model, batch, generator):
        x = batch[0]
        return model.initial(x), self.t, torch.zeros(())

    def loss(self, model, zs, batch):
        return nn.functional.binary_cross_entropy_with_logits(model.readout(zs[-1]).squeeze(1), batch[1])

    def metric(self, model, zs, batch):
        return ((model.readout(zs[-1]).squeeze(1) > 0).float() == batch[1]).float().mean().item()


def make_problem(name: str, smoke: bool, data_root: str) -> _train.Problem:
    if name == "rings":
        return RingsProblem(*((64, 64) if smoke else (4096, 4096)))
    if name == "mnist":
        n_train, n_test = (64, 32) if smoke else (60000, 10000)
        x_train, y_train = mnist_node.load_split(data_root, True, n_train)
        x_test, y_test = mnist_node.load_split(data_root, False, n_test)
        return mnist_node.MNISTProblem(x_train, y_train, x_test, y_test, eval_size=min(2000, n_test))
    args = latent_ode_spirals.build_parser().parse_args([])
    if smoke:
        args.n_train, args.n_test, args.n_times = 32, 16, 12
    t = torch.linspace(0.0, 2.0, args.n_times)
    data = torch.Generator().manual_seed(1234)
    train = latent_ode_spirals.make_spirals(args.n_train, t, args.observed, args.noise, data)
    test = latent_ode_spirals.make_spirals(args.n_test, t, args.observed, args.noise, data)
    return latent_ode_spirals.SpiralProblem(args, t, train, test)


read_rows, append_rows = _harness.read_rows, _harness.append_rows


def run_one(problem_name: str, problem: _train.Problem, method: str, seed: int, settings: Dict, done: List[Dict],
            pred_repeats: int, progress: bool) -> Dict:
    combine = "cap" if method == "budget_cap" else "sum"  # with a budget, its own combine decides otherwise
    args = argparse.Namespace(**settings, grad="direct", stiffness_weight=0.0, eval_tol=None,
                              pred_repeats=pred_repeats, combine=combine,
                              reg_batch_size=min(32, settings["batch_size"]) if method == "budget_rows32" else None)
    control, weight, target = None, 0.0, float("nan")
    base = "none" if method == "vanilla" else "unbiased"
    if method.startswith("const@"):
        weight = float(method.split("@", 1)[1])
    elif method.startswith("budget"):
        vanilla = [r for r in done if r["method"] == "vanilla" and int(r["seed"]) == seed]
        if not vanilla:
            raise RuntimeError(f"{problem_name} {method} seed {seed} needs the vanilla row of the same seed first.")
        target = TARGET_RATIO * float(vanilla[0]["test_nfe"])
        control = NFEBudget(target_nfe=target, **CANDIDATES.get(method, {}))
        base = "biased" if method == "budget_biased" else "unbiased"
    method_arg = "vanilla" if base == "none" else base
    row, curve = _train.train_run(problem, f"{problem_name}/{method}", method_arg, weight, seed, args,
                                  control=control, progress=progress)
    curve = [{"problem": problem_name, "method": method, "seed": seed, "itr": c["itr"], "nfe_forward": c["nfe_forward"],
              "weight": c["weight"]} for c in curve if c["itr"] % CURVE_EVERY == 0]
    return curve, {"problem": problem_name, "method": method, "seed": seed, "metric_name": problem.metric_name,
            "test_metric": row["test_metric"], "test_nfe": row["test_nfe"], "target_nfe": target,
            "final_weight": control.weight if control else weight, "final_train_nfe": row["final_train_nfe"],
            "train_time": row["train_time"], "pred_time": row["pred_time"], "niters": settings["niters"]}


def summarize(out: Path, problems) -> List[Dict]:
    """One row per (problem, method): means over seeds and ratios to vanilla; writes summary.csv/.md."""
    summary = []
    for name in problems:
        rows = read_rows(out / f"runs_{name}.csv")
        by_method = {s["method"]: s for s in _harness.summarize_runs(rows, group=("method",),
                                                                   means=("target_nfe", "final_weight", "train_time"))}
        for method in (m for m in METHODS if m in by_method):
            s = by_method[method]
            group = [r for r in rows if r["method"] == method]
            # How well a control holds its target: the final test NFE over the target, mean and
            # the seed farthest from 1 (nan for the constant weights, which have no target).
            over = [float(r["test_nfe"]) / float(r["target_nfe"]) for r in group]
            summary.append({"problem": name, **{k: s[k] for k in (
                "method", "seeds", "metric_name", "test_metric_mean", "test_metric_std", "test_nfe_mean",
                "test_nfe_std")}, "target_nfe": s["target_nfe_mean"], "final_weight": s["final_weight_mean"],
                **{k: s[k] for k in ("train_time_mean", "nfe_ratio", "pred_time_ratio", "train_time_ratio",
                                     "metric_change")},
                "nfe_over_target": statistics.fmean(over),
                "nfe_over_target_worst": max(over, key=lambda v: abs(v - 1.0))})
    if summary:
        _harness.write_csv(summary, out / "summary.csv")
        text = ("## Weight control protocol (means over seeds; ratios and changes against vanilla of the same "
                "problem on the same seeds)\n\n")
        text += _harness.markdown_table(summary)
        (out / "summary.md").write_text(text)
        print(text)
        pareto(summary, out / "pareto.png")
    return summary


MARKERS = {"vanilla": "s", "const@0.1": "o", "const@1": "o", "budget": "*", "budget_sum": "^", "budget_biased": "P",
           "budget_cap": "<", "budget_gentle": "p", "budget_r02": "h", "budget_notrend": "*", "budget_noleak": "X",
           "budget_nohold": "D", "budget_slow": "*", "budget_rows32": "v"}
COLORS = dict(zip(METHODS, ("black", "tab:orange", "tab:red", "tab:green", "navy", "tab:olive", "teal", "tab:pink",
                            "tab:gray", "tab:purple", "tab:brown", "tab:cyan", "tab:blue", "gold")))


def pareto(summary: List[Dict], path: Path) -> None:
    """Test metric against test NFE, one panel per problem, constant weights and the controls."""
    _plots.pareto(summary, path, label="method", panel="problem", markers=MARKERS, colors=COLORS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--pred_repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--data_root", type=str, default="data/", help="MNIST folder (downloaded or built offline)")
    parser.add_argument("--out", type=str, default=None, help="results folder (default benchmarks/results/weight_control/)")
    parser.add_argument("--summarize", action="store_true", help="only rebuild the tables and the plot")
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds (used by the tests)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.pred_repeats < 1 or args.threads < 1:
        raise ValueError("--pred_repeats and --threads must be >= 1.")
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else _harness.RESULTS / "weight_control"
    settings = {name: (SMOKE if args.smoke else SETTINGS[name]) for name in args.problems}
    if args.summarize:
        return summarize(out, PROBLEMS)
    _harness.start_run("weight_control", {"problems": " ".join(args.problems), "methods": " ".join(args.methods),
                                          "seeds": " ".join(map(str, args.seeds)), "target": f"{TARGET_RATIO} x vanilla",
                                          "solver": "dopri5", "grad": "direct", "dtype": "float32",
                                          **{f"{k} settings": v for k, v in settings.items()}},
                       out_dir=str(out))
    methods = ["vanilla"] + [m for m in args.methods if m != "vanilla"]  # the budget's target needs vanilla
    wall = time.perf_counter()
    for name in args.problems:
        path = out / f"runs_{name}.csv"
        problem = make_problem(name, args.smoke, args.data_root)
        for seed in args.seeds:
            for method in methods:
                done = read_rows(path)
                if any(r["method"] == method and int(r["seed"]) == seed for r in done):
                    print(f"  {name}/{method} seed {seed}: in {path.name}, skipped")
                    continue
                curve, row = run_one(name, problem, method, seed, settings[name], done, args.pred_repeats,
                              progress=not args.smoke)
                append_rows(out / f"curves_{name}.csv", curve, CURVE_FIELDS)
                append_rows(path, [row], FIELDS)
                print(f"  {name}/{method} seed {seed}: test {row['metric_name']} {row['test_metric']:.4f}  "
                      f"test NFE {row['test_nfe']}  target {row['target_nfe']:.1f}  weight {row['final_weight']:.3g}  "
                      f"train {row['train_time']:.1f}s", flush=True)
    print(f"total wall time {time.perf_counter() - wall:.1f}s")
    return summarize(out, PROBLEMS)


if __name__ == "__main__":
    main()
