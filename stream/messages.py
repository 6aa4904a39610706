"""The small immutable messages that travel between engine stages.

Every timestamp is an integer (DESIGN §3.5): a frame carries ``pts`` in units of
``time_base`` seconds, an audio chunk carries ``start_sample`` at ``sample_rate``,
and wall-clock instants are ``time.monotonic_ns()`` values (``*_ns``). Nothing
here holds accumulated float seconds.

The dataclasses hold numpy arrays, so they compare by identity (``eq=False``);
"frozen" means the fields cannot be rebound, not that the arrays are read-only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Dict, Mapping, Optional

import numpy as np


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded video frame.

    pts:        presentation timestamp, integer, in units of ``time_base`` seconds.
    time_base:  seconds per pts unit (e.g. ``Fraction(1, 30)``, ``Fraction(1, 10**9)``).
    rgb:        (H, W, 3) uint8, RGB order.
    capture_ns: ``time.monotonic_ns()`` when the frame entered the engine (camera read,
                decode/pacing instant for files). Glass-to-ear latency starts here.
    source_id:  which source produced it (free text).
    """
    pts: int
    time_base: Fraction
    rgb: np.ndarray
    capture_ns: int
    source_id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.pts, (int, np.integer)) or isinstance(self.pts, bool):
            raise TypeError(f"Frame.pts must be an int, got {type(self.pts).__name__}")
        if not isinstance(self.time_base, Fraction):
            object.__setattr__(self, "time_base", Fraction(self.time_base))
        if self.time_base <= 0:
            raise ValueError(f"Frame.time_base must be positive, got {self.time_base}")
        rgb = self.rgb
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            desc = f"{getattr(rgb, 'shape', None)} {getattr(rgb, 'dtype', type(rgb).__name__)}"
            raise ValueError(f"Frame.rgb must be (H, W, 3) uint8, got {desc}")
        object.__setattr__(self, "pts", int(self.pts))
        object.__setattr__(self, "capture_ns", int(self.capture_ns))

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def time(self) -> Fraction:
        """Exact presentation time in seconds (a Fraction, for arithmetic, not accumulation)."""
        return self.pts * self.time_base


@dataclass(frozen=True)
class StageTimings:
    """Per-chunk compute timings in milliseconds (None = stage not run / not measured)."""
    queue_ms: Optional[float] = None     # window due -> picked up by the GPU worker
    encode_ms: Optional[float] = None    # CAVP + condition encoder
    generate_ms: Optional[float] = None  # flow step(s) + VAE decode
    vocode_ms: Optional[float] = None    # vocoder on the emitted span (+ context)
    total_ms: Optional[float] = None     # window due -> chunk emitted
    batch_size: Optional[int] = None     # how many windows shared the batch

    def as_dict(self) -> Dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """A contiguous piece of generated audio on the stream's sample timeline.

    start_sample: absolute index of pcm[0] at ``sample_rate`` on the source's media
                  timeline (sample s is the instant ``s / sample_rate`` seconds of pts time).
    pcm:          float32, (N,) mono or (N, C) interleaved-by-row; nominal range [-1, 1].
    capture_ns:   monotonic capture instant of the video moment at ``start_sample``.
    timings:      stage timings in ms (see :class:`StageTimings`).
    """
    stream_id: str
    seq: int
    start_sample: int
    sample_rate: int
    pcm: np.ndarray
    capture_ns: int
    timings: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pcm = self.pcm
        if not isinstance(pcm, np.ndarray) or pcm.ndim not in (1, 2):
            raise ValueError(f"AudioChunk.pcm must be (N,) or (N, C), got {getattr(pcm, 'shape', type(pcm))}")
        if pcm.dtype != np.float32:
            object.__setattr__(self, "pcm", pcm.astype(np.float32))
        if int(self.sample_rate) <= 0:
            raise ValueError(f"AudioChunk.sample_rate must be positive, got {self.sample_rate}")
        for name in ("seq", "start_sample", "sample_rate", "capture_ns"):
            object.__setattr__(self, name, int(getattr(self, name)))

    @property
    def num_samples(self) -> int:
        return int(self.pcm.shape[0])

    @property
    def channels(self) -> int:
        return 1 if self.pcm.ndim == 1 else int(self.pcm.shape[1])

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.num_samples

    def pcm_2d(self) -> np.ndarray:
        """pcm as (N, C)."""
        return self.pcm[:, None] if self.pcm.ndim == 1 else self.pcm

    def replace(self, **changes: Any) -> "AudioChunk":
        return dataclasses.replace(self, **changes)
