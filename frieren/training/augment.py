"""Label-preserving augmentation of video windows for the CAVP stage.

The tiny recipe's CAVP sees the same few hundred clips thousands of times and memorises them
(its own objective: training loss 0.86 against 2.38 on held-out clips,
docs/eval/experiments/cavp_channels_last/). A mirrored, slightly shifted, slightly zoomed, or
differently lit picture sounds the same (mono audio; the synthetic world's physics is
mirror-symmetric), so each window can be shown in a new form at no cost in audio targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FrameAugment:
    """Per window, the same for all its frames (motion stays intact):

    * geometry: a random horizontal mirror (probability ``flip``), a translation of up to
      ``shift`` pixels along each axis, and a zoom about the centre by a factor drawn
      log-uniformly from ``[1 / (1 + zoom), 1 + zoom]`` (nearest pixel; pixels from outside
      the frame repeat the edge);
    * light: a brightness offset in ``[-brightness, brightness]`` (of the full 0..1 range), a
      contrast factor in ``[1 - contrast, 1 + contrast]`` about the window's mean, and one gain
      per colour channel in ``[1 - color, 1 + color]`` (small, so the materials' colours stay
      apart);
    * sensor: independent Gaussian pixel noise of standard deviation ``noise`` (per pixel, per
      frame).

    The geometry parts draw ``3 * B`` numbers from the generator whenever any of them is on
    (``B`` more for the zoom); each light or sensor part draws only when it is on, so a
    configuration without them gives exactly the frames of one that never knew them.
    """
    flip: float = 0.5
    shift: int = 0
    zoom: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    color: float = 0.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {self.flip}")
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0 pixels, got {self.shift}")
        if not 0.0 <= self.zoom < 1.0:
            raise ValueError(f"zoom must be in [0, 1) (a factor up to 1 + zoom), got {self.zoom}")
        for name in ("brightness", "contrast", "color"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if self.noise < 0:
            raise ValueError(f"noise must be a standard deviation >= 0, got {self.noise}")

    @property
    def geometric(self) -> bool:
        return self.flip > 0 or self.shift > 0 or self.zoom > 0

    @property
    def photometric(self) -> bool:
        return self.brightness > 0 or self.contrast > 0 or self.color > 0 or self.noise > 0

    @property
    def active(self) -> bool:
        return self.geometric or self.photometric

    def __call__(self, frames: Tensor, gen: torch.Generator) -> Tensor:
        """frames (B, F, C, H, W), uint8 or float in [0, 1] (C = K stacked RGB snapshots,
        colour channel = index mod 3) -> a new tensor of the same shape: the same dtype when
        only the geometry parts are on, float32 in [0, 1] when a light or sensor part is. The
        result is fixed by the generator's state. With only the geometry parts on, it is a view
        whose memory holds the channels innermost, (B, F, H, W, C); ``.contiguous()`` gives the
        usual layout with the same values."""
        if frames.dim() != 5:
            raise ValueError(f"expected frames (B, F, C, H, W), got shape {tuple(frames.shape)}")
        _, _, c, h, w = frames.shape
        if self.shift >= min(h, w):
            raise ValueError(f"shift {self.shift} px is not smaller than the {h} x {w} frame")
        if self.color > 0 and c % 3:
            raise ValueError(f"colour gain needs stacked RGB channels (a multiple of 3), got {c}")
        if not self.geometric:
            out = frames.clone()
        else:
            out = self._geometry(frames, gen)
            if self.photometric:
                out = out.contiguous()  # the light parts' window means, summed in the usual order
        if self.photometric:
            out = self._light(out, gen)
        return out

    def _geometry(self, frames: Tensor, gen: torch.Generator) -> Tensor:
        b, _, _, h, w = frames.shape
        flips = torch.rand(b, generator=gen) < self.flip
        offsets = torch.randint(-self.shift, self.shift + 1, (b, 2), generator=gen)
        if self.zoom > 0:
            span = torch.log1p(torch.tensor(self.zoom))
            scales = torch.exp((torch.rand(b, generator=gen) * 2 - 1) * span)
        else:
            scales = torch.ones(b)
        # Gathered with channels innermost, (B, F, H, W, C) in memory: two index_selects per window
        # move whole pixels (about 4x faster on the CPU than one advanced-indexing gather of the
        # (C, H, W) planes), and it is the layout a channels-last video branch reads, so its
        # conversion to float is a plain copy (objectives.unit_frames).
        f, c = frames.shape[1:3]
        out = torch.empty((b, f, h, w, c), dtype=frames.dtype, device=frames.device)
        for i in range(b):
            rows = _source_index(h, float(scales[i]), int(offsets[i, 0])).to(frames.device)
            cols = _source_index(w, float(scales[i]), int(offsets[i, 1])).to(frames.device)
            if bool(flips[i]):
                cols = cols.flip(0)
            torch.index_select(frames[i].permute(0, 2, 3, 1).index_select(1, rows), 2, cols, out=out[i])
        return out.permute(0, 1, 4, 2, 3)

    def _light(self, frames: Tensor, gen: torch.Generator) -> Tensor:
        """One affine map per window and channel (contrast about the window's mean, brightness,
        colour gain, fused into ``a * x + o``), then noise; float32 out (the objective takes it
        as it is: converting back to uint8 would cost as much again on the CPU)."""
        b, _, c = frames.shape[:3]
        x = frames.float().mul_(1.0 / 255.0) if frames.dtype == torch.uint8 else frames.float()
        a = torch.ones(b, 1)
        o = torch.zeros(b, 1)
        if self.contrast > 0:
            factor = 1 + (torch.rand(b, 1, generator=gen) * 2 - 1) * self.contrast
            mean = x.mean(dim=(1, 2, 3, 4)).view(b, 1)
            a, o = factor, (1 - factor) * mean
        if self.brightness > 0:
            o = o + (torch.rand(b, 1, generator=gen) * 2 - 1) * self.brightness
        if self.color > 0:
            gains = (1 + (torch.rand(b, 3, generator=gen) * 2 - 1) * self.color).repeat(1, c // 3)
            a, o = a * gains, o * gains
        x.mul_(a.expand(b, c).reshape(b, 1, c, 1, 1)).add_(o.expand(b, c).reshape(b, 1, c, 1, 1))
        if self.noise > 0:
            x.add_(torch.randn(x.shape, generator=gen).mul_(self.noise))
        return x.clamp_(0.0, 1.0)


def _source_index(n: int, scale: float, offset: int) -> Tensor:
    """(n,) int64: for each output pixel along one axis, the input pixel it shows after a zoom
    by ``scale`` about the centre and a shift by ``offset`` pixels (clamped to the edge)."""
    centre = (n - 1) / 2.0
    pos = torch.arange(n, dtype=torch.float64)
    if scale != 1.0:
        pos = (pos - centre) / scale + centre
    return (torch.round(pos) - offset).long().clamp(0, n - 1)
