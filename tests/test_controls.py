"""What both weight controls (NFEBudget, AutoWeight) share: their input checks, the warnings of
update(), numbers as users pass them, and state_dict bounds."""
import math
import warnings

import numpy as np
import pytest
import torch

from torchdiffeq_localreg import AutoWeight, LocalRegStats, NFEBudget, odeint_reg, regularize, sdeint_reg
from torchdiffeq_localreg import odeint as odeint_one_import

from problems import SmallSDE, brownian

CONTROLS = {"budget": lambda: NFEBudget(target_nfe=30.0), "auto": lambda: AutoWeight()}


def stats(nfe, method="dopri5"):
    return LocalRegStats(strategy="unbiased", method=method, nfe_forward=nfe)


def test_stats_say_whether_the_solve_is_adaptive():
    func = torch.nn.Linear(2, 2)
    for method, adaptive in (("dopri5", True), ("rk4", False), ("euler", False), ("adaptive_heun", True)):
        _, _, st = odeint_reg(lambda t, y: func(y), torch.ones(3, 2), torch.linspace(0, 1, 3), method=method,
                              return_stats=True)
        assert st.adaptive is adaptive, method
    _, _, st = odeint_reg(lambda t, y: func(y), torch.ones(3, 2), torch.linspace(0, 1, 3), method="explicit_adams",
                          strategy="none", return_stats=True)
    assert st.adaptive is False


def losses():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))
    task = ((w - 2.0) ** 2).sum()
    reg = (w * torch.tensor([2.0, -1.0, 3.0], dtype=torch.float64)).sum() ** 2
    return w, task, reg


@pytest.fixture(params=sorted(CONTROLS))
def control(request):
    return CONTROLS[request.param]()


@pytest.mark.parametrize("params, exc, match", [
    ([], ValueError, "parameters is empty"),
    (iter([]), ValueError, "exhausted"),
    ("weights", TypeError, "parameters"),
    (3.0, TypeError, "parameters"),
])
def test_backward_rejects_bad_parameters_before_touching_grad(control, params, exc, match):
    w, task, reg = losses()
    w.grad = torch.full((3,), 7.0, dtype=torch.float64)
    with pytest.raises(exc, match=match):
        control.backward(task, reg, params)
    torch.testing.assert_close(w.grad, torch.full((3,), 7.0, dtype=torch.float64))


def test_backward_rejects_an_exhausted_generator_and_frozen_parameters(control):
    model = torch.nn.Linear(2, 1)
    params = model.parameters()
    list(params)  # used once already, as a generator made before the loop would be
    task = model(torch.ones(1, 2)).sum()
    with pytest.raises(ValueError, match="exhausted"):
        control.backward(task, task * 0.1, params)
    for p in model.parameters():
        p.requires_grad_(False)
    assert model.weight.grad is None
    with pytest.raises(ValueError, match="frozen"):
        control.backward(torch.ones((), requires_grad=True), torch.ones((), requires_grad=True), model.parameters())
    assert model.weight.grad is None


def test_a_task_loss_without_graph_falls_back_to_the_plain_sum(control):
    """(task_loss + weight * reg).backward() works with a constant task loss; so does backward()."""
    w, _, reg = losses()
    weight = control.weight
    control.backward(torch.tensor(3.0, dtype=torch.float64), reg, [w])
    w2, _, reg2 = losses()
    (torch.tensor(3.0, dtype=torch.float64) + weight * reg2).backward()
    torch.testing.assert_close(w.grad, w2.grad)


def test_a_reg_without_graph_is_the_task_backward(control):
    w, task, _ = losses()
    control.backward(task, torch.zeros(()), [w])
    w2, task2, _ = losses()
    task2.backward()
    torch.testing.assert_close(w.grad, w2.grad)


@pytest.mark.parametrize("nfe", [float("nan"), float("inf"), -1.0])
def test_update_rejects_a_non_finite_or_negative_nfe(control, nfe):
    before = control.state_dict()
    with pytest.raises(ValueError, match="nfe_forward"):
        control.update(stats(nfe))
    assert control.state_dict() == before


