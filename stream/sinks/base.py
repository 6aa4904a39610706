"""Sink base class and the Fanout.

Every sink owns a :class:`~stream.queues.BoundedQueue` (``drop_oldest``) and one
thread that takes chunks from it, converts them to the sink's own sample rate
with a :class:`~stream.resample.StreamingResampler` (one per stream, state kept
across chunks, reset on a gap in ``start_sample``), and writes them. ``submit``
never blocks, so a slow sink loses its own oldest chunks (counted) and never
stalls the engine or the other sinks.

Lifecycle: ``start()`` (raises if the sink cannot open: bind error, bad path,
no audio device) -> ``submit(chunk)``... -> ``close()`` (drains what is queued,
flushes, releases). Sinks are context managers.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from ..clock import resample_index
from ..messages import AudioChunk
from ..queues import BoundedQueue, Closed, Empty
from ..resample import StreamingResampler

log = logging.getLogger(__name__)


@dataclass
class _RateState:
    resampler: StreamingResampler
    next_in: int
    next_out: int


class Sink:
    """Base class: subclasses implement ``_open``, ``_write`` and ``_close`` (all run on the
    sink's thread), and optionally ``_idle`` (called when no chunk came for ``poll_s``)."""

    poll_s = 0.1

    def __init__(self, name: str, out_rate: Optional[int] = None, queue_size: int = 64) -> None:
        self.name = name
        self.out_rate = None if out_rate is None else int(out_rate)
        self.queue: BoundedQueue[AudioChunk] = BoundedQueue(queue_size, "drop_oldest", name=f"{name}.queue")
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._open_error: Optional[BaseException] = None
        self._rates: Dict[str, _RateState] = {}
        self.chunks_written = 0
        self.samples_written = 0
        self.errors = 0
        self.gaps = 0

    # ------------------------------------------------------------------ public
    def start(self, timeout: float = 10.0) -> "Sink":
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"sink {self.name!r} did not open within {timeout} s")
        if self._open_error is not None:
            self._thread.join(timeout)
            raise self._open_error
        return self

    def submit(self, chunk: AudioChunk) -> bool:
        """Non-blocking; False if the chunk was refused (closed). Overflow drops the oldest."""
        return self.queue.put(chunk)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, flush, release. Idempotent."""
        self.queue.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("sink %s did not finish within %.1f s", self.name, timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> Dict[str, Any]:
        q = self.queue.stats()
        return {"name": self.name, "queued": q["size"], "dropped": q["dropped"], "received": q["put"],
                "chunks_written": self.chunks_written, "samples_written": self.samples_written,
                "errors": self.errors, "gaps": self.gaps}

    def __enter__(self) -> "Sink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ subclass hooks
    def _open(self) -> None:
        pass

    def _write(self, chunk: AudioChunk) -> None:
        raise NotImplementedError

    def _idle(self) -> None:
        pass

    def _close(self) -> None:
        pass

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        try:
            self._open()
        except BaseException as exc:  # surfaced by start()
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                try:
                    chunk = self.queue.get(timeout=self.poll_s)
                except Empty:
                    self._guard(self._idle)
                    continue
                except Closed:
                    break
                converted = self.convert(chunk)
                if converted is not None and converted.num_samples:
                    if self._guard(self._write, converted):
                        self.chunks_written += 1
                        self.samples_written += converted.num_samples
        finally:
            self._guard(self._close)

    def _guard(self, fn, *args) -> bool:
        try:
            fn(*args)
            return True
        except Exception:  # one bad chunk must not kill the sink (DESIGN §5.10)
            self.errors += 1
            log.exception("sink %s: %s failed", self.name, getattr(fn, "__name__", fn))
            return False

    def convert(self, chunk: AudioChunk) -> Optional[AudioChunk]:
        """Resample to ``out_rate`` keeping filter state per stream; start_sample rescaled."""
        rate = self.out_rate
        if rate is None or rate == chunk.sample_rate:
            return chunk
        st = self._rates.get(chunk.stream_id)
        if (st is None or st.next_in != chunk.start_sample or st.resampler.in_rate != chunk.sample_rate
                or st.resampler.channels != chunk.channels):
            if st is not None:
                self.gaps += 1
            st = _RateState(StreamingResampler(chunk.sample_rate, rate, chunk.channels),
                            next_in=chunk.start_sample,
                            next_out=resample_index(chunk.start_sample, chunk.sample_rate, rate))
            self._rates[chunk.stream_id] = st
        pcm = st.resampler.process(chunk.pcm)
        out = chunk.replace(start_sample=st.next_out, sample_rate=rate, pcm=np.ascontiguousarray(pcm))
        st.next_in = chunk.end_sample
        st.next_out += pcm.shape[0]
        return out


class Fanout:
    """Hands every chunk to every sink's own queue (never blocks)."""

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self._sinks: List[Sink] = list(sinks)
        self._lock = threading.Lock()

    def add(self, sink: Sink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def remove(self, sink: Sink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.remove(sink)

    @property
    def sinks(self) -> List[Sink]:
        with self._lock:
            return list(self._sinks)

    def push(self, chunk: AudioChunk) -> int:
        """Returns how many sinks accepted the chunk."""
        return sum(1 for s in self.sinks if s.submit(chunk))

    def start(self) -> "Fanout":
        for s in self.sinks:
            s.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        for s in self.sinks:
            s.close(timeout)

    def stats(self) -> List[Dict[str, Any]]:
        return [s.stats() for s in self.sinks]

    def __enter__(self) -> "Fanout":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
