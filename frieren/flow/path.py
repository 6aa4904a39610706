"""Rectified-flow probability path and the CFM training objective (FRIEREN_SPEC §5.1).

Time convention: t = 0 is noise (x0 ~ N(0, I)), t = 1 is data (x1). Flow time is a float
in [0, 1]; the *network* receives the integer ``t_int = 1000 * t`` (0..999), drawn
uniformly in training. Convert with :func:`flow_time` (int -> float) and
:func:`frieren.flow.guidance.network_time` (float -> int).

Shapes: x0, x1, v_pred (B, C, T); t (B,) float.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

__all__ = [
    "NUM_TRAIN_TIMESTEPS", "LOSS_T_CLAMP", "CFMLoss", "flow_time", "interpolate",
    "target_velocity", "logit_normal_weight", "cfm_loss", "sample_train_times",
]

NUM_TRAIN_TIMESTEPS = 1000
LOSS_T_CLAMP = 1e-5
# The reference writes the logit-normal constant 1/sqrt(2*pi) rounded to 6 digits.
_INV_SQRT_2PI = 0.398942


def _check_float_time(t: Tensor, batch: int) -> Tensor:
    if not torch.is_floating_point(t):
        raise TypeError("flow time t must be a float tensor in [0, 1]; convert integer network "
                        "times with frieren.flow.path.flow_time(t_int)")
    if t.shape != (batch,):
        raise ValueError(f"t must have shape (B={batch},), got {tuple(t.shape)}")
    return t


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    return t.reshape(t.shape[0], *([1] * (like.dim() - 1)))


def flow_time(t_int: Tensor) -> Tensor:
    """Integer network time (B,) int64 0..999 -> float32 flow time ``t_int / 1000`` (as the reference)."""
    return t_int / NUM_TRAIN_TIMESTEPS


def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """x_t = t * x1 + (1 - t) * x0 (sigma_min = 0). x0, x1 (B, ...), t (B,) float -> (B, ...)."""
    if x0.shape != x1.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x1 {tuple(x1.shape)} differ in shape")
    tb = _bcast(_check_float_time(t, x0.shape[0]), x0)
    return tb * x1 + (1 - tb) * x0


def target_velocity(x0: Tensor, x1: Tensor) -> Tensor:
    """u = x1 - x0, the constant velocity of the straight path."""
    return x1 - x0


def logit_normal_weight(t: Tensor, eps: float = LOSS_T_CLAMP) -> Tensor:
    """Logit-normal(0, 1) density used as loss weight; t (B,) float is clamped to [eps, 1 - eps].

    w(t) = 0.398942 / (t (1 - t)) * exp(-0.5 * log(t / (1 - t))^2). Its mean over the 1000
    training times is ~1; it is ~0 near t = 0 and t = 1.
    """
    t = t.clamp(eps, 1 - eps)
    return _INV_SQRT_2PI / t / (1 - t) * torch.exp(-0.5 * torch.log(t / (1 - t)) ** 2)


@dataclass(frozen=True)
class CFMLoss:
    """``loss``: logit-normal-weighted MSE (what is optimised); ``mse``: unweighted MSE
    (the reference's logged ``loss_simple``). Both are 0-dim tensors."""
    loss: Tensor
    mse: Tensor


def cfm_loss(v_pred: Tensor, x0: Tensor, x1: Tensor, t: Tensor) -> CFMLoss:
    """Weighted CFM loss mean_{b,c,t}( w(t_b) * (v_pred - (x1 - x0))^2 ). t (B,) float flow time."""
    if v_pred.shape != x0.shape:
        raise ValueError(f"v_pred {tuple(v_pred.shape)} and x0 {tuple(x0.shape)} differ in shape")
    _check_float_time(t, x0.shape[0])
    err = (target_velocity(x0, x1) - v_pred) ** 2
    w = _bcast(logit_normal_weight(t), err)
    return CFMLoss(loss=(w * err).mean(), mse=err.mean())


def sample_train_times(batch: int, generator: Optional[torch.Generator] = None,
                       device: Optional[torch.device] = None) -> Tensor:
    """Integer training times t_int ~ U{0, ..., 999}, shape (B,) int64 (t = 1 is never drawn)."""
    return torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch,), generator=generator, device=device)
