"""Bounded queues with a named overflow policy and counters (DESIGN §3.5).

:class:`BoundedQueue` is for thread <-> thread hand-off. ``put`` never blocks;
when the queue is full the policy decides what is lost, and the loss is counted:

- ``drop_oldest``  – evict the oldest waiting item to make room ("keep the latest
  ``maxsize`` items"). Use for streams where every item matters but freshness
  matters more (frames into a window, audio into a sink).
- ``keep_latest``  – a put discards *every* waiting item; the reader only ever sees
  the newest one (newest-wins hand-off, e.g. "latest window of a session").
- ``drop_newest``  – reject the incoming item when full (back-pressure by loss;
  keeps the oldest, e.g. ordered logs).

:class:`AsyncBoundedQueue` is the thread -> asyncio bridge: producers on any
thread call ``put_threadsafe``, which crosses into the event loop only through
``loop.call_soon_threadsafe`` (DESIGN §5.7); the coroutine side awaits ``get``.
"""
from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any, Deque, Dict, Generic, Iterator, List, Optional, TypeVar

T = TypeVar("T")

POLICIES = ("drop_oldest", "keep_latest", "drop_newest")


class Closed(Exception):
    """The queue was closed and holds no more items."""


class Empty(Exception):
    """No item arrived within the timeout."""


def _check(maxsize: int, policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown queue policy {policy!r}; choose one of {POLICIES}")
    if int(maxsize) < 1:
        raise ValueError(f"queue maxsize must be >= 1, got {maxsize}")


class BoundedQueue(Generic[T]):
    """Thread-safe bounded FIFO with a non-blocking ``put`` and an overflow policy.

    Counters: ``put_count`` (accepted items), ``got_count`` (items handed out),
    ``dropped`` (items lost to the policy, plus puts after close).
    """

    def __init__(self, maxsize: int, policy: str = "drop_oldest", name: str = "") -> None:
        _check(maxsize, policy)
        self.maxsize = int(maxsize)
        self.policy = policy
        self.name = name
        self._items: Deque[T] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self.put_count = 0
        self.got_count = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Enqueue without blocking. Returns False if ``item`` itself was not kept."""
        with self._cond:
            if self._closed:
                self.dropped += 1
                return False
            if self.policy == "keep_latest":
                self.dropped += len(self._items)
                self._items.clear()
            elif len(self._items) >= self.maxsize:
                if self.policy == "drop_newest":
                    self.dropped += 1
                    return False
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self._cond.notify()
            return True

    def get(self, timeout: Optional[float] = None) -> T:
        """Oldest waiting item. Raises :class:`Empty` on timeout, :class:`Closed` once
        the queue is closed *and* drained (items put before ``close`` are still delivered)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise Closed(self.name or "queue closed")
                if deadline is None:
                    self._cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise Empty(self.name or "queue empty")
                    self._cond.wait(remaining)
            self.got_count += 1
            return self._items.popleft()

    def get_nowait(self) -> T:
        return self.get(timeout=0.0)

    def drain(self) -> List[T]:
        """Take every waiting item at once (possibly none)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self.got_count += len(items)
            return items

    def close(self) -> None:
        """Refuse further puts and wake every waiting getter."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        with self._cond:
            return len(self._items)

    __len__ = qsize

    def stats(self) -> Dict[str, Any]:
        with self._cond:
            return {"name": self.name, "policy": self.policy, "maxsize": self.maxsize,
                    "size": len(self._items), "put": self.put_count, "got": self.got_count,
                    "dropped": self.dropped, "closed": self._closed}

    def __iter__(self) -> Iterator[T]:
        """Blocking iteration until the queue is closed and drained."""
        while True:
            try:
                yield self.get()
            except Closed:
                return

    def __repr__(self) -> str:
        s = self.stats()
        return (f"BoundedQueue({s['name']!r}, {s['size']}/{s['maxsize']}, {s['policy']}, "
                f"put={s['put']} got={s['got']} dropped={s['dropped']})")


class AsyncBoundedQueue(Generic[T]):
    """Bounded queue read by coroutines on one event loop, fed from any thread.

    The item store is touched only on the loop's thread: ``put_threadsafe``
    schedules the insertion with ``loop.call_soon_threadsafe`` and never blocks.
    A put from a loop that is already closed is counted as dropped.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int,
                 policy: str = "drop_oldest", name: str = "") -> None:
        _check(maxsize, policy)
        self._loop = loop
        self.maxsize = int(maxsize)
        self.policy = policy
        self.name = name
        self._items: Deque[T] = collections.deque()
        self._waiters: Deque[asyncio.Future] = collections.deque()
        self._closed = False
        self._lock = threading.Lock()   # guards the counters only
        self.put_count = 0
        self.got_count = 0
        self.dropped = 0

    def put_threadsafe(self, item: T) -> None:
        """Any thread: hand ``item`` to the loop (non-blocking)."""
        try:
            self._loop.call_soon_threadsafe(self._put_in_loop, item)
        except RuntimeError:  # loop closed
            with self._lock:
                self.dropped += 1

    def close_threadsafe(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self.close)
        except RuntimeError:
            self._closed = True

    def put_nowait(self, item: T) -> bool:
        """Loop thread only."""
        return self._put_in_loop(item)

    def _put_in_loop(self, item: T) -> bool:
        with self._lock:
            if self._closed:
                self.dropped += 1
                return False
            if self.policy == "keep_latest":
                self.dropped += len(self._items)
                self._items.clear()
            elif len(self._items) >= self.maxsize:
                if self.policy == "drop_newest":
                    self.dropped += 1
                    return False
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
        self._wake_one()
        return True

    def _wake_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def close(self) -> None:
        """Loop thread only: refuse puts, wake all getters."""
        self._closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def get(self) -> T:
        """Oldest item; raises :class:`Closed` once closed and drained."""
        while not self._items:
            if self._closed:
                raise Closed(self.name or "queue closed")
            fut = self._loop.create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                raise
        with self._lock:
            self.got_count += 1
        return self._items.popleft()

    def qsize(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            return {"name": self.name, "policy": self.policy, "maxsize": self.maxsize,
                    "size": len(self._items), "put": self.put_count, "got": self.got_count,
                    "dropped": self.dropped, "closed": self._closed}
