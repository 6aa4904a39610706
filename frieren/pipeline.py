"""Offline video -> audio: whole files, any length, joined without seams.

Frames are sampled on the audio clock (one visual frame per ``samples_per_frame``
samples). A video shorter than one model window is padded at the end by repeating
its last frame (a still scene continuing; the audio is cropped back afterwards).
Longer videos are cut into overlapping windows whose initial noise comes from one
time-aligned noise tape, and the windows' log-mels are joined with raised-cosine
crossfades before a single vocoder pass, so there are no hard seams and nothing
is truncated (unlike the reference script, which keeps only the first 8.192 s).
"""
from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from frieren.models.cavp_preprocess import preprocess_frame
from frieren.noise import NoiseTape
from frieren.stack import FrierenStack
from frieren.video_io import SampledVideo, sample_video, stack_snapshots

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateOptions:
    steps: Optional[int] = None          # None: the preset's default
    cfg_scale: Optional[float] = None    # None: the preset's default
    seed: int = 0
    overlap_frames: Optional[int] = None  # None: a quarter of the window
    batch_windows: int = 4
    dtype: Optional[str] = None           # 'bf16' | 'fp16' on CUDA; None = float32
    progress: bool = True


@dataclass(frozen=True)
class GenerationResult:
    """audio: (num_samples,) float32 in [-1, 1] at ``sample_rate``."""
    audio: np.ndarray
    sample_rate: int
    duration_s: float
    num_windows: int


def plan_windows(num_frames: int, window: int, overlap: int) -> List[int]:
    """Start frames of overlapping windows covering [0, num_frames); the last window ends
    exactly at num_frames when more than one window is needed."""
    if num_frames <= window:
        return [0]
    stride = window - overlap
    if stride <= 0:
        raise ValueError(f"overlap ({overlap}) must be smaller than the window ({window})")
    starts = list(range(0, num_frames - window, stride))
    starts.append(num_frames - window)
    return starts


def crossfade_weights(length: int, fade_in: int, fade_out: int) -> torch.Tensor:
    """Per-frame weights (length,) with raised-cosine ramps; overlapping ramps sum to 1."""
    w = torch.ones(length)
    if fade_in > 0:
        w[:fade_in] = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(fade_in) + 0.5) / fade_in)
    if fade_out > 0:
        w[length - fade_out:] = 0.5 + 0.5 * torch.cos(math.pi * (torch.arange(fade_out) + 0.5) / fade_out)
    return w


