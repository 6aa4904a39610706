"""Window-by-window generation for streaming, in plain torch (no threads, no clocks).

The streaming engine (``stream/``) decides *which* frames form a window, *which*
noise it starts from (a :class:`frieren.noise.NoiseTape` per session) and *which*
span of the window's audio to emit. This module turns a batch of such jobs into
audio in one batched pass per stage: CAVP -> condition -> one ODE solve (with CFG)
-> VAE decode -> vocoder on only the emitted span plus the vocoder's own context.

``compile=`` (opt-in) runs the per-window hot spots through ``torch.compile``
(:mod:`frieren.compile`); batches are then padded to a power of two so that each batch
size compiles (and, with CUDA graphs, records) once.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from frieren.compile import CompiledStages, batch_bucket, check_compile_mode
from frieren.stack import FrierenStack


@dataclass(frozen=True)
class WindowJob:
    """One window to generate.

    frames: (F, 3K, S, S) float in [0, 1], sampled on the audio clock (K = geometry.subframes
            RGB snapshots per frame stacked on the channel axis, oldest first; usually 1).
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
    """Stateless batched window generator over one model stack (owned by one thread).

    dtype: None (float32), "bf16" or "fp16" autocast on CUDA.
    compile: None (eager), "default", "reduce-overhead" (CUDA graphs on CUDA) or
    "max-autotune": torch.compile of CAVP, the estimator, the VAE decoder and a BigVGAN
    vocoder (weights shared with ``stack``; a part that fails to compile runs eagerly, with
    one warning). ``compile_backend`` is torch.compile's backend (None: inductor; tests use
    "eager" / "aot_eager").
    """

    def __init__(self, stack: FrierenStack, device: str = "cpu", *, steps: Optional[int] = None,
                 cfg_scale: Optional[float] = None, dtype: Optional[str] = None,
                 vocoder_context: Optional[int] = None, compile: Optional[str] = None,
                 compile_backend: Optional[Any] = None) -> None:
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
        self.compile_mode = check_compile_mode(compile)
        # The four stage methods run() calls: the stack's own, or their compiled twins.
        self.stages = self.stack if compile is None else CompiledStages(
            self.stack, compile, backend=compile_backend, device=self.device)

    @property
    def sample_rate(self) -> int:
        return self.geometry.sample_rate

    @property
    def image_size(self) -> int:
        return self.stack.preset.cavp.image_size

    @property
    def noise_channels(self) -> int:
        return self.stack.preset.estimator.in_channels

    def padded_batch(self, n: int) -> int:
        """Rows actually computed for ``n`` windows: ``n`` eager, the next power of two compiled."""
        return n if self.compile_mode is None else batch_bucket(n)

    def _for_compiled(self, x: torch.Tensor) -> torch.Tensor:
        """Compiled: pad the batch dim (repeating the last row; padded rows are discarded) to
        ``padded_batch`` and make ``x`` contiguous, so that compiled code, specialised on sizes
        and strides, is reused (frames from a camera arrive channels-last)."""
        if self.compile_mode is None:
            return x
        extra = self.padded_batch(x.shape[0]) - x.shape[0]
        x = x if extra == 0 else torch.cat([x, x[-1:].expand(extra, *x.shape[1:])])
        return x.contiguous()

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
        want = (g.frames_per_window, 3 * g.subframes, S, S)
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
        n = len(jobs)
        if self.compile_mode is not None:
            self.stages.begin_step()
        with self._autocast():
            t0 = time.perf_counter()
            frames = torch.stack([j.frames for j in jobs]).to(self.device, non_blocking=True)
            noise = torch.stack([j.noise for j in jobs]).to(self.device, non_blocking=True)
            frames, noise = self._for_compiled(frames), self._for_compiled(noise)
            feats = self.stages.features(frames)
            self._sync()
            t1 = time.perf_counter()
            latent = self.stages.sample_latent(feats, noise, steps=self.steps, cfg_scale=self.cfg_scale)
            self._sync()
            t2 = time.perf_counter()
            mel = self.stages.decode(latent).float()[:n]
            self._sync()
            t3 = time.perf_counter()
            # Vocode each distinct mel span once for all jobs that share it.
            spans: Dict[Tuple[int, int], List[int]] = {}
            for i, job in enumerate(jobs):
                m0 = job.emit_start // hop
                m1 = math.ceil((job.emit_start + job.emit_length) / hop)
                spans.setdefault((m0, m1), []).append(i)
            out: List[Optional[torch.Tensor]] = [None] * n
            for (m0, m1), idx in spans.items():
                rows = idx + [idx[-1]] * (self.padded_batch(len(idx)) - len(idx))
                wav = self.stages.vocode_span(mel[rows], m0, m1, self.vocoder_context).float().cpu()
                for row, i in enumerate(idx):
                    off = jobs[i].emit_start - m0 * hop
                    out[i] = wav[row, off:off + jobs[i].emit_length].contiguous()
            t4 = time.perf_counter()
        stages.update(cavp=t1 - t0, flow=t2 - t1, vae_decode=t3 - t2, vocoder=t4 - t3, total=t4 - t0)
        return BatchAudio(audio=out, stage_s=stages)  # type: ignore[arg-type]
