"""``frieren-stream serve``: the WebRTC service and its browser page (DESIGN §1).

Routes
------
``GET /``, ``GET /client.js``   the browser client (``clients/web/``).
``GET /config``                 ICE servers and settings for the page (token checked).
``POST /offer``                 ``{"sdp", "type": "offer"}`` -> ``{"sdp", "type": "answer", "session"}``.
``GET /sessions``               live sessions: engine stats, audio-track stats and the
                                page's own reports (token checked).
``GET /health``                 liveness.

This module is the HTTP side only: the app, its routes, limits, the token and
request checks (:mod:`stream.validation`). Every peer is one
:class:`stream.peer.PeerSession` (peer connection, tracks, data channel, stats,
close reasons); settings are :mod:`stream.serve_config`; the ``serve`` command line
is :mod:`stream.serve_cli` (``add_serve_parser`` is re-exported here for ``stream/cli.py``).

Safety: binds 127.0.0.1 by default; any other address needs an access token
(generated and printed at start unless given) checked on ``/offer``, ``/config``
and ``/sessions``, unless ``--no-token-i-know-this-is-unsafe``. Bodies are
size-limited, offers validated, errors answered as JSON ``{"error": ...}`` with a
4xx status; one bad request or peer never affects the others.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, Optional

from .peer import MAX_DC_MESSAGE, PeerSession, clean_report  # noqa: F401  (re-exported)
from .serve_cli import add_serve_parser, build_worker, config_from_args, main, run_serve  # noqa: F401
from .serve_config import (DEFAULT_STATIC_DIR, IceServer, ServerConfig, is_loopback,  # noqa: F401
                           resolve_token)
from .validation import MAX_SDP_CHARS, ApiError, check_token, read_json, validate_offer  # noqa: F401

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- the server
class FoleyServer:
    """The aiohttp application around a running :class:`GenerationWorker`.

    owns_worker: stop the worker (and the ZeroMQ sink) when the app shuts down.
    """

    def __init__(self, config: ServerConfig, worker, *, owns_worker: bool = False) -> None:
        self.config = config
        self.worker = worker
        self.owns_worker = owns_worker
        self.peers: Dict[str, PeerSession] = {}
        self.closed: Deque[Dict[str, Any]] = deque(maxlen=32)
        self.zmq_sink = None
        self.refused = 0
        self.bad_requests = 0
        self._watchdog: Optional[asyncio.Task] = None

    # ---------------------------------------------------------------- app
    def make_app(self):
        from aiohttp import web

        @web.middleware
        async def json_errors(request, handler):
            try:
                return await handler(request)
            except ApiError as e:
                if e.status != 503:
                    self.bad_requests += 1
                return web.json_response({"error": e.message}, status=e.status)
            except web.HTTPException as e:
                if e.status < 400:
                    raise
                return web.json_response({"error": e.reason}, status=e.status)
            except Exception:  # noqa: BLE001 - never take the server down
                log.exception("request %s %s failed", request.method, request.path)
                return web.json_response({"error": "internal error (see the server log)"}, status=500)

        app = web.Application(middlewares=[json_errors], client_max_size=self.config.max_body_bytes)
        app.router.add_get("/", self.handle_index)
        app.router.add_get("/client.js", self.handle_client_js)
        app.router.add_get("/config", self.handle_config)
        app.router.add_post("/offer", self.handle_offer)
        app.router.add_get("/sessions", self.handle_sessions)
        app.router.add_get("/health", self.handle_health)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app) -> None:
        if self.config.zmq_endpoint:
            from .sinks.zmq import ZmqSink
            sink = ZmqSink(self.config.zmq_endpoint)
            await asyncio.get_running_loop().run_in_executor(None, sink.start)
            self.zmq_sink = sink
        self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name="session-watchdog")

    async def _on_shutdown(self, app) -> None:
        await self.close_all("server shutdown")

    async def _on_cleanup(self, app) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.zmq_sink is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.zmq_sink.close)
        if self.owns_worker:
            await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)

    async def close_all(self, reason: str) -> None:
        peers = list(self.peers.values())
        if peers:
            await asyncio.gather(*(p.close_soon(reason) for p in peers), return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            for p in list(self.peers.values()):
                if p.state == "closed":
                    continue
                if p.idle_for() > self.config.idle_timeout_s:
                    p.close_soon(f"idle: no video for {self.config.idle_timeout_s:g} s")
                elif p.consumer is not None and p.consumer.ended:
                    p.close_soon("hang-up (video track ended)")

    def _forget(self, peer: PeerSession) -> None:
        """PeerSession.on_closed: move a closed peer to the bounded ``closed`` list."""
        if self.peers.pop(peer.id, None) is not None:
            d = peer.describe()
            d["stats"] = {k: d["stats"].get(k) for k in ("chunks", "frames", "dropped", "underruns", "uptime_s")}
            self.closed.append(d)

    # ---------------------------------------------------------------- helpers
    def _check_token(self, request) -> None:
        check_token(request, self.config.token)

    async def _read_json(self, request) -> Any:
        return await read_json(request, self.config.max_body_bytes)

    def _rtc_configuration(self):
        from aiortc import RTCConfiguration, RTCIceServer
        servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                   for s in self.config.ice_servers]
        return RTCConfiguration(iceServers=servers)  # [] (not None): no default public STUN

    # ---------------------------------------------------------------- handlers
    async def handle_index(self, request):
        return self._static(request, "index.html")

    async def handle_client_js(self, request):
        return self._static(request, "client.js")

    def _static(self, request, name: str):
        from aiohttp import web
        path = Path(self.config.static_dir) / name
        if not path.is_file():
            raise ApiError(404, f"{name} not found in {self.config.static_dir}")
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    async def handle_health(self, request):
        from aiohttp import web
        return web.json_response({"ok": True, "sessions": len(self.peers),
                                  "max_sessions": self.config.max_sessions, "worker_alive": self.worker.alive})

    async def handle_config(self, request):
        from aiohttp import web
        self._check_token(request)
        return web.json_response({"iceServers": [s.as_dict() for s in self.config.ice_servers],
                                  "stats_interval_ms": int(self.config.stats_interval_s * 1000),
                                  "max_sessions": self.config.max_sessions})

    async def handle_sessions(self, request):
        from aiohttp import web
        self._check_token(request)
        w = self.worker
        return web.json_response({
            "sessions": [p.describe() for p in list(self.peers.values())],
            "closed": list(self.closed), "max_sessions": self.config.max_sessions,
            "refused": self.refused, "bad_requests": self.bad_requests,
            "worker": {"alive": w.alive, "batches": w.batches, "windows": w.windows,
                       "dropped": w.dropped, "errors": w.errors},
            "zmq": self.zmq_sink.stats() if self.zmq_sink is not None else None})

    async def handle_offer(self, request):
        from aiohttp import web
        from aiortc import RTCPeerConnection

        self._check_token(request)
        sdp, typ = validate_offer(await self._read_json(request))
        if len(self.peers) >= self.config.max_sessions:
            self.refused += 1
            raise ApiError(503, f"server full: {self.config.max_sessions} sessions already running; "
                                "try again later")
        if not self.worker.alive:
            raise ApiError(503, "the generation worker is not running")
        sid = "s" + secrets.token_hex(4)
        pc = RTCPeerConnection(self._rtc_configuration())
        peer = PeerSession(sid, pc, self.worker, self.config, zmq_sink=self.zmq_sink,
                           on_closed=self._forget)
        self.peers[sid] = peer          # slot taken before the first await
        try:
            answer = await peer.answer(sdp, typ)
        except Exception as e:  # noqa: BLE001 - aiortc raises many kinds on a bad SDP
            await peer.close("bad offer")
            raise ApiError(400, f"SDP rejected: {type(e).__name__}: {str(e)[:200]}") from None
        log.info("session %s: offer accepted from %s (%d/%d)", sid, request.remote, len(self.peers),
                 self.config.max_sessions)
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": sid})


# ---------------------------------------------------------------------------------- running it
async def start_site(server: FoleyServer, host: Optional[str] = None, port: Optional[int] = None):
    """Start ``server`` on the running loop. Returns (runner, port); ``await runner.cleanup()`` stops it."""
    from aiohttp import web
    runner = web.AppRunner(server.make_app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host or server.config.host, server.config.port if port is None else port)
    await site.start()
    return runner, runner.addresses[0][1]  # the real port when 0 was asked


if __name__ == "__main__":
    import sys

    sys.exit(main())