class OfflineGenerator:
    """Generates audio for whole videos (or frame sequences) with one model stack."""

    def __init__(self, stack: FrierenStack, device: str = "cpu") -> None:
        self.stack = stack.eval().to(device)
        self.device = torch.device(device)
        self.preset = stack.preset
        self.geometry = stack.preset.geometry

    def _autocast(self, dtype: Optional[str]):
        if dtype is None or self.device.type != "cuda":
            if dtype is not None:
                log.warning("--dtype %s ignored on %s; running float32", dtype, self.device)
            return nullcontext()
        table = {"bf16": torch.bfloat16, "fp16": torch.float16}
        if dtype not in table:
            raise ValueError(f"unknown dtype {dtype!r}; choose bf16 or fp16")
        return torch.autocast("cuda", dtype=table[dtype])

    def frame_times(self, duration_s: float) -> np.ndarray:
        """Audio-clock sample instants (seconds) of the visual frames covering ``duration_s``
        (N,); with K snapshots per frame (``geometry.subframes``) those of every snapshot,
        frame-major, (N * K,)."""
        g = self.geometry
        total = int(round(duration_s * g.sample_rate))
        n = max(1, math.ceil(total / g.samples_per_frame))
        return g.snapshot_instants_s(n).reshape(-1)

    def read_video(self, path: Path) -> SampledVideo:
        """Sample the video on the audio clock and preprocess frames for CAVP; ``frames`` is
        (N, 3K, S, S) float (K snapshots of each visual frame stacked on the channel axis)."""
        from frieren.video_io import video_duration

        size = self.preset.cavp.image_size
        duration = video_duration(path)
        video = sample_video(path, self.frame_times(duration),
                             transform=lambda rgb: preprocess_frame(rgb, size).numpy())
        return replace(video, frames=stack_snapshots(video.frames, self.geometry.subframes))

    @torch.no_grad()
    def generate_video(self, path: Path, options: GenerateOptions = GenerateOptions()) -> GenerationResult:
        video = self.read_video(Path(path))
        frames = torch.from_numpy(video.frames)  # (N, 3K, S, S) float in [0, 1]
        num_samples = int(round(video.duration_s * self.geometry.sample_rate))
        return self.generate_frames(frames, num_samples, options)

    @torch.no_grad()
    def generate_frames(self, frames: torch.Tensor, num_samples: int,
                        options: GenerateOptions = GenerateOptions(),
                        condition_edit: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> GenerationResult:
        """frames (N, 3K, S, S) in [0, 1], sampled on the audio clock -> audio of num_samples.

        ``condition_edit`` (diagnostics): a function of the clip's condition (N', condition_dim), N'
        >= the frames needed (the last frame repeated), returning the condition to generate from
        instead (same shape; ``frieren eval --presence-truth`` puts the world's onsets there)."""
        from tqdm import tqdm

        g = self.geometry
        F = g.frames_per_window
        needed = max(1, math.ceil(num_samples / g.samples_per_frame))
        if frames.shape[0] < needed:  # pad at the end by repeating the last frame
            frames = torch.cat([frames, frames[-1:].expand(needed - frames.shape[0], -1, -1, -1)])
        frames = frames[:needed]
        padded = max(needed, F)
        if padded > needed:
            frames = torch.cat([frames, frames[-1:].expand(padded - needed, -1, -1, -1)])
        overlap = options.overlap_frames if options.overlap_frames is not None else F // 4
        starts = plan_windows(padded, F, overlap)
        tape = NoiseTape(options.seed, self.preset.estimator.in_channels)

        with self._autocast(options.dtype):
            feats = self.stack.cavp.extract_condition(frames.to(self.device),
                                                      chunk_frames=self.preset.cavp.chunk_frames)
            if condition_edit is not None:
                edited = condition_edit(feats)
                if edited.shape != feats.shape:
                    raise ValueError(f"condition_edit returned {tuple(edited.shape)}, not the condition's "
                                     f"{tuple(feats.shape)}")
                feats = edited.to(feats)
            mel_per_frame = g.latents_per_frame * g.mel_per_latent
            total_mel = padded * mel_per_frame
            mel_sum = torch.zeros(self.preset.mel.n_mels, total_mel, device=self.device)
            weight_sum = torch.zeros(total_mel, device=self.device)
            bar = tqdm(total=len(starts), desc="windows", unit="win", disable=not options.progress)
            for i in range(0, len(starts), options.batch_windows):
                batch_starts = starts[i:i + options.batch_windows]
                f = torch.stack([feats[s:s + F] for s in batch_starts])
                x0 = tape.batch([s * g.latents_per_frame for s in batch_starts], g.latent_frames).to(self.device)
                latent = self.stack.sample_latent(f, x0, steps=options.steps, cfg_scale=options.cfg_scale)
                mel = self.stack.decode(latent).float()
                for s, m in zip(batch_starts, mel):
                    a = s * mel_per_frame
                    fade_in = overlap * mel_per_frame if s > 0 else 0
                    fade_out = overlap * mel_per_frame if s + F < padded else 0
                    w = crossfade_weights(m.shape[-1], fade_in, fade_out).to(self.device)
                    mel_sum[:, a:a + m.shape[-1]] += m * w
                    weight_sum[a:a + m.shape[-1]] += w
                bar.update(len(batch_starts))
            bar.close()
            mel = (mel_sum / weight_sum.clamp_min(1e-6)).unsqueeze(0)
            audio = self._vocode_long(mel)
        audio = audio[0, :num_samples].float().clamp(-1, 1).cpu().numpy()
        return GenerationResult(audio=audio, sample_rate=g.sample_rate,
                                duration_s=num_samples / g.sample_rate, num_windows=len(starts))

    def _vocode_long(self, mel: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Vocode a long mel (1, n_mels, T) in chunks with context (fully convolutional vocoder)."""
        T = mel.shape[-1]
        if T <= chunk:
            return self.stack.vocode(mel)
        pieces = [self.stack.vocode_span(mel, a, min(a + chunk, T)) for a in range(0, T, chunk)]
        return torch.cat(pieces, dim=-1)


def find_videos(folder: Path, extensions: Sequence[str] = (".mp4", ".webm", ".mov", ".mkv", ".avi")) -> List[Path]:
    """Video files directly inside ``folder`` (sorted), for the folder mode."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in extensions and p.is_file())
