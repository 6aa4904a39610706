"""The ``serve`` subcommand of ``frieren-stream``: arguments -> :class:`ServerConfig`,
model loading, and running the aiohttp app until Ctrl-C.

``add_serve_parser`` is re-exported by :mod:`stream.server` (``stream/cli.py`` imports it
from there). Nothing here imports aiortc or aiohttp until ``run_serve`` runs.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from .serve_config import DEFAULT_STATIC_DIR, IceServer, ServerConfig, is_loopback, resolve_token
from .session import SessionConfig

log = logging.getLogger(__name__)


def default_worker_threads(device: str) -> Optional[int]:
    """torch CPU threads for the worker of ``serve``: on the CPU one core fewer than the machine
    has (at least 1), because the event loop decodes every peer's video and encodes its audio
    on the same cores; with every core given to torch the two contend (2-core machine, one peer,
    ``benchmarks/webrtc_latency.py --threads 1`` vs ``2``: tick p50 ~102 vs ~137 ms, RTF 0.8 vs
    1.0-1.1, glass-to-ear p50 ~220 vs ~450 ms). Other devices: None (torch's choice)."""
    import os

    if not str(device).startswith("cpu"):
        return None
    return max(1, (os.cpu_count() or 1) - 1)


def build_worker(bundle: Optional[str] = None, preset: Optional[str] = None, random_init: bool = False,
                 device: str = "cpu", max_batch: int = 32, threads: Optional[int] = None):
    """Load a model and start its GenerationWorker (blocking: call before the loop serves).

    threads: torch CPU threads (process-wide; default :func:`default_worker_threads`)."""
    import torch

    from frieren.bundles import load_model
    from frieren.streaming import StreamingGenerator
    from .worker import GenerationWorker

    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    threads = threads or default_worker_threads(device)
    if threads is not None:
        torch.set_num_threads(threads)
        log.info("model worker: %d torch CPU thread(s)", threads)
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
    m.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the model (default on the CPU: one fewer than the cores, "
                        "so WebRTC's codecs keep one)")
    m.add_argument("--hop-samples", type=int, default=None, help="default: one visual frame period")
    m.add_argument("--lookahead-frames", type=int, default=0)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--jitter", choices=("adaptive", "fixed"), default="adaptive",
                   help="audio playout: adaptive (delay follows the measured arrival delays, "
                        "default) or fixed (--prebuffer-ms collected before playing)")
    m.add_argument("--prebuffer-ms", type=float, default=200.0,
                   help="with --jitter fixed: audio buffered before playback starts (and after an underrun)")
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
                        zmq_endpoint=args.zmq, jitter=args.jitter, prebuffer_ms=args.prebuffer_ms,
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
        worker = build_worker(args.bundle, args.preset, args.random_init, args.device, threads=args.threads)
    except Exception as e:  # noqa: BLE001 - a bad argument or model: one clear line, exit 2
        sys.stderr.write(f"frieren-stream serve: error: {e}\n")
        return 2
    if not is_loopback(config.host) and config.token is None:
        log.warning("serving %s WITHOUT an access token (--no-token-i-know-this-is-unsafe)", config.host)
    from .server import FoleyServer

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
