"""The ODE example scripts (spiral demo, latent ODE, CNF) run their --smoke setting and keep their promises:
AutoWeight by default (NFEBudget with --target_nfe), upstream's flag forms, outputs relative to the working
directory, copy-runnable files.
Every run here works inside tmp_path (monkeypatch.chdir); nothing is written in the repository."""
import ast
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from problems import EXAMPLES, load_example, read_csv

LOG_FIELDS = ["itr", "loss", "reg", "weight", "nfe_forward", "nfe_reg", "nfe_backward", "time"]

# name -> (visualization flag as upstream spells it, figures it writes)
SCRIPTS = {
    "ode_demo": ("--viz", ("spiral.png", "nfe.png")),
    "latent_ode": ("--visualize", ("vis.png", "nfe.png")),
    "cnf": ("--viz", ("cnf.png", "nfe.png")),
}
ALL_EXAMPLES = ["ode_demo", "latent_ode", "cnf", "odenet_mnist", "sde_mnist", "latent_sde"]
# Upstream's command-line forms (type=eval or store_true there) and what they must mean here.
UPSTREAM_FORMS = [
    (["--adjoint", "True"], "adjoint", True),
    (["--adjoint", "False"], "adjoint", False),
    (["--adjoint"], "adjoint", True),
    ([], "adjoint", False),
    (["--visualize", "True"], "viz", True),
    (["--visualize", "False"], "viz", False),
    (["--visualize"], "viz", True),
    (["--viz"], "viz", True),
    (["--viz", "True"], "viz", True),
    (["--gpu", "0"], "gpu", 0),
    (["--gpu", "1"], "gpu", 1),
]


def smoothed_nfe(nfes, smoothing):
    """NFEBudget's bias-corrected moving average of the forward NFE of the steps so far."""
    average = 0.0
    for nfe in nfes:
        average = smoothing * average + (1 - smoothing) * nfe
    return average / (1 - smoothing ** len(nfes))


class BackwardSpy:
    """Records the calls of the weight controls' ``backward`` and ``update`` (the real ones still do the
    work) and the steps of the optimizers built meanwhile, so that a test can see what each training
    step handed to the control, and in which order."""

    def __init__(self, monkeypatch):
        import torch

        from torchdiffeq_localreg import AutoWeight, NFEBudget

        self.calls, self.updates, self.events, self.optimizers = [], [], [], []
        real_init = torch.optim.Optimizer.__init__
        for cls in (AutoWeight, NFEBudget):
            real_backward, real_update = cls.backward, cls.update

            def backward(control, task_loss, reg, parameters, real=real_backward):
                parameters = list(parameters)
                used = control.weight  # what combine="sum" adds; "project" sets the weight inside backward
                result = real(control, task_loss, reg, parameters)
                self.events.append("backward")
                self.calls.append({"control": type(control).__name__, "task_loss": task_loss.item(),
                                   "reg": reg.item(), "combine": control.combine,
                                   "weight": used if control.combine == "sum" else control.weight,
                                   "params": {id(p) for p in parameters}})
                return result

            def update(control, stats, real=real_update):
                self.events.append("update")
                self.updates.append(sum(s.nfe_forward for s in ([stats] if hasattr(stats, "nfe_forward") else stats)))
                return real(control, stats)

            monkeypatch.setattr(cls, "backward", backward)
            monkeypatch.setattr(cls, "update", update)

        def init(optimizer, *args, **kwargs):
            real_init(optimizer, *args, **kwargs)
            self.optimizers.append(optimizer)
            optimizer.register_step_post_hook(lambda *_: self.events.append("step"))

        monkeypatch.setattr(torch.optim.Optimizer, "__init__", init)

    def check_every_step(self, rows, control="AutoWeight"):
        """Per training step: ``control.backward`` with the logged task loss (everything but weight * reg),
        the step's reg, the logged weight, combine="project" and exactly the parameters the optimizer steps;
        then ``optimizer.step()``; then ``control.update`` with the step's forward NFE."""
        assert len(self.calls) == len(rows) > 0
        assert self.events == ["backward", "step", "update"] * len(rows)
        (optimizer,) = self.optimizers
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for call, row, nfe in zip(self.calls, rows, self.updates):
            assert call["control"] == control and call["combine"] == "project"
            assert call["params"] == stepped
            assert call["task_loss"] == pytest.approx(row["loss"], rel=1e-6)
            assert call["reg"] == pytest.approx(row["reg"], rel=1e-6) and row["reg"] > 0
            assert call["weight"] == pytest.approx(row["weight"])
            assert nfe == row["nfe_forward"]


