"""aiortc glue: a browser's camera track in, generated audio out (DESIGN §1, §3.5, §5.7).

:class:`VideoTrackConsumer`
    An asyncio task awaits the remote video track and hands each decoded
    ``av.VideoFrame`` (with its arrival instant) to a bounded ``drop_oldest``
    queue; one dedicated thread per session converts it to a :class:`Frame`
    (integer ``pts`` on the track's ``time_base``, rebased to the first frame)
    and calls ``Session.push_frame``. The event loop never converts pixels nor
    touches the model.

:class:`GeneratedAudioTrack`
    An audio ``MediaStreamTrack``: the worker thread hands it :class:`AudioChunk`\\ s
    with :meth:`push_threadsafe` (crossing into the loop only through
    ``loop.call_soon_threadsafe``); ``recv`` resamples to 48 kHz and returns 20 ms
    ``av.AudioFrame``\\ s paced by the sample clock, taken from a
    :class:`stream.jitter.PlayoutBuffer` (fixed prebuffer, or an adaptive playout
    delay that follows the measured arrival delays). When the buffer runs dry it
    plays silence and counts an underrun; its size is bounded (oldest dropped, counted).

aiortc and av are imported here at module level: import this module only where
the ``webrtc`` extra is wanted.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from fractions import Fraction
from typing import Callable, Deque, Dict, Optional

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .jitter import JitterConfig, PlayoutBuffer
from .messages import AudioChunk, Frame
from .queues import AsyncBoundedQueue, BoundedQueue, Closed, Empty
from .resample import StreamingResampler

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000


# ---------------------------------------------------------------------------------- video in
class VideoTrackConsumer:
    """Remote video track -> ``push_frame(Frame)`` on a dedicated thread.

    push_frame:  called on this consumer's thread only (the Session's source thread).
    queue_size:  decoded frames waiting for the thread; overflow drops the oldest (counted).
    """

    def __init__(self, track: MediaStreamTrack, push_frame: Callable[[Frame], object], *,
                 source_id: str = "webrtc", queue_size: int = 4) -> None:
        self.track = track
        self.push_frame = push_frame
        self.source_id = source_id
        self.queue: BoundedQueue = BoundedQueue(queue_size, "drop_oldest", name=f"{source_id}.video")
        self._task: Optional[asyncio.Task] = None
        self._thread = threading.Thread(target=self._run, name=f"video-{source_id}", daemon=True)
        self._pts0: Optional[int] = None
        self._tb: Optional[Fraction] = None
        self._last_pts: Optional[int] = None
        self.frames_received = 0
        self.frames_pushed = 0
        self.frames_rejected = 0     # non-increasing pts or unconvertible frames
        self.errors = 0
        self.last_frame_monotonic: Optional[float] = None
        self.ended = False

    def start(self) -> "VideoTrackConsumer":
        self._thread.start()
        self._task = asyncio.get_running_loop().create_task(self._pump(), name=f"pump-{self.source_id}")
        return self

    async def _pump(self) -> None:
        try:
            while True:
                try:
                    frame = await self.track.recv()
                except MediaStreamError:
                    break
                self.frames_received += 1
                self.last_frame_monotonic = time.monotonic()
                self.queue.put((frame, time.monotonic_ns()))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a broken track ends this session only
            self.errors += 1
            log.exception("video track of %s failed", self.source_id)
        finally:
            self.ended = True
            self.queue.close()

    def _convert(self, vf: "av.VideoFrame", capture_ns: int) -> Optional[Frame]:
        if vf.pts is None or vf.time_base is None:
            pts, tb = capture_ns, Fraction(1, NS_PER_S)
        else:
            pts, tb = int(vf.pts), Fraction(vf.time_base)
        if self._tb is None or tb != self._tb:
            self._tb, self._pts0, self._last_pts = tb, pts, None   # new timeline: rebase
        rel = pts - self._pts0
        if self._last_pts is not None and rel <= self._last_pts:
            self.frames_rejected += 1
            return None
        self._last_pts = rel
        rgb = vf.to_ndarray(format="rgb24")
        return Frame(pts=rel, time_base=tb, rgb=np.ascontiguousarray(rgb), capture_ns=capture_ns,
                     source_id=self.source_id)

    def _run(self) -> None:
        while True:
            try:
                vf, capture_ns = self.queue.get(timeout=0.5)
            except Empty:
                continue
            except Closed:
                return
            try:
                frame = self._convert(vf, capture_ns)
                if frame is not None:
                    self.push_frame(frame)
                    self.frames_pushed += 1
            except Exception:  # noqa: BLE001 - one bad frame must not end the session
                self.errors += 1
                self.frames_rejected += 1
                log.exception("%s: frame rejected", self.source_id)

    async def stop(self, timeout: float = 2.0) -> None:
        self.queue.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, timeout)

    def stats(self) -> Dict[str, object]:
        return {"frames_received": self.frames_received, "frames_pushed": self.frames_pushed,
                "frames_dropped": self.queue.dropped, "frames_rejected": self.frames_rejected,
                "errors": self.errors, "ended": self.ended}


# ---------------------------------------------------------------------------------- audio out
class GeneratedAudioTrack(MediaStreamTrack):
    """48 kHz mono audio track paced by its sample clock; silence on underrun.

    in_rate:       sample rate of the chunks handed to :meth:`push_threadsafe`.
    frame_ms:      samples per returned frame (20 ms -> 960 at 48 kHz).
    jitter:        the playout buffer's policy (:class:`stream.jitter.JitterConfig`); None:
                   the ``fixed`` policy with ``prebuffer_ms`` and ``max_buffer_ms``.
    prebuffer_ms:  (fixed) audio collected before playing (again) after start or an underrun.
    max_buffer_ms: (fixed) bound on buffered audio; beyond it the oldest samples are dropped.
    """

    kind = "audio"

    def __init__(self, loop: asyncio.AbstractEventLoop, in_rate: int, *, out_rate: int = 48000,
                 frame_ms: int = 20, prebuffer_ms: float = 200.0, max_buffer_ms: float = 600.0,
                 jitter: Optional[JitterConfig] = None, queue_size: int = 32, name: str = "audio") -> None:
        super().__init__()
        if (out_rate * frame_ms) % 1000:
            raise ValueError(f"{frame_ms} ms is not a whole number of samples at {out_rate} Hz")
        self.out_rate = int(out_rate)
        self.frame_samples = self.out_rate * frame_ms // 1000
        self.time_base = Fraction(1, self.out_rate)
        self.queue: AsyncBoundedQueue[AudioChunk] = AsyncBoundedQueue(loop, queue_size, "drop_oldest",
                                                                     name=f"{name}.queue")
        self.resampler = StreamingResampler(in_rate, self.out_rate, 1)
        if jitter is None:
            jitter = JitterConfig(mode="fixed", prebuffer_ms=prebuffer_ms, max_buffer_ms=max_buffer_ms)
        self.buffer = PlayoutBuffer(self.out_rate, self.frame_samples, jitter)
        self._clock0: Optional[float] = None
        self._timestamp = 0
        self._next_in: Optional[int] = None
        self._rms: Deque[float] = deque(maxlen=50)     # last second of frames
        # counters (the buffer counts underruns, silence, overflow and skips)
        self.frames_sent = 0
        self.gaps = 0
        self.chunks_in = 0

    @property
    def underruns(self) -> int:
        return self.buffer.underruns

    @property
    def silent_frames(self) -> int:
        return self.buffer.silent_frames

    @property
    def overflow_samples(self) -> int:
        return self.buffer.overflow_samples

    @property
    def playing(self) -> bool:
        return self.buffer.playing

    _playing = playing       # older name

    # ---------------------------------------------------------------- any thread
    def push_threadsafe(self, chunk: AudioChunk) -> None:
        self.queue.put_threadsafe(chunk)

    # ---------------------------------------------------------------- loop thread
    async def _drain(self) -> None:
        while self.queue.qsize():      # get() returns at once while items wait
            self.ingest(await self.queue.get())

    def ingest(self, chunk: AudioChunk) -> None:
        """Loop thread: resample a chunk into the playout buffer (bounded)."""
        self.chunks_in += 1
        pcm = chunk.pcm if chunk.pcm.ndim == 1 else chunk.pcm.mean(axis=1)
        if chunk.sample_rate != self.resampler.in_rate:
            self.resampler = StreamingResampler(chunk.sample_rate, self.out_rate, 1)
            self._next_in = None
        if self._next_in is not None and chunk.start_sample != self._next_in:
            self.gaps += 1
            self.resampler.reset()
        self._next_in = chunk.end_sample
        out = self.resampler.process(pcm.astype(np.float32, copy=False))
        self.buffer.push(out, chunk.capture_ns, time.monotonic_ns())

    def next_pcm(self) -> np.ndarray:
        """One frame of float32 samples from the buffer (no pacing, no queue)."""
        return self.buffer.read(time.monotonic_ns())

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._clock0 is None:
            self._clock0 = time.monotonic()
        else:
            self._timestamp += self.frame_samples
            wait = self._clock0 + self._timestamp / self.out_rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0:  # the loop stalled for over a second: restart the clock, don't burst
                self._clock0 = time.monotonic() - self._timestamp / self.out_rate
        if self.readyState != "live":
            raise MediaStreamError
        await self._drain()
        pcm = self.next_pcm()
        self._rms.append(float(np.sqrt(np.mean(pcm * pcm))))
        s16 = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(s16[None, :], format="s16", layout="mono")
        frame.sample_rate = self.out_rate
        frame.pts = self._timestamp
        frame.time_base = self.time_base
        self.frames_sent += 1
        return frame

    def stop(self) -> None:
        self.queue.close()
        super().stop()

    def stats(self) -> Dict[str, object]:
        s: Dict[str, object] = {"audio_frames_sent": self.frames_sent, "gaps": self.gaps,
                                "chunks_in": self.chunks_in, "chunks_dropped": self.queue.dropped}
        s.update(self.buffer.stats(time.monotonic_ns()))
        s["out_rms"] = float(np.mean(self._rms)) if self._rms else 0.0
        return s