def test_update_rejects_a_tensor_with_the_packages_message(control):
    with pytest.raises(TypeError, match="got a Tensor"):
        control.update(torch.tensor(0.3))


def test_update_of_a_step_without_solve_warns_once_and_counts_nothing(control):
    before = control.state_dict()
    with pytest.warns(RuntimeWarning, match="no solve.*intercept=True"):
        control.update([])
    assert control.state_dict() == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        control.update([])  # once only


def test_a_block_that_saw_no_solve_gives_a_warning_not_a_type_error(control):
    func = torch.nn.Linear(2, 2)
    import torchdiffeq
    with regularize() as r:
        torchdiffeq.odeint(lambda t, y: func(y), torch.ones(3, 2), torch.tensor([0.0, 1.0]))  # by attribute
    with pytest.warns(RuntimeWarning, match="no solve"):
        control.update(r.stats)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_update_warns_once_for_a_fixed_step_solver(control, method):
    func = torch.nn.Linear(2, 2)
    _, _, st = odeint_reg(lambda t, y: func(y), torch.ones(3, 2), torch.linspace(0, 1, 5), method=method,
                          return_stats=True)
    with pytest.warns(RuntimeWarning, match=f"fixed step \\({method}\\).*cannot change") as record:
        control.update(st)
    assert record[0].filename == __file__  # points at the caller's update() line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        control.update(st)


@pytest.mark.parametrize("adaptive", [True, False])
def test_sde_solves_warn_when_fixed_step_only(control, adaptive):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Numerical solution is not guaranteed")  # torchsde's own
        _, _, st = sdeint_reg(SmallSDE(), torch.ones(3, 2, dtype=torch.float64), torch.tensor([0.0, 1.0]),
                              bm=brownian(), method="euler", dt=0.1, adaptive=adaptive, return_stats=True)
    assert st.adaptive is adaptive
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        control.update(st)
    fixed = [str(w.message) for w in caught if "fixed step" in str(w.message)]
    assert fixed == [] if adaptive else (len(fixed) == 1 and fixed[0].startswith(type(control).__name__))


def test_adaptive_solves_do_not_warn(control):
    func = torch.nn.Linear(2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with regularize() as r:
            odeint_one_import(lambda t, y: func(y), torch.ones(3, 2), torch.linspace(0, 1, 5))
        control.update(r.stats)


def test_load_state_dict_bounds_every_number(control):
    for _ in range(3):
        control.update(stats(40))
    good = control.state_dict()
    numbers = {k: v for k, v in good.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert numbers
    for key in numbers:
        for bad in (10 ** 400, 1e308, float("nan"), -1e308):
            with pytest.raises((ValueError, TypeError), match=key):
                control.load_state_dict(dict(good, **{key: bad}))
            assert control.state_dict() == good
    control.load_state_dict(good)
    control.update(stats(35))  # the next step works


def test_numbers_as_users_pass_them():
    ref = NFEBudget(target_nfe=30.0, initial_weight=0.1, warmup_steps=2)
    for target, weight, warmup in [(np.float32(30.0), np.float64(0.1), np.int64(2)),
                                   (torch.tensor(30.0), torch.tensor(0.1, dtype=torch.float64), torch.tensor(2))]:
        budget = NFEBudget(target_nfe=target, initial_weight=weight, warmup_steps=warmup)
        assert type(budget.target_nfe) is float and type(budget.warmup_steps) is int
        assert budget.target_nfe == ref.target_nfe and budget.warmup_steps == 2
        assert math.isclose(budget.state_dict()["log_weight"], ref.state_dict()["log_weight"], rel_tol=1e-6)
    for bad in (True, np.bool_(True), torch.tensor(True), torch.tensor([30.0, 1.0])):
        with pytest.raises(TypeError, match="target_nfe"):
            NFEBudget(target_nfe=bad)
    with pytest.raises(TypeError, match="warmup_steps"):
        NFEBudget(target_nfe=30.0, warmup_steps=np.float64(2.0))


def test_nfe_as_numpy_integer_is_accepted(control):
    control.update(stats(np.int64(30)))
