"""Integer time arithmetic: pts/time_base <-> samples <-> monotonic nanoseconds.

All conversions go through :class:`fractions.Fraction` and end in an explicit
rounding mode, so no float error ever accumulates (DESIGN §3.5). The default
rounding is ``floor``: a sample index is "the sample at or before this instant",
which is what nearest-earlier frame sampling needs.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Callable, Optional, Union

NS_PER_S = 1_000_000_000
Rational = Union[int, Fraction]

_ROUNDINGS = ("floor", "ceil", "nearest")


def _round(x: Fraction, rounding: str) -> int:
    if rounding == "floor":
        return math.floor(x)
    if rounding == "ceil":
        return math.ceil(x)
    if rounding == "nearest":  # half away from zero is irrelevant here; ties go up
        return math.floor(x + Fraction(1, 2))
    raise ValueError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}")


def rescale(value: int, from_base: Rational, to_base: Rational, rounding: str = "floor") -> int:
    """Express ``value`` units of ``from_base`` seconds in units of ``to_base`` seconds."""
    return _round(Fraction(value) * Fraction(from_base) / Fraction(to_base), rounding)


def pts_to_samples(pts: int, time_base: Rational, sample_rate: int, rounding: str = "floor") -> int:
    """Sample index (at ``sample_rate``) of the instant ``pts * time_base`` seconds."""
    return _round(Fraction(pts) * Fraction(time_base) * sample_rate, rounding)


def samples_to_pts(samples: int, sample_rate: int, time_base: Rational, rounding: str = "floor") -> int:
    """pts (in ``time_base`` units) of the instant ``samples / sample_rate`` seconds."""
    return _round(Fraction(samples, sample_rate) / Fraction(time_base), rounding)


def ns_to_samples(ns: int, sample_rate: int, rounding: str = "floor") -> int:
    """Whole samples elapsed in ``ns`` nanoseconds."""
    return _round(Fraction(ns * sample_rate, NS_PER_S), rounding)


def samples_to_ns(samples: int, sample_rate: int, rounding: str = "floor") -> int:
    """Nanoseconds spanned by ``samples`` samples."""
    return _round(Fraction(samples * NS_PER_S, sample_rate), rounding)


def resample_index(samples: int, from_rate: int, to_rate: int, rounding: str = "floor") -> int:
    """The same instant expressed as a sample index at another rate."""
    return _round(Fraction(samples * to_rate, from_rate), rounding)


class AudioClock:
    """A sample counter driven by the monotonic clock.

    ``now_samples()`` is ``start_sample`` plus the whole samples elapsed since
    ``start_ns``, computed from integer nanoseconds every time (never by adding
    up float periods), so it cannot drift from the monotonic clock.

    ``clock`` is injectable (a function returning integer ns) for tests.
    """

    def __init__(self, sample_rate: int, start_sample: int = 0, start_ns: Optional[int] = None,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        self._clock = clock
        self.start_sample = int(start_sample)
        self.start_ns = int(clock() if start_ns is None else start_ns)

    def now_ns(self) -> int:
        return int(self._clock())

    def now_samples(self) -> int:
        """Index of the sample playing "now" (floor)."""
        return self.sample_at(self.now_ns())

    def sample_at(self, ns: int) -> int:
        """Sample index at monotonic instant ``ns`` (floor; negative offsets allowed)."""
        return self.start_sample + ns_to_samples(int(ns) - self.start_ns, self.sample_rate)

    def ns_at(self, sample: int) -> int:
        """Monotonic instant (ns, floor) at which ``sample`` is due."""
        return self.start_ns + samples_to_ns(int(sample) - self.start_sample, self.sample_rate)

    def wait_until_sample(self, sample: int, stop_event=None) -> bool:
        """Sleep until ``sample`` is due; returns False if ``stop_event`` was set first."""
        while True:
            remaining = self.ns_at(sample) - self.now_ns()
            if remaining <= 0:
                return True
            if stop_event is not None:
                if stop_event.wait(remaining / NS_PER_S):
                    return False
            else:
                time.sleep(remaining / NS_PER_S)

    def reset(self, start_sample: int = 0, start_ns: Optional[int] = None) -> None:
        self.start_sample = int(start_sample)
        self.start_ns = int(self._clock() if start_ns is None else start_ns)

    def __repr__(self) -> str:
        return f"AudioClock(sample_rate={self.sample_rate}, start_sample={self.start_sample}, start_ns={self.start_ns})"
