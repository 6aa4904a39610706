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

from audio_server import null_audio_device  # noqa: F401  (fixture: private PulseAudio null sink)

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


def test_speaker_sink_plays_on_null_sink(null_audio_device, tmp_path):
    """Real PortAudio playback (ALSA -> pulse plugin -> PulseAudio null sink): the callback runs
    at about real-time rate, every sample is played, one underrun when the feed stops, close()
    is clean, and the sink's monitor hears the sine."""
    dev, rate, freq = null_audio_device, 48000, 440.0
    sink = SpeakerSink(device=dev.device, sample_rate=rate, prefill_ms=200, buffer_ms=1500)
    calls = []  # (monotonic, frames, audio frames) per PortAudio callback

    def callback(outdata, frames, time_info, status):  # shadows the method: _open passes this one
        before = sink.jitter.samples_played
        SpeakerSink.callback(sink, outdata, frames, time_info, status)
        calls.append((time.monotonic(), frames, sink.jitter.samples_played - before))

    sink.callback = callback
    rec_path = tmp_path / "monitor.f32"
    rec = dev.record(rec_path, rate=rate)
    try:
        time.sleep(0.3)  # let parec connect before the tone starts
        chunks = make_chunks(20, size=1600, freq=freq)  # 2 s at 16 kHz, resampled to 48 kHz by the sink
        sink.start()
        # the ALSA pulse plugin may stall ~1.5 s after its first buffer fill: wait until the
        # device clock runs (0.5 s of priming silence pulled) so pacing below is meaningful
        deadline = time.monotonic() + 10
        while sum(f for _, f, _ in calls) < 0.5 * rate:
            assert time.monotonic() < deadline, f"PortAudio callback not running: {len(calls)} calls"
            time.sleep(0.01)
        t0 = time.monotonic()
        for k, c in enumerate(chunks):  # real-time pacing, half a second ahead
            time.sleep(max(0.0, t0 + (k - 5) * 0.1 - time.monotonic()))
            assert sink.submit(c)
        deadline = time.monotonic() + 10
        while sink.queue.stats()["size"] or sink.stats()["chunks_written"] < len(chunks):
            assert time.monotonic() < deadline, sink.stats()
            time.sleep(0.01)
        jb = sink.jitter
        assert jb.underruns == 0 and jb.overflow_samples == 0, jb.stats()  # fed in time: no gaps
        while jb.underruns == 0:  # the feed stopped: it plays out, then runs dry once
            assert time.monotonic() < deadline, jb.stats()
            time.sleep(0.01)
        dry_at, silence_at = time.monotonic(), jb.silence_samples
        time.sleep(0.4)
        t_close = time.monotonic()
        sink.close()
        close_s = time.monotonic() - t_close
        n_calls = len(calls)
        time.sleep(0.2)
    finally:
        sink.close()
        rec.terminate()
        rec.wait(5)

    st = sink.stats()
    assert not sink.running and sink._stream is None
    assert st["errors"] == 0 and st["chunks_written"] == 20 and close_s < 2.0
    assert len(calls) == n_calls  # no callbacks after close()
    # every written sample was played, and the silence after running dry is one underrun
    assert jb.samples_played == jb.samples_written > 0.95 * 2 * rate and jb.buffered == 0
    assert jb.underruns == 1
    assert jb.silence_samples - silence_at > 0.05 * rate  # silence kept playing, still one underrun
    # consumption at about real-time rate (loose: shared CI machines)
    first_audio = next(t for t, _, a in calls if a)
    frames = sum(f for t, f, _ in calls if first_audio <= t <= dry_at)
    elapsed = dry_at - first_audio
    assert 0.6 < frames / rate / elapsed < 1.6, (frames, elapsed)
    assert 1.4 < elapsed < 4.0
    # the null sink's monitor heard a 440 Hz tone
    y = np.fromfile(rec_path, "<f4")
    assert len(y) > rate, len(y)
    win = int(0.05 * rate)
    rms = np.sqrt(np.mean(y[:len(y) // win * win].reshape(-1, win) ** 2, axis=1))
    loud = rms > 0.1
    assert 1.5 < loud.sum() * 0.05 < 2.5, rms.round(3)  # about 2 s of tone at rms 0.35
    seg = y[np.argmax(loud) * win:][:rate]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    assert abs(np.argmax(spec) * rate / len(seg) - freq) < 5


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
