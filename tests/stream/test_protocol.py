"""ZeroMQ wire format: round trips, validation, and the self-contained client decoder."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from stream import protocol
from stream.messages import AudioChunk
from stream.protocol import ProtocolError, decode, encode

ROOT = Path(__file__).resolve().parents[2]


def chunk(channels=1, n=480, **kw):
    rng = np.random.default_rng(1)
    pcm = rng.uniform(-1, 1, (n, channels) if channels > 1 else n).astype(np.float32)
    args = dict(stream_id="cam0", seq=7, start_sample=-1234567890123, sample_rate=16000, pcm=pcm,
                capture_ns=987654321012345, timings={"encode_ms": 1.5, "total_ms": 9})
    args.update(kw)
    return AudioChunk(**args)


@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip_float32(channels):
    c = chunk(channels)
    frames = encode(c, emit_time_ns=123)
    assert frames[0] == b"audio/cam0"
    assert len(frames[2]) == c.num_samples * channels * 4
    m = decode(frames)
    h = m.header
    assert (h.version, h.stream_id, h.seq, h.start_sample, h.sample_rate, h.channels, h.num_samples) == \
        (1, "cam0", 7, c.start_sample, 16000, channels, c.num_samples)
    assert h.capture_time_ns == c.capture_ns and h.emit_time_ns == 123
    assert h.timings_ms == {"encode_ms": 1.5, "total_ms": 9.0}
    np.testing.assert_array_equal(m.pcm, c.pcm_2d())
    back = m.to_chunk()
    np.testing.assert_array_equal(back.pcm, c.pcm)
    assert back.start_sample == c.start_sample and back.capture_ns == c.capture_ns


def test_round_trip_int16_and_clipping():
    pcm = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.7, -3.0], np.float32)
    c = chunk(pcm=pcm)
    frames = encode(c, dtype="int16le")
    assert len(frames[2]) == 2 * len(pcm)
    raw = np.frombuffer(frames[2], "<i2")
    assert raw.tolist() == [0, 16384, -16384, 32767, -32767, 32767, -32767]
    m = decode(frames)
    np.testing.assert_allclose(m.pcm[:, 0], np.clip(pcm, -1, 1), atol=1 / 32767)


def test_pcm_is_little_endian_interleaved():
    pcm = np.array([[1.0, -1.0], [0.25, 0.5]], np.float32)
    frames = encode(chunk(channels=2, pcm=pcm))
    assert frames[2] == np.array([1.0, -1.0, 0.25, 0.5], "<f4").tobytes()


def test_header_is_plain_json_with_documented_fields():
    frames = encode(chunk(), emit_time_ns=5)
    h = json.loads(frames[1].decode("utf-8"))
    assert set(h) == set(protocol.REQUIRED_FIELDS)
    assert h["dtype"] == "float32le" and h["channels"] == 1


def test_unknown_fields_are_kept_and_ignored():
    frames = encode(chunk(), extra={"future_field": [1, 2]})
    m = decode(frames)
    assert m.header.extra == {"future_field": [1, 2]}


def mutate(frames, **changes):
    h = json.loads(frames[1])
    for k, v in changes.items():
        if v is KeyError:
            del h[k]
        else:
            h[k] = v
    return [frames[0], json.dumps(h).encode(), frames[2]]


@pytest.mark.parametrize("change,message", [
    ({"version": 2}, "unsupported wire version 2"),
    ({"version": "1"}, "'version' missing or not an integer"),
    ({"seq": KeyError}, "lacks required field"),
    ({"seq": "7"}, "'seq' must be int"),
    ({"channels": True}, "'channels' must be int"),
    ({"dtype": "float64le"}, "dtype 'float64le' unknown"),
    ({"sample_rate": 0}, "'sample_rate' must be positive"),
    ({"num_samples": 479}, "pcm frame has 1920 bytes"),
    ({"stream_id": "cam1"}, "does not match stream_id"),
    ({"timings_ms": {"a": "x"}}, "timings_ms values must be numbers"),
])
def test_invalid_headers_raise_clear_errors(change, message):
    frames = mutate(encode(chunk()), **change)
    with pytest.raises(ProtocolError, match=message):
        decode(frames)


def test_structural_errors():
    frames = encode(chunk())
    with pytest.raises(ProtocolError, match="expected 3 frames"):
        decode(frames[:2])
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        decode([frames[0], b"{not json", frames[2]])
    with pytest.raises(ProtocolError, match="JSON object"):
        decode([frames[0], b"[1, 2]", frames[2]])
    with pytest.raises(ProtocolError, match="unknown dtype"):
        encode(chunk(), dtype="pcm24")
    with pytest.raises(ProtocolError, match="non-empty"):
        encode(chunk(stream_id=""))


def load_client(name):
    path = ROOT / "clients" / "zmq" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"client_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("client", ["subscribe_stats", "record_wav", "play"])
@pytest.mark.parametrize("dtype", ["float32le", "int16le"])
def test_self_contained_clients_decode_the_same(client, dtype):
    mod = load_client(client)
    c = chunk(channels=2)
    h, x = mod.decode(encode(c, dtype=dtype))
    np.testing.assert_allclose(x, decode(encode(c, dtype=dtype)).pcm, atol=1e-7)
    assert h["start_sample"] == c.start_sample
