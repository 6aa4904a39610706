"""Integer time arithmetic and the monotonic AudioClock."""
from fractions import Fraction

import pytest

from stream.clock import (AudioClock, ns_to_samples, pts_to_samples, rescale, resample_index,
                          samples_to_ns, samples_to_pts)


def test_pts_to_samples_exact_for_ntsc():
    tb = Fraction(1, 30000)  # 29.97 fps: pts step 1001
    for n in range(0, 10_000, 7):
        pts = n * 1001
        assert pts_to_samples(pts, tb, 16000) == (pts * 16000) // 30000
    # one hour of frames: still exact integers, no float drift
    pts = 107_892 * 1001
    assert pts_to_samples(pts, tb, 48000) == pts * 48000 // 30000


def test_roundings_and_inverse():
    assert rescale(1, Fraction(1, 3), Fraction(1, 2), "floor") == 0
    assert rescale(1, Fraction(1, 3), Fraction(1, 2), "ceil") == 1
    assert rescale(1, Fraction(1, 3), Fraction(1, 2), "nearest") == 1
    with pytest.raises(ValueError, match="rounding"):
        rescale(1, 1, 1, "sideways")
    for s in (0, 1, 511, 16000, 123456789):
        pts = samples_to_pts(s, 16000, Fraction(1, 90000), "ceil")
        assert pts_to_samples(pts, Fraction(1, 90000), 16000) == s
    assert ns_to_samples(1_000_000_000, 16000) == 16000
    assert samples_to_ns(16000, 16000) == 1_000_000_000
    assert samples_to_ns(1, 48000) == 20833
    assert resample_index(16000, 16000, 44100) == 44100
    assert isinstance(pts_to_samples(3, Fraction(1, 7), 16000), int)


class FakeClock:
    def __init__(self, t=10**12):
        self.t = t

    def __call__(self):
        return self.t


def test_audio_clock_has_no_drift():
    fake = FakeClock()
    clock = AudioClock(48000, start_sample=100, clock=fake)
    assert clock.now_samples() == 100
    # a thousand irregular steps of ~1/3 ms: the sample count follows the ns total exactly
    total = 0
    for i in range(1000):
        step = 333_333 + (i % 3)
        fake.t += step
        total += step
    assert clock.now_samples() == 100 + total * 48000 // 10**9
    assert clock.ns_at(clock.now_samples()) <= fake.t
    assert clock.sample_at(clock.start_ns - 10**9) == 100 - 48000


def test_audio_clock_wait_until_sample_respects_stop():
    import threading
    clock = AudioClock(16000)
    stop = threading.Event()
    stop.set()
    assert clock.wait_until_sample(clock.now_samples() + 16000 * 60, stop) is False
    assert clock.wait_until_sample(clock.now_samples() - 1) is True
    with pytest.raises(ValueError):
        AudioClock(0)
