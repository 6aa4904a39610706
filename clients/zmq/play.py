#!/usr/bin/env python3
"""Play one frieren-stream audio stream (wire format v1) on the speakers.

Self-contained: needs pyzmq, numpy and sounddevice (see clients/README.md).

    python play.py [--endpoint tcp://127.0.0.1:5556] [--stream cam0] [--buffer-ms 120] [--device N]

A small jitter buffer absorbs arrival jitter: playback starts once it holds
--buffer-ms of audio; when it runs dry the callback plays silence, counts an
underrun and waits to refill; audio arriving beyond --max-ms is dropped (oldest
first) so the latency cannot grow. The device is opened at the stream's rate.
"""
import argparse
import collections
import json
import sys
import threading
import time

import numpy as np
import zmq

WIRE_VERSION = 1
DTYPES = {"float32le": "<f4", "int16le": "<i2"}


def decode(frames):
    """[topic, header, pcm] -> (header dict, float32 array (num_samples, channels))."""
    if len(frames) != 3:
        raise ValueError(f"expected 3 frames, got {len(frames)}")
    h = json.loads(frames[1].decode("utf-8"))
    if h.get("version") != WIRE_VERSION:
        raise ValueError(f"unsupported wire version {h.get('version')!r}")
    if h["dtype"] not in DTYPES:
        raise ValueError(f"unknown dtype {h['dtype']!r}")
    x = np.frombuffer(frames[2], dtype=DTYPES[h["dtype"]])
    if x.size != h["num_samples"] * h["channels"]:
        raise ValueError(f"pcm has {x.size} values, header says {h['num_samples']} x {h['channels']}")
    x = x.reshape(h["num_samples"], h["channels"]).astype(np.float32)
    if h["dtype"] == "int16le":
        x /= 32767.0
    return h, x


class Jitter:
    """Blocks of audio in a deque; the audio callback takes exactly what it needs."""

    def __init__(self, prefill, maximum):
        self.blocks = collections.deque()
        self.size = 0
        self.prefill, self.maximum = prefill, maximum
        self.playing = False
        self.underruns = self.dropped = 0
        self.lock = threading.Lock()

    def put(self, x):
        with self.lock:
            self.blocks.append(x)
            self.size += len(x)
            while self.size > self.maximum and self.blocks:
                old = self.blocks.popleft()
                self.size -= len(old)
                self.dropped += len(old)
            if not self.playing and self.size >= self.prefill:
                self.playing = True

    def callback(self, out, frames, time_info, status):
        with self.lock:
            filled = 0
            while self.playing and filled < frames and self.blocks:
                b = self.blocks[0]
                n = min(frames - filled, len(b))
                out[filled:filled + n] = b[:n]
                filled += n
                self.size -= n
                if n == len(b):
                    self.blocks.popleft()
                else:
                    self.blocks[0] = b[n:]
            if filled < frames:
                out[filled:] = 0
                if self.playing:
                    self.underruns += 1
                    self.playing = False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5556")
    ap.add_argument("--stream", default="", help="stream id (default: the first one heard)")
    ap.add_argument("--buffer-ms", type=float, default=120.0, help="audio buffered before playing")
    ap.add_argument("--max-ms", type=float, default=1000.0, help="most audio held before dropping")
    ap.add_argument("--device", default=None, help="sounddevice output device (index or name)")
    args = ap.parse_args(argv)
    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:
        print(f"play.py needs sounddevice and PortAudio: {exc}", file=sys.stderr)
        return 1
    device = int(args.device) if args.device and args.device.isdigit() else args.device

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    sock.setsockopt(zmq.SUBSCRIBE, ("audio/" + args.stream).encode("utf-8"))
    stream_id, out, jitter = args.stream or None, None, None
    last_report = time.monotonic()
    try:
        while True:
            try:
                h, x = decode(sock.recv_multipart())
            except (ValueError, KeyError, UnicodeDecodeError) as exc:
                print(f"bad message: {exc}", file=sys.stderr)
                continue
            stream_id = stream_id or h["stream_id"]
            if h["stream_id"] != stream_id:
                continue
            if out is None:
                rate, channels = h["sample_rate"], h["channels"]
                jitter = Jitter(int(rate * args.buffer_ms / 1000), int(rate * args.max_ms / 1000))
                out = sd.OutputStream(samplerate=rate, channels=channels, dtype="float32", device=device,
                                      latency="low", callback=jitter.callback)
                out.start()
                print(f"playing {stream_id!r} at {rate} Hz, {channels} ch", file=sys.stderr)
            if h["sample_rate"] != out.samplerate or h["channels"] != out.channels:
                continue
            jitter.put(x)
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                print(f"buffered {jitter.size} samples, underruns {jitter.underruns}, "
                      f"dropped {jitter.dropped} samples", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        if out is not None:
            out.stop()
            out.close()
        sock.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
