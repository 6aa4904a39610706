"""SyntheticSource: the live synthetic Foley world (``frieren.synth.LiveScene``) as a Source.

Frames carry ``pts = frame_index`` with ``time_base = 1/fps`` (integers, DESIGN §3.5),
so frame ``i`` sits at sample ``floor(i * sample_rate / fps)`` of the engine's sample
timeline, which is exactly the scene's own ``frame_start_sample(i)``: the ground-truth
``Event.sample`` values are therefore on the same timeline as the generated audio's
``AudioChunk.start_sample`` (when the scene and the model share a sample rate, which
the default scene does at 16 kHz; otherwise :meth:`events_on` rescales).

``realtime=True`` releases frame ``i`` at ``t0 + i / fps`` on the monotonic clock (a
camera); ``False`` renders as fast as possible. ``duration_s`` ends the stream after
that much media time (None: endless).

For measurements the source keeps (bounded by ``record_s``): every event it has
emitted, the scene's own audio (the detector's ceiling in sync benchmarks), and,
with ``record_size=S``, each frame resized to S x S the way a Session does (so an
offline run can be fed exactly the frames the stream saw).
"""
from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from frieren.synth import Event, LiveScene, SceneConfig

from ..clock import NS_PER_S
from ..messages import Frame
from .base import Source

log = logging.getLogger(__name__)


class SyntheticSource(Source):
    def __init__(self, seed: int = 0, config: Optional[SceneConfig] = None, *, realtime: bool = True,
                 duration_s: Optional[float] = None, record_s: float = 600.0,
                 record_size: Optional[int] = None, source_id: Optional[str] = None, queue_size: int = 32,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        super().__init__(source_id or f"synthetic:{seed}", queue_size=queue_size)
        self.seed = int(seed)
        self.config = config or SceneConfig()
        self.realtime = bool(realtime)
        self.duration_s = duration_s
        self.record_s = float(record_s)
        self.record_size = record_size
        self.time_base = Fraction(1, self.config.fps)
        self.sample_rate = self.config.sample_rate
        self._clock = clock
        self._lock = threading.Lock()
        self._events: List[Event] = []
        self._audio: List[np.ndarray] = []
        self._frames: Dict[int, np.ndarray] = {}
        self.frames_rendered = 0
        self.late_frames = 0      # realtime mode: frames released after their due instant

    # ------------------------------------------------------------------ ground truth
    @property
    def max_frames(self) -> Optional[int]:
        if self.duration_s is None:
            return None
        return max(1, int(Fraction(self.duration_s).limit_denominator(10**6) * self.config.fps))

    def events(self, kinds: Optional[Tuple[str, ...]] = None) -> List[Event]:
        """Events emitted so far (sample times on the frames' timeline), optionally by kind."""
        with self._lock:
            ev = list(self._events)
        return [e for e in ev if kinds is None or e.kind in kinds]

    def events_on(self, sample_rate: int, kinds: Optional[Tuple[str, ...]] = None) -> List[int]:
        """Event instants as sample indices at ``sample_rate`` (exact integer rescale)."""
        return [e.sample * sample_rate // self.sample_rate for e in self.events(kinds)]

    def reference_audio(self) -> np.ndarray:
        """The scene's own audio from sample 0 (as much as was recorded), float32."""
        with self._lock:
            parts = list(self._audio)
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)

    def recorded_frames(self) -> Dict[int, np.ndarray]:
        """frame_index -> (S, S, 3) uint8 (only with ``record_size``)."""
        with self._lock:
            return dict(self._frames)

    def frame_at_sample(self, sample: int) -> int:
        """Index of the newest frame at or before ``sample`` (nearest-earlier, like FrameWindow)."""
        return max(0, (sample * self.config.fps) // self.sample_rate)

    def _record(self, f) -> None:
        limit = int(self.record_s * self.config.fps)
        if f.frame_index >= limit:
            return
        with self._lock:
            self._events.extend(f.events)
            self._audio.append(np.asarray(f.audio, np.float32))
            if self.record_size:
                import cv2
                S = int(self.record_size)
                self._frames[f.frame_index] = cv2.resize(f.rgb, (S, S), interpolation=cv2.INTER_AREA)

    # ------------------------------------------------------------------ frames
    def iter_frames(self, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        stop = stop or threading.Event()
        scene = LiveScene(self.seed, self.config)
        limit = self.max_frames
        t0 = None
        for f in scene:
            if stop.is_set() or (limit is not None and f.frame_index >= limit):
                return
            self.frames_rendered += 1
            if self.realtime:
                if t0 is None:
                    t0 = self._clock()
                target = t0 + f.frame_index * NS_PER_S // self.config.fps
                delay = target - self._clock()
                if delay > 0:
                    if stop.wait(delay / NS_PER_S):
                        return
                elif delay < -NS_PER_S // self.config.fps:
                    self.late_frames += 1
            self._record(f)
            yield Frame(pts=f.frame_index, time_base=self.time_base, rgb=f.rgb, capture_ns=self._clock(),
                        source_id=self.source_id)
