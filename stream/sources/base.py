"""Source base class.

Design (one for all sources): a source *is* an iterator of :class:`Frame`
(``iter_frames(stop)``, a plain generator, handy offline and in tests), and
``start()`` runs that same generator on the source's own thread, pushing into
``self.frames``, a :class:`BoundedQueue` with policy ``drop_oldest``. We keep
the newest ``queue_size`` frames rather than only the latest one: the
FrameWindow samples *all* recent frames on the audio clock, so a consumer that
keeps up must see every frame, and one that falls behind loses the oldest
(counted in ``frames.dropped``) so the window still ends at the newest frame.

Stop with ``stop()`` (sets a ``threading.Event`` the generator polls). When the
generator ends, or fails, the queue is closed; ``get()`` then raises
:class:`~stream.queues.Closed`, or the source's error if it failed.
"""
from __future__ import annotations

import logging
import threading
from typing import Iterator, Optional

from ..messages import Frame
from ..queues import BoundedQueue, Closed

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source cannot deliver frames (unreadable file, no camera...); the text says why."""


class Source:
    def __init__(self, source_id: str, queue_size: int = 32) -> None:
        self.source_id = source_id
        self.frames: BoundedQueue[Frame] = BoundedQueue(queue_size, "drop_oldest", name=f"{source_id}.frames")
        self.stop_event = threading.Event()
        self.error: Optional[BaseException] = None
        self.frames_produced = 0
        self._thread: Optional[threading.Thread] = None

    def iter_frames(self, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        """Yield frames until exhausted or ``stop`` is set (subclasses implement)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ threaded mode
    def start(self) -> "Source":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"source-{self.source_id}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for frame in self.iter_frames(self.stop_event):
                self.frames.put(frame)
                self.frames_produced += 1
                if self.stop_event.is_set():
                    break
        except BaseException as exc:
            self.error = exc
            log.error("source %s failed: %s", self.source_id, exc)
        finally:
            self.frames.close()

    def get(self, timeout: Optional[float] = None) -> Frame:
        """Next frame from the thread. Raises Empty on timeout, Closed at the end, or the
        source's own error if it failed."""
        try:
            return self.frames.get(timeout)
        except Closed:
            if self.error is not None:
                raise self.error
            raise

    def __iter__(self) -> Iterator[Frame]:
        """Frames from the thread (starts it) until the source ends."""
        self.start()
        while True:
            try:
                yield self.get()
            except Closed:
                return

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "Source":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
