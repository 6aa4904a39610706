"""Fixed-grid ODE solvers for dx/dt = v(x, t), integrated from t_span[0] to t_span[-1].

The solvers know nothing about networks: ``v(x, t)`` takes the state x and the solver time t
as a 0-dim float32 tensor and returns dx/dt with the shape of x. Converting t to the
network's integer time and applying CFG is the caller's job (``frieren.flow.guidance``).

Time grids (FRIEREN_SPEC §5.2): the reference uses torchdyn 1.0.6 with
``t_span = torch.linspace(0, 1, steps + 1)`` in float32 and accumulates the solver time as
``t = t + dt; dt = t_span[k+1] - t``. Together with the network's ``long(1000 * t)`` this
gives integer times 0, 40, ..., 160, 199, 240, ..., 320, 359, 399, 440, ... for 25 steps.
``time_grid(steps, reference=True)`` reproduces those float32 times and step sizes exactly;
``reference=False`` gives the ideal uniform grid (times k/steps, dt 1/steps, in float32).

``rk4`` is classical RK4. ``rk4_torchdyn_compat`` reproduces torchdyn 1.0.6's RK4, whose
stages are evaluated at the *wrong times* (t, t, t+dt/2, t+dt/2 instead of
t, t+dt/2, t+dt/2, t+dt); use it only to match outputs of the reference's rk4 mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import torch
from torch import Tensor

__all__ = [
    "Velocity", "TimeGrid", "ODESolution", "time_grid", "grid_from_t_span",
    "euler", "midpoint", "rk4", "rk4_torchdyn_compat", "SOLVERS", "get_solver",
]

Velocity = Callable[[Tensor, Tensor], Tensor]
"""v(x, t) -> dx/dt; t is a 0-dim float32 tensor (flow time, CPU)."""


@dataclass(frozen=True)
class TimeGrid:
    """A fixed integration grid.

    t_span: (N+1,) float32 grid points; times: (N,) float32 solver time at the start of each
    step; dts: (N,) float32 step sizes. With the reference accumulation ``times[k]`` can
    differ from ``t_span[k]`` in the last bits, and ``t_span[-1]`` is never evaluated.
    """
    t_span: Tensor
    times: Tensor
    dts: Tensor

    @property
    def steps(self) -> int:
        return int(self.times.shape[0])


@dataclass(frozen=True)
class ODESolution:
    """final: state after the last step (same shape as x0).

    trajectory: ``(steps + 1, *x0.shape)`` with ``trajectory[k]`` the state after k steps
    (``trajectory[0] == x0``, ``trajectory[-1] == final``), or None unless requested.
    nfe: number of velocity evaluations.
    """
    final: Tensor
    trajectory: Optional[Tensor]
    nfe: int
    grid: TimeGrid


def grid_from_t_span(t_span: Tensor, accumulate: bool = True) -> TimeGrid:
    """Build a grid from explicit points (float32, CPU).

    accumulate=True follows torchdyn: ``t = t + dt; dt = t_span[k+1] - t`` in float32;
    accumulate=False uses ``times = t_span[:-1]`` and ``dts = diff(t_span)``.
    """
    t_span = torch.as_tensor(t_span).detach().to("cpu", torch.float32)
    if t_span.dim() != 1 or t_span.shape[0] < 2:
        raise ValueError(f"t_span must be 1-D with at least 2 points, got shape {tuple(t_span.shape)}")
    if not accumulate:
        return TimeGrid(t_span=t_span, times=t_span[:-1].clone(), dts=t_span[1:] - t_span[:-1])
    times: List[Tensor] = []
    dts: List[Tensor] = []
    t = t_span[0]
    dt = t_span[1] - t_span[0]
    n = t_span.shape[0] - 1
    for k in range(1, n + 1):
        times.append(t)
        dts.append(dt)
        t = t + dt
        if k < n:
            dt = t_span[k + 1] - t
    return TimeGrid(t_span=t_span, times=torch.stack(times), dts=torch.stack(dts))


def time_grid(steps: int, reference: bool = True, t0: float = 0.0, t1: float = 1.0) -> TimeGrid:
    """Grid of ``steps`` solver steps from t0 to t1 (the reference's ``-t 26`` is steps=25).

    reference=True: torchdyn's float32 ``linspace`` plus accumulation (computed on CPU so
    the bits do not depend on the device). reference=False: uniform times t0 + k*h and
    step size h = (t1 - t0)/steps, computed in float64 and rounded to float32.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    steps = int(steps)
    if reference:
        return grid_from_t_span(torch.linspace(t0, t1, steps + 1, dtype=torch.float32), accumulate=True)
    k = torch.arange(steps + 1, dtype=torch.float64)
    span = t0 + (t1 - t0) * k / steps
    return TimeGrid(
        t_span=span.to(torch.float32),
        times=span[:-1].to(torch.float32),
        dts=torch.full((steps,), (t1 - t0) / steps, dtype=torch.float64).to(torch.float32),
    )


