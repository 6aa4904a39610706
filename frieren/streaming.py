"""Window-by-window generation for streaming, in plain torch (no threads, no clocks).

The streaming engine (``stream/``) decides *which* frames form a window, *which*
noise it starts from (a :class:`frieren.noise.NoiseTape` per session) and *which*
span of the window's audio to emit. This module turns a batch of such jobs into
audio in one batched pass per stage: CAVP -> condition -> one ODE solve (with CFG)
-> VAE decode -> vocoder on only the emitted span plus the vocoder's own context.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from frieren.stack import FrierenStack


@dataclass(frozen=True)
class WindowJob:
    """One window to generate.

    frames: (F, 3, S, S) float in [0, 1], sampled on the audio clock.
    noise: (C, L) initial noise for this window's latent frames.
    emit_start, emit_length: the span of the window's audio to return, in samples
    from the window's first sample (0 <= emit_start, emit_start + emit_length <= window).
    """
    frames: torch.Tensor
    noise: torch.Tensor
    emit_start: int
    emit_length: int


@dataclass(frozen=True)
class BatchAudio:
    """audio[i]: (emit_length_i,) float32 CPU tensor; stage_s: seconds per stage for the batch."""
    audio: List[torch.Tensor]
    stage_s: Dict[str, float] = field(default_factory=dict)


class StreamingGenerator:
    """Stateless batched window generator over one model stack (owned by one thread)."""

    def __init__(self, stack: FrierenStack, device: str = "cpu", *, steps: Optional[int] = None,
                 cfg_scale: Optional[float] = None, dtype: Optional[str] = None,
                 vocoder_context: Optional[int] = None) -> None:
        self.stack = stack.eval().to(device)
        self.device = torch.device(device)
        self.geometry = stack.preset.geometry
        self.steps = steps
        self.cfg_scale = cfg_scale
        # Mel frames of context each side of the emitted span (None: the vocoder's exact reach).
        self.vocoder_context = vocoder_context
        self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype or "", None)
        if dtype is not None and self._dtype is None:
            raise ValueError(f"unknown dtype {dtype!r}; choose bf16 or fp16")

    @property
    def sample_rate(self) -> int:
        return self.geometry.sample_rate

    @property
    def image_size(self) -> int:
        return self.stack.preset.cavp.image_size

    @property
    def noise_channels(self) -> int:
        return self.stack.preset.estimator.in_channels

    def _autocast(self):
        if self._dtype is None or self.device.type != "cuda":
            return nullcontext()
        return torch.autocast("cuda", dtype=self._dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _check(self, job: WindowJob) -> None:
        g = self.geometry
        S = self.image_size
        want = (g.frames_per_window, 3, S, S)
        if tuple(job.frames.shape) != want:
            raise ValueError(f"window frames must be {want}, got {tuple(job.frames.shape)}")
        if tuple(job.noise.shape) != (self.noise_channels, g.latent_frames):
            raise ValueError(f"noise must be {(self.noise_channels, g.latent_frames)}, got {tuple(job.noise.shape)}")
        if job.emit_start < 0 or job.emit_length <= 0 or job.emit_start + job.emit_length > g.window_samples:
            raise ValueError(f"emit span [{job.emit_start}, {job.emit_start + job.emit_length}) outside the "
                             f"window of {g.window_samples} samples")

    @torch.inference_mode()
    def run(self, jobs: Sequence[WindowJob]) -> BatchAudio:
        """Generate every job in one batch; returns the emitted spans in job order."""
        if not jobs:
            return BatchAudio(audio=[])
        for job in jobs:
            self._check(job)
        stages: Dict[str, float] = {}
        hop = self.geometry.hop_length
        with self._autocast():
            t0 = time.perf_counter()
            frames = torch.stack([j.frames for j in jobs]).to(self.device, non_blocking=True)
            noise = torch.stack([j.noise for j in jobs]).to(self.device, non_blocking=True)
            feats = self.stack.features(frames)
            self._sync()
            t1 = time.perf_counter()
            latent = self.stack.sample_latent(feats, noise, steps=self.steps, cfg_scale=self.cfg_scale)
            self._sync()
            t2 = time.perf_counter()
            mel = self.stack.decode(latent).float()
            self._sync()
            t3 = time.perf_counter()
            # Vocode each distinct mel span once for all jobs that share it.
            spans: Dict[Tuple[int, int], List[int]] = {}
            for i, job in enumerate(jobs):
                m0 = job.emit_start // hop
                m1 = math.ceil((job.emit_start + job.emit_length) / hop)
                spans.setdefault((m0, m1), []).append(i)
            out: List[Optional[torch.Tensor]] = [None] * len(jobs)
            for (m0, m1), idx in spans.items():
                wav = self.stack.vocode_span(mel[idx], m0, m1, self.vocoder_context).float().cpu()
                for row, i in enumerate(idx):
                    off = jobs[i].emit_start - m0 * hop
                    out[i] = wav[row, off:off + jobs[i].emit_length].contiguous()
            t4 = time.perf_counter()
        stages.update(cavp=t1 - t0, flow=t2 - t1, vae_decode=t3 - t2, vocoder=t4 - t3, total=t4 - t0)
        return BatchAudio(audio=out, stage_s=stages)  # type: ignore[arg-type]
