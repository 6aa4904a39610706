"""Sinks: WAV validity (also after an abrupt end), speaker jitter buffer, fan-out isolation."""
import os
import subprocess
import sys
import textwrap
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from stream.messages import AudioChunk
from stream.sinks import Fanout, JitterBuffer, Sink, SpeakerSink, WavSink

ROOT = Path(__file__).resolve().parents[2]
SR = 16000


def make_chunks(n, size=1600, start=0, sid="s", rate=SR, freq=100.0):
    out = []
    for k in range(n):
        s = start + k * size
        pcm = (0.5 * np.sin(2 * np.pi * freq * np.arange(s, s + size) / rate)).astype(np.float32)
        out.append(AudioChunk(stream_id=sid, seq=k, start_sample=s, sample_rate=rate, pcm=pcm, capture_ns=0))
    return out


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        return w.getframerate(), w.getnchannels(), w.getnframes(), data


def test_wav_sink_writes_valid_file_with_gap_filled(tmp_path):
    path = tmp_path / "out.wav"
    chunks = make_chunks(6)
    with WavSink(path) as sink:
        for c in chunks[:3] + chunks[4:]:  # chunk 3 was dropped upstream
            sink.submit(c)
    rate, ch, n, data = read_wav(path)
    assert (rate, ch, n) == (SR, 1, 6 * 1600)
    expect = np.concatenate([c.pcm for c in chunks])
    expect[3 * 1600:4 * 1600] = 0
    np.testing.assert_allclose(data / 32767.0, expect, atol=1.0 / 32767)
    assert sink.silence_samples == 1600 and sink.stats()["errors"] == 0


def test_wav_sink_resamples_and_ignores_other_streams(tmp_path):
    path = tmp_path / "out48.wav"
    with WavSink(path, sample_rate=48000, channels=2) as sink:
        for c in make_chunks(10):
            sink.submit(c)
        sink.submit(make_chunks(1, sid="other")[0])
    rate, ch, n, data = read_wav(path)
    assert (rate, ch) == (48000, 2)
    assert abs(n - 3 * 16000) < 200  # the filter delay tail is not flushed
    stereo = data.reshape(-1, 2)
    np.testing.assert_array_equal(stereo[:, 0], stereo[:, 1])
    assert sink.ignored_chunks == 1


def test_wav_sink_bad_path_fails_at_start(tmp_path):
    (tmp_path / "afile").write_text("x")
    sink = WavSink(tmp_path / "afile" / "out.wav")
    with pytest.raises(OSError, match="afile"):
        sink.start()


def test_wav_sink_empty_file_is_valid(tmp_path):
    path = tmp_path / "empty.wav"
    WavSink(path, sample_rate=SR).start().close()
    assert read_wav(path)[:3] == (SR, 1, 0)


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time, signal
    sys.path.insert(0, {root!r})
    import numpy as np
    from stream.messages import AudioChunk
    from stream.sinks import WavSink
    sink = WavSink(sys.argv[1], sample_rate=16000, flush_interval_s=0.0).start()
    n = int(sys.argv[2])
    for k in range(n):
        sink.submit(AudioChunk("s", k, k * 800, 16000, np.full(800, 0.25, np.float32), 0))
    deadline = time.monotonic() + 20
    while sink.samples_written < n * 800 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit, no buffers flushed by Python
