"""Which torchdiffeq methods are wrapped: an explicit allow-list, every entry tested; the rest refused."""
import subprocess
import sys
import textwrap

import pytest
import torch
import torchdiffeq
from torchdiffeq._impl.dopri5 import Dopri5Solver
from torchdiffeq._impl.fixed_grid import Euler
from torchdiffeq._impl.odeint import SOLVERS

from torchdiffeq_localreg import odeint_adjoint_reg, odeint_reg
from torchdiffeq_localreg._ode_solvers import (ADAPTIVE_ALLOW_LIST, ADAPTIVE_METHODS, FIXED_GRID_ALLOW_LIST,
                                               FIXED_GRID_METHODS, SOLVER_TABLE, UNSUPPORTED_METHODS, WRAPPED)
from problems import ALL_METHODS, MLPField, state

T = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)


class FakeImplicitEuler(Euler):
    """Stands for torchdiffeq master's implicit fixed-grid family (a FixedGridODESolver subclass)."""


class FakeNewRK(Dopri5Solver):
    """Stands for an adaptive Runge-Kutta method a later torchdiffeq might add."""


def test_wrapped_methods_are_the_allow_list_and_all_tested():
    assert set(WRAPPED) == set(ADAPTIVE_METHODS + FIXED_GRID_METHODS)
    assert set(ADAPTIVE_METHODS) == {m for m in ADAPTIVE_ALLOW_LIST if m in SOLVER_TABLE}
    assert set(FIXED_GRID_METHODS) == {m for m in FIXED_GRID_ALLOW_LIST if m in SOLVER_TABLE}
    assert set(WRAPPED) == set(ALL_METHODS)   # the methods the exactness and gradient tests run
    assert set(UNSUPPORTED_METHODS) == set(SOLVER_TABLE) - set(WRAPPED)
    for name in ("explicit_adams", "implicit_adams", "fixed_adams", "scipy_solver"):
        assert name in UNSUPPORTED_METHODS or name not in SOLVERS


@pytest.mark.parametrize("name,cls", [("implicit_euler", FakeImplicitEuler), ("gl6", FakeImplicitEuler),
                                      ("radauIIA5", FakeImplicitEuler), ("new_rk", FakeNewRK)])
@pytest.mark.parametrize("adjoint", [False, True])
def test_methods_not_listed_are_refused(monkeypatch, name, cls, adjoint):
    monkeypatch.setitem(SOLVERS, name, cls)
    options = {"step_size": 0.25} if issubclass(cls, Euler) else None
    solve = odeint_adjoint_reg if adjoint else odeint_reg
    with pytest.raises(ValueError, match=rf"method '{name}' is not supported.*Supported: adaptive.*dopri5.*rk4"):
        solve(MLPField(), state(), T, method=name, options=options)
    # The plain solve is upstream's, which knows the method now.
    func, y0 = MLPField(), state()
    solution, reg = solve(func, y0, T, method=name, options=options, strategy="none")
    upstream = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    assert torch.equal(solution, upstream(func, y0, T, method=name, options=options)) and reg == 0


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="'no_such_method' is not supported.*Supported"):
        odeint_reg(MLPField(), state(), T, method="no_such_method")


def test_methods_in_the_table_at_import_are_not_wrapped_unless_listed():
    """As with torchdiffeq master, whose table has the implicit family when we are imported."""
    code = textwrap.dedent("""
        import torch
        from torchdiffeq._impl.fixed_grid import Euler
        from torchdiffeq._impl.odeint import SOLVERS
        for name in ("implicit_euler", "gl4", "gl6", "radauIIA5", "sdirk2", "trbdf2"):
            SOLVERS[name] = type(name, (Euler,), {})
        from torchdiffeq_localreg import odeint_reg
        from torchdiffeq_localreg._ode_solvers import UNSUPPORTED_METHODS, WRAPPED
        assert not {"implicit_euler", "gl4", "gl6", "radauIIA5", "sdirk2", "trbdf2"} & set(WRAPPED), WRAPPED
        assert "gl6" in UNSUPPORTED_METHODS
        try:
            odeint_reg(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method="gl6",
                       options={"step_size": 0.5})
        except ValueError as e:
            assert "not supported" in str(e) and "gl6" in str(e), e
        else:
            raise SystemExit("gl6 was accepted")
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
