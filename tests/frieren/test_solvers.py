"""ODE solvers on closed-form problems, and the reference time grid (04_cfm_sampler/config.json)."""
from __future__ import annotations

import math
import re

import pytest
import torch

from frieren.flow.guidance import network_time
from frieren.flow.sampling import sample
from frieren.flow.solvers import (SOLVERS, euler, get_solver, grid_from_t_span, midpoint, rk4,
                                  rk4_torchdyn_compat, time_grid)

from conftest import load_json

ORDERS = {"euler": 1, "midpoint": 2, "rk4": 4}


def _x0():
    return torch.tensor([[1.0, -0.5, 2.0]], dtype=torch.float64)


def _linear(a):
    return lambda x, t: a * x


def _time_dep(x, t):  # dx/dt = -2 t x  ->  x(1) = x0 * exp(-1)
    return -2.0 * t.to(x.dtype) * x


def _err(solver, v, exact, steps):
    sol = solver(v, _x0(), time_grid(steps, reference=False))
    return (sol.final - exact).abs().max().item()


@pytest.mark.parametrize("name", sorted(ORDERS))
@pytest.mark.parametrize("problem", ["linear", "time_dependent"])
def test_convergence_order(name, problem):
    solver = SOLVERS[name]
    if problem == "linear":
        a = -1.5
        v, exact = _linear(a), _x0() * math.exp(a)
    else:
        v, exact = _time_dep, _x0() * math.exp(-1.0)
    # Power-of-two step counts: float32 times and step sizes are exact.
    e1, e2, e3 = (_err(solver, v, exact, n) for n in (4, 8, 16))
    for coarse, fine in ((e1, e2), (e2, e3)):
        order = math.log2(coarse / fine)
        assert abs(order - ORDERS[name]) < 0.35, f"{name}/{problem}: observed order {order:.2f}"


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_linear_ode_accuracy(name):
    a = 0.7
    exact = _x0() * math.exp(a)
    tol = {"euler": 5e-2, "midpoint": 2e-3, "rk4": 1e-6}[name]
    assert _err(SOLVERS[name], _linear(a), exact, 32) < tol


def test_rk4_exact_for_cubic_in_time_and_torchdyn_bug_is_not():
    v = lambda x, t: 4.0 * t.to(x.dtype) ** 3 * torch.ones_like(x)  # x(1) = x0 + 1
    exact = _x0() + 1.0
    assert _err(rk4, v, exact, 4) < 1e-12
    assert _err(rk4_torchdyn_compat, v, exact, 4) > 1e-3


def test_torchdyn_compat_stage_times():
    seen = []

    def v(x, t):
        seen.append(float(t))
        return torch.zeros_like(x)

    grid = time_grid(2, reference=False)
    sol = rk4_torchdyn_compat(v, _x0(), grid)
    assert sol.nfe == 8
    assert seen == [0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75]
    seen.clear()
    rk4(v, _x0(), grid)
    assert seen == [0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0]


def test_torchdyn_compat_matches_rk4_for_autonomous_fields():
    a = -0.9
    x_ok = rk4(_linear(a), _x0(), 8).final
    x_bug = rk4_torchdyn_compat(_linear(a), _x0(), 8).final
    assert torch.allclose(x_ok, x_bug, atol=1e-12, rtol=0)


@pytest.mark.parametrize("steps", [1, 25])
def test_straight_line_flow_is_exact_with_euler(steps):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    x1 = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)

    def v(x, t):  # conditional rectified-flow field toward x1: constant along the path
        return (x1 - x) / (1.0 - t.to(x.dtype))

    sol = euler(v, x0, time_grid(steps, reference=True))
    assert torch.allclose(sol.final, x1, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_trajectory_convention(name):
    x0 = _x0()
    sol = get_solver(name)(_linear(-1.0), x0, 5, return_trajectory=True)
    assert sol.trajectory.shape == (6, *x0.shape)
    assert torch.equal(sol.trajectory[0], x0) and torch.equal(sol.trajectory[-1], sol.final)
    assert sol.nfe == 5 * {"euler": 1, "midpoint": 2}.get(name, 4)
    assert get_solver(name)(_linear(-1.0), x0, 5).trajectory is None


def test_unknown_solver_fails_loudly():
    with pytest.raises(ValueError, match="unknown solver"):
        get_solver("dopri5")


def test_solvers_are_differentiable():
    x0 = _x0().requires_grad_(True)
    for name in ORDERS:
        SOLVERS[name](_linear(0.3), x0, 3).final.sum().backward()
    assert x0.grad is not None


def test_ideal_grid_and_rounding():
    g = time_grid(25, reference=False)
    assert g.steps == 25
    assert network_time(g.times, rounding="nearest").tolist() == [40 * k for k in range(25)]
    assert torch.allclose(g.dts.double(), torch.full((25,), 0.04, dtype=torch.float64), atol=1e-8)
    assert torch.equal(grid_from_t_span(g.t_span, accumulate=False).times, g.times)


def _config_runs(ref_dir):
    runs = load_json(ref_dir / "04_cfm_sampler" / "config.json")["runs"]
    assert runs, "config.json has no runs"
    return runs


def test_reference_time_grid_matches_config(ref_dir):
    for name, run in _config_runs(ref_dir).items():
        t_span = torch.tensor(run["t_span"], dtype=torch.float32)
        steps = len(run["t_span"]) - 1
        assert steps == run["num_euler_steps"], name
        grid = time_grid(steps, reference=True)
        assert torch.equal(grid.t_span, t_span), f"{name}: linspace differs"
        assert torch.equal(grid.times, torch.tensor(run["vector_field_called_at_float_t"], dtype=torch.float32)), name
        assert torch.equal(grid.dts, torch.tensor(run["euler_dt_per_step"], dtype=torch.float32)), name
        expected = [call[0] for call in run["network_int_t_per_call"]]
        assert network_time(grid.times).tolist() == expected, name


def _cfg_scale(call: str):
    m = re.search(r"cfg_scale\s*=\s*([0-9.eE+-]+)", call)
    return float(m.group(1)) if m else None


def test_network_int_times_per_call_through_sampler(ref_dir):
    """The integers the network sees (every row of every call) equal the reference's."""
    for name, run in _config_runs(ref_dir).items():
        batch = run["trajectory_shape"][1]
        scale = _cfg_scale(run["call"])
        seen = []

        def net(x, t, ctx):
            assert t.dtype == torch.int64 and t.shape == (x.shape[0],) and ctx.shape[0] == x.shape[0]
            seen.append(t.tolist())
            return torch.zeros_like(x)

        cond = torch.zeros(batch, 4, 3)
        x0 = torch.zeros(batch, 2, 8)
        sol = sample(net, cond, torch.zeros(1, 4, 3), x0, steps=run["num_euler_steps"], cfg_scale=scale)
        assert seen == run["network_int_t_per_call"], name
        assert sol.nfe == len(run["network_int_t_per_call"])
