"""FrameWindow: which frames go into each model window, and which audio comes out.

Time axis
---------
Everything lives on one integer *sample timeline*: a frame with ``pts`` and
``time_base`` sits at sample ``floor(pts * time_base * sample_rate)``; emitted
audio sample ``s`` is the instant ``s / sample_rate`` seconds of the source's
media time. So ``AudioChunk.start_sample`` can be muxed against the video pts
directly.

Audio-clock sampling (DESIGN §3.1)
----------------------------------
With ``P = geometry.samples_per_frame``, ``N = geometry.frames_per_window`` and
``W = N * P``, a window starting at sample ``S`` covers audio ``[S, S + W)`` and
its visual frame ``j`` is sampled at instant ``S + j * P`` (the start of the
audio span that frame conditions, as in training). The frame used is the
*nearest-earlier* captured frame (the newest frame with time <= that instant),
whatever the source's own frame rate.

With ``K = geometry.subframes`` > 1 a visual frame is a stack of K snapshots:
snapshot ``k`` of frame ``j`` is the nearest-earlier captured frame at
``S + j * P + geometry.subframe_offsets[k]`` (offsets ``-(K-1-k) * P/K``, oldest
first, the last one at the frame's own instant). ``Window.frames`` then holds
``N * K`` frames, slot-major (``frames[j * K + k]``), and ``Window.stack_rgb()``
concatenates each slot's snapshots on the channel axis: (N, H, W, 3K).

Hops and the emitted span (DESIGN §3.2)
---------------------------------------
Windows advance by ``hop_samples = H`` (a multiple of one latent frame,
``samples_per_latent``, from one latent up to the whole window). The default
(:func:`default_hop_samples`) is one visual frame period, or the smallest
multiple of it that is at least ``MIN_DEFAULT_HOP_S`` (128 ms): a model with
shorter frames (64 ms were tried for ``tiny``) would otherwise tick faster than
a CPU can generate a window. The stream's
origin ``O`` is the first frame's sample. Window ``k`` emits audio
``[O + k*H, O + k*H + H)``: the newest hop of the window shifted back by
``lookahead_frames * P`` samples, i.e. the window starts at
``S_k = O + k*H + H + A*P - W``. It is *due* once its last frame instant
``S_k + (N-1)*P`` is covered: by a captured frame at or after it
(frame-driven, the default: "the window ends at the newest captured frame"), or
by an explicit ``until_sample`` (clock-driven: a stalled camera then repeats its
last frame rather than stalling the audio). With ``A = 0`` and ``H = P`` window
``k``'s emitted audio starts exactly at its newest frame's instant: lowest
latency, the model predicts one frame period ahead. Each frame of look-ahead
costs one frame period of latency. With ``H < P`` a captured frame at ``t`` makes
every hop up to ``t + P`` due (its whole frame slot), i.e. up to ``P - H`` samples
before their instant; a session that paces output by an audio clock should pass
``until_sample`` instead, so each hop is built as late as possible with the
freshest frames.

Start-up padding
----------------
Before ``N`` frame periods of video exist, the instants before the first frame
take the first frame (left padding by repetition, what a video clip shorter
than the window gets when frames are held at the edge, as the training data
loader pads short clips); so do snapshot instants before it. ``Window.num_padded``
says how many leading visual frames have their own instant before the first frame.

Memory
------
Only frames that some window can still sample are kept: a frame is discarded
as soon as a newer frame arrives before the next sampling-grid instant (the
grid step is ``gcd(H, P / K)``: snapshot ``k`` of frame ``j`` of window ``i`` lies
at ``O + (i+1)*H + (A-N+j)*P - (K-1-k)*P/K`` and emitted spans start at ``O + i*H``,
all ``O`` plus multiples of it since ``P/K`` divides ``P``), and frames older than
the next window's earliest snapshot instant (``S_{i+1} - (K-1)*P/K``) are pruned.
``capacity`` bounds the rest (oldest evicted, counted).
Resize frames to the model's input size before pushing to keep this small.
"""
from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from frieren.config import WindowGeometry

