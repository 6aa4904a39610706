"""Network time conversion and classifier-free guidance (FRIEREN_SPEC §5.2, §6.4).

Turns an estimator ``net(x (B,C,T), t_int (B,), context (B,F,D)) -> (B,C,T)`` plus
*already encoded* conditions into a solver velocity ``v(x, t_float) -> dx/dt``. Conditions
are encoded once per window by the caller and reused for every solver step and both CFG
branches (DESIGN §5.2).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from frieren.flow.path import NUM_TRAIN_TIMESTEPS

__all__ = ["network_time", "GuidedVelocity", "cfg_velocity"]

Estimator = Callable[[Tensor, Tensor, Tensor], Tensor]


def network_time(t: Union[Tensor, float], batch: Optional[int] = None,
                 device: Optional[Union[torch.device, str]] = None, rounding: str = "truncate") -> Tensor:
    """Flow time t in [0, 1] -> int64 network time, as the reference: ``long(float32(t) * 1000)``.

    The product is taken in float32 and truncated toward zero, so e.g. the reference grid's
    t = 0.19999999 gives 199, not 200. ``rounding="nearest"`` rounds instead (for ideal grids).
    A 0-dim t is broadcast to ``(batch,)`` when ``batch`` is given; a (B,) t is kept.
    """
    t = torch.as_tensor(t, dtype=torch.float32)
    scaled = t.to(torch.float32) * NUM_TRAIN_TIMESTEPS
    if rounding == "nearest":
        scaled = torch.round(scaled)
    elif rounding != "truncate":
        raise ValueError(f"rounding must be 'truncate' or 'nearest', got {rounding!r}")
    out = scaled.long()
    if batch is not None:
        if out.dim() == 0:
            out = out.expand(batch)
        elif out.shape != (batch,):
            raise ValueError(f"t has shape {tuple(out.shape)}, expected () or ({batch},)")
    if device is not None:
        out = out.to(device)
    return out


class GuidedVelocity:
    """Velocity callable ``v(x (B,C,T), t 0-dim float) -> (B,C,T)`` over an estimator.

    With a guidance scale s (not None and != 1) it runs ONE batched forward over
    ``[null; cond]`` (unconditional rows first, as the reference) and returns
    ``v_u + s * (v_c - v_u)``. Otherwise it runs a single conditional forward.
    ``forward_calls`` counts estimator calls (useful for cost accounting and tests).
    """

    def __init__(self, estimator: Estimator, cond: Tensor, null_cond: Optional[Tensor] = None,
                 scale: Optional[float] = None, rounding: str = "truncate") -> None:
        if cond.dim() != 3:
            raise ValueError(f"cond must be encoded (B, F, D), got {tuple(cond.shape)}")
        self.estimator = estimator
        self.scale = None if scale is None or float(scale) == 1.0 else float(scale)
        self.rounding = rounding
        self.batch = cond.shape[0]
        self.forward_calls = 0
        if self.scale is None:
            self.context = cond
        else:
            if null_cond is None:
                raise ValueError(f"cfg scale {scale} needs the encoded null condition (1, F, D)")
            if null_cond.dim() != 3 or null_cond.shape[1:] != cond.shape[1:] or null_cond.shape[0] not in (1, self.batch):
                raise ValueError(f"null_cond must be (1, F, D) matching cond {tuple(cond.shape)}, "
                                 f"got {tuple(null_cond.shape)}")
            # Built once and reused for every step.
            self.context = torch.cat([null_cond.expand(self.batch, -1, -1), cond], dim=0)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if x.shape[0] != self.batch:
            raise ValueError(f"x batch {x.shape[0]} != condition batch {self.batch}; x {tuple(x.shape)}")
        self.forward_calls += 1
        if self.scale is None:
            return self.estimator(x, network_time(t, self.batch, x.device, self.rounding), self.context)
        t_in = network_time(t, 2 * self.batch, x.device, self.rounding)
        out = self.estimator(torch.cat([x, x], dim=0), t_in, self.context)
        v_u, v_c = out.chunk(2, dim=0)
        return v_u + self.scale * (v_c - v_u)


def cfg_velocity(estimator: Union[nn.Module, Estimator], cond: Tensor, null_cond: Optional[Tensor] = None,
                 scale: Optional[float] = None, rounding: str = "truncate") -> GuidedVelocity:
    """Build the solver velocity. cond (B, F, D) and null_cond (1, F, D) are *encoded* conditions
    (cond-encoder outputs); scale None or 1 means no guidance (null_cond unused)."""
    return GuidedVelocity(estimator, cond, null_cond, scale, rounding)
