"""`frieren-stream`: real-time Foley from a camera, a file or the synthetic world.

    frieren-stream --source webcam                       # speakers + ZeroMQ on tcp://127.0.0.1:5556
    frieren-stream --source file clip.mp4 --sink wav out.wav --mux out.mp4
    frieren-stream --source synthetic --sink zmq --random-init --preset tiny
    frieren-stream bench --random-init --preset tiny --duration 60 --json-out bench.json
    frieren-stream serve ...                             # WebRTC (when stream.server is installed)

``run`` is the default subcommand. Bad flags: one line on stderr, exit 2. Ctrl-C or SIGTERM
stops cleanly (sources stopped, crossfade tails flushed, files finalised), exit 0.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import List, Optional

import numpy as np

log = logging.getLogger("frieren-stream")

PROG = "frieren-stream"
# frieren.compile.COMPILE_MODES, spelled out so that parsing flags does not import torch.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
SUBCOMMANDS = ("run", "bench", "serve")


class UsageError(Exception):
    """A problem with the command line or its inputs: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, argparse style, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


# ---------------------------------------------------------------------- shared options
def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--bundle", help="model bundle directory (default: the embedded model when installed)")
    g.add_argument("--preset", help="preset with --random-init: tiny, frieren-16k, frieren-16k-1step")
    g.add_argument("--random-init", action="store_true", help="random weights (development and timing only)")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    g.add_argument("--dtype", choices=("bf16", "fp16"), help="autocast dtype on CUDA (default float32)")
    g.add_argument("--compile", choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the model: default, reduce-overhead (CUDA graphs on CUDA) or "
                        "max-autotune; compiles during warm-up, once per batch size up to --max-batch "
                        "(minutes); default: eager")
    g.add_argument("--max-batch", type=int, default=32, help="most windows per worker batch (default 32)")
    g.add_argument("--vocoder-context", type=int,
                   help="mel frames of vocoder context each side of a hop (default: the vocoder's exact reach)")
    g.add_argument("--threads", type=int,
                   help="torch CPU threads for the model (default: torch's choice, one per core)")


def add_stream_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("streaming")
    g.add_argument("--hop-ms", type=float,
                   help="hop between windows in ms, a multiple of one latent frame (default: one visual frame, at least 128 ms)")
    g.add_argument("--lookahead-frames", type=int, default=0, help="visual frames of look-ahead (default 0)")
    g.add_argument("--crossfade-ms", type=float, default=16.0, help="equal-power overlap between hops (default 16)")
    g.add_argument("--seed", type=int, default=0, help="noise tape / random-init / synthetic scene seed")
    g.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until the end)")


def _positive(name: str, value, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise UsageError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value:g}")


def load_engine(args):
    """Model + Engine from the model options (UsageError when no model can be chosen)."""
    from frieren.bundles import DEFAULT_BUNDLE, default_bundle_available, load_model
    from frieren.checkpoints import CheckpointError

    from .engine import Engine

    if args.max_batch < 1:
        raise UsageError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if args.bundle is None and not args.random_init and not default_bundle_available():
        raise UsageError(f"no model: the embedded default model is not installed ({DEFAULT_BUNDLE}); "
                         "pass --random-init [--preset tiny] or --bundle PATH")
    if args.preset and not args.random_init and args.bundle is None:
        log.warning("--preset %s without --random-init: using the embedded default model", args.preset)
    try:
        stack, _ = load_model(args.bundle, preset=args.preset if args.random_init else None,
                              random_init=args.random_init, device=args.device, seed=args.seed)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    except RuntimeError as exc:  # e.g. CUDA not available
        raise UsageError(f"cannot load the model on {args.device}: {str(exc).splitlines()[0]}") from None
    if args.compile:
        log.info("torch.compile mode %s: the warm-up compiles the model for batch sizes up to %d "
                 "(can take minutes)", args.compile, args.max_batch)
    return Engine(stack, device=args.device, max_batch=args.max_batch, dtype=args.dtype, seed=args.seed,
                  vocoder_context=args.vocoder_context, compile=args.compile)