""")


@pytest.mark.parametrize("n_chunks", [0, 7])
def test_wav_valid_after_process_killed(tmp_path, n_chunks):
    path = tmp_path / "killed.wav"
    script = tmp_path / "writer.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT)))
    proc = subprocess.run([sys.executable, str(script), str(path), str(n_chunks)], timeout=60)
    assert proc.returncode != 0  # it really died
    rate, ch, n, data = read_wav(path)
    assert (rate, ch, n) == (SR, 1, n_chunks * 800)
    assert os.path.getsize(path) == 44 + 2 * n
    assert np.all(data == round(0.25 * 32767))


def test_jitter_buffer_prefill_underrun_and_overflow():
    jb = JitterBuffer(channels=1, capacity=1000, prefill=300)
    out = np.empty((128, 1), np.float32)
    assert jb.read_into(out) == 0 and np.all(out == 0)
    assert jb.underruns == 0 and jb.silence_samples == 0  # initial priming is not an underrun
    jb.write(np.ones(200, np.float32))
    assert jb.read_into(out) == 0  # still priming
    jb.write(np.full(200, 2.0, np.float32))  # 400 >= prefill
    played = [jb.read_into(out) for _ in range(3)]
    assert played == [128, 128, 128]
    assert jb.read_into(out) == 16 and jb.underruns == 1  # ran dry mid-block
    assert np.all(out[16:] == 0) and np.all(out[:16] == 2.0)
    assert jb.read_into(out) == 0 and jb.underruns == 1  # re-priming: silence, same underrun
    assert jb.silence_samples == 112 + 128
    jb.write(np.arange(1500, dtype=np.float32))  # more than capacity: oldest dropped
    assert jb.buffered == 1000 and jb.overflow_samples == 500
    assert jb.read_into(out) == 128 and out[0, 0] == 500.0


def test_jitter_buffer_ring_matches_fifo():
    rng = np.random.default_rng(3)
    jb = JitterBuffer(channels=2, capacity=997, prefill=0)
    written, read = [], []
    for _ in range(400):
        x = rng.standard_normal((int(rng.integers(0, 300)), 2)).astype(np.float32)
        if jb.buffered + len(x) <= 997:
            jb.write(x)
            written.append(x)
        out = np.empty((int(rng.integers(1, 300)), 2), np.float32)
        got = jb.read_into(out)
        read.append(out[:got].copy())
    assert jb.overflow_samples == 0
    w, r = np.concatenate(written), np.concatenate(read)
    np.testing.assert_array_equal(r, w[:len(r)])


def test_speaker_callback_without_device():
    sink = SpeakerSink(sample_rate=SR, prefill_ms=50)  # not started: no device needed
    out = np.empty((256, 1), np.float32)
    sink.callback(out, 256, None, None)
    assert np.all(out == 0)
    for c in make_chunks(2, size=800):
        sink._write(c)
    blocks = []
    for _ in range(8):
        sink.callback(out, 256, None, None)
        blocks.append(out[:, 0].copy())
    y = np.concatenate(blocks)
    np.testing.assert_allclose(y[:1600], np.concatenate([c.pcm for c in make_chunks(2, size=800)]), atol=1e-7)
    assert np.all(y[1600:] == 0)
    assert sink.stats()["underruns"] == 1


def test_speaker_sink_against_device_or_clear_error():
    import sounddevice as sd
    try:
        has_output = any(d["max_output_channels"] > 0 for d in sd.query_devices())
    except Exception:
        has_output = False
    sink = SpeakerSink(prefill_ms=20)
    if not has_output:
        with pytest.raises(RuntimeError, match="audio output device"):
            sink.start()
        return
    with sink:
        for c in make_chunks(3):
            sink.submit(c)
        deadline = time.monotonic() + 5
        while sink.jitter is None or sink.jitter.samples_played == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert sink.stats()["chunks_written"] == 3


class SlowSink(Sink):
    def __init__(self, gate):
        super().__init__("slow", queue_size=4)
        self.gate = gate
        self.seen = []

    def _write(self, chunk):
        self.gate.wait(10)
        self.seen.append(chunk.seq)


class ListSink(Sink):
    def __init__(self):
        super().__init__("list", queue_size=1000)
        self.seen = []

    def _write(self, chunk):
        self.seen.append(chunk.seq)


def test_fanout_slow_sink_does_not_stall_others():
    gate = threading.Event()
    slow, fast = SlowSink(gate), ListSink()
    fan = Fanout([slow, fast]).start()
    chunks = make_chunks(100, size=16)
    accepted = [fan.push(c) for c in chunks]  # the slow sink is blocked: push must not wait
    assert accepted == [2] * 100
    gate.set()
    fan.close()
    assert fast.seen == list(range(100))
    assert slow.queue.dropped >= 100 - 4 - 1
    assert slow.seen[-4:] == [96, 97, 98, 99]  # it kept the newest


class FailingSink(ListSink):
    def _write(self, chunk):
        if chunk.seq == 3:
            raise RuntimeError("boom")
        super()._write(chunk)


def test_sink_survives_a_failing_write():
    sink = FailingSink().start()
    for c in make_chunks(6, size=8):
        sink.submit(c)
    sink.close()
    assert sink.seen == [0, 1, 2, 4, 5] and sink.errors == 1
