"""``frieren-stream serve``: the WebRTC service and its browser page (DESIGN §1).

Routes
------
``GET /``, ``GET /client.js``   the browser client (``clients/web/``).
``GET /config``                 ICE servers and settings for the page (token checked).
``POST /offer``                 ``{"sdp", "type": "offer"}`` -> ``{"sdp", "type": "answer", "session"}``.
``GET /sessions``               live sessions: engine stats, audio-track stats and the
                                page's own reports (token checked).
``GET /health``                 liveness.

Every peer is one :class:`PeerSession`: its camera track feeds a
:class:`stream.session.Session` (through :class:`stream.webrtc.VideoTrackConsumer`),
the generated audio returns on a :class:`stream.webrtc.GeneratedAudioTrack` (and
optionally on a shared ZeroMQ PUB sink), and a data channel carries statistics to
the page and the page's reports (audio level it measures, stats it saw) back.

Safety: binds 127.0.0.1 by default; any other address needs an access token
(generated and printed at start unless given) checked on ``/offer``, ``/config``
and ``/sessions``, unless ``--no-token-i-know-this-is-unsafe``. Bodies are
size-limited, offers validated, errors answered as JSON ``{"error": ...}`` with a
4xx status; one bad request or peer never affects the others.
"""
from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Tuple

from .session import Session, SessionConfig

log = logging.getLogger(__name__)

DEFAULT_STATIC_DIR = Path(__file__).resolve().parents[1] / "clients" / "web"
MAX_SDP_CHARS = 60_000
MAX_DC_MESSAGE = 8192
_REPORT_MAX_KEYS = 48


# ---------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class IceServer:
    urls: str
    username: Optional[str] = None
    credential: Optional[str] = None

    def as_dict(self) -> Dict[str, str]:
        d = {"urls": self.urls}
        if self.username is not None:
            d["username"] = self.username
        if self.credential is not None:
            d["credential"] = self.credential
        return d


@dataclass(frozen=True)
class ServerConfig:
    """host/port: where to listen. token: required on the API when not None.
    idle_timeout_s: a peer that sends no video for this long (counted from its offer) is closed.
    """
    host: str = "127.0.0.1"
    port: int = 8080
    token: Optional[str] = None
    max_sessions: int = 4
    idle_timeout_s: float = 20.0
    ice_servers: Tuple[IceServer, ...] = ()
    max_body_bytes: int = 64 * 1024
    stats_interval_s: float = 0.5
    prebuffer_ms: float = 200.0
    max_buffer_ms: float = 600.0
    static_dir: Path = DEFAULT_STATIC_DIR
    zmq_endpoint: Optional[str] = None
    session: SessionConfig = field(default_factory=SessionConfig)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: Optional[str], no_token: bool) -> Optional[str]:
    """The token the server will require: given, generated for non-loopback hosts, or None."""
    if no_token:
        return None
    if token:
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(18)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def validate_offer(payload: Any) -> Tuple[str, str]:
    """Check the shape of an ``/offer`` body before aiortc sees it. Raises ApiError(400)."""
    if not isinstance(payload, dict):
        raise ApiError(400, "body must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}")
    sdp, typ = payload.get("sdp"), payload.get("type")
    if typ != "offer":
        raise ApiError(400, f"\"type\" must be \"offer\", got {typ!r:.40}")
    if not isinstance(sdp, str) or not sdp.strip():
        raise ApiError(400, "\"sdp\" must be a non-empty string")
    if len(sdp) > MAX_SDP_CHARS:
        raise ApiError(400, f"\"sdp\" is longer than {MAX_SDP_CHARS} characters")
    if any((ord(c) < 32 and c not in "\r\n\t") or ord(c) > 126 for c in sdp):
        raise ApiError(400, "\"sdp\" contains characters outside printable ASCII")
    lines = [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]
    if not lines or lines[0] != "v=0":
        raise ApiError(400, "\"sdp\" must start with \"v=0\"")
    bad = next((ln for ln in lines if len(ln) < 2 or ln[1] != "=" or not ln[0].isalpha()), None)
    if bad is not None:
        raise ApiError(400, f"malformed SDP line: {bad[:60]!r}")
    kinds = [ln[2:].split(" ", 1)[0] for ln in lines if ln.startswith("m=")]
    if "video" not in kinds:
        raise ApiError(400, "the offer has no video m-line: add the camera track before createOffer()")
    if "audio" not in kinds:
        raise ApiError(400, "the offer has no audio m-line: add a recvonly audio transceiver "
                            "(pc.addTransceiver('audio', {direction: 'recvonly'}))")
    return sdp, typ


def _clean_report(msg: Dict[str, Any]) -> Dict[str, Any]:
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


