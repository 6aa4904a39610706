"""Helpers for the WebRTC service tests: a shared worker fixture, an in-process server on a
free port, and an aiortc peer that plays synthetic video and records the audio it gets back."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from fractions import Fraction
from typing import List, Optional

import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the webrtc extra (aiortc, aiohttp) is not installed")
pytest.importorskip("aiohttp", reason="the webrtc extra (aiortc, aiohttp) is not installed")

_WORKER = None


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Overrides tests/conftest.py's fixture of this name (2 torch threads) in every module that
    imports it: the WebRTC tests run the model with ``serve``'s default threads, which leave a
    core to the peers' codecs."""
    import torch
    from stream.serve_cli import default_worker_threads

    torch.set_num_threads(default_worker_threads("cpu"))
    yield


@pytest.fixture(scope="session")
def worker():
    """One tiny random-init GenerationWorker for every test module of this folder (a fixture
    here rather than in a conftest.py, so ``from conftest import`` elsewhere keeps working)."""
    global _WORKER
    if _WORKER is None:
        import atexit
        from stream.server import build_worker

        # threads: serve's default (one core fewer than the machine has)
        _WORKER = build_worker(preset="tiny", random_init=True)
        atexit.register(_WORKER.stop)
    return _WORKER


def synth_frames(seed: int, seconds: float = 2.0) -> np.ndarray:
    from frieren.synth.config import SceneConfig
    from frieren.synth.scene import render_clip

    return render_clip(seed, SceneConfig(duration_s=seconds)).frames


@contextlib.asynccontextmanager
async def running_server(worker, **overrides):
    """``async with running_server(worker, max_sessions=2) as (server, base_url): ...``"""
    from stream.server import FoleyServer, ServerConfig, start_site

    host = overrides.pop("bind", "127.0.0.1")
    config = dataclasses.replace(ServerConfig(port=0, stats_interval_s=0.25), **overrides)
    server = FoleyServer(config, worker)
    runner, port = await start_site(server, host=host, port=0)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Peer:
    """An aiortc client: sends looping synthetic video (``fps``, default 30), records the audio
    it gets back."""

    def __init__(self, frames: np.ndarray, fps: int = 30) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack
        from aiortc.mediastreams import MediaStreamError
        import av

        class _Video(VideoStreamTrack):
            """Loops ``rgb`` at ``fps`` frames per second on the 90 kHz RTP clock."""

            def __init__(self, rgb):
                super().__init__()
                self.rgb, self.i, self.t0 = rgb, 0, None

            async def next_timestamp(self):
                if self.readyState != "live":
                    raise MediaStreamError
                if self.t0 is None:
                    self.t0 = time.monotonic()
                due = self.t0 + self.i / fps
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                return self.i * 90000 // fps, Fraction(1, 90000)

            async def recv(self):
                pts, time_base = await self.next_timestamp()
                f = av.VideoFrame.from_ndarray(self.rgb[self.i % len(self.rgb)], format="rgb24")
                f.pts, f.time_base = pts, time_base
                self.i += 1
                return f

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(_Video(frames))
        self.pc.addTransceiver("audio", direction="recvonly")
        self.channel = self.pc.createDataChannel("stats")
        self.stats: List[dict] = []
        self.audio: List[np.ndarray] = []   # float32 mono at 48 kHz, one array per frame
        self.audio_rate: Optional[int] = None
        self.session: Optional[str] = None
        self._tasks: List[asyncio.Task] = []

        @self.channel.on("message")
        def _on_message(message):
            import json
            msg = json.loads(message)
            if msg.get("type") == "stats":
                self.stats.append(msg)

        @self.pc.on("track")
        def _on_track(track):
            if track.kind == "audio":
                self._tasks.append(asyncio.ensure_future(self._record(track)))

    async def _record(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            a = frame.to_ndarray().astype(np.float32) / 32768.0
            ch = len(frame.layout.channels)
            self.audio.append(a.reshape(-1, ch).mean(axis=1))
            self.audio_rate = frame.sample_rate

    async def connect(self, session, base_url: str, token: Optional[str] = None):
        """POST the offer; returns the aiohttp response status and JSON body."""
        from aiortc import RTCSessionDescription
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with session.post(f"{base_url}/offer", json={"sdp": self.pc.localDescription.sdp,
                                                            "type": "offer"}, headers=headers) as r:
            body = await r.json()
            if r.status == 200:
                self.session = body["session"]
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
            return r.status, body

    def report(self, **fields) -> None:
        import json
        if self.channel.readyState == "open":
            self.channel.send(json.dumps({"type": "report", **fields}))

    def pcm(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)

    async def close(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            t.cancel()


def run(coro, timeout: float = 55.0):
    """Run a test coroutine with a hard bound, so a hang fails instead of blocking the suite."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_for_page_audio(http, base: str, proc, describe, timeout: float = 45.0):
    """Poll ``/sessions`` until the browser page reports non-silent audio and at least 4 more
    stats updates than when it first reported. Returns (session entry, first stats_updates,
    last listing). ``describe()`` gives the browser log tail for failure messages."""
    import asyncio
    import time

    best, first_updates, session, listing = None, None, None, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        assert proc.poll() is None, f"the browser exited early: {describe()}"
        async with http.get(f"{base}/sessions") as r:
            listing = await r.json()
        for s in listing["sessions"]:
            rep = s.get("last_report") or {}
            if rep.get("stats_updates") and first_updates is None:
                first_updates, session = rep["stats_updates"], s["id"]
            if s["id"] == session:
                best = s
        rep = (best or {}).get("last_report") or {}
        if (rep.get("max_rms", 0) > 1e-3 and first_updates is not None
                and rep.get("stats_updates", 0) >= first_updates + 4):
            break
    assert best is not None, f"the page never reported: {listing}\n{describe()}"
    return best, first_updates, listing
