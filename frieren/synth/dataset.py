"""Write synthetic clips to disk: ``clip_XXXX.mp4`` (H.264 video at the camera rate with the
audio muxed as AAC), ``clip_XXXX.wav`` (16-bit PCM mono, the exact training audio),
``clip_XXXX.events.json`` (ground truth) and ``manifest.json``, under ``out_dir / split``.

Clip ``i`` uses seed ``seed0 + i``: give each split its own ``seed0`` range. Writing is
resumable: every file is written under a temporary name and renamed, the events file last,
so a clip whose events file exists is complete and is skipped on the next run.
"""
from __future__ import annotations

import json
import logging
import os
import wave
from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
from tqdm import tqdm

from .config import SceneConfig
from .scene import Clip, render_clip

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
AAC_FRAME = 1024


def clip_name(index: int) -> str:
    return f"clip_{index:04d}"


def write_wav(path: Union[str, Path], audio: np.ndarray, sample_rate: int) -> None:
    """Mono float audio ``(n,)`` in [-1, 1] -> 16-bit PCM WAV (values outside are clipped)."""
    assert audio.ndim == 1, f"write_wav: expected mono (n,), got {audio.shape}"
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def write_mp4(path: Union[str, Path], frames: np.ndarray, fps: int, audio: np.ndarray,
              sample_rate: int, crf: int = 18) -> None:
    """frames ``(N, H, W, 3)`` uint8 RGB at ``fps`` + mono audio ``(n,)`` -> H.264/AAC MP4."""
    import av

    n, h, w, c = frames.shape
    assert c == 3 and frames.dtype == np.uint8, f"write_mp4: expected (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}"
    with av.open(str(path), mode="w", format="mp4") as container:
        vs = container.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height = w, h
        # 4:2:0 needs even sizes; odd sizes keep every pixel with 4:4:4
        vs.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        vs.time_base = Fraction(1, fps)
        vs.options = {"crf": str(crf), "preset": "veryfast"}
        a_s = container.add_stream("aac", rate=sample_rate)
        a_s.layout = "mono"
        a_s.time_base = Fraction(1, sample_rate)
        for i in range(n):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            vf.pts = i
            container.mux(vs.encode(vf))
        pcm = np.clip(audio, -1.0, 1.0).astype(np.float32)
        for start in range(0, len(pcm), AAC_FRAME):
            chunk = pcm[start:start + AAC_FRAME]                # the last frame may be short
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate = sample_rate
            af.pts = start
            af.time_base = Fraction(1, sample_rate)
            container.mux(a_s.encode(af))
        container.mux(vs.encode(None))
        container.mux(a_s.encode(None))


def _clip_record(name: str, seed: int, clip_meta: dict) -> dict:
    return {
        "name": name, "seed": seed, "mp4": f"{name}.mp4", "wav": f"{name}.wav",
        "events": f"{name}.events.json", "num_frames": clip_meta["num_frames"],
        "num_samples": clip_meta["num_samples"], "num_events": len(clip_meta["events"]),
        "has_fan": clip_meta["has_fan"],
    }


def _events_doc(clip: Clip, split: str) -> dict:
    cfg = clip.config
    return {
        "format_version": FORMAT_VERSION, "seed": clip.seed, "split": split, "config": cfg.to_dict(),
        "fps": cfg.fps, "sample_rate": cfg.sample_rate, "num_frames": int(len(clip.frames)),
        "num_samples": int(len(clip.audio)), "has_fan": clip.has_fan,
        "fan_speed": [round(float(v), 5) for v in clip.fan_speed],
        "events": [e.to_dict() for e in clip.events],
    }


def _atomic_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def write_dataset(out_dir: Union[str, Path], num_clips: int, seed0: int,
                  config: Optional[SceneConfig] = None, split: str = "train",
                  progress: bool = True) -> Path:
    """Render ``num_clips`` clips (seeds ``seed0 ..``) into ``out_dir / split``; returns the
    manifest path. Complete clips already there are kept (their config must match)."""
    config = config or SceneConfig()
    root = Path(out_dir) / split
    root.mkdir(parents=True, exist_ok=True)
    want = config.to_dict()
    records: List[dict] = []
    written = skipped = 0
    for i in tqdm(range(num_clips), desc=f"synth {split}", unit="clip", disable=not progress):
        name, seed = clip_name(i), seed0 + i
        ev_path = root / f"{name}.events.json"
        if ev_path.exists() and (root / f"{name}.mp4").exists() and (root / f"{name}.wav").exists():
            meta = json.loads(ev_path.read_text())
            if meta.get("config") != want or meta.get("seed") != seed:
                raise ValueError(f"{ev_path} was written with another config or seed; "
                                 f"use a new out_dir or delete {root} to rewrite it")
            records.append(_clip_record(name, seed, meta))
            skipped += 1
            continue
        clip = render_clip(seed, config)
        mp4_tmp = root / f"{name}.mp4.part"
        write_mp4(mp4_tmp, clip.frames, config.fps, clip.audio, config.sample_rate)
        os.replace(mp4_tmp, root / f"{name}.mp4")
        wav_tmp = root / f"{name}.wav.part"
        write_wav(wav_tmp, clip.audio, config.sample_rate)
        os.replace(wav_tmp, root / f"{name}.wav")
        doc = _events_doc(clip, split)
        _atomic_json(ev_path, doc)
        records.append(_clip_record(name, seed, doc))
        written += 1
        log.debug("wrote %s (seed %d, %d events)", name, seed, len(clip.events))
    manifest = {
        "format_version": FORMAT_VERSION, "split": split, "seed0": seed0, "num_clips": num_clips,
        "config": want, "clips": records,
    }
    path = root / "manifest.json"
    _atomic_json(path, manifest)
    log.info("synthetic dataset %s: %d clips written, %d kept", root, written, skipped)
    return path
