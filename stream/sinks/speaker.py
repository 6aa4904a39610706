"""Speaker sink: a sounddevice OutputStream pulling from a jitter buffer.

The PortAudio callback never waits: it copies what the :class:`JitterBuffer`
holds and plays silence for the rest, counting an underrun (DESIGN §3.5). The
buffer first fills to ``prefill`` samples before playing (and again after an
underrun) so network/compute jitter is absorbed; when the writer runs ahead by
more than ``capacity`` samples the oldest audio is dropped (counted), which
keeps the latency bounded. Both classes work without an audio device, so the
logic is tested by feeding fixed-size blocks.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Optional, Union

import numpy as np

from ..messages import AudioChunk
from .base import Sink

log = logging.getLogger(__name__)


class JitterBuffer:
    """Thread-safe FIFO of audio samples, (capacity, channels) float32 ring."""

    def __init__(self, channels: int, capacity: int, prefill: int) -> None:
        if capacity <= 0 or not 0 <= prefill <= capacity:
            raise ValueError(f"need capacity > 0 and 0 <= prefill <= capacity, got {capacity=}, {prefill=}")
        self.channels = int(channels)
        self.capacity = int(capacity)
        self.prefill = int(prefill)
        self._buf = np.zeros((self.capacity, self.channels), np.float32)
        self._read = 0      # ring index of the oldest sample
        self._size = 0
        self._primed = self.prefill == 0
        self._started = False
        self._lock = threading.Lock()
        self.underruns = 0          # times playback ran dry (a callback could not be filled)
        self.silence_samples = 0    # silence played after playback began (priming excluded)
        self.overflow_samples = 0   # oldest samples dropped because the writer ran ahead
        self.samples_written = 0
        self.samples_played = 0

    @property
    def buffered(self) -> int:
        return self._size

    def write(self, pcm: np.ndarray) -> None:
        x = np.asarray(pcm, dtype=np.float32)
        x = x[:, None] if x.ndim == 1 else x
        if x.shape[1] != self.channels:
            x = np.repeat(x[:, :1], self.channels, axis=1) if x.shape[1] == 1 else x[:, :self.channels]
        with self._lock:
            self.samples_written += len(x)
            if len(x) > self.capacity:
                self.overflow_samples += len(x) - self.capacity
                x = x[-self.capacity:]
            excess = self._size + len(x) - self.capacity
            if excess > 0:
                self._read = (self._read + excess) % self.capacity
                self._size -= excess
                self.overflow_samples += excess
            w = (self._read + self._size) % self.capacity
            first = min(len(x), self.capacity - w)
            self._buf[w:w + first] = x[:first]
            self._buf[:len(x) - first] = x[first:]
            self._size += len(x)
            if not self._primed and self._size >= self.prefill:
                self._primed = True

    def read_into(self, out: np.ndarray) -> int:
        """Fill ``out`` (frames, channels) completely; returns how many samples were audio.
        Never blocks for data: missing samples are silence and count as an underrun."""
        n = out.shape[0]
        with self._lock:
            take = min(n, self._size) if self._primed else 0
            first = min(take, self.capacity - self._read)
            out[:first] = self._buf[self._read:self._read + first]
            out[first:take] = self._buf[:take - first]
            self._read = (self._read + take) % self.capacity
            self._size -= take
            if take < n:
                out[take:] = 0.0
                if self._started:  # silence after playback began (not the initial priming)
                    self.silence_samples += n - take
                    if self._primed:  # was playing and ran dry: one underrun event
                        self.underruns += 1
                if self.prefill:
                    self._primed = False  # wait for prefill again before resuming
            self.samples_played += take
            if take:
                self._started = True
        return take

    def stats(self) -> Dict[str, int]:
        return {"buffered": self._size, "underruns": self.underruns, "silence_samples": self.silence_samples,
                "overflow_samples": self.overflow_samples, "samples_written": self.samples_written,
                "samples_played": self.samples_played}


def _import_sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise RuntimeError(f"SpeakerSink needs sounddevice and PortAudio ({exc}); install the extra: "
                           f"pip install 'frieren-stream[speaker]' (and libportaudio2 on Linux)") from None
    return sounddevice


class SpeakerSink(Sink):
    """Plays one stream on an output device.

    device:      sounddevice device index or name substring (None: system default).
    sample_rate: output rate (None: the device's default rate).
    blocksize:   callback size in frames (0: let PortAudio choose).
    prefill_ms:  jitter buffer fill before playing; buffer_ms: most audio held before dropping.
    """

    def __init__(self, *, device: Optional[Union[int, str]] = None, sample_rate: Optional[int] = None,
                 channels: int = 1, blocksize: int = 0, prefill_ms: float = 150.0, buffer_ms: float = 1000.0,
                 latency: Union[str, float] = "low", stream_id: Optional[str] = None, queue_size: int = 64,
                 name: str = "speaker") -> None:
        super().__init__(name, out_rate=sample_rate, queue_size=queue_size)
        self.device = device
        self.channels = int(channels)
        self.blocksize = int(blocksize)
        self.prefill_ms = float(prefill_ms)
        self.buffer_ms = float(buffer_ms)
        self.latency = latency
        self.stream_id = stream_id
        self.jitter: Optional[JitterBuffer] = None
        self.device_underflows = 0
        self.ignored_chunks = 0
        self._stream = None

    def _make_buffer(self, rate: int) -> None:
        self.jitter = JitterBuffer(self.channels, capacity=max(1, int(rate * self.buffer_ms / 1000)),
                                   prefill=int(rate * self.prefill_ms / 1000))

    def _open(self) -> None:
        sd = _import_sounddevice()
        try:
            info = sd.query_devices(self.device, "output")
        except Exception as exc:
            raise RuntimeError(f"no usable audio output device {self.device!r}: {exc}") from None
        if self.out_rate is None:
            self.out_rate = int(info["default_samplerate"])
        self._make_buffer(self.out_rate)
        self._stream = sd.OutputStream(samplerate=self.out_rate, channels=self.channels, dtype="float32",
                                       device=self.device, blocksize=self.blocksize, latency=self.latency,
                                       callback=self.callback)
        self._stream.start()
        log.info("speaker sink playing on %s at %d Hz", info.get("name"), self.out_rate)

    def callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """The PortAudio callback (also callable directly in tests)."""
        if status and getattr(status, "output_underflow", False):
            self.device_underflows += 1
        if self.jitter is None:
            outdata.fill(0)
            return
        self.jitter.read_into(outdata)

    def _write(self, chunk: AudioChunk) -> None:
        if self.stream_id is None:
            self.stream_id = chunk.stream_id
        if chunk.stream_id != self.stream_id:
            self.ignored_chunks += 1
            return
        if self.jitter is None:
            self._make_buffer(self.out_rate or chunk.sample_rate)
        self.jitter.write(chunk.pcm)

    def _close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            finally:
                self._stream = None

    def stats(self):
        s = super().stats()
        if self.jitter is not None:
            s.update(self.jitter.stats())
        s["device_underflows"] = self.device_underflows
        return s
