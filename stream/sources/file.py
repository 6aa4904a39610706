"""FileSource: decode any container/codec/fps PyAV (FFmpeg) reads, as Frames.

pts and time_base are the video stream's own (integers). ``realtime=True``
paces frames against the monotonic clock (frame with pts ``p`` is released at
``t0 + (p - p0) * time_base``), so a file behaves like a camera; ``False``
decodes as fast as possible (offline). ``loop=True`` restarts at the end and
keeps pts increasing (each pass is offset by the previous pass's end), so the
audio timeline never goes backwards. The file is probed in the constructor: an
unreadable file fails there with a :class:`SourceError` naming the path.
A corrupt packet in the middle is skipped and counted (``decode_errors``).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple, Union

from ..clock import NS_PER_S, rescale
from ..messages import Frame
from .base import Source, SourceError

log = logging.getLogger(__name__)


class FileSource(Source):
    def __init__(self, path: Union[str, os.PathLike], *, realtime: bool = True, loop: bool = False,
                 size: Optional[Tuple[int, int]] = None, source_id: Optional[str] = None,
                 queue_size: int = 32, clock: Callable[[], int] = time.monotonic_ns) -> None:
        """size: optional (width, height) to scale frames to while decoding."""
        self.path = Path(path)
        super().__init__(source_id or self.path.name, queue_size=queue_size)
        self.realtime = realtime
        self.loop = loop
        self.size = size
        self._clock = clock
        self.decode_errors = 0
        self.loops_completed = 0
        self._probe()

    def _open(self):
        import av
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} does not exist or is not a file")
        try:
            container = av.open(str(self.path), mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise SourceError(f"cannot read video file {self.path}: {exc}") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"video file {self.path} has no video stream")
        return container

    def _probe(self) -> None:
        container = self._open()
        try:
            stream = container.streams.video[0]
            if stream.time_base is None:
                raise SourceError(f"video file {self.path}: video stream has no time base")
            self.time_base = Fraction(stream.time_base)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.average_rate: Optional[Fraction] = Fraction(rate) if rate else None
            self.width = stream.codec_context.width
            self.height = stream.codec_context.height
            self.num_frames = int(stream.frames or 0)
            self.duration_pts = stream.duration
        finally:
            container.close()

    @property
    def frame_duration_pts(self) -> int:
        """Nominal frame duration in time_base units (from the average rate)."""
        if not self.average_rate:
            return 1
        return max(1, rescale(1, 1 / self.average_rate, self.time_base, rounding="nearest"))

    def _decode(self, container) -> Iterator:
        import av
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                self.decode_errors += 1
                log.warning("%s: skipping undecodable packet (%s)", self.path, exc)
                continue
            for frame in frames:
                yield index, frame
                index += 1

    def iter_frames(self, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        stop = stop or threading.Event()
        offset = 0            # pts offset of the current pass (loop mode)
        t0_ns = pts0 = None   # pacing anchor
        last_out = None
        prev_in = None
        while not stop.is_set():
            container = self._open()
            first_in = None
            step = self.frame_duration_pts
            try:
                for index, av_frame in self._decode(container):
                    if stop.is_set():
                        return
                    pts = av_frame.pts
                    if pts is None:  # no timestamp: derive from index and the nominal rate
                        pts = (prev_in + step) if prev_in is not None else index * step
                    if prev_in is not None and first_in is not None and pts > prev_in:
                        step = pts - prev_in
                    if first_in is None:
                        first_in = pts
                    prev_in = pts
                    out_pts = pts + offset
                    if last_out is not None and out_pts <= last_out:
                        continue  # non-increasing timestamp from the container: skip
                    release_ns = self._clock()
                    if self.realtime:
                        if t0_ns is None:
                            t0_ns, pts0 = release_ns, out_pts
                        target = t0_ns + rescale(out_pts - pts0, self.time_base, Fraction(1, NS_PER_S))
                        delay = target - release_ns
                        if delay > 0 and stop.wait(delay / NS_PER_S):
                            return
                        release_ns = max(self._clock(), target)
                    # The capture instant is the release instant (before pixel conversion), so a
                    # slow conversion never makes a frame look captured late.
                    if self.size is not None:
                        av_frame = av_frame.reformat(width=self.size[0], height=self.size[1], format="rgb24")
                    rgb = av_frame.to_ndarray(format="rgb24")
                    yield Frame(pts=out_pts, time_base=self.time_base, rgb=rgb, capture_ns=release_ns,
                                source_id=self.source_id)
                    last_out = out_pts
            finally:
                container.close()
            if first_in is None:
                raise SourceError(f"video file {self.path}: no frame could be decoded")
            if not self.loop:
                return
            self.loops_completed += 1
            offset = last_out + step - first_in  # next pass starts one frame after this one ended
            prev_in = None
