"""ZmqSink over real TCP loopback; subscribers in this process and in separate processes
(the copy-paste clients in clients/zmq/)."""
import json
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import zmq

from stream import protocol
from stream.messages import AudioChunk
from stream.sinks import ZmqSink

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "clients" / "zmq"
SR = 16000
SIZE = 1600
FREQ = 100.0  # period 160 samples divides SIZE: content independent of which chunk comes first


def chunk(k, sid="cam0"):
    s = 10_000 * SIZE + k * SIZE
    pcm = (0.5 * np.sin(2 * np.pi * FREQ * np.arange(s, s + SIZE) / SR)).astype(np.float32)
    return AudioChunk(stream_id=sid, seq=k, start_sample=s, sample_rate=SR, pcm=pcm,
                      capture_ns=time.monotonic_ns(), timings={"total_ms": 1.0})


def publish_until(sink, done, limit_s=30.0, period_s=0.005):
    """Keep publishing consecutive chunks until done() (subscribers join late: slow joiner)."""
    k = 0
    deadline = time.monotonic() + limit_s
    while not done():
        assert time.monotonic() < deadline, "subscriber did not finish in time"
        sink.submit(chunk(k))
        k += 1
        time.sleep(period_s)
    return k


def test_in_process_subscriber_round_trip():
    with ZmqSink("tcp://127.0.0.1:0", dtype="int16le") as sink:
        assert sink.bound_endpoint.startswith("tcp://127.0.0.1:")
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(sink.bound_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"audio/cam0")
        got = []

        def done():
            while sub.poll(0):
                got.append(protocol.decode(sub.recv_multipart()))
            return len(got) >= 5

        publish_until(sink, done)
        sub.close()
        ctx.term()
    m = got[0]
    assert m.header.dtype == "int16le" and m.header.sample_rate == SR and m.header.num_samples == SIZE
    seqs = [g.header.seq for g in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for g in got:
        assert g.header.emit_time_ns >= g.header.capture_time_ns
        np.testing.assert_allclose(g.pcm[:, 0], chunk(g.header.seq).pcm, atol=1 / 32767)
    assert sink.stats()["errors"] == 0


def test_bind_conflict_is_a_clear_error():
    with ZmqSink("tcp://127.0.0.1:0") as first:
        second = ZmqSink(first.bound_endpoint)
        with pytest.raises(OSError, match="cannot bind"):
            second.start()


def test_resampled_publishing():
    with ZmqSink("tcp://127.0.0.1:0", out_rate=48000) as sink:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(sink.bound_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"audio/")
        got = []

        def done():
            while sub.poll(0):
                got.append(protocol.decode(sub.recv_multipart()).header)
            return len(got) >= 4

        publish_until(sink, done)
        sub.close()
        ctx.term()
    assert all(h.sample_rate == 48000 for h in got)
    for a, b in zip(got, got[1:]):
        assert b.start_sample == a.start_sample + a.num_samples  # contiguous at the new rate


def run_client(args, sink):
    proc = subprocess.Popen([sys.executable, *map(str, args), "--endpoint", sink.bound_endpoint, "--timeout", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publish_until(sink, lambda: proc.poll() is not None)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out, err


def test_subscribe_stats_client_in_another_process():
    with ZmqSink("tcp://127.0.0.1:0") as sink:
        out, _ = run_client([CLIENTS / "subscribe_stats.py", "--json", "--count", "8"], sink)
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 8
    assert [r["seq"] for r in rows] == list(range(rows[0]["seq"], rows[0]["seq"] + 8))
    for r in rows:
        assert r["stream_id"] == "cam0" and r["num_samples"] == SIZE and r["sample_rate"] == SR
        assert r["engine_ms"] >= 0 and r["e2e_ms"] >= r["engine_ms"] and r["net_ms"] >= 0
        assert abs(r["rms"] - 0.5 / np.sqrt(2)) < 1e-3
    assert all(r["gap_samples"] == 0 and r["lost_msgs"] == 0 for r in rows[1:])


def test_record_wav_client_in_another_process(tmp_path):
    out_path = tmp_path / "rec.wav"
    with ZmqSink("tcp://127.0.0.1:0") as sink:
        _, err = run_client([CLIENTS / "record_wav.py", out_path, "--count", "12"], sink)
    assert "recorded 12 messages" in err
    with wave.open(str(out_path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 1, 2)
        n = w.getnframes()
        data = np.frombuffer(w.readframes(n), "<i2") / 32767.0
    assert n >= 12 * SIZE  # lost messages (if any) became silence, never shortened the file
    expect = 0.5 * np.sin(2 * np.pi * FREQ * np.arange(n) / SR)
    audio = np.abs(data) > 0  # compare where sound was recorded
    np.testing.assert_allclose(data[audio], expect[audio], atol=2 / 32767)
    assert audio.sum() >= 12 * SIZE * 0.9