def session_config(args, engine):
    """SessionConfig from the streaming options, validated against the model's geometry."""
    from .session import SessionConfig
    from .window import FrameWindow

    g = engine.geometry
    hop = None
    if args.hop_ms is not None:
        _positive("--hop-ms", args.hop_ms)
        hop = int(round(args.hop_ms * g.sample_rate / 1000))
    _positive("--crossfade-ms", args.crossfade_ms, allow_zero=True)
    xf = int(round(args.crossfade_ms * g.sample_rate / 1000))
    try:
        w = FrameWindow(g, hop_samples=hop, lookahead_frames=args.lookahead_frames)
    except ValueError as exc:
        raise UsageError(str(exc).replace("hop_samples", "--hop-ms (samples)")
                         .replace("lookahead_frames", "--lookahead-frames")) from None
    if xf > w.hop_samples:
        raise UsageError(f"--crossfade-ms {args.crossfade_ms:g} is longer than the hop "
                         f"({w.hop_samples / g.sample_rate * 1000:g} ms)")
    tail_mode = args.lookahead_frames * g.samples_per_frame >= xf
    if not tail_mode and xf > w.emit_offset:
        raise UsageError(f"--crossfade-ms {args.crossfade_ms:g} does not fit before the emitted hop; "
                         "use a shorter hop, --crossfade-ms 0 or --lookahead-frames >= 1")
    return SessionConfig(hop_samples=hop, lookahead_frames=args.lookahead_frames, crossfade_samples=xf,
                         seed=args.seed)


