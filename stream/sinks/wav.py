"""WAV file sink: 16-bit PCM through the stdlib ``wave`` module.

The file is valid at all times as far as a file can be: the RIFF header is
written (with zero frames) at open, patched after every write, and the file is
flushed to the OS every ``flush_interval_s`` (0 = after every chunk), so a
killed process leaves a playable file holding everything up to the last flush.
``close()`` (also run at interpreter exit, e.g. after Ctrl-C) flushes the rest.

Placement: the sink records one stream (the first ``stream_id`` it sees unless
given) and places each chunk at its ``start_sample``: gaps (dropped windows)
are filled with silence up to ``max_gap_s``, so the file stays aligned with the
video timeline; an overlap is trimmed.
"""
from __future__ import annotations

import atexit
import logging
import os
import time
import wave
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..messages import AudioChunk
from .base import Sink

log = logging.getLogger(__name__)


def float_to_int16(pcm: np.ndarray) -> np.ndarray:
    return np.round(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")


class WavSink(Sink):
    def __init__(self, path: Union[str, os.PathLike], *, sample_rate: Optional[int] = None, channels: int = 1,
                 stream_id: Optional[str] = None, flush_interval_s: float = 1.0, fsync: bool = False,
                 max_gap_s: float = 10.0, queue_size: int = 256, name: str = "wav") -> None:
        """sample_rate: file rate (None: the first chunk's rate; give it to have a valid file from open);
        channels: file channels
        (mono chunks are duplicated to fill, extra chunk channels are dropped)."""
        super().__init__(name, out_rate=sample_rate, queue_size=queue_size)
        self.path = Path(path)
        self.channels = int(channels)
        self.stream_id = stream_id
        self.flush_interval_s = float(flush_interval_s)
        self.fsync = fsync
        self.max_gap_s = float(max_gap_s)
        self.frames_written = 0
        self.ignored_chunks = 0
        self.silence_samples = 0
        self.overlap_samples = 0
        self._fh = None
        self._wav: Optional[wave.Wave_write] = None
        self._origin: Optional[int] = None
        self._last_flush = 0.0

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "wb")
        except OSError as exc:
            raise OSError(f"WavSink cannot open {self.path} for writing: {exc.strerror or exc}") from None
        atexit.register(self.close)
        if self.out_rate is not None:
            self._begin(self.out_rate)

    def _begin(self, rate: int) -> None:
        self._wav = wave.open(self._fh, "wb")
        self._wav.setnchannels(self.channels)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._wav.writeframes(b"")  # header with zero frames: a valid (empty) file from now on
        self._flush(force=True)

    def _write(self, chunk: AudioChunk) -> None:
        if self.stream_id is None:
            self.stream_id = chunk.stream_id
        if chunk.stream_id != self.stream_id:
            self.ignored_chunks += 1
            return
        if self._wav is None:  # rate taken from the first chunk
            self.out_rate = chunk.sample_rate
            self._begin(chunk.sample_rate)
        pcm = chunk.pcm_2d()
        if pcm.shape[1] != self.channels:
            pcm = np.repeat(pcm[:, :1], self.channels, axis=1) if pcm.shape[1] == 1 else pcm[:, :self.channels]
        if self._origin is None:
            self._origin = chunk.start_sample
        pos = self._origin + self.frames_written
        offset = chunk.start_sample - pos
        if offset < 0:  # overlaps what is written: keep the written audio, trim the head
            self.overlap_samples += min(-offset, len(pcm))
            pcm = pcm[-offset:]
        elif offset > 0:
            limit = int(self.max_gap_s * chunk.sample_rate)
            if offset <= limit:
                self._append(np.zeros((offset, self.channels), np.float32))
                self.silence_samples += offset
            else:
                log.warning("wav sink %s: gap of %d samples exceeds max_gap_s; not filled", self.path, offset)
                self._origin += offset
        if len(pcm):
            self._append(pcm)
        self._flush()

    def _append(self, pcm: np.ndarray) -> None:
        self._wav.writeframes(float_to_int16(pcm).tobytes())  # patches the header sizes
        self.frames_written += len(pcm)

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._fh is None or not (force or now - self._last_flush >= self.flush_interval_s):
            return
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self._last_flush = now

    def _idle(self) -> None:
        self._flush()

    def _close(self) -> None:
        try:
            if self._wav is None and self._fh is not None:
                self._begin(self.out_rate or 16000)  # nothing arrived: still leave a valid empty file
            if self._wav is not None:
                self._wav.close()  # final header patch; does not close our file object
                self._wav = None
            if self._fh is not None:
                self._fh.flush()
                if self.fsync:
                    os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh = None
        finally:
            atexit.unregister(self.close)

    def stats(self):
        s = super().stats()
        s.update(path=str(self.path), frames_in_file=self.frames_written, silence_samples=self.silence_samples,
                 ignored_chunks=self.ignored_chunks)
        return s