@pytest.fixture
def backward_spy(monkeypatch):
    return BackwardSpy(monkeypatch)


def check_auto_weight(result, rows):
    """The default run: AutoWeight set a positive weight from the first step on, and saw every solve."""
    control = result["control"]
    assert type(control).__name__ == "AutoWeight" and control.combine == "project"
    assert control.steps == len(rows) and control.nfe == rows[-1]["nfe_forward"]
    assert all(math.isfinite(row["weight"]) and row["weight"] > 0 for row in rows)
    assert control.weight == pytest.approx(rows[-1]["weight"])
    summary = result["summary"]
    assert summary["weight_control"] == "AutoWeight" and "target_nfe" not in summary
    assert summary["final_weight"] == pytest.approx(rows[-1]["weight"])


def check_budget(name, result, rows, target):
    """--target_nfe: NFEBudget with that target and the script's budget settings, 0.01 at the first step."""
    budget = result["control"]
    assert type(budget).__name__ == "NFEBudget" and budget.target_nfe == target and budget.steps == len(rows)
    assert budget.rate == load_example(name).parser.get_default("budget_rate") and budget.min_weight == 0.01
    assert rows[0]["weight"] == pytest.approx(0.01) and all(row["weight"] >= 0.01 for row in rows)
    assert budget.nfe == pytest.approx(smoothed_nfe([row["nfe_forward"] for row in rows], budget.smoothing))
    assert result["summary"]["weight_control"] == "NFEBudget" and result["summary"]["target_nfe"] == target


def out_dir(tmp_path, name):
    return tmp_path / "runs" / name


def run(name, *flags):
    return load_example(name).main(["--smoke", *flags])


def check_log(result, out):
    """The CSV log has the promised columns and one row per iteration, matching the returned rows."""
    fields, rows = read_csv(out / "log.csv")
    assert fields == LOG_FIELDS
    niters = result["args"].niters
    assert [row["itr"] for row in rows] == list(range(1, niters + 1))
    assert len(result["rows"]) == niters
    for row, returned in zip(rows, result["rows"]):
        assert row["loss"] == pytest.approx(returned["loss"])
        assert row["weight"] == pytest.approx(returned["weight"])
        assert math.isfinite(row["loss"]) and math.isfinite(row["reg"])
        assert row["nfe_forward"] > 0 and row["time"] > 0
    return rows


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Each example's default smoke run (unbiased, AutoWeight) with figures, run once in its own folder and shared."""
    cache = {}

    def get(name):
        if name not in cache:
            folder = tmp_path_factory.mktemp(name)
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(folder)
                cache[name] = (run(name, SCRIPTS[name][0]), out_dir(folder, name))
        return cache[name]

    return get


