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
    ``av.AudioFrame``\\ s paced by the sample clock. When the buffer runs dry it
    plays silence and counts an underrun, then re-fills ``prebuffer_ms`` before
    playing again; a buffer above ``max_buffer_ms`` drops its oldest samples
    (counted), so latency stays bounded.

aiortc and av are imported here at module level: import this module only where
the ``webrtc`` extra is wanted.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Deque, Dict, Optional

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

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
@dataclass
class _Segment:
    pcm: np.ndarray        # float32 (N,) at the output rate
    capture_ns: int        # capture instant of pcm[0]
    offset: int = 0        # samples already played


class GeneratedAudioTrack(MediaStreamTrack):
    """48 kHz mono audio track paced by its sample clock; silence on underrun.

    in_rate:       sample rate of the chunks handed to :meth:`push_threadsafe`.
    frame_ms:      samples per returned frame (20 ms -> 960 at 48 kHz).
    prebuffer_ms:  audio collected before playing (again) after start or an underrun.
    max_buffer_ms: bound on buffered audio; beyond it the oldest samples are dropped.
    """

    kind = "audio"

    def __init__(self, loop: asyncio.AbstractEventLoop, in_rate: int, *, out_rate: int = 48000,
                 frame_ms: int = 20, prebuffer_ms: float = 200.0, max_buffer_ms: float = 600.0,
                 queue_size: int = 32, name: str = "audio") -> None:
        super().__init__()
        if (out_rate * frame_ms) % 1000:
            raise ValueError(f"{frame_ms} ms is not a whole number of samples at {out_rate} Hz")
        self.out_rate = int(out_rate)
        self.frame_samples = self.out_rate * frame_ms // 1000
        self.time_base = Fraction(1, self.out_rate)
        self.queue: AsyncBoundedQueue[AudioChunk] = AsyncBoundedQueue(loop, queue_size, "drop_oldest",
                                                                     name=f"{name}.queue")
        self.resampler = StreamingResampler(in_rate, self.out_rate, 1)
        self.prebuffer = int(prebuffer_ms * self.out_rate / 1000)
        self.max_buffer = max(int(max_buffer_ms * self.out_rate / 1000), self.prebuffer + self.frame_samples)
        self._segments: Deque[_Segment] = deque()
        self._buffered = 0
        self._playing = False
        self._clock0: Optional[float] = None
        self._timestamp = 0
        self._next_in: Optional[int] = None
        self._latency_ms: Deque[float] = deque(maxlen=500)
        self._rms: Deque[float] = deque(maxlen=50)     # last second of frames
        # counters
        self.frames_sent = 0
        self.silent_frames = 0
        self.underruns = 0          # times playback ran dry after audio had started
        self.overflow_samples = 0
        self.gaps = 0
        self.chunks_in = 0

    # ---------------------------------------------------------------- any thread
    def push_threadsafe(self, chunk: AudioChunk) -> None:
        self.queue.put_threadsafe(chunk)

    # ---------------------------------------------------------------- loop thread
    async def _drain(self) -> None:
        while self.queue.qsize():      # get() returns at once while items wait
            self.ingest(await self.queue.get())

    def ingest(self, chunk: AudioChunk) -> None:
        """Loop thread: resample a chunk into the playback buffer (bounded)."""
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
        if out.shape[0]:
            self._segments.append(_Segment(out, chunk.capture_ns))
            self._buffered += out.shape[0]
        excess = self._buffered - self.max_buffer
        while excess > 0 and self._segments:
            seg = self._segments[0]
            n = min(excess, seg.pcm.shape[0] - seg.offset)
            seg.offset += n
            self._buffered -= n
            self.overflow_samples += n
            excess -= n
            if seg.offset >= seg.pcm.shape[0]:
                self._segments.popleft()

    def _read(self, n: int, now_ns: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        pos = 0
        first = True
        while pos < n and self._segments:
            seg = self._segments[0]
            if first:
                lag = seg.offset * NS_PER_S // self.out_rate
                self._latency_ms.append((now_ns - (seg.capture_ns + lag)) / 1e6)
                first = False
            k = min(n - pos, seg.pcm.shape[0] - seg.offset)
            out[pos:pos + k] = seg.pcm[seg.offset:seg.offset + k]
            seg.offset += k
            pos += k
            if seg.offset >= seg.pcm.shape[0]:
                self._segments.popleft()
        self._buffered -= pos
        return out

    def next_pcm(self) -> np.ndarray:
        """One frame of float32 samples from the buffer (no pacing, no queue)."""
        n = self.frame_samples
        if not self._playing and self._buffered >= max(self.prebuffer, n):
            self._playing = True
        if self._playing and self._buffered >= n:
            pcm = self._read(n, time.monotonic_ns())
        else:
            if self._playing:                 # ran dry: play what is left, then re-buffer
                pcm = self._read(n, time.monotonic_ns())
                self._playing = False
                self.underruns += 1
            else:
                pcm = np.zeros(n, np.float32)
            self.silent_frames += 1
        return pcm

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
        lat = list(self._latency_ms)
        return {
            "audio_frames_sent": self.frames_sent, "silent_frames": self.silent_frames,
            "underruns": self.underruns, "overflow_ms": self.overflow_samples * 1000.0 / self.out_rate,
            "gaps": self.gaps, "chunks_in": self.chunks_in, "chunks_dropped": self.queue.dropped,
            "buffer_ms": self._buffered * 1000.0 / self.out_rate,
            "egress_latency_p50_ms": float(np.percentile(lat, 50)) if lat else None,
            "egress_latency_p95_ms": float(np.percentile(lat, 95)) if lat else None,
            "out_rms": float(np.mean(self._rms)) if self._rms else 0.0,
        }
