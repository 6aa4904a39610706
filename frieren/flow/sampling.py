"""One-call sampler: encoded conditions + initial noise -> latent (FRIEREN_SPEC §5.2).

``sample(est, cond, null_cond, x0, steps=25, cfg_scale=4.5)`` reproduces the reference's
``sample_param_cfg(..., solver='euler', timesteps=26)`` given the same x0. ``steps`` counts
solver steps (the reference's ``-t N`` grid points are ``steps + 1``). The caller chooses the
grad mode (wrap in ``torch.inference_mode()`` for generation).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

from torch import Tensor

from frieren.flow.guidance import Estimator, cfg_velocity
from frieren.flow.solvers import ODESolution, get_solver, time_grid

__all__ = ["sample"]


def sample(estimator: Estimator, cond: Tensor, null_cond: Optional[Tensor], x0: Tensor, steps: int = 25,
           cfg_scale: Optional[float] = 4.5, solver: Union[str, Callable[..., ODESolution]] = "euler",
           reference_time_grid: bool = True, return_trajectory: bool = False) -> ODESolution:
    """Integrate dx/dt = v_cfg(x, t) from t = 0 (x0, (B, C, T) noise) to t = 1.

    cond (B, F, D) and null_cond (1, F, D) are encoded conditions; cfg_scale None or 1 means a
    single conditional forward per evaluation. ``reference_time_grid`` selects torchdyn's float32
    grid with truncated network times (bit-faithful to the reference); False gives the ideal
    uniform grid with network times rounded to the nearest integer.
    Returns ODESolution(final (B, C, T), trajectory (steps+1, B, C, T) or None, nfe, grid).
    """
    if x0.dim() != 3 or x0.shape[0] != cond.shape[0]:
        raise ValueError(f"x0 must be (B, C, T) with B = cond batch; x0 {tuple(x0.shape)}, cond {tuple(cond.shape)}")
    solve = get_solver(solver) if isinstance(solver, str) else solver
    grid = time_grid(steps, reference=reference_time_grid)
    v = cfg_velocity(estimator, cond, null_cond, cfg_scale,
                     rounding="truncate" if reference_time_grid else "nearest")
    return solve(v, x0, grid, return_trajectory=return_trajectory)