# ---------------------------------------------------------------------- run
def add_run_args(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("source")
    s.add_argument("--source", nargs="+", default=["webcam"], metavar="KIND",
                   help="webcam | file PATH | synthetic (default webcam)")
    s.add_argument("--camera", default="0", help="webcam index or device path (default 0)")
    s.add_argument("--width", type=int, help="webcam capture width")
    s.add_argument("--height", type=int, help="webcam capture height")
    s.add_argument("--fps", type=float, help="webcam capture rate")
    s.add_argument("--loop", action="store_true", help="file: restart at the end")
    s.add_argument("--as-fast-as-possible", action="store_true",
                   help="file/synthetic: do not pace frames in real time")
    o = p.add_argument_group("outputs")
    o.add_argument("--sink", action="append", nargs="+", metavar="KIND",
                   help="speaker | zmq | wav PATH (repeatable; default: speaker and zmq)")
    o.add_argument("--zmq-endpoint", default=None, help="ZeroMQ PUB endpoint (default tcp://127.0.0.1:5556)")
    o.add_argument("--zmq-dtype", choices=("float32le", "int16le"), default="float32le")
    o.add_argument("--speaker-device", help="sounddevice output index or name")
    o.add_argument("--mux", metavar="OUT.mp4", help="file source: write the video with the generated audio at exit")
    o.add_argument("--stream-id", help="stream id on the wire (default cam0 / file0 / synth0)")
    o.add_argument("--status", choices=("auto", "on", "off"), default="auto",
                   help="live status line on stderr (auto: when stderr is a terminal)")
    add_stream_args(p)
    add_model_args(p)


def _parse_source(args):
    kind, *rest = args.source
    if kind == "file":
        if len(rest) != 1:
            raise UsageError("--source file needs exactly one PATH: --source file clip.mp4")
        return kind, rest[0]
    if kind in ("webcam", "synthetic"):
        if rest:
            raise UsageError(f"--source {kind} takes no argument, got {' '.join(rest)!r}")
        return kind, None
    raise UsageError(f"unknown --source {kind!r}; choose webcam, file PATH or synthetic")


def _parse_sinks(args):
    specs = args.sink or [["speaker"], ["zmq"]]
    out = []
    for spec in specs:
        kind, *rest = spec
        if kind == "wav":
            if len(rest) != 1:
                raise UsageError("--sink wav needs exactly one PATH: --sink wav out.wav")
            out.append(("wav", rest[0]))
        elif kind in ("speaker", "zmq"):
            if rest:
                raise UsageError(f"--sink {kind} takes no argument, got {' '.join(rest)!r}")
            out.append((kind, None))
        else:
            raise UsageError(f"unknown --sink {kind!r}; choose speaker, zmq or wav PATH")
    return out, args.sink is None


def _make_source(kind: str, path: Optional[str], args, engine):
    from .sources.base import SourceError

    if kind == "file":
        from .sources.file import FileSource
        try:
            return FileSource(path, realtime=not args.as_fast_as_possible, loop=args.loop)
        except SourceError as exc:
            raise UsageError(str(exc)) from None
    if kind == "synthetic":
        from frieren.synth import SceneConfig

        from .sources.synthetic import SyntheticSource
        return SyntheticSource(args.seed, SceneConfig(sample_rate=engine.sample_rate),
                               realtime=not args.as_fast_as_possible, record_s=0)
    from .sources.webcam import WebcamSource
    cam = int(args.camera) if str(args.camera).isdigit() else args.camera
    return WebcamSource(cam, width=args.width, height=args.height, fps=args.fps)


def _make_sinks(specs, defaults: bool, args, engine):
    from .sinks import DEFAULT_ENDPOINT, SpeakerSink, WavSink, ZmqSink

    sinks = []
    try:
        for kind, path in specs:
            if kind == "wav":
                sinks.append(WavSink(path, sample_rate=engine.sample_rate).start())
            elif kind == "zmq":
                sinks.append(ZmqSink(args.zmq_endpoint or DEFAULT_ENDPOINT, dtype=args.zmq_dtype).start())
            else:
                dev = args.speaker_device
                dev = int(dev) if dev is not None and dev.isdigit() else dev
                try:
                    sinks.append(SpeakerSink(device=dev).start())
                except Exception as exc:  # noqa: BLE001
                    if not defaults:
                        raise
                    log.warning("no speaker output (%s); continuing without it", str(exc).splitlines()[0])
    except Exception as exc:
        for s in sinks:
            s.close()
        raise UsageError(f"cannot open --sink: {str(exc).splitlines()[0]}") from None
    if not sinks:
        raise UsageError("no output could be opened; pass --sink wav PATH or --sink zmq")
    return sinks


def _fmt(v, spec: str = ".0f", unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def status_line(st: dict, elapsed: float) -> str:
    w = st["worker"]
    rtf = w["rtf"].get("total")
    parts = [f"[{elapsed:6.1f}s]"]
    for s in st["sessions"] or st["finished"][-1:]:
        parts.append(f"{s['session']}: in {_fmt(s['input_fps'], '.1f')} fps | RTF {_fmt(rtf, '.2f')} | "
                     f"latency p50 {_fmt(s['latency_p50_ms'])} p95 {_fmt(s['latency_p95_ms'])} ms | "
                     f"drops {s['dropped']} | underruns {s['underruns']}")
    return " ".join(parts)


class _Stopper:
    """SIGINT/SIGTERM -> stop event (a second signal exits at once)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: Optional[int] = None

    def __call__(self, signum, _frame) -> None:
        if self.event.is_set():
            sys.stderr.write("\nforced exit\n")
            raise SystemExit(130)
        self.signal = signum
        self.event.set()

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self)
            signal.signal(signal.SIGTERM, self)


def cmd_run(args) -> int:
    kind, path = _parse_source(args)
    specs, defaults = _parse_sinks(args)
    _positive("--duration", args.duration, allow_zero=True)
    if args.mux and kind != "file":
        raise UsageError("--mux needs --source file PATH")
    stopper = _Stopper()
    stopper.install()
    engine = load_engine(args)
    config = session_config(args, engine)
    source = _make_source(kind, path, args, engine)
    if stopper.event.is_set():
        return 0
    engine.start(config)                # warm-up (and compilation) before any output opens
    if stopper.event.is_set():
        engine.stop()
        return 0
    sinks = _make_sinks(specs, defaults, args, engine)
    collect = None
    if args.mux:
        from .engine import CollectSink
        collect = CollectSink("mux").start()
        sinks.append(collect)
    show = args.status == "on" or (args.status == "auto" and sys.stderr.isatty())
    sid = args.stream_id or {"webcam": "cam0", "file": "file0", "synthetic": "synth0"}[kind]
    t0 = time.monotonic()
    try:
        h = engine.add_session(source, sinks, config, session_id=sid)
        for s in sinks:
            if hasattr(s, "bound_endpoint") and s.bound_endpoint:
                log.info("publishing on %s (topic audio/%s)", s.bound_endpoint, sid)
        t0 = time.monotonic()
        last = 0.0
        while not stopper.event.is_set() and not h.done.is_set():
            stopper.event.wait(0.1)
            now = time.monotonic()
            if args.duration and now - t0 >= args.duration:
                break
            if show and now - last >= 0.5:
                last = now
                sys.stderr.write("\r" + status_line(engine.status(), now - t0) + "\x1b[K")
                sys.stderr.flush()
    finally:
        engine.stop()
        if show:
            sys.stderr.write("\n")
    st = engine.status()
    fin = st["finished"][-1] if st["finished"] else {}
    sys.stderr.write(f"{PROG}: {status_line(st, time.monotonic() - t0)} | chunks {fin.get('chunks', 0)}"
                     f"{' | error: ' + str(fin.get('error')) if fin.get('error') else ''}\n")
    if collect is not None:
        _mux(path, collect, args.mux, engine.sample_rate)
    return 1 if fin.get("error") else 0


def _mux(video: str, collect, out: str, sample_rate: int) -> None:
    from frieren.video_io import mux_audio, video_duration

    from .eval_sync import assemble

    audio, _ = assemble(collect.chunks, origin=0)
    n = int(round(video_duration(video) * sample_rate))
    if len(audio) < n:
        audio = np.pad(audio, (0, n - len(audio)))
    mux_audio(video, np.clip(audio[:n], -1, 1), sample_rate, out)
    sys.stderr.write(f"{PROG}: wrote {out}\n")


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog=PROG, description="Real-time video-to-audio (Foley) streaming with Frieren.")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", metavar="{run,bench,serve}")
    run = sub.add_parser("run", help="stream one source to speakers / ZeroMQ / files (default)")
    add_run_args(run)
    run.set_defaults(func=cmd_run)
    from .bench import add_bench_parser
    add_bench_parser(sub)
    # ---- HOOK: `serve` (WebRTC) comes from stream/server.py: add_serve_parser(subparsers) --
    import importlib.util
    if importlib.util.find_spec("stream.server") is not None:
        try:
            from stream.server import add_serve_parser
        except ImportError as exc:
            if getattr(exc, "name", None) in (None, "stream.server"):
                add_serve_parser = None       # the module has no hook (yet): no `serve`
            else:                             # an optional dependency is missing: name the extra
                def add_serve_parser(subparsers, _exc=exc):
                    sp = subparsers.add_parser("serve", help="WebRTC server (needs the webrtc extra)")

                    def _missing(_args):
                        raise UsageError("serve needs the webrtc extra: "
                                         f"pip install 'frieren-stream[webrtc]' ({_exc})")
                    sp.set_defaults(func=_missing)
        if add_serve_parser is not None:
            add_serve_parser(sub)
    # ---------------------------------------------------------------------------------------
    return ap


def _with_default_command(argv: List[str]) -> List[str]:
    first = next((a for a in argv if a not in ("-v", "--verbose")), None)
    if first in SUBCOMMANDS or first in ("-h", "--help"):
        return argv
    flags = [a for a in argv if a in ("-v", "--verbose")]
    return flags + ["run"] + [a for a in argv if a not in ("-v", "--verbose")]


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    args = ap.parse_args(_with_default_command(argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        log.setLevel(logging.DEBUG)
    else:
        log.setLevel(logging.INFO)
        logging.getLogger("stream").setLevel(logging.WARNING)
        logging.getLogger("frieren.compile").setLevel(logging.INFO)   # what was compiled
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
