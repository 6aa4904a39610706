"""WebcamSource: OpenCV VideoCapture by index (0) or device path ('/dev/video0').

Timestamps: the camera's frames get ``pts`` = monotonic capture time in ns since
the source's first frame (``time_base = 1/1e9``); the audio timeline therefore
runs at wall-clock speed, whatever rate the camera really delivers.

Resilience: if the camera cannot be opened or stops delivering (unplugged,
taken by another app) the source logs a warning, releases it, waits with
exponential backoff (``backoff_initial`` doubling up to ``backoff_max``) and
reopens; frames resume with pts still on the same clock (the window sees a gap
and holds the last frame). It only ends when ``stop`` is set.
"""
from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from typing import Any, Callable, Iterator, Optional, Tuple, Union

import numpy as np

from ..clock import NS_PER_S
from ..messages import Frame
from .base import Source

log = logging.getLogger(__name__)

NS_TIME_BASE = Fraction(1, NS_PER_S)


class WebcamSource(Source):
    def __init__(self, device: Union[int, str] = 0, *, width: Optional[int] = None, height: Optional[int] = None,
                 fps: Optional[float] = None, size: Optional[Tuple[int, int]] = None,
                 source_id: Optional[str] = None, queue_size: int = 8, backoff_initial: float = 0.5,
                 backoff_max: float = 5.0, capture_factory: Optional[Callable[[Union[int, str]], Any]] = None,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        """width/height/fps: requested capture mode (the driver may pick the nearest);
        size: optional (width, height) to resize frames to after capture;
        capture_factory: builds the capture object (default ``cv2.VideoCapture``; tests inject fakes)."""
        super().__init__(source_id or f"webcam:{device}", queue_size=queue_size)
        self.device = device
        self.width, self.height, self.fps = width, height, fps
        self.size = size
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self._factory = capture_factory
        self._clock = clock
        self.opens = 0
        self.open_failures = 0
        self.disconnects = 0

    def _open_capture(self):
        import cv2
        factory = self._factory or cv2.VideoCapture
        try:
            cap = factory(self.device)
        except Exception as exc:
            log.warning("camera %r: cannot open (%s)", self.device, exc)
            return None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                            (cv2.CAP_PROP_FPS, self.fps)):
            if value:
                cap.set(prop, float(value))
        return cap

    def _to_rgb(self, bgr: np.ndarray) -> np.ndarray:
        import cv2
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.size is not None:
            rgb = cv2.resize(rgb, tuple(self.size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb, dtype=np.uint8)

    def iter_frames(self, stop: Optional[threading.Event] = None) -> Iterator[Frame]:
        stop = stop or threading.Event()
        cap = None
        backoff = self.backoff_initial
        origin_ns: Optional[int] = None
        last_pts = -1
        try:
            while not stop.is_set():
                if cap is None:
                    cap = self._open_capture()
                    if cap is None:
                        self.open_failures += 1
                        log.warning("camera %r unavailable; retrying in %.1f s", self.device, backoff)
                        if stop.wait(backoff):
                            return
                        backoff = min(backoff * 2, self.backoff_max)
                        continue
                    self.opens += 1
                    log.info("camera %r opened", self.device)
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    self.disconnects += 1
                    log.warning("camera %r stopped delivering frames; reconnecting in %.1f s", self.device, backoff)
                    cap.release()
                    cap = None
                    if stop.wait(backoff):
                        return
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
                backoff = self.backoff_initial
                capture_ns = self._clock()
                if origin_ns is None:
                    origin_ns = capture_ns
                pts = max(capture_ns - origin_ns, last_pts + 1)  # strictly increasing
                last_pts = pts
                yield Frame(pts=pts, time_base=NS_TIME_BASE, rgb=self._to_rgb(bgr), capture_ns=capture_ns,
                            source_id=self.source_id)
        finally:
            if cap is not None:
                cap.release()
