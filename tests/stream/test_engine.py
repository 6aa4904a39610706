"""Engine, worker scheduling and the synthetic source (fast; no wall-time pass/fail)."""
from __future__ import annotations

import threading
import time
import wave
from fractions import Fraction

import numpy as np
import pytest
import torch

from frieren.config import get_preset
from frieren.pipeline import GenerateOptions, OfflineGenerator
from frieren.streaming import BatchAudio, WindowJob
from stream.engine import CollectSink, Engine, PlayoutMeter
from stream.messages import Frame
from stream.session import SessionConfig
from stream.sinks.wav import WavSink
from stream.sources.base import Source
from stream.sources.synthetic import SyntheticSource
from stream.worker import GenerationWorker


@pytest.fixture(scope="module")
def tiny_stack():
    from frieren.bundles import load_model
    stack, _ = load_model(preset="tiny", random_init=True, seed=0)
    return stack


class FrameListSource(Source):
    """Frames from a list, not paced (realtime=False: the engine applies back-pressure)."""
    realtime = False

    def __init__(self, frames):
        super().__init__("list")
        self._frames = frames

    def iter_frames(self, stop=None):
        for f in self._frames:
            if stop is not None and stop.is_set():
                return
            yield f


def _wait(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


# ---------------------------------------------------------------------- streaming == offline
def test_hop_equal_window_streaming_equals_offline(tiny_stack):
    g = tiny_stack.preset.geometry
    S = tiny_stack.preset.cavp.image_size
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(g.frames_per_window, S, S, 3), dtype=np.uint8)
    # Frames exactly on the audio clock: pts j at j * samples_per_frame samples.
    tb = Fraction(g.samples_per_frame, g.sample_rate)
    frames = [Frame(pts=j, time_base=tb, rgb=rgb[j], capture_ns=time.monotonic_ns())
              for j in range(g.frames_per_window)]
    seed = 5
    engine = Engine(tiny_stack, warmup=False)
    col = CollectSink()
    cfg = SessionConfig(hop_samples=g.window_samples, crossfade_samples=0, seed=seed)
    h = engine.add_session(FrameListSource(frames), [col], cfg)
    assert h.done.wait(60)
    engine.stop()
    assert len(col.chunks) == 1
    chunk = col.chunks[0]
    assert chunk.start_sample == 0 and chunk.num_samples == g.window_samples

    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div(255.0)
    off = OfflineGenerator(tiny_stack).generate_frames(x, g.window_samples,
                                                       GenerateOptions(seed=seed, progress=False))
    np.testing.assert_allclose(np.clip(chunk.pcm, -1, 1), off.audio, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- worker scheduling
class _GatedGen:
    geometry = get_preset("tiny").geometry
    image_size = 64
    noise_channels = 8

    def __init__(self):
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls = []

    def run(self, jobs):
        self.calls.append(len(jobs))
        self.started.set()
        assert self.gate.wait(10)
        return BatchAudio(audio=[torch.zeros(j.emit_length) for j in jobs], stage_s={"total": 0.0})


class _FakeSession:
    def __init__(self, sid):
        self.session_id = sid
        self.dropped = 0
        self.delivered = []

    def count_dropped(self, n):
        self.dropped += n

    def deliver(self, window, audio, timings):
        self.delivered.append((window, timings["batch_size"]))


def _job():
    return WindowJob(frames=torch.zeros(1), noise=torch.zeros(1), emit_start=0, emit_length=4)


def _blocked_worker():
    gen = _GatedGen()
    worker = GenerationWorker(gen, max_batch=8).start(warmup=False)
    blocker = _FakeSession("blocker")
    worker.submit(blocker, "b0", _job())
    assert gen.started.wait(5)          # the worker is now inside run(), blocked
    return gen, worker, blocker


def test_worker_newest_window_wins():
    gen, worker, blocker = _blocked_worker()
    try:
        a = _FakeSession("a")
        for w in ("w1", "w2", "w3"):
            worker.submit(a, w, _job())
        gen.gate.set()
        _wait(lambda: len(a.delivered) == 1)
        time.sleep(0.05)
        assert [w for w, _ in a.delivered] == ["w3"]
        assert a.dropped == 2 and worker.dropped == 2
        assert gen.calls == [1, 1]
    finally:
        gen.gate.set()
        worker.stop()


def test_worker_batches_across_sessions():
    gen, worker, blocker = _blocked_worker()
    try:
        sessions = [_FakeSession(f"s{i}") for i in range(3)]
        for s in sessions:
            worker.submit(s, f"{s.session_id}-w", _job())
        gen.gate.set()
        _wait(lambda: all(s.delivered for s in sessions))
        assert gen.calls == [1, 3]
        assert all(s.delivered == [(f"{s.session_id}-w", 3)] for s in sessions)
        assert worker.dropped == 0
    finally:
        gen.gate.set()
        worker.stop()


# ---------------------------------------------------------------------- engine lifecycle
def test_engine_sessions_status_and_clean_stop(tiny_stack, tmp_path):
    engine = Engine(tiny_stack, warmup=False)
    wav_path = tmp_path / "a.wav"
    col_a, col_b = CollectSink("a"), CollectSink("b")
    wav = WavSink(wav_path, sample_rate=16000)
    ha = engine.add_session(SyntheticSource(1, realtime=False, duration_s=30), [col_a, wav],
                            SessionConfig(hop_samples=4096), session_id="a")
    hb = engine.add_session(SyntheticSource(2, realtime=False), [col_b], SessionConfig(hop_samples=4096),
                            session_id="b")
    with pytest.raises(ValueError):
        engine.add_session(SyntheticSource(3), [], SessionConfig(), session_id="a")
    _wait(lambda: len(col_a.chunks) >= 3 and len(col_b.chunks) >= 3, 60)
    st = engine.status()
    assert {s["session"] for s in st["sessions"]} == {"a", "b"}
    for key in ("batches", "windows", "dropped", "rtf", "batch_max"):
        assert key in st["worker"]
    for key in ("input_fps", "latency_p50_ms", "latency_p95_ms", "dropped", "underruns", "sinks"):
        assert key in st["sessions"][0]
    engine.remove_session("b")
    assert hb.done.is_set() and not ha.done.is_set()
    assert [s["session"] for s in engine.status()["sessions"]] == ["a"]
    engine.stop()
    assert ha.done.is_set()
    # Contiguous chunks (the last one is the crossfade tail) and a valid WAV with all of them.
    for col in (col_a, col_b):
        starts = [c.start_sample for c in col.chunks]
        ends = [c.end_sample for c in col.chunks]
        assert starts[0] == 0 and starts[1:] == ends[:-1]
    with wave.open(str(wav_path)) as w:
        assert w.getframerate() == 16000
        assert w.getnframes() == sum(c.num_samples for c in col_a.chunks)
    assert not engine.worker.alive


def test_engine_source_error_ends_only_its_session(tiny_stack):
    class Broken(Source):
        def iter_frames(self, stop=None):
            raise RuntimeError("camera exploded")
            yield  # pragma: no cover

    engine = Engine(tiny_stack, warmup=False)
    col = CollectSink()
    ok = engine.add_session(SyntheticSource(1, realtime=False), [col], SessionConfig(hop_samples=4096))
    bad = engine.add_session(Broken("broken"), [], SessionConfig())
    assert bad.done.wait(10)
    assert "camera exploded" in str(bad.error)
    _wait(lambda: len(col.chunks) >= 2, 60)
    assert not ok.done.is_set()
    engine.stop()


def test_playout_meter_counts_late_chunks():
    m = PlayoutMeter(16000, prefill_ms=100)
    ms = 1_000_000
    m.on_chunk(0, 1600, 0)              # playback starts at 100 ms
    m.on_chunk(1600, 1600, 150 * ms)    # due at 200 ms: in time
    m.on_chunk(3200, 1600, 350 * ms)    # due at 300 ms: late
    assert m.underruns == 1 and m.late_ms_max == pytest.approx(50)


# ---------------------------------------------------------------------- synthetic source
def test_synthetic_source_timeline_and_events():
    src = SyntheticSource(7, realtime=False, duration_s=4.0, record_size=32)
    frames = list(src.iter_frames())
    cfg = src.config
    assert len(frames) == 4 * cfg.fps
    assert [f.pts for f in frames] == list(range(len(frames)))
    assert all(f.time_base == Fraction(1, cfg.fps) for f in frames)
    events = src.events()
    assert events, "a 4 s scene should have events"
    for e in events:
        i = src.frame_at_sample(e.sample)
        # the event lies in frame i's period on the frames' own sample timeline
        assert cfg.frame_start_sample(i) <= e.sample < cfg.frame_start_sample(i + 1)
    assert len(src.reference_audio()) == cfg.frame_start_sample(len(frames))
    rec = src.recorded_frames()
    assert len(rec) == len(frames) and rec[0].shape == (32, 32, 3)
    assert src.events_on(8000) == [e.sample // 2 for e in events]


def test_synthetic_source_realtime_pacing_thread():
    src = SyntheticSource(0, realtime=True, duration_s=0.5)
    t0 = time.monotonic()
    got = list(src)           # threaded mode: start(), get() until the end
    assert len(got) == 15
    assert time.monotonic() - t0 >= 0.4
