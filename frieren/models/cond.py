"""Condition encoder: per-frame CAVP features -> DiT context (FRIEREN_SPEC §3.3).

The reference ``Video_Feat_Encoder_NoPosembed`` is a single ``nn.Sequential(nn.Linear)``
with no positional embedding; its state_dict keys are ``embedder.0.weight`` and
``embedder.0.bias`` (``cond_stage_model.`` prefix inside the Lightning checkpoint).
The CFG null condition is this encoder applied to all-zero features, i.e. the bias.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from frieren.config import CondConfig

__all__ = ["CondEncoder"]


class CondEncoder(nn.Module):
    """Linear projection of visual features: (B, F, origin_dim) -> (B, F, embed_dim).

    F is the number of visual frames; no positional information is added (the DiT's
    length regulator and position table handle time).
    """

    def __init__(self, cfg: CondConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedder = nn.Sequential(nn.Linear(cfg.origin_dim, cfg.embed_dim))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, F, origin_dim) -> context (B, F, embed_dim)."""
        assert feats.dim() == 3 and feats.shape[-1] == self.cfg.origin_dim, (
            f"CondEncoder expects feats (B, F, {self.cfg.origin_dim}), got shape {tuple(feats.shape)}")
        return self.embedder(feats)

    def _param(self) -> torch.Tensor:
        return self.embedder[0].weight

    def null_features(self, frames: int, batch: int = 1, device: Optional[torch.device] = None,
                      dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The CFG null visual features: zeros (batch, frames, origin_dim).

        Device and dtype default to those of the encoder's weights.
        """
        assert frames > 0 and batch > 0, f"null_features needs frames>0 and batch>0, got {frames}, {batch}"
        p = self._param()
        return torch.zeros(batch, frames, self.cfg.origin_dim,
                           device=p.device if device is None else device,
                           dtype=p.dtype if dtype is None else dtype)

    def null_condition(self, frames: int, batch: int = 1) -> torch.Tensor:
        """Encoded null features (batch, frames, embed_dim) (equals the bias, broadcast)."""
        return self(self.null_features(frames, batch))
