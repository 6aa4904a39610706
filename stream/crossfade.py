"""Crossfader: joins consecutive hop outputs without clicks (DESIGN §7.4).

Each hop ``k`` hands in ``H + O`` samples starting at ``start_k``: its own ``H``
samples plus ``O = overlap_samples`` samples of *tail*, the window's audio for
the beginning of the next hop. The crossfader outputs exactly ``H`` samples per
hop, ``[start_k, start_k + H)``: the first ``O`` of them blend the previous
hop's tail (fading out) with this hop's head (fading in); the rest pass
unchanged; this hop's tail is kept for the next call. No extra latency is
added: nothing of this hop is held back. (If the model has no audio past the
emitted span, give it the hop's head instead: pass ``start_k - O`` and ``O + H``
samples; output then lags by ``O``.)

Curves: ``equal_power`` (default; ``cos``/``sin`` gains whose squares sum to 1:
constant power for *uncorrelated* overlapping signals) or ``linear`` (gains sum
to 1: constant amplitude for *identical* signals). With the noise tape the
overlapping windows are largely correlated, where equal-power can bulge up to
+3 dB mid-fade; ``linear`` is there to compare (DESIGN §6 "seams").

A hop whose ``start_sample`` does not follow the previous one (a dropped
window) resets the fade: it is passed through as is and counted in
``discontinuities``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

CURVES = ("equal_power", "linear")


def fade_gains(overlap: int, curve: str = "equal_power") -> Tuple[np.ndarray, np.ndarray]:
    """(fade_out, fade_in) gains of length ``overlap``, float32, sampled at bin centres."""
    x = (np.arange(overlap, dtype=np.float64) + 0.5) / max(overlap, 1)
    if curve == "equal_power":
        fade_in, fade_out = np.sin(0.5 * np.pi * x), np.cos(0.5 * np.pi * x)
    elif curve == "linear":
        fade_in, fade_out = x, 1.0 - x
    else:
        raise ValueError(f"unknown crossfade curve {curve!r}; choose one of {CURVES}")
    return fade_out.astype(np.float32), fade_in.astype(np.float32)


class Crossfader:
    """Stateful hop joiner (one per stream, owned by one thread)."""

    def __init__(self, sample_rate: int, overlap_samples: int, curve: str = "equal_power") -> None:
        if overlap_samples < 0:
            raise ValueError(f"overlap_samples must be >= 0, got {overlap_samples}")
        self.sample_rate = int(sample_rate)
        self.overlap = int(overlap_samples)
        self.curve = curve
        self._out, self._in = fade_gains(self.overlap, curve)
        self.reset()

    def reset(self) -> None:
        self._tail: Optional[np.ndarray] = None
        self._next_start: Optional[int] = None
        self.hops = 0
        self.samples_out = 0
        self.discontinuities = 0

    @property
    def next_start(self) -> Optional[int]:
        """Sample at which the next hop is expected to start."""
        return self._next_start

    def process(self, start_sample: int, audio: np.ndarray) -> Tuple[int, np.ndarray]:
        """Join one hop. ``audio`` is (H + O,) or (H + O, C) float; returns (start_sample, (H[, C]))."""
        audio = np.asarray(audio, dtype=np.float32)
        o = self.overlap
        if audio.ndim not in (1, 2) or audio.shape[0] <= o:
            raise ValueError(f"crossfader input must be (H + overlap[, C]) with H > 0 and overlap={o}, "
                             f"got shape {audio.shape}")
        hop = audio.shape[0] - o
        start = int(start_sample)
        tail = self._tail
        if tail is not None and (start != self._next_start or tail.shape[1:] != audio.shape[1:]):
            self.discontinuities += 1
            tail = None
        out = audio[:hop].copy()
        if hop < o:
            raise ValueError(f"hop of {hop} samples is shorter than the crossfade overlap ({o}); "
                             f"use an overlap <= the hop")
        if tail is not None and o:
            g_out, g_in = self._out, self._in
            if audio.ndim == 2:
                g_out, g_in = g_out[:, None], g_in[:, None]
            out[:o] = tail * g_out + audio[:o] * g_in
        self._tail = audio[hop:].copy() if o else np.zeros((0,) + audio.shape[1:], np.float32)
        self._next_start = start + hop
        self.hops += 1
        self.samples_out += hop
        return start, out

    def flush(self) -> Tuple[Optional[int], np.ndarray]:
        """End of stream: the pending tail (``O`` samples after the last hop), then reset."""
        start, tail = self._next_start, self._tail
        hops, out, disc = self.hops, self.samples_out, self.discontinuities
        self.reset()
        self.hops, self.samples_out, self.discontinuities = hops, out, disc
        if tail is None:
            return None, np.zeros((0,), np.float32)
        return start, tail
