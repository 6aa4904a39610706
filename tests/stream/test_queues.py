"""BoundedQueue policies/counters and the thread -> asyncio bridge."""
import asyncio
import threading

import pytest

from stream.queues import AsyncBoundedQueue, BoundedQueue, Closed, Empty


def test_drop_oldest_keeps_latest_n():
    q = BoundedQueue(3, "drop_oldest")
    for i in range(10):
        assert q.put(i)
    assert q.drain() == [7, 8, 9]
    assert (q.put_count, q.got_count, q.dropped) == (10, 3, 7)


def test_keep_latest_keeps_only_newest():
    q = BoundedQueue(5, "keep_latest")
    for i in range(4):
        q.put(i)
    assert q.qsize() == 1 and q.get_nowait() == 3
    assert q.dropped == 3 and q.got_count == 1


def test_drop_newest_rejects_when_full():
    q = BoundedQueue(2, "drop_newest")
    assert q.put("a") and q.put("b")
    assert not q.put("c")
    assert q.drain() == ["a", "b"] and q.dropped == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="policy"):
        BoundedQueue(1, "block_forever")
    with pytest.raises(ValueError, match="maxsize"):
        BoundedQueue(0)


def test_get_timeout_and_close():
    q = BoundedQueue(2)
    with pytest.raises(Empty):
        q.get(timeout=0.01)
    q.put(1)
    q.close()
    assert not q.put(2) and q.dropped == 1
    assert q.get() == 1  # items put before close are still delivered
    with pytest.raises(Closed):
        q.get(timeout=1)


def test_close_wakes_blocked_getter():
    q = BoundedQueue(2)
    result = []

    def reader():
        try:
            q.get()
        except Closed:
            result.append("closed")

    t = threading.Thread(target=reader)
    t.start()
    q.close()
    t.join(5)
    assert result == ["closed"]


def test_threads_counters_add_up():
    q = BoundedQueue(16, "drop_oldest")
    got = []

    def producer(base):
        for i in range(500):
            q.put(base + i)

    def consumer():
        for item in q:
            got.append(item)

    c = threading.Thread(target=consumer)
    c.start()
    ps = [threading.Thread(target=producer, args=(k * 1000,)) for k in range(3)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    q.close()
    c.join(5)
    assert q.put_count == 1500
    assert len(got) == q.got_count and q.got_count + q.dropped == 1500
    for k in range(3):  # per producer, order is kept
        mine = [g for g in got if k * 1000 <= g < (k + 1) * 1000]
        assert mine == sorted(mine)


def test_async_bridge_from_threads():
    async def main():
        loop = asyncio.get_running_loop()
        q = AsyncBoundedQueue(loop, 1000, "drop_oldest")

        def producer():
            for i in range(200):
                q.put_threadsafe(i)
            q.close_threadsafe()

        t = threading.Thread(target=producer)
        t.start()
        items = []
        while True:
            try:
                items.append(await asyncio.wait_for(q.get(), 5))
            except Closed:
                break
        t.join()
        return items, q.stats()

    items, stats = asyncio.run(main())
    assert items == list(range(200))
    assert stats["put"] == 200 and stats["got"] == 200 and stats["dropped"] == 0


def test_async_bridge_overflow_policy():
    async def main():
        q = AsyncBoundedQueue(asyncio.get_running_loop(), 2, "keep_latest")
        for i in range(5):
            q.put_nowait(i)
        return await q.get(), q.stats()

    item, stats = asyncio.run(main())
    assert item == 4 and stats["dropped"] == 4
