"""Playout (jitter) buffer of the WebRTC audio track: generated audio in, 20 ms frames out.

Audio arrives in bursts (one hop per generated window, late by the processing time and by
when the video frame that closed the hop arrived) and leaves on a steady sample clock.
Every segment carries the capture instant of its first sample, so the buffer knows, for the
sample it is about to play, the **egress latency** ``now - capture`` (DESIGN §6: glass-to-ear
at the server's output).

Two policies (:class:`JitterConfig`):

``fixed``     the level policy: collect ``prebuffer_ms`` of audio, then play; on an underrun,
              play silence and collect ``prebuffer_ms`` again. Latency ratchets up with every
              underrun and only the ``max_buffer_ms`` bound brings it down.
``adaptive``  the delay policy: play each sample at ``capture + D``. ``D`` is a peak envelope
              of the arrival delays (how late a chunk's first sample reached the buffer):
              it jumps up to any new arrival delay at once, holds for ``hold_s``, then
              falls by ``release_ms_per_s`` (shrinks slowly when stable); every underrun
              adds ``grow_ms`` on top. A cushion (``start_cushion_ms`` fading to 0 over
              ``cushion_s`` after the warm-up) covers the first seconds, when few delays
              have been seen and new maxima are frequent. A
              margin for delays not seen yet is added: ``margin_ms`` or ``jitter_margin``
              mean absolute deviations of the arrival delays, whichever is larger (heavy
              jitter has a long tail of new maxima); the result is bounded by
              ``min_delay_ms``/``max_delay_ms``. Arrival delays are taken when a frame is
              read (the read grid), so a chunk that arrived ``a`` late is in time for any
              playout delay >= ``a``: the 20 ms read quantum needs no extra margin.
              (Re)starting waits until the head is ``D`` old, dropping anything older. The
              first ``warmup_s`` after the first arrival are a warm-up: its delays (a new
              session's first windows are slow) are not counted and nothing plays, so
              ``D`` starts from the stream's steady delays, not its start-up transient;
              while playing, a latency above ``D + slack_ms`` is trimmed by at most
              ``max_skip_ms`` per frame, hidden by a short crossfade; a head that comes
              ``resync_ms`` earlier than the frame before it (a dropped window left a
              hole) waits in silence instead of playing early, which keeps the sound in
              sync with the picture. A rise of ``D`` while playing takes effect at the next
              (re)start: stretching audio to raise the delay would itself be audible.

Pure numpy; one thread (the event loop) owns it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Optional

import numpy as np

NS_PER_S = 1_000_000_000
MODES = ("fixed", "adaptive")


@dataclass(frozen=True)
class JitterConfig:
    """See the module docstring. All times in ms unless named ``_s``."""
    mode: str = "adaptive"
    prebuffer_ms: float = 200.0         # fixed: level collected before playing (again)
    max_buffer_ms: float = 600.0        # both: bound on buffered audio (oldest dropped)
    min_delay_ms: float = 40.0          # adaptive: bounds of the target delay D
    max_delay_ms: float = 1000.0
    margin_ms: float = 20.0             # over the arrival-delay envelope
    hold_s: float = 20.0                # the envelope holds a peak this long...
    release_ms_per_s: float = 5.0       # ...then falls this fast
    grow_ms: float = 20.0               # added to the envelope per underrun
    jitter_margin: float = 3.0          # margin is at least this many mean abs. deviations
    start_cushion_ms: float = 80.0      # extra delay after the warm-up (few delays seen yet)...
    cushion_s: float = 8.0              # ...fading linearly to 0 over this long
    warmup_s: float = 1.0               # first arrivals not counted, no sound before its end
    slack_ms: float = 10.0              # latency above D + slack is trimmed
    max_skip_ms: float = 2.5            # most audio skipped per frame (12.5 % of 20 ms)
    crossfade_ms: float = 2.5           # length of the crossfade over a skip
    resync_ms: float = 60.0             # head this much earlier than the last frame waits

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"jitter mode must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.min_delay_ms <= self.max_delay_ms:
            raise ValueError("need 0 < min_delay_ms <= max_delay_ms")


class PlayoutBuffer:
    """Segments of float32 mono audio at ``rate`` -> ``read(now_ns)`` frames of ``frame_samples``."""

    def __init__(self, rate: int, frame_samples: int, config: JitterConfig = JitterConfig()) -> None:
        self.rate = int(rate)
        self.n = int(frame_samples)
        self.config = c = config
        self.prebuffer = int(c.prebuffer_ms * rate / 1000)
        floor = (self.prebuffer if c.mode == "fixed" else 0) + self.n
        self.max_buffer = max(int(c.max_buffer_ms * rate / 1000), floor)
        self._segs: Deque[list] = deque()        # [pcm, capture_ns, offset]
        self.buffered = 0
        self.playing = False
        self._peak_ms: Optional[float] = None    # arrival-delay envelope at _peak_ns
        self._peak_ns = 0
        self._mean_ms: Optional[float] = None    # running mean / mean absolute deviation
        self._dev_ms = 0.0                       # of the arrival delays
        self._prev_lat: Optional[float] = None    # head latency of the last frame played
        self._first_ns: Optional[int] = None     # first arrival (start of the warm-up)
        self._xf = max(1, int(c.crossfade_ms * rate / 1000))
        self.latency_ms: Deque[float] = deque(maxlen=500)    # per played frame (10 s)
        self.underruns = 0            # ran dry while playing
        self.silent_frames = 0
        self.overflow_samples = 0
        self.skipped_samples = 0      # trimmed to bring the latency down (adaptive)
        self.stale_samples = 0        # older than D when (re)starting, dropped (adaptive)
        self._started = False
        self.resyncs = 0              # early head waited for (adaptive)

    # ------------------------------------------------------------------ in
    def push(self, pcm: np.ndarray, capture_ns: int, now_ns: int) -> None:
        """Append ``pcm`` (float32 (N,)) whose first sample was captured at ``capture_ns``."""
        if pcm.shape[0] == 0:
            return
        self._segs.append([pcm, int(capture_ns), 0])
        self.buffered += pcm.shape[0]
        excess = self.buffered - self.max_buffer
        if excess > 0:
            n = self._drop(excess)
            if self._started or self.config.mode == "fixed":
                self.overflow_samples += n
            else:
                self.stale_samples += n       # warming up: expected, not an overflow
        if self._first_ns is None:
            self._first_ns = now_ns
        if now_ns - self._first_ns >= self.config.warmup_s * NS_PER_S:
            self._observe((now_ns - capture_ns) / 1e6, now_ns)

    def _observe(self, delay: float, now_ns: int) -> None:
        """One arrival delay (ms): running mean / mean absolute deviation, and the envelope."""
        if self._mean_ms is None:
            self._mean_ms = delay
        else:
            self._dev_ms += 0.05 * (abs(delay - self._mean_ms) - self._dev_ms)
            self._mean_ms += 0.05 * (delay - self._mean_ms)
        self._raise(delay, now_ns)

    def _drop(self, k: int) -> int:
        dropped = 0
        while k > 0 and self._segs:
            seg = self._segs[0]
            m = min(k, seg[0].shape[0] - seg[2])
            seg[2] += m
            k -= m
            dropped += m
            if seg[2] >= seg[0].shape[0]:
                self._segs.popleft()
        self.buffered -= dropped
        return dropped

    # ------------------------------------------------------------------ target delay
    def _head_latency_ms(self, now_ns: int) -> Optional[float]:
        if not self._segs:
            return None
        pcm, cap, off = self._segs[0]
        return (now_ns - cap - off * NS_PER_S // self.rate) / 1e6

    def _envelope(self, now_ns: int) -> float:
        if self._peak_ms is None:
            return 0.0
        c = self.config
        released = max(0.0, (now_ns - self._peak_ns) / NS_PER_S - c.hold_s) * c.release_ms_per_s
        return max(self._peak_ms - released, 0.0)

    def _cushion(self, now_ns: int) -> float:
        c = self.config
        if self._first_ns is None or c.cushion_s <= 0:
            return 0.0
        t = (now_ns - self._first_ns) / NS_PER_S - c.warmup_s
        return c.start_cushion_ms * min(max(1.0 - t / c.cushion_s, 0.0), 1.0)

    def _raise(self, value_ms: float, now_ns: int) -> None:
        if value_ms >= self._envelope(now_ns):
            self._peak_ms, self._peak_ns = value_ms, now_ns

    def target_delay_ms(self, now_ns: int) -> float:
        """D: the adaptive policy's playout delay (capture -> leaving the track)."""
        c = self.config
        margin = max(c.margin_ms, c.jitter_margin * self._dev_ms)
        d = self._envelope(now_ns) + self._cushion(now_ns) + margin
        return min(max(d, c.min_delay_ms), c.max_delay_ms)

    # ------------------------------------------------------------------ out
    def read(self, now_ns: int) -> np.ndarray:
        """One frame (float32 (n,)): audio, or silence (counted) when there is none to play."""
        if self.config.mode == "fixed":
            return self._read_fixed(now_ns)
        return self._read_adaptive(now_ns)

    def _read_fixed(self, now_ns: int) -> np.ndarray:
        n = self.n
        if not self.playing and self.buffered >= max(self.prebuffer, n):
            self.playing = True
        if self.playing and self.buffered >= n:
            return self._take(n, now_ns)
        if self.playing:                      # ran dry: play what is left, then re-buffer
            pcm = self._take(n, now_ns)
            self.playing = False
            self.underruns += 1
        else:
            pcm = np.zeros(n, np.float32)
        self.silent_frames += 1
        return pcm

    def _read_adaptive(self, now_ns: int) -> np.ndarray:
        c, n = self.config, self.n
        d = self.target_delay_ms(now_ns)
        lat = self._head_latency_ms(now_ns)
        if lat is not None and lat > d:       # stale head: drop down to D (start) or trim (playing)
            excess = int((lat - d) * self.rate / 1000)
            if not self.playing:
                self.stale_samples += self._drop(min(excess, max(self.buffered - n, 0)))
            elif lat > d + c.slack_ms and self.buffered > n:
                return self._take_skipping(min(excess, int(c.max_skip_ms * self.rate / 1000)), now_ns)
            lat = self._head_latency_ms(now_ns)
        if (self.playing and lat is not None and self._prev_lat is not None
                and self._prev_lat - lat > c.resync_ms and lat < d - c.slack_ms):
            self.playing = False              # a hole (dropped window): wait, don't play early
            self.resyncs += 1
        if not self.playing:
            if (lat is None or lat < d or self.buffered < n
                    or self._peak_ms is None):              # still warming up
                self.silent_frames += 1
                return np.zeros(n, np.float32)
            self.playing = self._started = True
        if self.buffered >= n:
            return self._take(n, now_ns)
        pcm = self._take(n, now_ns)           # ran dry: what is left, then wait for D again
        self.playing = False
        self.underruns += 1
        self.silent_frames += 1
        self._raise(min(self._envelope(now_ns) + c.grow_ms, c.max_delay_ms), now_ns)
        return pcm

    def _take(self, n: int, now_ns: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        lat = self._head_latency_ms(now_ns)
        if lat is not None:
            self.latency_ms.append(lat)
            self._prev_lat = lat
        pos = 0
        while pos < n and self._segs:
            seg = self._segs[0]
            pcm, _, off = seg
            k = min(n - pos, pcm.shape[0] - off)
            out[pos:pos + k] = pcm[off:off + k]
            seg[2] += k
            pos += k
            if seg[2] >= pcm.shape[0]:
                self._segs.popleft()
        self.buffered -= pos
        return out

    def _take_skipping(self, skip: int, now_ns: int) -> np.ndarray:
        """A frame with ``skip`` samples cut out of its middle, crossfaded over ``_xf`` samples."""
        n, L = self.n, self._xf
        skip = min(skip, max(self.buffered - n, 0))
        if skip <= 0:
            return self._take(n, now_ns)
        x = self._take(n + skip, now_ns)
        m = (n - L) // 2
        w = np.linspace(0.0, np.pi / 2, L, dtype=np.float32)      # equal-power (cos/sin) fade
        mid = x[m:m + L] * np.cos(w) + x[m + skip:m + skip + L] * np.sin(w)
        self.skipped_samples += skip
        return np.concatenate([x[:m], mid, x[m + skip + L:]])

    # ------------------------------------------------------------------ stats
    def stats(self, now_ns: int) -> Dict[str, object]:
        lat = list(self.latency_ms)
        ms = 1000.0 / self.rate
        return {
            "jitter_mode": self.config.mode,
            "buffer_ms": self.buffered * ms,
            "target_delay_ms": self.target_delay_ms(now_ns) if self.config.mode == "adaptive" else None,
            "underruns": self.underruns, "silent_frames": self.silent_frames,
            "overflow_ms": self.overflow_samples * ms, "skipped_ms": self.skipped_samples * ms,
            "stale_dropped_ms": self.stale_samples * ms,
            "resyncs": self.resyncs,
            "egress_latency_p50_ms": float(np.percentile(lat, 50)) if lat else None,
            "egress_latency_p95_ms": float(np.percentile(lat, 95)) if lat else None,
            "egress_latency_max_ms": float(np.max(lat)) if lat else None,
        }