# ---------------------------------------------------------------------------------- one peer
class PeerSession:
    """One browser (or aiortc) peer: pc + Session + audio track + data channel."""

    def __init__(self, server: "FoleyServer", sid: str, pc) -> None:
        from .webrtc import GeneratedAudioTrack

        cfg = server.config
        self.server = server
        self.id = sid
        self.pc = pc
        self.loop = asyncio.get_running_loop()
        self.created = time.monotonic()
        self.created_wall = time.time()
        rate = server.worker.generator.sample_rate
        self.audio = GeneratedAudioTrack(self.loop, rate, prebuffer_ms=cfg.prebuffer_ms,
                                         max_buffer_ms=cfg.max_buffer_ms, name=sid)
        self.session = Session(server.worker, self._on_chunk, cfg.session, session_id=sid)
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

    # worker thread
    def _on_chunk(self, chunk) -> None:
        self.audio.push_threadsafe(chunk)
        if self.server.zmq_sink is not None:
            self.server.zmq_sink.submit(chunk)

    # loop thread
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
            report = _clean_report(msg)
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
            await asyncio.sleep(self.server.config.stats_interval_s)
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
        self.server._forget(self)


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
        if self.peers.pop(peer.id, None) is not None:
            d = peer.describe()
            d["stats"] = {k: d["stats"].get(k) for k in ("chunks", "frames", "dropped", "underruns", "uptime_s")}
            self.closed.append(d)

    # ---------------------------------------------------------------- helpers
    def _check_token(self, request) -> None:
        token = self.config.token
        if token is None:
            return
        given = request.headers.get("X-Frieren-Token") or request.query.get("token")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:].strip()
        if not given:
            raise ApiError(401, "access token required: open the URL the server printed at start "
                                "(…/?token=…) or send 'Authorization: Bearer TOKEN'")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(403, "wrong access token")

    async def _read_json(self, request) -> Any:
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"request body too large ({request.content_length} bytes > {limit})")
        body = bytearray()
        async for chunk in request.content.iter_chunked(16384):
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"request body too large (> {limit} bytes)")
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ApiError(400, f"body is not valid JSON: {e}") from None
        except RecursionError:
            raise ApiError(400, "body is not valid JSON: nested too deeply") from None

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
        from aiortc import RTCPeerConnection, RTCSessionDescription

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
        peer = PeerSession(self, sid, pc)
        self.peers[sid] = peer          # slot taken before the first await

        @pc.on("track")
        def _on_track(track):
            peer.on_track(track)

        @pc.on("datachannel")
        def _on_dc(channel):
            peer.on_datachannel(channel)

        @pc.on("connectionstatechange")
        async def _on_state():
            state = pc.connectionState
            log.info("session %s: connection %s", sid, state)
            if state in ("failed", "closed") and peer.state != "closed":
                reason = "hang-up" if state == "closed" else ("connection failed (ICE/DTLS): check "
                                                               "--stun/--turn and firewalls")
                peer.close_soon(reason)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=typ))
            if not any(t.kind == "audio" for t in pc.getTransceivers()):
                raise ValueError("no audio transceiver")
            pc.addTrack(peer.audio)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:  # noqa: BLE001 - aiortc raises many kinds on a bad SDP
            await peer.close("bad offer")
            raise ApiError(400, f"SDP rejected: {type(e).__name__}: {str(e)[:200]}") from None
        log.info("session %s: offer accepted from %s (%d/%d)", sid, request.remote, len(self.peers),
                 self.config.max_sessions)
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "session": sid})


# ---------------------------------------------------------------------------------- running it
async def start_site(server: FoleyServer, host: Optional[str] = None, port: Optional[int] = None):
    """Start ``server`` on the running loop. Returns (runner, port); ``await runner.cleanup()`` stops it."""
    from aiohttp import web
    runner = web.AppRunner(server.make_app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host or server.config.host, server.config.port if port is None else port)
    await site.start()
    return runner, runner.addresses[0][1]  # the real port when 0 was asked


