"""One stream: frames of one source in, crossfaded generated audio out to its sinks.

Threads: ``push_frame`` runs on the source's thread (it owns the FrameWindow);
``deliver`` runs on the worker thread (it owns the Crossfader). The two meet only
through :meth:`GenerationWorker.submit`, which is thread-safe.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Optional

import cv2
import numpy as np
import torch

from frieren.noise import NoiseTape
from frieren.streaming import WindowJob

from .crossfade import Crossfader
from .messages import AudioChunk, Frame
from .window import FrameWindow, Window
from .worker import GenerationWorker

log = logging.getLogger(__name__)
_ids = itertools.count(1)


@dataclass(frozen=True)
class SessionConfig:
    """hop_samples None: ``window.default_hop_samples`` (one visual frame, at least 128 ms).
    crossfade_samples: equal-power overlap."""
    hop_samples: Optional[int] = None
    lookahead_frames: int = 0
    crossfade_samples: int = 256
    crossfade_curve: str = "equal_power"
    seed: int = 0
    clock_driven: bool = False


def _percentile(values, q: float) -> Optional[float]:
    return float(np.percentile(np.asarray(values), q)) if len(values) else None


class Session:
    """Frames -> windows -> worker -> crossfade -> ``on_chunk`` (e.g. a Fanout's push)."""

    def __init__(self, worker: GenerationWorker, on_chunk: Callable[[AudioChunk], None],
                 config: SessionConfig = SessionConfig(), session_id: Optional[str] = None) -> None:
        gen = worker.generator
        self.geometry = g = gen.geometry
        self.session_id = session_id or f"s{next(_ids)}"
        self.config = config
        self.worker = worker
        self.on_chunk = on_chunk
        self.image_size = gen.image_size
        self.window = FrameWindow(g, hop_samples=config.hop_samples, lookahead_frames=config.lookahead_frames)
        self.hop = self.window.hop_samples
        overlap = min(config.crossfade_samples, self.hop)
        self.crossfader = Crossfader(g.sample_rate, overlap, config.crossfade_curve)
        # Tail mode (no added latency) needs audio after the emitted span inside the window.
        self._tail_mode = config.lookahead_frames * g.samples_per_frame >= overlap
        self.tape = NoiseTape(config.seed, gen.noise_channels)
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._latency_ms: Deque[float] = deque(maxlen=2000)
        self._tick_ms: Deque[float] = deque(maxlen=2000)
        self._frames_in: Deque[int] = deque(maxlen=120)
        self.counters: Dict[str, int] = {"frames": 0, "windows": 0, "dropped": 0, "chunks": 0, "errors": 0}
        self.closed = False

    # ------------------------------------------------------------------ source thread
    def _prepare(self, frame: Frame) -> Frame:
        S = self.image_size
        if frame.rgb.shape[:2] == (S, S):
            return frame
        small = cv2.resize(frame.rgb, (S, S), interpolation=cv2.INTER_AREA)
        return Frame(pts=frame.pts, time_base=frame.time_base, rgb=small, capture_ns=frame.capture_ns,
                     source_id=frame.source_id)

    def push_frame(self, frame: Frame, until_sample: Optional[int] = None) -> int:
        """Add a captured frame; submits the newest due window. Returns windows submitted."""
        if self.closed:
            return 0
        self.counters["frames"] += 1
        self._frames_in.append(time.monotonic_ns())
        self.window.push(self._prepare(frame))
        due = self.window.due_windows(until_sample=until_sample, max_windows=1)
        skipped = self.window.counters.get("skipped_windows", 0)
        if skipped > self.counters.get("skipped_seen", 0):
            self.count_dropped(skipped - self.counters.get("skipped_seen", 0))
            self.counters["skipped_seen"] = skipped
        for w in due:
            self.worker.submit(self, w, self._job(w))
            self.counters["windows"] += 1
        return len(due)

    def _job(self, w: Window) -> WindowJob:
        g = self.geometry
        rgb = w.stack_rgb()  # (N, S, S, 3K) uint8, K = g.subframes snapshots per visual frame
        # Contiguous (N, 3K, S, S), the layout the offline pipeline hands the CAVP: a permuted
        # (channels-last) window picks other convolution kernels on some CPUs (AVX2), whose
        # last-bit differences Griffin-Lim amplified to 0.24 of sample difference.
        frames = torch.from_numpy(rgb).permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        frames = frames.div_(255.0)
        noise = self.tape.window(w.latent_start, g.latent_frames)
        o = self.crossfader.overlap
        start = w.emit_offset if self._tail_mode else w.emit_offset - o
        return WindowJob(frames=frames, noise=noise, emit_start=start, emit_length=w.emit_samples + o)

    # ------------------------------------------------------------------ worker thread
    def count_dropped(self, n: int) -> None:
        with self._lock:
            self.counters["dropped"] += n

    def deliver(self, w: Window, audio: np.ndarray, timings: Dict[str, float]) -> None:
        if self.closed:
            return
        o = self.crossfader.overlap
        start = w.emit_start if self._tail_mode else w.emit_start - o
        start, pcm = self.crossfader.process(start, audio)
        capture_ns = w.capture_ns + (start - w.emit_start) * 1_000_000_000 // self.geometry.sample_rate
        now = time.monotonic_ns()
        timings = dict(timings)
        timings["total_ms"] = timings.get("queue_ms", 0.0) + timings.get("encode_ms", 0.0) + \
            timings.get("generate_ms", 0.0) + timings.get("vocode_ms", 0.0)
        chunk = AudioChunk(stream_id=self.session_id, seq=next(self._seq), start_sample=start,
                           sample_rate=self.geometry.sample_rate, pcm=pcm, capture_ns=capture_ns, timings=timings)
        with self._lock:
            self.counters["chunks"] += 1
            self._latency_ms.append((now - capture_ns) / 1e6)
            self._tick_ms.append(timings["total_ms"] - timings.get("queue_ms", 0.0))
        self.on_chunk(chunk)

    # ------------------------------------------------------------------ any thread
    def stats(self) -> Dict[str, float]:
        with self._lock:
            lat, tick = list(self._latency_ms), list(self._tick_ms)
            counters = dict(self.counters)
        fps = None
        if len(self._frames_in) >= 2:
            span = (self._frames_in[-1] - self._frames_in[0]) / 1e9
            fps = (len(self._frames_in) - 1) / span if span > 0 else None
        hop_ms = self.hop / self.geometry.sample_rate * 1000
        p50 = _percentile(tick, 50)
        return {
            "session": self.session_id, "input_fps": fps, "hop_ms": hop_ms,
            "latency_p50_ms": _percentile(lat, 50), "latency_p95_ms": _percentile(lat, 95),
            "tick_p50_ms": p50, "tick_p95_ms": _percentile(tick, 95),
            "rtf": (p50 / hop_ms) if p50 is not None else None,
            "dropped": counters["dropped"], "chunks": counters["chunks"], "frames": counters["frames"],
            "windows": counters["windows"], "crossfade_discontinuities": self.crossfader.discontinuities,
        }

    def close(self) -> None:
        self.closed = True
        self.worker.forget(self.session_id)
