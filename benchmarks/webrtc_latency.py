"""Glass-to-ear latency at the WebRTC server's output (DESIGN §6), one aiortc peer.

An in-process ``frieren-stream serve`` (FoleyServer on a free loopback port) and one aiortc
peer that sends the synthetic scene at 30 fps and plays back nothing (it only drains the
audio track). Measured on the server: for every 20 ms audio frame the track sends, the time
from the arrival of the video frame of that instant to that frame leaving the track
("egress latency": processing + jitter buffer; network and the browser's own jitter buffer
are not included). Percentiles cover the track's last 10 s of frames, i.e. the steady state
after start-up when ``--duration`` >= ~13 s.

    .venv/bin/python benchmarks/webrtc_latency.py --random-init --preset tiny
    .venv/bin/python benchmarks/webrtc_latency.py --random-init --preset tiny --jitter fixed adaptive --repeat 3
    .venv/bin/python benchmarks/webrtc_latency.py --simulate

``--simulate`` drives the same PlayoutBuffer with modelled arrival schedules instead (no model,
no network, deterministic): 128 ms hops whose arrival delay is processing time + when the 30 fps
frame that closed the hop came (uniform 0-33 ms), for a GPU-like tick (8 ms, sd 3), a loaded
CPU (120 ms, sd 40) and the GPU case with 1 % of chunks 150 ms late (stalls); 5 seeds x 60 s,
latency percentiles over the last 49 s (after start-up).

Prints one JSON object: {"runs": [{"jitter": ..., "egress_latency_p50_ms": ..., ...}], ...}.
Numbers, never pass/fail: on a shared CPU compare variants within one run.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEYS = ("egress_latency_p50_ms", "egress_latency_p95_ms", "egress_latency_max_ms", "latency_p50_ms",
        "latency_p95_ms", "tick_p50_ms", "rtf", "hop_ms", "underruns", "silent_frames", "dropped",
        "overflow_ms", "skipped_ms", "stale_dropped_ms", "target_delay_ms", "buffer_ms", "gaps",
        "chunks", "frames")


class _Peer:
    """aiortc client: loops synthetic video at 30 fps, drains the returned audio."""

    def __init__(self, frames) -> None:
        import av
        from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack

        class _Video(VideoStreamTrack):
            def __init__(self, rgb):
                super().__init__()
                self.rgb, self.i = rgb, 0

            async def recv(self):
                pts, time_base = await self.next_timestamp()
                f = av.VideoFrame.from_ndarray(self.rgb[self.i % len(self.rgb)], format="rgb24")
                f.pts, f.time_base = pts, time_base
                self.i += 1
                return f

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(_Video(frames))
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.createDataChannel("stats")
        self.audio_frames = 0
        self._tasks: List[asyncio.Task] = []

        @self.pc.on("track")
        def _on_track(track):
            if track.kind == "audio":
                self._tasks.append(asyncio.ensure_future(self._drain(track)))

    async def _drain(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.audio_frames += 1

    async def connect(self, http, base: str) -> str:
        from aiortc import RTCSessionDescription
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with http.post(f"{base}/offer", json={"sdp": self.pc.localDescription.sdp,
                                                     "type": "offer"}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"offer refused: {r.status} {body}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        return body["session"]

    async def close(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            t.cancel()


async def one_run(worker, frames, duration: float, overrides: Dict[str, Any]) -> Dict[str, Any]:
    import aiohttp
    from stream.server import FoleyServer, ServerConfig, start_site

    config = dataclasses.replace(ServerConfig(port=0), **overrides)
    server = FoleyServer(config, worker)
    runner, port = await start_site(server, host="127.0.0.1", port=0)
    peer = _Peer(frames)
    try:
        async with aiohttp.ClientSession() as http:
            sid = await peer.connect(http, f"http://127.0.0.1:{port}")
            t0 = time.monotonic()
            await asyncio.sleep(duration)
            stats = server.peers[sid].stats()
        stats["seconds"] = round(time.monotonic() - t0, 2)
        stats["peer_audio_frames"] = peer.audio_frames
    finally:
        await peer.close()
        await runner.cleanup()
    out = {k: stats.get(k) for k in KEYS if k in stats}
    out.update(seconds=stats["seconds"], peer_audio_frames=peer.audio_frames,
               underruns_per_min=round(stats["underruns"] * 60.0 / stats["seconds"], 2))
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in out.items()}


SCENARIOS = {"gpu": dict(tick_ms=8.0, tick_sd=3.0),
             "cpu-loaded": dict(tick_ms=120.0, tick_sd=40.0),
             "gpu+stalls": dict(tick_ms=8.0, tick_sd=3.0, stall_p=0.01, stall_ms=150.0)}


def simulate(mode: str, tick_ms: float, tick_sd: float, stall_p: float = 0.0, stall_ms: float = 0.0,
             seconds: float = 60.0, hop_ms: float = 128.0, seed: int = 0) -> Dict[str, Any]:
    """One modelled stream through a PlayoutBuffer on a virtual clock (20 ms reads)."""
    import numpy as np
    from stream.jitter import JitterConfig, PlayoutBuffer

    rng = np.random.default_rng(seed)
    rate, ms = 48000, 1_000_000
    buf = PlayoutBuffer(rate, rate // 50, JitterConfig(mode=mode))
    hop = int(hop_ms * rate / 1000)
    arrivals, last = [], 0
    for k in range(int(seconds * 1000 / hop_ms)):
        cap = int(k * hop_ms * ms)
        delay = tick_ms + abs(rng.normal(0, tick_sd)) + rng.uniform(0, 1000 / 30)
        delay += stall_ms if rng.random() < stall_p else 0.0
        last = max(cap + int(delay * ms), last)          # the worker delivers in order
        arrivals.append((last, cap))
    t, i, lat = int(rng.uniform(0, 20) * ms), 0, []
    while t < (seconds - 1.0) * 1000 * ms:                # stop before the stream runs out
        while i < len(arrivals) and arrivals[i][0] <= t:
            buf.push(np.zeros(hop, np.float32), arrivals[i][1], t)
            i += 1
        n = len(buf.latency_ms)
        buf.read(t)
        if len(buf.latency_ms) > n and t > 10_000 * ms:  # steady state: after the first 10 s
            lat.append(buf.latency_ms[-1])
        t += 20 * ms
    return {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "underruns": buf.underruns}


def run_simulation(seeds: int = 5) -> Dict[str, Any]:
    out = []
    for name, kw in SCENARIOS.items():
        for mode in ("fixed", "adaptive"):
            rs = [simulate(mode, seed=s, **kw) for s in range(seeds)]
            out.append({"scenario": name, "jitter": mode,
                        "egress_latency_p50_ms": round(sum(r["p50"] for r in rs) / seeds, 1),
                        "egress_latency_p95_ms": round(sum(r["p95"] for r in rs) / seeds, 1),
                        "underruns_per_min": round(sum(r["underruns"] for r in rs) / seeds, 2)})
    return {"simulated": True, "seconds_per_run": 60, "seeds": seeds, "runs": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: serve's, one fewer than the cores, so the aiortc "
                         "codecs keep one)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of streaming per run")
    ap.add_argument("--jitter", nargs="+", default=None,
                    help="jitter-buffer modes to run one after the other (fixed, adaptive; "
                         "default: the server's default only)")
    ap.add_argument("--prebuffer-ms", type=float, default=None, help="fixed mode's prebuffer")
    ap.add_argument("--repeat", type=int, default=1, help="run the list of modes this many times")
    ap.add_argument("--simulate", action="store_true",
                    help="modelled arrival schedules through the playout buffer only (see above)")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.simulate:
        text = json.dumps(run_simulation(), indent=2)
        print(text)
        if args.json_out:
            Path(args.json_out).write_text(text + "\n")
        return 0

    import torch
    from frieren.synth.config import SceneConfig
    from frieren.synth.scene import render_clip
    from stream.server import build_worker

    worker = build_worker(args.bundle, preset=args.preset, random_init=args.random_init, device=args.device,
                          threads=args.threads)
    frames = render_clip(0, SceneConfig(duration_s=8.0)).frames
    runs = []
    try:
        for mode in (args.jitter or [None]) * max(args.repeat, 1):
            overrides: Dict[str, Any] = {}
            if mode is not None:
                overrides["jitter"] = mode
            if args.prebuffer_ms is not None:
                overrides["prebuffer_ms"] = args.prebuffer_ms
            res = asyncio.run(one_run(worker, frames, args.duration, overrides))
            res = {"jitter": mode or "default", **({"prebuffer_ms": args.prebuffer_ms}
                                                   if args.prebuffer_ms is not None else {}), **res}
            runs.append(res)
    finally:
        worker.stop()
    report = {"preset": args.preset, "device": args.device, "duration_s": args.duration,
              "threads": torch.get_num_threads(), "runs": runs}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
