"""A small mel CNN: the audio branch that CAVP contrastive training needs.

Diff-Foley trains CAVP with a Cnn14 spectrogram encoder beside the video encoder; Frieren
keeps only the video branch. For our small presets we train both from scratch and ship
only the video branch (this encoder is a training-time helper, never in a bundle).

mel (B, n_mels, F * mel_per_frame) log10 -> per-visual-frame features (B, F, embed_dim),
L2-normalised. Strided 1-D convolutions bring the mel rate down to the visual frame rate
(``mel_per_frame`` must be a power of two), then a k=3 context conv and a linear head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MelAudioEncoder"]

# log10 mel values lie in [log10(1e-5), ~1]; this maps them to roughly [-1, 1].
_MEL_SHIFT = 2.0
_MEL_SCALE = 3.0


class MelAudioEncoder(nn.Module):
    def __init__(self, n_mels: int = 80, embed_dim: int = 128, mel_per_frame: int = 8,
                 width: int = 96) -> None:
        super().__init__()
        if mel_per_frame < 1 or mel_per_frame & (mel_per_frame - 1):
            raise ValueError(f"mel_per_frame must be a power of two, got {mel_per_frame}")
        self.n_mels = n_mels
        self.mel_per_frame = mel_per_frame
        layers = [nn.Conv1d(n_mels, width, 3, padding=1), nn.GroupNorm(8, width), nn.GELU()]
        for _ in range(mel_per_frame.bit_length() - 1):
            layers += [nn.Conv1d(width, width, 4, stride=2, padding=1), nn.GroupNorm(8, width), nn.GELU()]
        layers += [nn.Conv1d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(width, embed_dim)

    def forward(self, mel: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """mel (B, n_mels, T) with T divisible by mel_per_frame -> (B, T // mel_per_frame, D)."""
        assert mel.dim() == 3 and mel.shape[1] == self.n_mels and mel.shape[2] % self.mel_per_frame == 0, (
            f"MelAudioEncoder expects mel (B, {self.n_mels}, k*{self.mel_per_frame}), got {tuple(mel.shape)}")
        h = self.net((mel + _MEL_SHIFT) / _MEL_SCALE)
        out = self.head(h.transpose(1, 2))
        return F.normalize(out, dim=-1) if normalize else out
