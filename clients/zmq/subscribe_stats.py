#!/usr/bin/env python3
"""Print one line of statistics per frieren-stream audio message (wire format v1).

Self-contained: needs only pyzmq and numpy (see clients/README.md for the format).

    python subscribe_stats.py [--endpoint tcp://127.0.0.1:5556] [--stream cam0] [--count N] [--json]

Latencies: engine = emit - capture (valid across hosts); e2e = now - capture and
net = now - emit are only meaningful when this runs on the engine's host.
"""
import argparse
import json
import sys
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5556")
    ap.add_argument("--stream", default="", help="stream id to follow (default: all)")
    ap.add_argument("--count", type=int, default=0, help="exit after this many messages (0: run forever)")
    ap.add_argument("--timeout", type=float, default=0, help="exit if nothing arrives for this many seconds")
    ap.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    args = ap.parse_args(argv)

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    sock.setsockopt(zmq.SUBSCRIBE, ("audio/" + args.stream).encode("utf-8"))
    expected = {}  # stream_id -> (next seq, next start_sample)
    received = 0
    try:
        while args.count <= 0 or received < args.count:
            if args.timeout and not sock.poll(int(args.timeout * 1000)):
                print(f"no message for {args.timeout} s; exiting", file=sys.stderr)
                return 2
            frames = sock.recv_multipart()
            now = time.monotonic_ns()
            try:
                h, x = decode(frames)
            except (ValueError, KeyError, UnicodeDecodeError) as exc:
                print(f"bad message: {exc}", file=sys.stderr)
                continue
            if args.stream and h["stream_id"] != args.stream:
                continue
            received += 1
            sid = h["stream_id"]
            lost_msgs = lost_samples = 0
            if sid in expected:
                lost_msgs = h["seq"] - expected[sid][0]
                lost_samples = h["start_sample"] - expected[sid][1]
            expected[sid] = (h["seq"] + 1, h["start_sample"] + h["num_samples"])
            stats = {
                "stream_id": sid, "seq": h["seq"], "start_sample": h["start_sample"],
                "num_samples": h["num_samples"], "sample_rate": h["sample_rate"], "channels": h["channels"],
                "dtype": h["dtype"],
                "rms": float(np.sqrt(np.mean(x ** 2))) if x.size else 0.0,
                "peak": float(np.max(np.abs(x))) if x.size else 0.0,
                "lost_msgs": lost_msgs, "gap_samples": lost_samples,
                "engine_ms": (h["emit_time_ns"] - h["capture_time_ns"]) / 1e6,
                "e2e_ms": (now - h["capture_time_ns"]) / 1e6,
                "net_ms": (now - h["emit_time_ns"]) / 1e6,
                "timings_ms": h.get("timings_ms", {}),
            }
            if args.json:
                print(json.dumps(stats), flush=True)
            else:
                print(f"{sid} seq={h['seq']} start={h['start_sample']} n={h['num_samples']}@{h['sample_rate']}Hz "
                      f"rms={stats['rms']:.4f} peak={stats['peak']:.3f} lost={lost_msgs} gap={lost_samples} "
                      f"engine={stats['engine_ms']:.1f}ms e2e={stats['e2e_ms']:.1f}ms net={stats['net_ms']:.1f}ms",
                      flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
