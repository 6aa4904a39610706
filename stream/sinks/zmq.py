"""ZeroMQ PUB sink: the wire format of :mod:`stream.protocol` (see clients/README.md)."""
from __future__ import annotations

import logging
import time
from typing import Optional

from ..messages import AudioChunk
from .. import protocol
from .base import Sink

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"


class ZmqSink(Sink):
    """Publishes each chunk as ``[topic, header, pcm]`` on a bound PUB socket.

    endpoint: where to bind; ``tcp://HOST:0`` or ``tcp://HOST:*`` picks a free port
              (read the result from ``bound_endpoint`` after ``start()``).
    sndhwm:   ZeroMQ send high-water mark per subscriber, in messages; beyond it the
              socket drops (PUB never blocks). A send that would block is counted in
              ``send_dropped``; sends are non-blocking.
    dtype:    'float32le' or 'int16le'.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, dtype: str = "float32le", sndhwm: int = 100,
                 out_rate: Optional[int] = None, queue_size: int = 64, name: str = "zmq") -> None:
        super().__init__(name, out_rate=out_rate, queue_size=queue_size)
        if dtype not in protocol.DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(protocol.DTYPES)}")
        self.endpoint = endpoint[:-2] + ":*" if endpoint.endswith(":0") else endpoint
        self.dtype = dtype
        self.sndhwm = int(sndhwm)
        self.bound_endpoint: Optional[str] = None
        self.send_dropped = 0
        self._ctx = None
        self._sock = None

    def _open(self) -> None:
        try:
            import zmq
        except ImportError as exc:  # pragma: no cover - pyzmq is a core dependency
            raise RuntimeError("ZmqSink needs pyzmq: pip install pyzmq") from exc
        self._zmq = zmq
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, self.sndhwm)
        sock.setsockopt(zmq.LINGER, 200)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            self._ctx.term()
            raise OSError(f"ZmqSink cannot bind {self.endpoint}: {exc}; "
                          f"is another process using the port? try another endpoint") from None
        self._sock = sock
        self.bound_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("zmq sink publishing on %s", self.bound_endpoint)

    def _write(self, chunk: AudioChunk) -> None:
        frames = protocol.encode(chunk, dtype=self.dtype, emit_time_ns=time.monotonic_ns())
        try:
            self._sock.send_multipart(frames, flags=self._zmq.NOBLOCK)
        except self._zmq.Again:
            self.send_dropped += 1

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def stats(self):
        s = super().stats()
        s.update(endpoint=self.bound_endpoint or self.endpoint, send_dropped=self.send_dropped)
        return s