@pytest.mark.parametrize("name", ALL_EXAMPLES)
@pytest.mark.parametrize("flags,dest,value", UPSTREAM_FORMS)
def test_upstream_flag_forms_parse(name, flags, dest, value):
    args = load_example(name).parser.parse_args(flags)
    if dest == "viz" and not hasattr(args, "viz"):
        dest = "visualize"  # latent_ode keeps upstream's name for it
    assert getattr(args, dest) == value


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_bad_boolean_is_an_argparse_error(name, capsys):
    with pytest.raises(SystemExit):
        load_example(name).parser.parse_args(["--adjoint", "maybe"])
    assert "expected True or False" in capsys.readouterr().err


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_auto_weight_is_the_default_weight_control(name):
    module = load_example(name)
    args = module.parser.parse_args([])
    assert args.reg == "unbiased" and args.reg_weight is None and args.target_nfe is None
    # odenet_mnist keeps the package's rate: its 3-epoch run still learns while the weight climbs.
    assert args.budget_rate == (0.05 if name == "odenet_mnist" else 0.1) and args.budget_min_weight == 0.01
    help_text = " ".join(module.parser.format_help().split())
    assert "instead of AutoWeight" in help_text and "(default: None, AutoWeight)" in help_text
    assert help_text.count("with --target_nfe only: NFEBudget's") == 2  # --budget_rate, --budget_min_weight
    check_docstring_diff(module.__doc__)


