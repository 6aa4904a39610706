"""One WebRTC peer of ``frieren-stream serve``: its lifecycle from offer to close.

A :class:`PeerSession` owns the peer connection, the :class:`stream.session.Session`
its camera track feeds (through :class:`stream.webrtc.VideoTrackConsumer`), the
:class:`stream.webrtc.GeneratedAudioTrack` that carries the generated audio back,
the data channel (statistics out, the page's reports, pings and ``bye`` in), and
the reason it closed. It knows nothing of HTTP: the server creates it, hands it
the offer and is told through ``on_closed`` when it is gone.

aiortc is imported lazily, so importing this module needs no ``webrtc`` extra.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional

from .serve_config import ServerConfig
from .session import Session

log = logging.getLogger(__name__)

MAX_DC_MESSAGE = 8192
_REPORT_MAX_KEYS = 48


def clean_report(msg: Dict[str, Any]) -> Dict[str, Any]:
    """Keep a page report's scalar fields only (bounded in number and size)."""
    out: Dict[str, Any] = {}
    for k, v in list(msg.items())[:_REPORT_MAX_KEYS]:
        if not isinstance(k, str) or len(k) > 40 or k == "type":
            continue
        if isinstance(v, bool) or v is None:
            out[k] = v
        elif isinstance(v, (int, float)):
            out[k] = v if v == v and abs(v) < 1e12 else None  # NaN/inf -> None
        elif isinstance(v, str):
            out[k] = v[:100]
    return out


class PeerSession:
    """One browser (or aiortc) peer: pc + Session + audio track + data channel.

    worker:    the running GenerationWorker shared by all peers.
    zmq_sink:  optional sink that also receives every chunk (``submit(chunk)``).
    on_closed: called on the loop thread once the peer has fully closed.
    """

    def __init__(self, sid: str, pc, worker, config: ServerConfig, *, zmq_sink=None,
                 on_closed: Optional[Callable[["PeerSession"], None]] = None) -> None:
        from .webrtc import GeneratedAudioTrack

        self.id = sid
        self.pc = pc
        self.config = config
        self.zmq_sink = zmq_sink
        self.on_closed = on_closed
        self.loop = asyncio.get_running_loop()
        self.created = time.monotonic()
        self.created_wall = time.time()
        rate = worker.generator.sample_rate
        self.audio = GeneratedAudioTrack(self.loop, rate, jitter=config.jitter_config(), name=sid)
        self.session = Session(worker, self._on_chunk, config.session, session_id=sid)
        self.consumer = None
        self.channel = None
        self.state = "new"
        self.close_reason: Optional[str] = None
        self.reports: Deque[Dict[str, Any]] = deque(maxlen=20)
        self.reports_received = 0
        self.bad_messages = 0
        self.stats_sent = 0
        self._stats_task: Optional[asyncio.Task] = None
        self._closing: Optional[asyncio.Task] = None
        pc.on("track", self.on_track)
        pc.on("datachannel", self.on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    # ---------------------------------------------------------------- worker thread
    def _on_chunk(self, chunk) -> None:
        self.audio.push_threadsafe(chunk)
        if self.zmq_sink is not None:
            self.zmq_sink.submit(chunk)

    # ---------------------------------------------------------------- loop thread
    async def answer(self, sdp: str, typ: str):
        """Apply the remote offer, add the audio track; returns the local answer description.

        Raises whatever aiortc raises on an SDP it cannot use (the caller closes the peer)."""
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=typ))
        if not any(t.kind == "audio" for t in self.pc.getTransceivers()):
            raise ValueError("no audio transceiver")
        self.pc.addTrack(self.audio)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("session %s: connection %s", self.id, state)
        if state in ("failed", "closed") and self.state != "closed":
            reason = "hang-up" if state == "closed" else ("connection failed (ICE/DTLS): check "
                                                           "--stun/--turn and firewalls")
            self.close_soon(reason)

    def on_track(self, track) -> None:
        from .webrtc import VideoTrackConsumer

        if track.kind == "video" and self.consumer is None and self.state != "closed":
            self.consumer = VideoTrackConsumer(track, self.session.push_frame, source_id=self.id).start()
            self.state = "streaming"

    def on_datachannel(self, channel) -> None:
        self.channel = channel
        channel.on("message", self.on_message)
        if self._stats_task is None:
            self._stats_task = self.loop.create_task(self._send_stats(), name=f"stats-{self.id}")

    def on_message(self, message) -> None:
        if not isinstance(message, str) or len(message) > MAX_DC_MESSAGE:
            self.bad_messages += 1
            return
        try:
            msg = json.loads(message)
        except ValueError:
            self.bad_messages += 1
            return
        if not isinstance(msg, dict):
            self.bad_messages += 1
            return
        kind = msg.get("type")
        if kind == "report":
            report = clean_report(msg)
            report["received_s"] = round(time.monotonic() - self.created, 3)
            self.reports.append(report)
            self.reports_received += 1
        elif kind == "ping":
            self._send({"type": "pong", "t": msg.get("t") if isinstance(msg.get("t"), (int, float)) else None})
        elif kind == "bye":
            self.close_soon("hang-up")
        else:
            self.bad_messages += 1

    def _send(self, obj: Dict[str, Any]) -> bool:
        ch = self.channel
        if ch is None or ch.readyState != "open":
            return False
        try:
            ch.send(json.dumps(obj))
            return True
        except Exception:  # noqa: BLE001 - a closing channel
            return False

    async def _send_stats(self) -> None:
        while self.state != "closed":
            await asyncio.sleep(self.config.stats_interval_s)
            if self._send({"type": "stats", "seq": self.stats_sent, **self.stats()}):
                self.stats_sent += 1

    def idle_for(self) -> float:
        now = time.monotonic()
        last = self.created
        if self.consumer is not None and self.consumer.last_frame_monotonic is not None:
            last = self.consumer.last_frame_monotonic
        return now - last

    def stats(self) -> Dict[str, Any]:
        s: Dict[str, Any] = dict(self.session.stats())
        s.update(self.audio.stats())
        if self.consumer is not None:
            s.update(self.consumer.stats())
        s["uptime_s"] = round(time.monotonic() - self.created, 3)
        s["sample_rate_out"] = self.audio.out_rate
        return s

    def describe(self) -> Dict[str, Any]:
        return {"id": self.id, "state": self.state, "close_reason": self.close_reason,
                "connection": getattr(self.pc, "connectionState", None),
                "created": self.created_wall, "stats": self.stats(), "stats_sent": self.stats_sent,
                "reports_received": self.reports_received, "bad_messages": self.bad_messages,
                "last_report": self.reports[-1] if self.reports else None}

    def close_soon(self, reason: str) -> "asyncio.Task":
        if self._closing is None:
            self._closing = self.loop.create_task(self.close(reason), name=f"close-{self.id}")
        return self._closing

    async def close(self, reason: str) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.close_reason = reason
        log.info("session %s closing: %s", self.id, reason)
        self.session.close()
        if self._stats_task is not None:
            self._stats_task.cancel()
        if self.consumer is not None:
            await self.consumer.stop()
        self.audio.stop()
        try:
            await asyncio.wait_for(self.pc.close(), 5.0)
        except Exception:  # noqa: BLE001
            log.warning("session %s: peer connection did not close cleanly", self.id)
        if self.on_closed is not None:
            self.on_closed(self)
