"""ZeroMQ wire format for generated audio, version 1 (documented in clients/README.md).

One message = three ZeroMQ frames (multipart):

1. topic  – UTF-8 ``audio/<stream_id>``; subscribe to ``audio/`` for every stream.
2. header – UTF-8 JSON object (fields in :data:`REQUIRED_FIELDS`).
3. pcm    – ``num_samples * channels`` samples, interleaved, little-endian,
            ``float32le`` (IEEE 754) or ``int16le`` (full scale 32767).

``version`` is the major version; a decoder rejects other majors. New optional
fields may be added without a version bump; decoders ignore unknown fields.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .messages import AudioChunk

VERSION = 1
TOPIC_PREFIX = "audio/"
DTYPES = {"float32le": np.dtype("<f4"), "int16le": np.dtype("<i2")}
INT16_SCALE = 32767.0

# name -> accepted Python types (bool is rejected for ints explicitly)
REQUIRED_FIELDS: Dict[str, tuple] = {
    "version": (int,),
    "stream_id": (str,),
    "seq": (int,),
    "start_sample": (int,),
    "sample_rate": (int,),
    "channels": (int,),
    "dtype": (str,),
    "num_samples": (int,),
    "capture_time_ns": (int,),
    "emit_time_ns": (int,),
    "timings_ms": (dict,),
}


class ProtocolError(ValueError):
    """A message that does not follow the wire format; the text says what is wrong."""


@dataclass(frozen=True)
class Header:
    version: int
    stream_id: str
    seq: int
    start_sample: int
    sample_rate: int
    channels: int
    dtype: str
    num_samples: int
    capture_time_ns: int
    emit_time_ns: int
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown (newer) fields, kept verbatim

    def to_json(self) -> bytes:
        d = {name: getattr(self, name) for name in REQUIRED_FIELDS}
        d["timings_ms"] = {str(k): float(v) for k, v in self.timings_ms.items()}
        d.update(self.extra)
        return json.dumps(d, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, eq=False)
class Message:
    topic: str
    header: Header
    pcm: np.ndarray  # float32 (num_samples, channels), decoded from either wire dtype

    def to_chunk(self) -> AudioChunk:
        h = self.header
        pcm = self.pcm[:, 0] if h.channels == 1 else self.pcm
        return AudioChunk(stream_id=h.stream_id, seq=h.seq, start_sample=h.start_sample,
                          sample_rate=h.sample_rate, pcm=np.ascontiguousarray(pcm),
                          capture_ns=h.capture_time_ns, timings=dict(h.timings_ms))


def topic_for(stream_id: str) -> bytes:
    return (TOPIC_PREFIX + stream_id).encode("utf-8")


def pcm_to_bytes(pcm: np.ndarray, dtype: str) -> bytes:
    """(N,) or (N, C) float -> interleaved little-endian bytes of the wire dtype."""
    if dtype not in DTYPES:
        raise ProtocolError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    x = np.asarray(pcm, dtype=np.float32)
    if dtype == "int16le":
        x = np.round(np.clip(x, -1.0, 1.0) * INT16_SCALE)
    return np.ascontiguousarray(x, dtype=DTYPES[dtype]).tobytes()


def encode(chunk: AudioChunk, dtype: str = "float32le", emit_time_ns: Optional[int] = None,
           extra: Optional[Mapping[str, Any]] = None) -> List[bytes]:
    """AudioChunk -> [topic, header, pcm] frames. ``emit_time_ns`` defaults to now (monotonic)."""
    if not chunk.stream_id:
        raise ProtocolError("stream_id must be a non-empty string")
    header = Header(version=VERSION, stream_id=chunk.stream_id, seq=chunk.seq,
                    start_sample=chunk.start_sample, sample_rate=chunk.sample_rate,
                    channels=chunk.channels, dtype=dtype, num_samples=chunk.num_samples,
                    capture_time_ns=chunk.capture_ns,
                    emit_time_ns=time.monotonic_ns() if emit_time_ns is None else int(emit_time_ns),
                    timings_ms=dict(chunk.timings), extra=dict(extra or {}))
    return [topic_for(chunk.stream_id), header.to_json(), pcm_to_bytes(chunk.pcm, dtype)]


def parse_header(raw: bytes) -> Header:
    try:
        d = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ProtocolError(f"header must be a JSON object, got {type(d).__name__}")
    version = d.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError(f"header field 'version' missing or not an integer: {version!r}")
    if version != VERSION:
        raise ProtocolError(f"unsupported wire version {version}; this decoder reads version {VERSION}")
    missing = [k for k in REQUIRED_FIELDS if k not in d]
    if missing:
        raise ProtocolError(f"header lacks required field(s) {missing}")
    for name, types in REQUIRED_FIELDS.items():
        v = d[name]
        if not isinstance(v, types) or isinstance(v, bool):
            raise ProtocolError(f"header field {name!r} must be {types[0].__name__}, got {v!r}")
    if d["dtype"] not in DTYPES:
        raise ProtocolError(f"header dtype {d['dtype']!r} unknown; expected one of {sorted(DTYPES)}")
    for name in ("sample_rate", "channels"):
        if d[name] <= 0:
            raise ProtocolError(f"header field {name!r} must be positive, got {d[name]}")
    if d["num_samples"] < 0 or d["seq"] < 0:
        raise ProtocolError("header fields 'num_samples' and 'seq' must be >= 0")
    timings = d["timings_ms"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in timings.values()):
        raise ProtocolError(f"header timings_ms values must be numbers, got {timings!r}")
    extra = {k: v for k, v in d.items() if k not in REQUIRED_FIELDS}
    return Header(**{k: d[k] for k in REQUIRED_FIELDS if k != "timings_ms"},
                  timings_ms={k: float(v) for k, v in timings.items()}, extra=extra)


def decode(frames: Sequence[bytes]) -> Message:
    """[topic, header, pcm] -> Message (pcm as float32 (N, C)). Raises ProtocolError."""
    if len(frames) != 3:
        raise ProtocolError(f"expected 3 frames [topic, header, pcm], got {len(frames)}")
    topic_raw, header_raw, pcm_raw = (bytes(f) for f in frames)
    try:
        topic = topic_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("topic is not UTF-8") from None
    header = parse_header(header_raw)
    if topic != TOPIC_PREFIX + header.stream_id:
        raise ProtocolError(f"topic {topic!r} does not match stream_id {header.stream_id!r}")
    dt = DTYPES[header.dtype]
    expected = header.num_samples * header.channels * dt.itemsize
    if len(pcm_raw) != expected:
        raise ProtocolError(f"pcm frame has {len(pcm_raw)} bytes; header says {header.num_samples} samples x "
                            f"{header.channels} channels x {dt.itemsize} bytes = {expected}")
    pcm = np.frombuffer(pcm_raw, dtype=dt).reshape(header.num_samples, header.channels)
    if header.dtype == "int16le":
        pcm = pcm.astype(np.float32) / INT16_SCALE
    else:
        pcm = pcm.astype(np.float32)  # native-endian copy (writable)
    return Message(topic=topic, header=header, pcm=pcm)