def _as_grid(grid: Union[TimeGrid, int]) -> TimeGrid:
    if isinstance(grid, TimeGrid):
        return grid
    return time_grid(grid, reference=True)


_Step = Callable[[Velocity, Tensor, Tensor, Tensor], Tensor]


def _integrate(step: _Step, evals: int, v: Velocity, x0: Tensor, grid: Union[TimeGrid, int],
               return_trajectory: bool) -> ODESolution:
    grid = _as_grid(grid)
    x = x0
    states = [x0] if return_trajectory else None
    for k in range(grid.steps):
        x = step(v, x, grid.times[k], grid.dts[k])
        if states is not None:
            states.append(x)
    traj = torch.stack(states) if states is not None else None
    return ODESolution(final=x, trajectory=traj, nfe=evals * grid.steps, grid=grid)


def _euler_step(v: Velocity, x: Tensor, t: Tensor, dt: Tensor) -> Tensor:
    return x + dt * v(x, t)


def _midpoint_step(v: Velocity, x: Tensor, t: Tensor, dt: Tensor) -> Tensor:
    half = 0.5 * dt
    k1 = v(x, t)
    return x + dt * v(x + half * k1, t + half)


def _rk4_step(v: Velocity, x: Tensor, t: Tensor, dt: Tensor) -> Tensor:
    half = 0.5 * dt
    k1 = v(x, t)
    k2 = v(x + half * k1, t + half)
    k3 = v(x + half * k2, t + half)
    k4 = v(x + dt * k3, t + dt)
    return x + dt * (k1 / 6 + k2 / 3 + k3 / 3 + k4 / 6)


def _rk4_torchdyn_step(v: Velocity, x: Tensor, t: Tensor, dt: Tensor) -> Tensor:
    # torchdyn 1.0.6 evaluates stage i at t + c[i-1]*dt with c = [0, 1/2, 1/2, 1]:
    # stage times t, t, t+dt/2, t+dt/2. States and weights are the classical ones.
    half = 0.5 * dt
    k1 = v(x, t)
    k2 = v(x + half * k1, t)            # BUG reproduced: should be t + dt/2
    k3 = v(x + half * k2, t + half)
    k4 = v(x + dt * k3, t + half)       # BUG reproduced: should be t + dt
    return x + dt * (k1 / 6 + k2 / 3 + k3 / 3 + k4 / 6)


def euler(v: Velocity, x0: Tensor, grid: Union[TimeGrid, int], *, return_trajectory: bool = False) -> ODESolution:
    """Explicit Euler, x <- x + dt * v(x, t); 1 evaluation per step; order 1.

    ``grid`` is a TimeGrid or a step count (then ``time_grid(steps, reference=True)``).
    """
    return _integrate(_euler_step, 1, v, x0, grid, return_trajectory)


def midpoint(v: Velocity, x0: Tensor, grid: Union[TimeGrid, int], *, return_trajectory: bool = False) -> ODESolution:
    """Explicit midpoint (RK2); 2 evaluations per step; order 2."""
    return _integrate(_midpoint_step, 2, v, x0, grid, return_trajectory)


def rk4(v: Velocity, x0: Tensor, grid: Union[TimeGrid, int], *, return_trajectory: bool = False) -> ODESolution:
    """Classical RK4 (correct stage times); 4 evaluations per step; order 4."""
    return _integrate(_rk4_step, 4, v, x0, grid, return_trajectory)


def rk4_torchdyn_compat(v: Velocity, x0: Tensor, grid: Union[TimeGrid, int], *,
                        return_trajectory: bool = False) -> ODESolution:
    """REFERENCE-BUG COMPATIBILITY: torchdyn 1.0.6 RK4 with wrong stage times (t, t, t+dt/2, t+dt/2).

    Only for matching the reference's ``solver='rk4'`` outputs; it is first-order accurate
    for time-dependent fields. Use :func:`rk4` otherwise.
    """
    return _integrate(_rk4_torchdyn_step, 4, v, x0, grid, return_trajectory)


SOLVERS: Dict[str, Callable[..., ODESolution]] = {
    "euler": euler,
    "midpoint": midpoint,
    "rk4": rk4,
    "rk4_torchdyn_compat": rk4_torchdyn_compat,
}


def get_solver(name: str) -> Callable[..., ODESolution]:
    """Solver by name; fails loudly on an unknown one."""
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}") from None
