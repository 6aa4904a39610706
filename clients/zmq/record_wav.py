#!/usr/bin/env python3
"""Record one frieren-stream audio stream (wire format v1) to a 16-bit WAV file.

Self-contained: needs only pyzmq and numpy (see clients/README.md for the format).

    python record_wav.py out.wav [--endpoint tcp://127.0.0.1:5556] [--stream cam0]
                         [--seconds 30 | --count N] [--timeout 5]

Each message is placed at its start_sample relative to the first one received:
lost messages become silence, so the file keeps the stream's timing. The WAV
header is kept up to date after every message; Ctrl-C finishes the file.
"""
import argparse
import json
import sys
import wave

import numpy as np
import zmq

WIRE_VERSION = 1
DTYPES = {"float32le": "<f4", "int16le": "<i2"}
MAX_GAP_S = 10.0


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


def to_int16(x):
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("out", help="WAV file to write")
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5556")
    ap.add_argument("--stream", default="", help="stream id (default: the first one heard)")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this much audio (0: until Ctrl-C)")
    ap.add_argument("--count", type=int, default=0, help="stop after this many messages")
    ap.add_argument("--timeout", type=float, default=0, help="stop if nothing arrives for this many seconds")
    args = ap.parse_args(argv)

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    sock.setsockopt(zmq.SUBSCRIBE, ("audio/" + args.stream).encode("utf-8"))
    wav = None
    stream, origin, written, messages, silence = args.stream or None, None, 0, 0, 0
    rate = channels = None
    status = 0
    try:
        while True:
            if args.count and messages >= args.count:
                break
            if args.seconds and rate and written >= args.seconds * rate:
                break
            if args.timeout and not sock.poll(int(args.timeout * 1000)):
                print(f"no message for {args.timeout} s; stopping", file=sys.stderr)
                status = 2 if messages == 0 else 0
                break
            try:
                h, x = decode(sock.recv_multipart())
            except (ValueError, KeyError, UnicodeDecodeError) as exc:
                print(f"bad message: {exc}", file=sys.stderr)
                continue
            if stream is None:
                stream = h["stream_id"]
            if h["stream_id"] != stream:
                continue
            if wav is None:
                rate, channels, origin = h["sample_rate"], h["channels"], h["start_sample"]
                wav = wave.open(args.out, "wb")
                wav.setnchannels(channels)
                wav.setsampwidth(2)
                wav.setframerate(rate)
            if h["sample_rate"] != rate or h["channels"] != channels:
                print("sample rate or channel count changed; skipping message", file=sys.stderr)
                continue
            offset = h["start_sample"] - (origin + written)
            if offset < 0:        # overlap (should not happen): drop what is already written
                x = x[-offset:]
            elif offset > 0:      # lost messages: fill with silence to keep the timing
                if offset <= MAX_GAP_S * rate:
                    wav.writeframes(to_int16(np.zeros((offset, channels), np.float32)))
                    written += offset
                    silence += offset
                else:
                    origin += offset
            if len(x):
                wav.writeframes(to_int16(x))  # also patches the header sizes
                written += len(x)
            messages += 1
    except KeyboardInterrupt:
        pass
    finally:
        if wav is not None:
            wav.close()
        sock.close()
        ctx.term()
    print(f"recorded {messages} messages, {written} samples ({silence} silence) of stream {stream!r} "
          f"to {args.out}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
