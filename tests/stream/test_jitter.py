"""PlayoutBuffer policies on scripted arrival schedules (explicit clocks, no waiting)."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import pytest

from stream.jitter import JitterConfig, PlayoutBuffer

RATE, N = 48000, 960                 # 20 ms frames at 48 kHz
MS = 1_000_000


def drive(buf: PlayoutBuffer, chunks: Iterable[Tuple[int, int, np.ndarray]], end_ms: float,
          phase_ms: float = 7.0) -> List[np.ndarray]:
    """chunks: (arrival_ns, capture_ns, pcm) in arrival order; reads a frame every 20 ms."""
    chunks = list(chunks)
    out, i, t = [], 0, int(phase_ms * MS)
    while t < end_ms * MS:
        while i < len(chunks) and chunks[i][0] <= t:
            buf.push(chunks[i][2], chunks[i][1], t)
            i += 1
        out.append(buf.read(t))
        t += 20 * MS
    return out


def schedule(hop_ms: float, seconds: float, delay_ms, skip: Optional[set] = None,
             value: float = 0.5) -> List[Tuple[int, int, np.ndarray]]:
    """One chunk per hop whose first sample was captured at k*hop, arriving delay_ms(k) later."""
    hop = int(hop_ms * RATE / 1000)
    chunks, last = [], 0
    for k in range(int(seconds * 1000 / hop_ms)):
        if skip and k in skip:
            continue
        cap = int(k * hop_ms * MS)
        arrive = max(cap + int(delay_ms(k) * MS), last)    # the worker delivers in order
        last = arrive
        chunks.append((arrive, cap, np.full(hop, value, np.float32)))
    return chunks


def test_adaptive_settles_near_the_arrival_delay_without_underruns():
    buf = PlayoutBuffer(RATE, N, JitterConfig())
    jitter = np.random.default_rng(0).uniform(0, 33, 10_000)     # when the closing frame came
    drive(buf, schedule(128, 40, lambda k: 10 + jitter[k]), 40_000)
    assert buf.underruns == 0
    lat = np.array(list(buf.latency_ms)[-100:])                   # the last 2 s
    # arrivals (<= 43 ms, seen on the 20 ms read grid) + margin + trimming slack and step;
    # the start cushion has been released
    c = buf.config
    assert lat.max() <= 43 + 20 + c.margin_ms + c.slack_ms + c.max_skip_ms, lat.max()
    assert buf.skipped_samples > 0                                # it got there by trimming

    fixed = PlayoutBuffer(RATE, N, JitterConfig(mode="fixed", prebuffer_ms=200))
    drive(fixed, schedule(128, 40, lambda k: 10 + jitter[k]), 40_000)
    assert np.median(list(fixed.latency_ms)) > np.median(lat) + 50


def test_underrun_grows_the_delay_and_a_repeat_is_absorbed():
    buf = PlayoutBuffer(RATE, N, JitterConfig())
    late = {40, 60}                                               # 5.1 s and 7.7 s: 250 ms late
    drive(buf, schedule(128, 12, lambda k: 250 if k in late else 20), 12_000)
    assert buf.underruns == 1                                     # the second spike is covered
    assert buf.target_delay_ms(12_000 * MS) >= 250 + 30
    assert min(list(buf.latency_ms)[-50:]) >= 250                 # played at the grown delay


def test_envelope_releases_slowly_after_its_hold():
    cfg = JitterConfig(hold_s=2.0, release_ms_per_s=10.0, start_cushion_ms=0.0, warmup_s=0.0)
    buf = PlayoutBuffer(RATE, N, cfg)
    buf.push(np.zeros(100, np.float32), 0, 200 * MS)              # 200 ms arrival delay
    d0 = buf.target_delay_ms(200 * MS)
    assert d0 == pytest.approx(200 + cfg.margin_ms)
    assert buf.target_delay_ms(2_000 * MS) == pytest.approx(d0)                   # held
    assert buf.target_delay_ms(5_200 * MS) == pytest.approx(d0 - 30, abs=1e-6)    # 3 s at 10 ms/s


def test_a_dropped_window_waits_in_silence_and_keeps_sync():
    # D (~100 ms) > delay + hop: the chunk after the hole is already waiting when it comes
    buf = PlayoutBuffer(RATE, N, JitterConfig(resync_ms=20, start_cushion_ms=0.0, margin_ms=60.0))
    frames = drive(buf, schedule(32, 6, lambda k: 15, skip={100}), 6_000)
    assert buf.resyncs == 1 and buf.underruns == 0
    lat = np.array(buf.latency_ms)
    assert np.ptp(lat[-60:]) < 2.0                                 # the same delay after the hole
    loud = np.array([np.abs(f).mean() > 0.25 for f in frames])
    first = int(np.argmax(loud))
    assert (~loud[first:-2]).sum() in (1, 2)                      # ~one hop (32 ms) of silence


def test_trimming_is_bounded_and_crossfaded():
    cfg = JitterConfig(start_cushion_ms=300.0, hold_s=0.0, release_ms_per_s=1000.0)
    buf = PlayoutBuffer(RATE, N, cfg)
    t = np.arange(RATE * 4) / RATE
    sine = (0.5 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    hop = int(0.128 * RATE)
    chunks = [(int((k * 128 + 20) * MS), int(k * 128 * MS), sine[k * hop:(k + 1) * hop])
              for k in range(len(sine) // hop)]
    out = np.concatenate(drive(buf, chunks, 4_000))
    assert buf.skipped_samples > 0
    assert buf.skipped_samples <= len(out) // N * int(cfg.max_skip_ms * RATE / 1000)
    played = out[np.flatnonzero(np.abs(out) > 0)[0]:]
    # a 50 Hz sine moves <= 0.0033 per sample; a cut without the fade could jump up to 1.0
    assert np.abs(np.diff(played[:-N])).max() < 0.03


def test_buffer_is_bounded_in_both_modes():
    for mode in ("fixed", "adaptive"):
        buf = PlayoutBuffer(RATE, N, JitterConfig(mode=mode, max_buffer_ms=300))
        buf.push(np.ones(RATE, np.float32), 0, 0)
        assert buf.buffered <= 0.3 * RATE
        # before the first start (adaptive: the warm-up) the excess is stale, not an overflow
        assert (buf.overflow_samples if mode == "fixed" else buf.stale_samples) == RATE - buf.buffered


def test_bad_mode_fails_loudly():
    from stream.serve_config import ServerConfig

    with pytest.raises(ValueError, match="jitter mode"):
        JitterConfig(mode="elastic")
    with pytest.raises(ValueError, match="jitter mode"):
        ServerConfig(jitter="elastic")
    stats: Dict[str, object] = PlayoutBuffer(RATE, N, JitterConfig()).stats(0)
    assert stats["egress_latency_p50_ms"] is None and stats["underruns"] == 0
