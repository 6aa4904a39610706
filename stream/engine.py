"""Engine: one model worker, many sessions (DESIGN §1, §3.4).

    engine = Engine(random_init=True, preset="tiny")          # or Engine(stack) / bundle=...
    h = engine.add_session(FileSource("v.mp4"), [WavSink("out.wav")], SessionConfig())
    ...
    print(engine.status())
    engine.stop()                                              # every file valid

Threads: the :class:`~stream.worker.GenerationWorker` owns the model (warmed up before
the first session). Each session has a *pump* thread that starts its source (the
source's own capture thread fills a bounded queue), takes frames and pushes them into
its :class:`~stream.session.Session`; generated chunks go (on the worker thread) to a
:class:`~stream.sinks.Fanout`, i.e. into each sink's own bounded queue, so a slow sink
never stalls the worker or the other sinks.

Ending a session (its source ended, ``remove_session`` or ``stop``): the source is
stopped, the window still being generated (if any) is awaited (bounded), the session is
closed, the crossfader's pending tail is emitted as a last contiguous chunk, and the
sinks are closed (WAV headers final). The pump thread does this itself when its source
ends, so a finite file finishes on its own.

Underruns: a session without a speaker sink is still measured against a *virtual
playout* (:class:`PlayoutMeter`): playback starts ``prefill_ms`` after the first chunk
and then follows the sample clock; a chunk that arrives after its playout instant is an
underrun (the playout re-primes). With a speaker sink its jitter buffer's count is used.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from frieren.compile import check_compile_mode
from frieren.streaming import StreamingGenerator

from .messages import AudioChunk
from .queues import Closed, Empty
from .session import Session, SessionConfig
from .sinks.base import Fanout, Sink
from .sources.base import Source
from .window import FrameWindow
from .worker import GenerationWorker

log = logging.getLogger(__name__)


def emit_span(geometry, config: SessionConfig) -> Tuple[int, int]:
    """(emit_start, emit_length) of the WindowJobs a session with ``config`` submits (as
    ``Session._job``): the hop, plus the crossfade lead before it unless look-ahead covers it."""
    w = FrameWindow(geometry, hop_samples=config.hop_samples, lookahead_frames=config.lookahead_frames)
    overlap = min(config.crossfade_samples, w.hop_samples)
    tail_mode = config.lookahead_frames * geometry.samples_per_frame >= overlap
    start = w.emit_offset if tail_mode else w.emit_offset - overlap
    return start, w.hop_samples + overlap


class MeteredGenerator:
    """Wraps a StreamingGenerator and accumulates per-stage compute seconds."""

    def __init__(self, generator: StreamingGenerator) -> None:
        self._gen = generator
        self._lock = threading.Lock()
        self.reset()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gen, name)

    def reset(self) -> None:
        with self._lock:
            self.stage_s: Dict[str, float] = defaultdict(float)
            self.windows = 0
            self.batches = 0

    def run(self, jobs):
        result = self._gen.run(jobs)
        with self._lock:
            for k, v in result.stage_s.items():
                self.stage_s[k] += v
            self.windows += len(jobs)
            self.batches += 1
        return result

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {"stage_s": dict(self.stage_s), "windows": self.windows, "batches": self.batches}


class PlayoutMeter:
    """Virtual real-time playout of one stream (see module doc). Called on one thread."""

    def __init__(self, sample_rate: int, prefill_ms: float = 150.0) -> None:
        self.sample_rate = int(sample_rate)
        self.prefill_ns = int(prefill_ms * 1e6)
        self.t0: Optional[int] = None
        self.s0 = 0
        self.underruns = 0
        self.late_ms_max = 0.0
        self.gaps = 0
        self._next: Optional[int] = None

    def on_chunk(self, start_sample: int, num_samples: int, now_ns: int) -> None:
        if self.t0 is None:
            self.t0, self.s0 = now_ns + self.prefill_ns, start_sample
        elif self._next is not None and start_sample != self._next:
            self.gaps += 1
        deadline = self.t0 + (start_sample - self.s0) * 1_000_000_000 // self.sample_rate
        if now_ns > deadline:
            self.underruns += 1
            self.late_ms_max = max(self.late_ms_max, (now_ns - deadline) / 1e6)
            self.t0 += now_ns - deadline + self.prefill_ns   # re-prime
        self._next = start_sample + num_samples


class CollectSink(Sink):
    """Keeps every chunk in memory (``chunks``), with its arrival instant (``arrival_ns``).
    For tests, benchmarks and muxing a finite file; ``max_chunks`` bounds it (oldest dropped)."""

    def __init__(self, name: str = "collect", max_chunks: Optional[int] = None, queue_size: int = 1024) -> None:
        super().__init__(name, queue_size=queue_size)
        self.max_chunks = max_chunks
        self.chunks: List[AudioChunk] = []
        self.arrival_ns: List[int] = []
        self._lock = threading.Lock()

    def _write(self, chunk: AudioChunk) -> None:
        with self._lock:
            self.chunks.append(chunk)
            self.arrival_ns.append(time.monotonic_ns())
            if self.max_chunks is not None and len(self.chunks) > self.max_chunks:
                del self.chunks[0], self.arrival_ns[0]

    def audio(self) -> tuple:
        """(float32 mono audio, start_sample of its first sample) of everything collected."""
        from .eval_sync import assemble
        with self._lock:
            return assemble(list(self.chunks))


@dataclass
class SessionHandle:
    """What ``add_session`` returns. ``done`` is set once the session is fully closed."""
    session_id: str
    session: Session
    source: Source
    fanout: Fanout
    playout: PlayoutMeter
    started_ns: int
    stop_event: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    source_ended: threading.Event = field(default_factory=threading.Event)
    error: Optional[BaseException] = None
    samples_out: int = 0
    last_chunk: Optional[AudioChunk] = None
    listeners: List[Callable[[AudioChunk], None]] = field(default_factory=list)
    backpressure: bool = False
    thread: Optional[threading.Thread] = None
    _finish_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sinks(self) -> List[Sink]:
        return self.fanout.sinks

    @property
    def running(self) -> bool:
        return not self.done.is_set()


class Engine:
    """Owns one GenerationWorker and any number of sessions (thread-safe public methods)."""

    def __init__(self, stack=None, *, bundle: Optional[str] = None, preset: Optional[str] = None,
                 random_init: bool = False, device: str = "cpu", max_batch: int = 32, seed: int = 0,
                 steps: Optional[int] = None, cfg_scale: Optional[float] = None, dtype: Optional[str] = None,
                 generator: Optional[StreamingGenerator] = None, warmup: bool = True,
                 prefill_ms: float = 150.0, vocoder_context: Optional[int] = None,
                 compile: Optional[str] = None) -> None:
        if generator is None:
            check_compile_mode(compile)     # before loading a model
            if stack is None:
                from frieren.bundles import load_model
                stack, _ = load_model(bundle, preset=preset, random_init=random_init, device=device, seed=seed)
            generator = StreamingGenerator(stack, device=device, steps=steps, cfg_scale=cfg_scale, dtype=dtype,
                                           vocoder_context=vocoder_context, compile=compile)
        self.meter = MeteredGenerator(generator)
        self.worker = GenerationWorker(self.meter, max_batch=max_batch)  # type: ignore[arg-type]
        self.device = device
        self.preset_name = getattr(getattr(getattr(generator, "stack", None), "preset", None), "name", None)
        self.sample_rate = generator.geometry.sample_rate
        self.prefill_ms = prefill_ms
        self._warmup = warmup
        self._started = False
        self._stopped = False
        self._lock = threading.Lock()
        self._sessions: Dict[str, SessionHandle] = {}
        self._finished: List[Dict[str, Any]] = []
        self.audio_samples = 0          # generated samples delivered, all sessions (worker thread)
        self.started_ns = time.monotonic_ns()

    # ------------------------------------------------------------------ lifecycle
    @property
    def geometry(self):
        return self.meter.geometry

    def start(self, config: Optional[SessionConfig] = None) -> "Engine":
        """Warm the model up and start the worker (done by the first ``add_session``).

        config: the sessions' config, so the warm-up runs the windows they will submit (what a
        compiled generator specialises on); default: ``SessionConfig()``."""
        with self._lock:
            if self._started:
                return self
            if self._stopped:
                raise RuntimeError("engine is stopped")
            self.worker.start(warmup=self._warmup, spans=[emit_span(self.geometry, config or SessionConfig())])
            self.meter.reset()
            self._started = True
            self.started_ns = time.monotonic_ns()
        return self

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_session(self, source: Source, sinks: Sequence[Sink] = (), config: SessionConfig = SessionConfig(),
                    session_id: Optional[str] = None,
                    on_chunk: Optional[Callable[[AudioChunk], None]] = None,
                    backpressure: Optional[bool] = None) -> SessionHandle:
        """Start a stream: ``source`` frames in, generated audio to every sink (started here).

        on_chunk: extra callback per chunk (worker thread; keep it short).
        backpressure: pace the source by the worker instead of dropping windows (default: on
        for sources with ``realtime=False``, i.e. files and synthetic scenes as fast as possible).
        Raises ValueError for a bad config, or the sink's error if one cannot open (nothing
        is left running then)."""
        self.start(config)
        with self._lock:
            if session_id is not None and session_id in self._sessions:
                raise ValueError(f"session id {session_id!r} is already in use")
        fanout = Fanout(sinks)
        started: List[Sink] = []
        try:
            for s in fanout.sinks:
                s.start()
                started.append(s)
        except BaseException:
            for s in started:
                s.close()
            raise
        holder: Dict[str, SessionHandle] = {}
        try:
            session = Session(self.worker, lambda c: self._on_chunk(holder["h"], c), config, session_id=session_id)
        except BaseException:
            fanout.close()
            raise
        h = SessionHandle(session_id=session.session_id, session=session, source=source, fanout=fanout,
                          playout=PlayoutMeter(self.sample_rate, self.prefill_ms), started_ns=time.monotonic_ns())
        if on_chunk is not None:
            h.listeners.append(on_chunk)
        h.backpressure = (getattr(source, "realtime", True) is False) if backpressure is None else backpressure
        holder["h"] = h
        with self._lock:
            self._sessions[h.session_id] = h
        h.thread = threading.Thread(target=self._pump, args=(h,), name=f"session-{h.session_id}", daemon=True)
        h.thread.start()
        log.info("session %s started: source %s, sinks %s", h.session_id, source.source_id,
                 [s.name for s in fanout.sinks])
        return h

    def remove_session(self, handle, timeout: float = 10.0) -> None:
        """Stop one session cleanly (source stopped, tail flushed, sinks closed). Idempotent."""
        h = self._handle(handle)
        if h is None:
            return
        h.stop_event.set()
        h.source.stop_event.set()
        if h.thread is not None and h.thread is not threading.current_thread():
            h.thread.join(timeout)
        self._finish(h)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every session (sources first, all at once), then the worker."""
        with self._lock:
            handles = list(self._sessions.values())
            self._stopped = True
        for h in handles:
            h.stop_event.set()
            h.source.stop_event.set()
        for h in handles:
            self.remove_session(h, timeout)
        if self._started:
            self.worker.stop()

    def sessions(self) -> List[SessionHandle]:
        with self._lock:
            return list(self._sessions.values())

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until every session has ended on its own (finite sources). True if so."""
        end = None if timeout is None else time.monotonic() + timeout
        for h in self.sessions():
            left = None if end is None else max(0.0, end - time.monotonic())
            if not h.done.wait(left):
                return False
        return True

    # ------------------------------------------------------------------ status
    def status(self) -> Dict[str, Any]:
        """A JSON-ready snapshot: worker stats, per-stage RTF, and per-session stats."""
        m = self.meter.snapshot()
        w = self.worker
        audio_s = self.audio_samples / self.sample_rate
        sizes = list(w.batch_sizes)
        worker = {
            "alive": w.alive, "batches": w.batches, "windows": w.windows, "dropped": w.dropped, "errors": w.errors,
            "batch_mean": float(np.mean(sizes)) if sizes else None, "batch_max": max(sizes) if sizes else None,
            "last_stage_ms": {k: v * 1000 for k, v in w.last_stage_s.items()},
            "stage_s": m["stage_s"], "audio_s": audio_s,
            "rtf": {k: v / audio_s for k, v in m["stage_s"].items()} if audio_s > 0 else {},
        }
        sessions = [self._session_status(h) for h in self.sessions()]
        return {"device": str(self.device), "preset": self.preset_name, "sample_rate": self.sample_rate,
                "uptime_s": (time.monotonic_ns() - self.started_ns) / 1e9, "worker": worker,
                "sessions": sessions, "finished": list(self._finished)}

    def _session_status(self, h: SessionHandle) -> Dict[str, Any]:
        s = dict(h.session.stats())
        sinks = h.fanout.stats()
        speaker = [x for x in sinks if "underruns" in x]
        s.update(
            running=h.running, source=h.source.source_id, error=str(h.error) if h.error else None,
            audio_s=h.samples_out / self.sample_rate,
            source_dropped_frames=h.source.frames.stats().get("dropped", 0),
            virtual_underruns=h.playout.underruns,
            underruns=sum(x["underruns"] for x in speaker) if speaker else h.playout.underruns,
            sink_dropped=sum(x.get("dropped", 0) for x in sinks), sinks=sinks,
        )
        return s

    # ------------------------------------------------------------------ internals
    def _handle(self, handle) -> Optional[SessionHandle]:
        if isinstance(handle, SessionHandle):
            return handle
        with self._lock:
            return self._sessions.get(str(handle))

    def _on_chunk(self, h: SessionHandle, chunk: AudioChunk) -> None:  # worker thread
        origin = h.session.window.origin
        if h.last_chunk is None and origin is not None and chunk.start_sample < origin < chunk.end_sample:
            # The first hop's crossfade lead lies before the first frame: start at the stream's origin.
            cut = origin - chunk.start_sample
            chunk = chunk.replace(start_sample=origin, pcm=chunk.pcm[cut:],
                                  capture_ns=chunk.capture_ns + cut * 1_000_000_000 // self.sample_rate)
        h.playout.on_chunk(chunk.start_sample, chunk.num_samples, time.monotonic_ns())
        h.samples_out += chunk.num_samples
        self.audio_samples += chunk.num_samples
        h.last_chunk = chunk
        self._emit(h, chunk)

    @staticmethod
    def _emit(h: SessionHandle, chunk: AudioChunk) -> None:
        """Hand a chunk to the session's sinks and listeners (a failing listener is logged)."""
        h.fanout.push(chunk)
        for fn in h.listeners:
            try:
                fn(chunk)
            except Exception:  # noqa: BLE001
                log.exception("session %s: chunk listener failed", h.session_id)

    def _pump(self, h: SessionHandle) -> None:
        src = h.source
        try:
            if h.backpressure:
                # Not real time (a file as fast as possible): pull frames on this thread and
                # wait for the window in flight before pushing more, so nothing is dropped.
                for frame in src.iter_frames(src.stop_event):
                    while (self._in_flight(h.session) > 0 and not h.stop_event.is_set()
                           and self.worker.alive):
                        time.sleep(0.002)
                    if h.stop_event.is_set():
                        break
                    src.frames_produced += 1
                    h.session.push_frame(frame)
            else:
                src.start()
                while not h.stop_event.is_set():
                    try:
                        frame = src.get(timeout=0.1)
                    except Empty:
                        continue
                    except Closed:
                        break
                    h.session.push_frame(frame)
        except Exception as exc:  # noqa: BLE001 - a bad source ends its own session only
            h.error = exc
            log.error("session %s: source %s failed: %s", h.session_id, src.source_id, exc)
        finally:
            h.source_ended.set()
            if not h.stop_event.is_set():
                log.info("session %s: source %s ended", h.session_id, src.source_id)
            self._finish(h)

    def _in_flight(self, s: Session) -> int:
        c = s.counters
        worker_dropped = c.get("dropped", 0) - c.get("skipped_seen", 0)
        return c.get("windows", 0) - c.get("chunks", 0) - worker_dropped

    def _finish(self, h: SessionHandle, timeout: float = 10.0) -> None:
        with h._finish_lock:
            if h.done.is_set():
                return
            h.stop_event.set()
            h.source.stop(timeout=2.0)
            end = time.monotonic() + timeout
            while self._in_flight(h.session) > 0 and self.worker.alive and time.monotonic() < end:
                time.sleep(0.005)
            h.session.close()
            start, tail = h.session.crossfader.flush()
            if start is not None and len(tail):
                last = h.last_chunk
                cap = last.capture_ns + last.num_samples * 1_000_000_000 // self.sample_rate if last else 0
                chunk = AudioChunk(stream_id=h.session_id, seq=next(h.session._seq), start_sample=start,
                                   sample_rate=self.sample_rate, pcm=tail, capture_ns=cap, timings={})
                h.samples_out += chunk.num_samples
                self._emit(h, chunk)
            h.fanout.close()
            final = self._session_status(h)
            final["running"] = False
            with self._lock:
                self._sessions.pop(h.session_id, None)
                self._finished.append(final)
                del self._finished[:-64]
            h.done.set()
            log.info("session %s closed (%d chunks)", h.session_id, final.get("chunks", 0))
