"""Label-preserving augmentation of video windows for the CAVP stage.

The tiny recipe's CAVP sees the same 300 clips thousands of times and memorises them
(its own objective: training loss 0.86 against 2.38 on held-out clips,
docs/eval/experiments/cavp_channels_last/). A mirrored or slightly shifted picture sounds the
same (mono audio; the synthetic world's physics is mirror-symmetric), so each window can be
shown in a new form at no cost in audio targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FrameAugment:
    """Per window, one random horizontal mirror (probability ``flip``) and one random
    translation of up to ``shift`` pixels along each axis, the same for all frames of the
    window (motion stays intact); pixels shifted in repeat the edge."""
    flip: float = 0.5
    shift: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {self.flip}")
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0 pixels, got {self.shift}")

    @property
    def active(self) -> bool:
        return self.flip > 0 or self.shift > 0

    def __call__(self, frames: Tensor, gen: torch.Generator) -> Tensor:
        """frames (B, F, C, H, W), any dtype -> same shape and dtype, a new tensor.

        Draws 3 * B numbers from ``gen`` (flip, dy, dx per window), so the result is fixed by
        the generator's state."""
        if frames.dim() != 5:
            raise ValueError(f"expected frames (B, F, C, H, W), got shape {tuple(frames.shape)}")
        b, _, _, h, w = frames.shape
        if self.shift >= min(h, w):
            raise ValueError(f"shift {self.shift} px is not smaller than the {h} x {w} frame")
        flips = torch.rand(b, generator=gen) < self.flip
        offsets = torch.randint(-self.shift, self.shift + 1, (b, 2), generator=gen)
        rows0 = torch.arange(h)
        cols0 = torch.arange(w)
        out = torch.empty_like(frames)
        for i in range(b):
            dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
            rows = (rows0 - dy).clamp(0, h - 1)
            cols = (cols0 - dx).clamp(0, w - 1)
            if bool(flips[i]):
                cols = cols.flip(0)
            out[i] = frames[i][..., rows[:, None], cols[None, :]]
        return out
