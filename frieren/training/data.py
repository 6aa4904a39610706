"""Training data: clip sources, the resumable clip / feature / latent caches, batch builders.

Pipeline (every step caches to disk and resumes; a rerun skips finished items):

1. **Clip cache** (:func:`build_clip_cache`): each clip becomes ``clips/NNNNN.pt`` holding
   frames sampled *on the audio clock* (DESIGN §3.1; frame i shows the scene at
   ``i * frame_period``) already resized for CAVP and stored as uint8 (N, 3K, S, S) (K snapshots
   per frame, ``WindowGeometry.subframes``; usually 1), and the
   log10 mel of the matching audio (n_mels, N * mel_per_frame). Only whole visual frames
   are kept, so frame i covers mel frames [i*m, (i+1)*m) exactly.
   Sources: synthetic clips rendered in memory (:func:`synthetic_source`), a synthetic
   dataset folder written by :func:`frieren.synth.write_dataset` or any folder of videos
   with audio (:func:`folder_source`, optional VGGSound-style CSV via :func:`csv_source`).
2. **Windows** (:func:`window_index`): (clip, start frame) pairs of ``frames_per_window``
   frames with a stride; every stage samples these crops.
3. **Feature / latent cache** (:func:`build_latent_cache`): once the CAVP and VAE are
   trained, per clip the CAVP features of all frames (extracted like the offline pipeline,
   40-frame chunks) and, per window, the VAE posterior mean/std of the window's mel, so the
   flow stages never run the VAE or CAVP: a latent is drawn as ``scale * (mean + std * eps)``
   each step (a stochastic posterior sample, as the reference, FRIEREN_SPEC §2.5). The cache
   records a fingerprint of the CAVP/VAE weights and is rebuilt when they change.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from frieren.config import Preset, WindowGeometry
from frieren.training.atomic_io import atomic_torch_save, write_json_atomic
from frieren.video_io import stack_snapshots

log = logging.getLogger(__name__)

__all__ = [
    "ClipItem", "ClipData", "synthetic_source", "folder_source", "csv_source", "build_clip_cache",
    "load_clip_cache", "frame_materials", "window_index", "WindowData", "LatentCache", "build_latent_cache",
    "audio_clock_indices", "write_json_atomic",
]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi")


@dataclass(frozen=True)
class ClipItem:
    """One clip to cache: ``load()`` -> (frames uint8 (N, 3K, S, S) on the audio clock,
    mono audio float32 (num_samples,) at the preset's rate), or a third element: per visual
    frame the struck material's class index, int64 (N,), -1 where nothing strikes (synthetic
    clips only; real videos have no such labels). The sources here build ``load`` from
    module-level functions so that items can be sent to worker processes."""
    key: str
    load: Callable[[], Tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class ClipData:
    """A cached clip. frames uint8 (N, 3K, S, S); mel float32 (n_mels, N * mel_per_frame)."""
    key: str
    frames: Tensor
    mel: Tensor
    frame_material: Optional[Tensor] = None     # int64 (N,), -1 = no impact; synthetic only

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def audio_clock_indices(num_frames: int, frame_period_s: float, source_fps: float,
                        num_source_frames: int) -> np.ndarray:
    """Index of the source frame shown at ``i * frame_period_s`` for i < num_frames
    (the latest source frame whose time i/fps is not after that instant)."""
    t = np.arange(num_frames, dtype=np.float64) * frame_period_s
    return _latest_frame_at(t, source_fps, num_source_frames)


def _latest_frame_at(times_s: np.ndarray, source_fps: float, num_source_frames: int) -> np.ndarray:
    idx = np.floor(np.asarray(times_s, dtype=np.float64) * source_fps + 1e-6).astype(np.int64)
    return np.clip(idx, 0, num_source_frames - 1)


def snapshot_indices(geometry: WindowGeometry, num_frames: int, source_fps: float,
                     num_source_frames: int) -> np.ndarray:
    """Source frame of every snapshot of visual frames ``0 .. num_frames - 1``: int64
    (num_frames, geometry.subframes), oldest first (``WindowGeometry.snapshot_instants_s``);
    with one snapshot per frame the same as :func:`audio_clock_indices`."""
    return _latest_frame_at(geometry.snapshot_instants_s(num_frames), source_fps, num_source_frames)


def synthetic_clip_frames(clip, preset: Preset, num_frames: int) -> np.ndarray:
    """A rendered synthetic clip's first ``num_frames`` visual frames on the audio clock, each
    the stack of its ``geometry.subframes`` snapshots, resized for CAVP: uint8 (N, 3K, S, S)."""
    g = preset.geometry
    idx = snapshot_indices(g, num_frames, clip.fps, clip.frames.shape[0]).reshape(-1)
    return stack_snapshots(np.stack([_preprocess_uint8(clip.frames[i], preset.cavp.image_size) for i in idx]),
                           g.subframes)


def _preprocess_uint8(rgb: np.ndarray, size: int) -> np.ndarray:
    """RGB (H, W, 3) uint8 -> CAVP input (3, S, S) uint8 (exact path; lossless as uint8)."""
    from frieren.models.cavp_preprocess import preprocess_frame

    x = preprocess_frame(rgb, size).numpy()
    return np.rint(x * 255.0).astype(np.uint8)


def _fit_length(frames: np.ndarray, audio: np.ndarray, preset: Preset, min_frames: int,
                labels: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Keep whole visual frames only; pad clips shorter than ``min_frames`` (last frame
    repeated, audio zero-padded, labels -1) so that every clip holds at least one window.
    Returns (frames, audio, labels or None)."""
    g = preset.geometry
    n = min(frames.shape[0], audio.shape[0] // g.samples_per_frame)
    if n <= 0:
        raise ValueError("clip has no complete visual frame of audio")
    frames, audio = frames[:n], audio[:n * g.samples_per_frame]
    if labels is not None:
        labels = np.concatenate([labels[:n], np.full(max(0, n - len(labels)), -1, np.int64)])
    if n < min_frames:
        frames = np.concatenate([frames, np.repeat(frames[-1:], min_frames - n, 0)])
        audio = np.concatenate([audio, np.zeros((min_frames - n) * g.samples_per_frame, np.float32)])
        if labels is not None:
            labels = np.concatenate([labels, np.full(min_frames - n, -1, np.int64)])
    return frames, audio, labels


def frame_materials(events, materials: Sequence[str], num_frames: int, frame_period_s: float) -> np.ndarray:
    """Per visual frame (covering [i * period, (i + 1) * period)) the index in ``materials``
    of the strongest impact's material, -1 without an impact. -> int64 (num_frames,)."""
    labels = np.full(num_frames, -1, np.int64)
    best = np.zeros(num_frames)
    for e in events:
        i = int(math.floor(e.time_s / frame_period_s + 1e-9))
        if e.kind == "impact" and e.material in materials and 0 <= i < num_frames and e.strength > best[i]:
            labels[i], best[i] = materials.index(e.material), e.strength
    return labels


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------

def synthetic_source(num_clips: int, seed0: int, preset: Preset, scene=None) -> List[ClipItem]:
    """Synthetic clips rendered in memory: seeds ``seed0 .. seed0 + num_clips - 1``."""
    from frieren.synth import SceneConfig

    scene = scene or SceneConfig(sample_rate=preset.geometry.sample_rate)
    if scene.sample_rate != preset.geometry.sample_rate:
        raise ValueError(f"scene sample rate {scene.sample_rate} != preset {preset.geometry.sample_rate}")
    return [ClipItem(f"synth_{seed0 + i:06d}", functools.partial(_render_synthetic, seed0 + i, scene, preset))
            for i in range(num_clips)]


def _render_synthetic(seed: int, scene, preset: Preset) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic clip as (frames uint8 (N, 3K, S, S), audio float32, material per frame)."""
    from frieren.synth import render_clip

    g = preset.geometry
    clip = render_clip(seed, scene)
    n = clip.audio.shape[0] // g.samples_per_frame
    frames = synthetic_clip_frames(clip, preset, n)
    labels = frame_materials(clip.events, list(scene.materials), n, g.frame_period_s)
    return frames, clip.audio.astype(np.float32), labels


def _load_video(video: Path, preset: Preset, audio_path: Optional[Path] = None) -> Tuple[np.ndarray, np.ndarray]:
    """A video file (and optional separate audio file) as (frames uint8 (N, 3K, S, S) on the
    audio clock, K = ``geometry.subframes`` snapshots each; mono audio float32 at the preset's rate)."""
    from frieren.audio import load_audio
    from frieren.video_io import sample_video, video_duration

    g = preset.geometry
    size = preset.cavp.image_size
    audio = load_audio(audio_path or video, g.sample_rate)[0].numpy().astype(np.float32)
    duration = min(video_duration(video), audio.shape[0] / g.sample_rate)
    n = max(1, int(math.floor(duration * g.sample_rate / g.samples_per_frame + 1e-6)))
    times = g.snapshot_instants_s(n).reshape(-1)
    sv = sample_video(video, times, transform=functools.partial(_preprocess_uint8, size=size))
    return stack_snapshots(sv.frames, g.subframes), audio


def folder_source(folder: os.PathLike, preset: Preset, files: Optional[Sequence[Path]] = None) -> List[ClipItem]:
    """Videos with audio in ``folder`` (sorted). A sibling ``<stem>.wav`` is used as the
    audio when present (the synthetic datasets write one), else the video's own audio track.
    ``files`` restricts the list (used by :func:`csv_source`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    videos = list(files) if files is not None else sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise FileNotFoundError(f"{folder}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    items = []
    for v in videos:
        wav = v.with_suffix(".wav")
        items.append(ClipItem(v.stem, functools.partial(_load_video, v, preset, wav if wav.is_file() else None)))
    return items


def csv_source(folder: os.PathLike, csv_path: os.PathLike, preset: Preset,
               split: Optional[str] = None) -> List[ClipItem]:
    """A VGGSound-style manifest: rows ``youtube_id, start_seconds, label, split`` (no header
    needed). The file of a row is ``<id>_<start:06d>.<ext>`` (the usual VGGSound naming),
    ``<id>_<start>.<ext>`` or, when the first column is itself a file name, that file.
    ``split`` keeps only rows whose 4th column equals it. Missing files are skipped with a
    warning naming how many."""
    folder = Path(folder)
    files: List[Path] = []
    missing = 0
    with open(csv_path, newline="") as fh:
        for row in csv.reader(fh):
            row = [c.strip() for c in row]
            if not row or not row[0] or row[0].startswith("#"):
                continue
            if split is not None and (len(row) < 4 or row[3] != split):
                continue
            cands = [folder / row[0]]
            if len(row) > 1 and re.fullmatch(r"\d+(\.\d+)?", row[1]):
                start = int(float(row[1]))
                for ext in VIDEO_EXTENSIONS:
                    cands += [folder / f"{row[0]}_{start:06d}{ext}", folder / f"{row[0]}_{start}{ext}"]
            hit = next((c for c in cands if c.is_file()), None)
            if hit is None:
                missing += 1
            else:
                files.append(hit)
    if missing:
        log.warning("%s: %d rows have no video file in %s; skipped", csv_path, missing, folder)
    if not files:
        raise FileNotFoundError(f"{csv_path}: no listed video was found in {folder}")
    return folder_source(folder, preset, files)


# --------------------------------------------------------------------------------------
# Clip cache
# --------------------------------------------------------------------------------------

def build_clip_cache(items: Sequence[ClipItem], cache_dir: os.PathLike, preset: Preset,
                     progress: bool = True, workers: int = 1) -> List[Path]:
    """Cache every item as ``clips/NNNNN.pt`` (skipping finished ones); returns the paths.
    A clip that cannot be read is skipped with a warning naming it. ``workers > 1`` loads
    clips in that many spawned processes (one torch thread each); each file depends only on
    its item, so the cache is the same for any number of workers."""
    from tqdm import tqdm

    out = Path(cache_dir) / "clips"
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{i:05d}.pt" for i in range(len(items))]
    todo = [i for i, path in enumerate(paths) if not path.is_file()]
    errors = {}
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="clip cache", unit="clip",
               disable=not progress, mininterval=2)
    if workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            futures = {pool.submit(_cache_clip, items[i], paths[i], preset): i for i in todo}
            for future in as_completed(futures):
                error = future.result()
                if error is not None:
                    errors[futures[future]] = error
                bar.update(1)
    else:
        for i in todo:
            error = _cache_clip(items[i], paths[i], preset)
            if error is not None:
                errors[i] = error
            bar.update(1)
    bar.close()
    for i in sorted(errors):
        log.warning("skipping %s: %s", items[i].key, errors[i])
    if errors:
        log.warning("%d clips could not be read: %s", len(errors), ", ".join(items[i].key for i in sorted(errors)[:10]))
    kept = [path for i, path in enumerate(paths) if i not in errors]
    if not kept:
        raise RuntimeError("no usable clip: every source item failed to load")
    return kept


def _cache_clip(item: ClipItem, path: Path, preset: Preset) -> Optional[str]:
    """Load one item and write it to ``path``; returns None, or why the clip was skipped."""
    from frieren.audio import MelFrontend

    g = preset.geometry
    m = g.latents_per_frame * g.mel_per_latent
    try:
        loaded = item.load()
        frames, audio, labels = _fit_length(*loaded[:2], preset, g.frames_per_window,
                                            loaded[2] if len(loaded) > 2 else None)
    except Exception as error:  # noqa: BLE001 - a bad user file must not stop the run
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    with torch.no_grad():
        mel = MelFrontend(preset.mel)(torch.from_numpy(np.ascontiguousarray(audio))[None])[0]
    assert mel.shape[1] == frames.shape[0] * m, f"{item.key}: mel {tuple(mel.shape)} vs {frames.shape[0]} frames"
    entry = {"key": item.key, "frames": torch.from_numpy(np.ascontiguousarray(frames)),
             "mel": mel.float().contiguous()}
    if labels is not None:
        entry["frame_material"] = torch.from_numpy(labels)
    atomic_torch_save(entry, path)
    return None


def load_clip_cache(paths: Sequence[Path]) -> List[ClipData]:
    clips = []
    for p in paths:
        d = torch.load(p, map_location="cpu", weights_only=True)
        clips.append(ClipData(d["key"], d["frames"], d["mel"], d.get("frame_material")))
    return clips


def window_index(clips: Sequence[ClipData], frames_per_window: int, stride: int) -> Tensor:
    """(W, 2) int64 rows (clip index, start frame) of every window of ``frames_per_window``
    frames at ``stride`` within each clip (the last window of a clip ends at its end)."""
    rows = []
    for c, clip in enumerate(clips):
        n = clip.num_frames
        starts = list(range(0, n - frames_per_window + 1, stride))
        if starts and starts[-1] != n - frames_per_window:
            starts.append(n - frames_per_window)
        rows += [(c, s) for s in starts]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 2)


@dataclass
class WindowData:
    """Raw windows for the VAE and CAVP stages."""
    clips: List[ClipData]
    windows: Tensor              # (W, 2)
    frames_per_window: int
    mel_per_frame: int

    def mel(self, idx: Tensor) -> Tensor:
        """(B, n_mels, F * mel_per_frame) log10 mel windows."""
        f, m = self.frames_per_window, self.mel_per_frame
        return torch.stack([self.clips[int(c)].mel[:, int(s) * m:(int(s) + f) * m] for c, s in self.windows[idx]])

    def frames(self, idx: Tensor) -> Tensor:
        """(B, F, 3K, S, S) float frames in [0, 1]."""
        return self.frames_uint8(idx).float() / 255.0

    def frames_uint8(self, idx: Tensor) -> Tensor:
        """(B, F, 3K, S, S) uint8 frames as cached: a quarter of the bytes to move to a GPU."""
        f = self.frames_per_window
        return torch.stack([self.clips[int(c)].frames[int(s):int(s) + f] for c, s in self.windows[idx]])

    def has_frame_material(self) -> bool:
        return all(c.frame_material is not None for c in self.clips)

    def frame_material(self, idx: Tensor) -> Tensor:
        """(B, F) int64 struck-material class per frame, -1 = no impact (synthetic clips)."""
        f = self.frames_per_window
        return torch.stack([self.clips[int(c)].frame_material[int(s):int(s) + f] for c, s in self.windows[idx]])


# --------------------------------------------------------------------------------------
# Feature / latent cache
# --------------------------------------------------------------------------------------

def state_fingerprint(*states) -> str:
    """Short sha256 over the tensors of one or more state dicts (cache invalidation)."""
    h = hashlib.sha256()
    for state in states:
        for k in sorted(state):
            h.update(k.encode())
            h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class LatentCache:
    """Everything the flow stages need, in memory.

    feats: list of (N_c, D) per clip; windows (W, 2); mean/std (W, C, L) posterior moments
    (unscaled); ``scale`` the latent scale factor."""
    feats: List[Tensor]
    windows: Tensor
    mean: Tensor
    std: Tensor
    scale: float
    frames_per_window: int

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def window_feats(self, idx: Tensor) -> Tensor:
        f = self.frames_per_window
        return torch.stack([self.feats[int(c)][int(s):int(s) + f] for c, s in self.windows[idx]])

    def latents(self, idx: Tensor, gen: Optional[torch.Generator]) -> Tensor:
        """Scaled posterior samples (B, C, L) of windows ``idx``."""
        mean, std = self.mean[idx], self.std[idx]
        return self.scale * (mean + std * torch.randn(mean.shape, generator=gen))


def build_latent_cache(clips: Sequence[ClipData], windows: Tensor, cavp, vae, preset: Preset,
                       cache_dir: os.PathLike, scale: float, fingerprint: str,
                       batch: int = 64, progress: bool = True) -> LatentCache:
    """Per-clip CAVP features and per-window VAE posteriors, cached under ``latents/``
    (one file per clip, resumable; discarded when ``fingerprint`` changes)."""
    from tqdm import tqdm

    out = Path(cache_dir) / "latents"
    meta_path = out / "meta.json"
    current = meta_path.is_file() and json.loads(meta_path.read_text()).get("fingerprint") == fingerprint
    if out.is_dir() and not current:
        for p in out.glob("*.pt"):
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if not current:  # DDP ranks read it after rank 0 built the cache: never rewrite a current one
        write_json_atomic(meta_path, {"fingerprint": fingerprint})
    g = preset.geometry
    f, m = g.frames_per_window, g.latents_per_frame * g.mel_per_latent
    cavp.eval()
    vae.eval()
    feats: List[Tensor] = []
    means, stds = [], []
    for c, clip in enumerate(tqdm(clips, desc="features+latents", unit="clip", disable=not progress, mininterval=2)):
        path = out / f"{c:05d}.pt"
        starts = windows[windows[:, 0] == c, 1]
        if path.is_file():
            d = torch.load(path, map_location="cpu", weights_only=True)
        else:
            with torch.no_grad():
                fe = cavp.extract_condition(clip.frames.float() / 255.0, chunk_frames=preset.cavp.chunk_frames)
                mels = torch.stack([clip.mel[:, int(s) * m:(int(s) + f) * m] for s in starts]) if len(starts) else None
                mu, sd = [], []
                if mels is not None:
                    for a in range(0, mels.shape[0], batch):
                        post = vae.encode(mels[a:a + batch])
                        mu.append(post.mean)
                        sd.append(post.std)
                d = {"feats": fe.contiguous(), "starts": starts.clone(),
                     "mean": torch.cat(mu) if mu else torch.zeros(0), "std": torch.cat(sd) if sd else torch.zeros(0)}
            atomic_torch_save(d, path)
        if not torch.equal(d["starts"], starts):
            raise RuntimeError(f"{path}: cached windows differ from the current window index; delete {out}")
        feats.append(d["feats"])
        if len(starts):
            means.append(d["mean"])
            stds.append(d["std"])
    return LatentCache(feats, windows, torch.cat(means), torch.cat(stds), scale, f)


def latent_scale(mean: Tensor, std: Tensor) -> float:
    """1 / std of posterior samples (MAA2's ``scale_by_std``), from moments (W, C, L)."""
    var = (mean.pow(2).mean() - mean.mean().pow(2)) + std.pow(2).mean()
    return float(1.0 / var.clamp_min(1e-12).sqrt())


def iter_batches(n: int, batch: int) -> Iterable[Tensor]:
    for a in range(0, n, batch):
        yield torch.arange(a, min(n, a + batch))
