"""Streaming sample-rate conversion that keeps its filter state across chunks.

Built on PyAV's ``AudioResampler`` (libswresample), one mono resampler per
channel so any channel count works. Feeding a signal in arbitrary chunk sizes
yields the same continuous output as feeding it at once (no clicks at chunk
joins); the filter adds a small constant delay (a few dozen output samples).
"""
from __future__ import annotations

from fractions import Fraction
from typing import List, Optional

import numpy as np


class StreamingResampler:
    """``process((N[, C]) float32) -> (M[, C]) float32``; ``flush()`` at the end of stream.

    With ``in_rate == out_rate`` it is a pass-through (no filter, no delay).
    """

    def __init__(self, in_rate: int, out_rate: int, channels: int = 1) -> None:
        if in_rate <= 0 or out_rate <= 0 or channels <= 0:
            raise ValueError(f"bad resampler config in_rate={in_rate} out_rate={out_rate} channels={channels}")
        self.in_rate, self.out_rate, self.channels = int(in_rate), int(out_rate), int(channels)
        self.samples_in = 0
        self.samples_out = 0
        self._res: Optional[List] = None
        if self.in_rate != self.out_rate:
            self._make()

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    @property
    def ratio(self) -> Fraction:
        return Fraction(self.out_rate, self.in_rate)

    def _make(self) -> None:
        import av
        self._res = [av.AudioResampler(format="flt", layout="mono", rate=self.out_rate)
                     for _ in range(self.channels)]

    def _run(self, per_channel_frames) -> np.ndarray:
        outs = []
        for res, frame in zip(self._res, per_channel_frames):
            parts = [f.to_ndarray().reshape(-1) for f in res.resample(frame)]
            outs.append(np.concatenate(parts) if parts else np.zeros(0, np.float32))
        n = min(len(o) for o in outs)  # channels advance in lockstep; guard anyway
        return np.stack([o[:n] for o in outs], axis=1).astype(np.float32, copy=False)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        x = np.asarray(pcm, dtype=np.float32)
        mono = x.ndim == 1
        x2 = x[:, None] if mono else x
        if x2.shape[1] != self.channels:
            raise ValueError(f"resampler built for {self.channels} channel(s), got shape {x.shape}")
        self.samples_in += x2.shape[0]
        if self.passthrough or x2.shape[0] == 0:
            out = x2.copy() if self.passthrough else np.zeros((0, self.channels), np.float32)
        else:
            import av
            frames = []
            for c in range(self.channels):
                f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x2[:, c])[None, :], format="flt", layout="mono")
                f.sample_rate = self.in_rate
                frames.append(f)
            out = self._run(frames)
        self.samples_out += out.shape[0]
        return out[:, 0].copy() if mono else out

    def flush(self, mono: bool = True) -> np.ndarray:
        """Drain the filter's delay line and start afresh."""
        if self.passthrough or self._res is None:
            out = np.zeros((0, self.channels), np.float32)
        else:
            out = self._run([None] * self.channels)
            self._make()
        self.samples_out += out.shape[0]
        return out[:, 0] if (mono and self.channels == 1) else out

    def reset(self) -> None:
        """Drop the filter state (e.g. after a discontinuity) without draining it."""
        if not self.passthrough:
            self._make()