from .clock import pts_to_samples, samples_to_ns
from .messages import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Window:
    """One model window, ready for the GPU worker.

    frames:       N * K frames (K = ``geometry.subframes``), slot-major: ``frames[j * K + k]`` is
                  snapshot k of visual frame j, sampled at ``snapshot_sample_times[j * K + k]``
                  = ``start_sample + j * samples_per_frame + subframe_offsets[k]``; with
                  K = 1, ``frames[j]`` was sampled at ``start_sample + j * samples_per_frame``.
    start_sample: absolute sample of the window's first audio sample.
    emit_start:   absolute sample of the first audio sample to emit (``emit_samples`` long).
    latent_start: latent-frame index of the window start counted from the first window's
                  start (>= 0); the same absolute latent frame gets the same index in
                  every window, which is what the noise tape needs (DESIGN §3.3).
    num_padded:   leading visual frames whose own instant lies before the first frame
                  (start-up repeats of it).
    capture_ns:   monotonic capture instant of the video moment at ``emit_start`` (the
                  nearest-earlier frame's ``capture_ns`` plus the sample offset).
    """
    index: int
    frames: Tuple[Frame, ...]
    start_sample: int
    emit_start: int
    emit_samples: int
    latent_start: int
    num_padded: int
    capture_ns: int
    geometry: WindowGeometry

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.geometry.window_samples

    @property
    def emit_end(self) -> int:
        return self.emit_start + self.emit_samples

    @property
    def emit_offset(self) -> int:
        """Emitted span's first sample, relative to the window start."""
        return self.emit_start - self.start_sample

    @property
    def emit_mel_span(self) -> Tuple[int, int]:
        """Emitted span as [start, end) mel frames of the window."""
        hop = self.geometry.hop_length
        return self.emit_offset // hop, (self.emit_offset + self.emit_samples) // hop

    @property
    def emit_latent_span(self) -> Tuple[int, int]:
        """Emitted span as [start, end) latent frames of the window."""
        spl = self.geometry.samples_per_latent
        return self.emit_offset // spl, (self.emit_offset + self.emit_samples) // spl

    def stack_rgb(self) -> np.ndarray:
        """The window as one (N, H, W, 3K) uint8 array: visual frame j's K snapshots
        concatenated on the last axis, oldest first (channels 3k..3k+2 = snapshot k).
        K = 1: (N, H, W, 3). Frames must share a size."""
        rgb = np.stack([f.rgb for f in self.frames])  # (N * K, H, W, 3)
        k = self.geometry.subframes
        if k == 1:
            return rgb
        nk, h, w, c = rgb.shape
        return np.ascontiguousarray(rgb.reshape(nk // k, k, h, w, c).transpose(0, 2, 3, 1, 4)).reshape(
            nk // k, h, w, k * c)

    @property
    def frame_sample_times(self) -> Tuple[int, ...]:
        """The N visual-frame instants (each frame's newest snapshot)."""
        p = self.geometry.samples_per_frame
        return tuple(self.start_sample + j * p for j in range(self.geometry.frames_per_window))

    @property
    def snapshot_sample_times(self) -> Tuple[int, ...]:
        """The N * K snapshot instants, slot-major like ``frames``."""
        return _snapshot_times(self.geometry, self.start_sample)


MIN_DEFAULT_HOP_S = 0.128


def default_hop_samples(geometry: WindowGeometry) -> int:
    """The hop used when none is given: whole visual frames, at least ``MIN_DEFAULT_HOP_S``.

    One frame period when that is long enough (``frieren-16k``: 256 ms, ``tiny``: 128 ms),
    else the fewest whole frames reaching 128 ms (64 ms frames: 2), never more than the window.
    """
    p = geometry.samples_per_frame
    frames = max(1, math.ceil(MIN_DEFAULT_HOP_S * geometry.sample_rate / p - 1e-9))
    return min(frames * p, geometry.window_samples)


class FrameWindow:
    """Ring buffer of recent frames that yields the due model windows (see module doc).

    Owned by one thread (the session's); not thread-safe by design (DESIGN §5.4).
    """

    def __init__(self, geometry: WindowGeometry, hop_samples: Optional[int] = None,
                 lookahead_frames: int = 0, capacity: Optional[int] = None) -> None:
        g = geometry
        hop = default_hop_samples(g) if hop_samples is None else int(hop_samples)
        spl = g.samples_per_latent
        if hop <= 0 or hop % spl != 0:
            raise ValueError(
                f"hop_samples={hop} must be a positive multiple of one latent frame "
                f"(samples_per_latent={spl} samples = {spl / g.sample_rate * 1000:g} ms); "
                f"e.g. {spl} (one latent) or {g.samples_per_frame} (one visual frame)")
        if hop > g.window_samples:
            raise ValueError(f"hop_samples={hop} exceeds the window ({g.window_samples} samples)")
        lookahead = int(lookahead_frames)
        if lookahead < 0:
            raise ValueError(f"lookahead_frames must be >= 0, got {lookahead_frames}")
        if hop + lookahead * g.samples_per_frame > g.window_samples:
            max_a = (g.window_samples - hop) // g.samples_per_frame
            raise ValueError(f"lookahead_frames={lookahead} with hop_samples={hop} does not fit in a "
                             f"{g.frames_per_window}-frame window; at most {max_a} for this hop")
        self.geometry = g
        self.hop_samples = hop
        self.lookahead_frames = lookahead
        # Every instant ever sampled is origin + a multiple of grid_step (module doc, Memory):
        # relative to the origin, snapshot k of frame j of window i lies at
        # (i+1)*hop + (A-N+j)*P + subframe_offsets[k]; P and the offsets are multiples of P/K.
        self.grid_step = math.gcd(hop, g.samples_per_frame // g.subframes)
        # A window's snapshots reach (K-1)*P/K samples further back than its frame instants:
        # the K = 1 bound (W // grid_step + slack) grows by that many samples.
        reach = g.window_samples - g.subframe_offsets[0]
        default_cap = reach // self.grid_step + 2 + 32
        self.capacity = default_cap if capacity is None else int(capacity)
        if self.capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity}")
        # The window start relative to its emitted span: S_k = e_k - emit_offset.
        self.emit_offset = g.window_samples - hop - lookahead * g.samples_per_frame
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all frames and restart the emission grid at the next frame."""
        self._times: List[int] = []
        self._frames: List[Frame] = []
        self.origin: Optional[int] = None
        self._next_index = 0
        self.counters: Dict[str, int] = {
            "pushed": 0, "out_of_order": 0, "replaced": 0, "evicted": 0, "pruned": 0,
            "windows": 0, "skipped_windows": 0, "padded_windows": 0}

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def newest_sample(self) -> Optional[int]:
        return self._times[-1] if self._times else None

    @property
    def next_index(self) -> int:
        return self._next_index

    def frame_sample(self, frame: Frame) -> int:
        return pts_to_samples(frame.pts, frame.time_base, self.geometry.sample_rate)

    # ------------------------------------------------------------------ geometry of window k
    def emit_start_of(self, index: int) -> int:
        assert self.origin is not None, "no frame pushed yet"
        return self.origin + index * self.hop_samples

    def start_of(self, index: int) -> int:
        return self.emit_start_of(index) - self.emit_offset

    def last_instant_of(self, index: int) -> int:
        g = self.geometry
        return self.start_of(index) + (g.frames_per_window - 1) * g.samples_per_frame

    # ------------------------------------------------------------------ input
    def push(self, frame: Frame) -> bool:
        """Add a captured frame. Returns False (and counts) if it is older than the newest."""
        t = self.frame_sample(frame)
        self.counters["pushed"] += 1
        if self._times:
            newest = self._times[-1]
            if t < newest:
                self.counters["out_of_order"] += 1
                log.debug("dropping out-of-order frame at sample %d (newest %d)", t, newest)
                return False
            if t == newest:
                self._frames[-1] = frame
                self.counters["replaced"] += 1
                return True
            # Drop the previous newest if no sampling instant (origin + m * grid_step) falls in
            # [t_prev, t): no window can ever pick it. (The origin frame is on the grid: kept.)
            step = self.grid_step
            first_grid = self.origin - ((self.origin - newest) // step) * step  # ceil to grid
            if first_grid >= t:
                self._times.pop()
                self._frames.pop()
                self.counters["pruned"] += 1
        else:
            if self.origin is None:
                self.origin = t
        self._times.append(t)
        self._frames.append(frame)
        if len(self._frames) > self.capacity:
            del self._times[0], self._frames[0]
            self.counters["evicted"] += 1
        return True

    # ------------------------------------------------------------------ output
    def num_due(self, until_sample: Optional[int] = None) -> int:
        """How many windows are due up to ``until_sample`` (default: the newest frame)."""
        if self.origin is None:
            return 0
        until = self._times[-1] if until_sample is None else int(until_sample)
        last = self.last_instant_of(self._next_index)
        if until < last:
            return 0
        return (until - last) // self.hop_samples + 1

    def next_window(self, until_sample: Optional[int] = None) -> Optional[Window]:
        """The next due window, or None."""
        if self.num_due(until_sample) == 0:
            return None
        return self._take()

    def due_windows(self, until_sample: Optional[int] = None,
                    max_windows: Optional[int] = None) -> List[Window]:
        """All windows due up to ``until_sample`` (default: the newest captured frame), oldest
        first. With ``max_windows``, only the newest ``max_windows`` are built; the older due
        ones are skipped and counted (newest wins: their audio spans become a gap)."""
        n = self.num_due(until_sample)
        if max_windows is not None and n > max_windows:
            skip = n - max(0, int(max_windows))
            self._next_index += skip
            self.counters["skipped_windows"] += skip
            n -= skip
        return [self._take() for _ in range(n)]

    def _take(self) -> Window:
        g = self.geometry
        k = self._next_index
        start = self.start_of(k)
        emit = start + self.emit_offset
        frames: List[Frame] = []
        padded = 0
        for i, instant in enumerate(_snapshot_times(g, start)):
            idx = bisect.bisect_right(self._times, instant) - 1
            if idx < 0:  # before every buffered frame: start-up padding
                idx = 0
                # a visual frame is padded when its own instant (its last snapshot) precedes the first frame
                if i % g.subframes == g.subframes - 1 and self._times[0] == self.origin:
                    padded += 1
            frames.append(self._frames[idx])
        ref = max(bisect.bisect_right(self._times, emit) - 1, 0)
        capture_ns = self._frames[ref].capture_ns + _signed_ns(emit - self._times[ref], g.sample_rate)
        window = Window(index=k, frames=tuple(frames), start_sample=start, emit_start=emit,
                        emit_samples=self.hop_samples,
                        latent_start=k * self.hop_samples // g.samples_per_latent,
                        num_padded=padded, capture_ns=capture_ns, geometry=g)
        self._next_index = k + 1
        self.counters["windows"] += 1
        if padded:
            self.counters["padded_windows"] += 1
        self._prune_before(self.start_of(self._next_index) + g.subframe_offsets[0])
        return window

    def _prune_before(self, instant: int) -> None:
        """Drop frames no future window can sample (keep the nearest-earlier one of ``instant``)."""
        idx = bisect.bisect_right(self._times, instant) - 1
        if idx > 0:
            del self._times[:idx], self._frames[:idx]
            self.counters["pruned"] += idx

    def stats(self) -> Dict[str, int]:
        return dict(self.counters, buffered=len(self._frames), next_index=self._next_index)


def _snapshot_times(g: WindowGeometry, start: int) -> Tuple[int, ...]:
    """Snapshot instants of a window starting at ``start``: N * K ints, slot-major."""
    p, offsets = g.samples_per_frame, g.subframe_offsets
    return tuple(start + j * p + off for j in range(g.frames_per_window) for off in offsets)


def _signed_ns(samples: int, sample_rate: int) -> int:
    return samples_to_ns(samples, sample_rate) if samples >= 0 else -samples_to_ns(-samples, sample_rate)