def check_docstring_diff(doc):
    """The docstring's diff against upstream adds AutoWeight's lines, and no budget."""
    added = [line.strip() for line in doc.splitlines() if line.startswith("    +")]
    assert "+auto = AutoWeight()" in added or "+auto = localreg.AutoWeight()" in added, added
    imported = "AutoWeight" if "+auto = AutoWeight()" in added else "import torchdiffeq_localreg as localreg"
    assert any(line.startswith(("+from ", "+import ")) and imported in line for line in added), added
    assert any(line.startswith("+auto.backward(") for line in added), added
    assert any(line.startswith("+auto.update(") for line in added), added
    assert not any("budget" in line.lower() or "target" in line for line in added), added


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_copy_runnable_imports(name):
    """Nothing from the examples folder is imported, except mnist_data inside try/except ImportError."""
    local = {p.stem for p in EXAMPLES.glob("*.py")}
    tree = ast.parse((EXAMPLES / f"{name}.py").read_text())
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers):
            guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                top = module.split(".")[0]
                if top in local:
                    assert top == "mnist_data" and id(node) in guarded, f"{name} imports {module}"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_smoke_regularized_with_auto_weight_and_figures(name, smoke_runs):
    result, out = smoke_runs(name)
    rows = check_log(result, out)
    check_auto_weight(result, rows)
    for row in rows:
        assert row["reg"] > 0
        assert row["nfe_reg"] > 0
        assert row["nfe_backward"] == 0  # direct backprop evaluates nothing again
    # relative to the working directory of the run, as upstream writes them
    assert result["figures"] == [str(Path("runs", name, figure)) for figure in SCRIPTS[name][1]]
    for figure in SCRIPTS[name][1]:
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_reg_none_is_the_plain_solve(name, smoke_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(name, "--reg", "none")
    rows = check_log(result, out_dir(tmp_path, name))
    assert result["control"] is None and result["summary"]["weight_control"] == "none"
    assert "target_nfe" not in result["summary"]
    assert all(row["reg"] == 0 and row["nfe_reg"] == 0 and row["weight"] == 0 for row in rows)
    assert not list(tmp_path.rglob("*.png"))
    # Same seeds: the first iteration's solve and task loss are the regularized run's.
    regularized = smoke_runs(name)[0]["rows"]
    assert rows[0]["nfe_forward"] == regularized[0]["nfe_forward"]
    assert rows[0]["loss"] == pytest.approx(regularized[0]["loss"], rel=1e-6)
    # ... and + weight * reg really entered the updates (Adam's first step is sign-like, so look at the last).
    assert rows[-1]["loss"] != regularized[-1]["loss"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_auto_weight_steps_through_its_backward(name, backward_spy, tmp_path, monkeypatch):
    """By default each step is control.backward(task loss, reg, the optimizer's parameters), optimizer.step(),
    control.update(stats), with AutoWeight."""
    monkeypatch.chdir(tmp_path)
    result = run(name)
    assert type(result["control"]).__name__ == "AutoWeight"
    backward_spy.check_every_step(result["rows"])


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_target_nfe_trains_with_budget(name, backward_spy, tmp_path, monkeypatch):
    """--target_nfe N puts NFEBudget(target_nfe=N) in AutoWeight's place, through the same calls."""
    monkeypatch.chdir(tmp_path)
    result = run(name, "--target_nfe", "30")
    rows = check_log(result, out_dir(tmp_path, name))
    check_budget(name, result, rows, 30.0)
    backward_spy.check_every_step(rows, control="NFEBudget")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("flags", [["--reg_weight", "0.5"], ["--reg", "none"]])
def test_constant_weight_and_plain_runs_skip_the_control(name, flags, backward_spy, tmp_path, monkeypatch):
    """A constant weight and --reg none keep the plain (loss + weight * reg).backward()."""
    monkeypatch.chdir(tmp_path)
    result = run(name, *flags)
    assert result["control"] is None and len(result["rows"]) > 0
    assert len(backward_spy.optimizers) == 1 and backward_spy.calls == [] and backward_spy.updates == []


def test_constant_weight_when_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("cnf", "--reg_weight", "0.5")
    rows = check_log(result, out_dir(tmp_path, "cnf"))
    assert result["control"] is None and result["summary"]["weight_control"] == "constant"
    assert all(row["weight"] == 0.5 and row["reg"] > 0 for row in rows)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_upstream_flags_adjoint_true_gpu_0(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(name, "--adjoint", "True", "--gpu", "0")
    rows = check_log(result, out_dir(tmp_path, name))
    assert result["args"].adjoint is True
    assert all(row["nfe_backward"] > 0 and row["reg"] > 0 for row in rows)


def test_adams_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="'adams' is not supported"):
        run("ode_demo", "--method", "adams")


@pytest.mark.parametrize("strategy", ["biased", "global"])
def test_other_strategies(strategy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = check_log(run("ode_demo", "--reg", strategy), out_dir(tmp_path, "ode_demo"))
    assert all(row["reg"] > 0 for row in rows)


def test_global_with_adjoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="global"):
        run("ode_demo", "--adjoint", "--reg", "global")


def test_ode_demo_logs_test_trajectory(smoke_runs):
    result, out = smoke_runs("ode_demo")
    fields, rows = read_csv(out / "test.csv")
    assert fields == ["itr", "test_loss", "test_nfe"]
    args = result["args"]
    assert [row["itr"] for row in rows] == list(range(args.test_freq, args.niters + 1, args.test_freq))
    assert all(math.isfinite(row["test_loss"]) and row["test_nfe"] > 0 for row in rows)
    assert result["summary"]["test_nfe"] == rows[-1]["test_nfe"]


@pytest.mark.parametrize("name,metric", [("latent_ode", "test_mse"), ("cnf", "test_nll")])
def test_final_metrics(name, metric, smoke_runs):
    result = smoke_runs(name)[0]
    assert math.isfinite(result[metric]) and result["test_nfe"] > 0
    assert result["summary"]["test_metric"] == result[metric] and result["summary"]["test_nfe"] == result["test_nfe"]


def test_copied_example_runs_from_the_command_line(tmp_path):
    """ode_demo.py copied alone into an empty folder runs with upstream's flags; outputs land in that folder."""
    shutil.copy(EXAMPLES / "ode_demo.py", tmp_path / "ode_demo.py")
    proc = subprocess.run([sys.executable, "ode_demo.py", "--smoke", "--adjoint", "False", "--viz", "--gpu", "0",
                           "--json", "out.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs" / "ode_demo" / "log.csv").is_file()
    assert (tmp_path / "runs" / "ode_demo" / "spiral.png").is_file()
    assert '"weight_control": "AutoWeight"' in (tmp_path / "out.json").read_text()