def build_worker(bundle: Optional[str] = None, preset: Optional[str] = None, random_init: bool = False,
                 device: str = "cpu", max_batch: int = 32):
    """Load a model and start its GenerationWorker (blocking: call before the loop serves)."""
    from frieren.bundles import load_model
    from frieren.streaming import StreamingGenerator
    from .worker import GenerationWorker

    stack, _ = load_model(bundle, preset=preset, random_init=random_init, device=device)
    return GenerationWorker(StreamingGenerator(stack, device=device), max_batch=max_batch).start()


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to a ``frieren-stream`` subparsers object; the handler is ``args.func(args)``."""
    p = subparsers.add_parser("serve", help="WebRTC service + browser page: your camera in, Foley out",
                              description="Serve the browser client and answer WebRTC offers.")
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; any other "
                     "address needs an access token)")
    net.add_argument("--port", type=int, default=8080)
    net.add_argument("--token", default=None, help="access token to require (default: generated and "
                     "printed when --host is not loopback)")
    net.add_argument("--no-token-i-know-this-is-unsafe", dest="no_token", action="store_true",
                     help="serve a non-loopback address without an access token")
    net.add_argument("--stun", action="append", default=[], metavar="URL",
                     help="STUN server, e.g. stun:stun.l.google.com:19302 (repeatable; default none)")
    net.add_argument("--turn", action="append", default=[], metavar="URL",
                     help="TURN server, e.g. turn:turn.example.org:3478 (repeatable)")
    net.add_argument("--turn-username", default=None)
    net.add_argument("--turn-credential", default=None)
    net.add_argument("--max-sessions", type=int, default=4)
    net.add_argument("--idle-timeout", type=float, default=20.0,
                     help="close a session after this many seconds without video")
    net.add_argument("--max-body-kb", type=int, default=64, help="request body limit")
    net.add_argument("--static-dir", default=str(DEFAULT_STATIC_DIR), help="folder with index.html and client.js")
    net.add_argument("--zmq", default=None, metavar="ENDPOINT",
                     help="also publish every session's audio on ZeroMQ PUB (e.g. tcp://127.0.0.1:5556)")
    m = p.add_argument_group("model")
    m.add_argument("--bundle", default=None, help="model bundle folder (default: the embedded model)")
    m.add_argument("--preset", default=None, help="preset for --random-init (default tiny)")
    m.add_argument("--random-init", action="store_true", help="random weights (development/timing only)")
    m.add_argument("--device", default="cpu")
    m.add_argument("--hop-samples", type=int, default=None, help="default: one visual frame period")
    m.add_argument("--lookahead-frames", type=int, default=0)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--prebuffer-ms", type=float, default=200.0,
                   help="audio buffered before playback starts (and after an underrun)")
    m.add_argument("--max-buffer-ms", type=float, default=600.0,
                   help="bound on buffered audio per session; beyond it the oldest is dropped")
    p.set_defaults(func=run_serve)
    return p


def config_from_args(args) -> ServerConfig:
    """Parse ``serve`` arguments into a ServerConfig (raises ValueError with the reason)."""
    if args.max_sessions < 1:
        raise ValueError("--max-sessions must be >= 1")
    if args.turn and not (args.turn_username and args.turn_credential):
        raise ValueError("--turn needs --turn-username and --turn-credential")
    ice = tuple(IceServer(u) for u in args.stun) + tuple(
        IceServer(u, args.turn_username, args.turn_credential) for u in args.turn)
    token = resolve_token(args.host, args.token, args.no_token)
    return ServerConfig(host=args.host, port=args.port, token=token, max_sessions=args.max_sessions,
                        idle_timeout_s=args.idle_timeout, ice_servers=ice,
                        max_body_bytes=args.max_body_kb * 1024, static_dir=Path(args.static_dir),
                        zmq_endpoint=args.zmq, prebuffer_ms=args.prebuffer_ms,
                        max_buffer_ms=args.max_buffer_ms,
                        session=SessionConfig(hop_samples=args.hop_samples,
                                              lookahead_frames=args.lookahead_frames, seed=args.seed))


def run_serve(args) -> int:
    try:
        import aiortc  # noqa: F401
        from aiohttp import web
    except ImportError as e:
        sys.stderr.write(f"frieren-stream serve needs the webrtc extra ({e.name} is missing): "
                         "pip install 'frieren-stream[webrtc]'\n")
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
        if not Path(config.static_dir, "index.html").is_file():
            raise ValueError(f"no index.html in {config.static_dir}; pass --static-dir")
        worker = build_worker(args.bundle, args.preset, args.random_init, args.device)
    except Exception as e:  # noqa: BLE001 - a bad argument or model: one clear line, exit 2
        sys.stderr.write(f"frieren-stream serve: error: {e}\n")
        return 2
    if not is_loopback(config.host) and config.token is None:
        log.warning("serving %s WITHOUT an access token (--no-token-i-know-this-is-unsafe)", config.host)
    server = FoleyServer(config, worker, owns_worker=True)
    shown = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    url = f"http://{shown}:{config.port}/" + (f"?token={config.token}" if config.token else "")
    sys.stdout.write(f"frieren-stream serve: open {url}\n")
    if config.token:
        sys.stdout.write(f"access token: {config.token}\n")
    sys.stdout.flush()
    web.run_app(server.make_app(), host=config.host, port=config.port, print=None,
                shutdown_timeout=5.0)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="frieren-stream")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
