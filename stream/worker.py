"""The one thread that owns the device and the model (DESIGN §3.4).

Sessions hand in due windows with :meth:`GenerationWorker.submit`. Each session
has one pending slot: a newer window replaces an older one that has not started
yet (newest wins; the replaced one is counted as dropped, never queued). The
worker takes every pending window (up to ``max_batch``), runs them as one batch
through :class:`frieren.streaming.StreamingGenerator`, and hands each result back
to its session's ``deliver`` (called on this thread).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch

from frieren.compile import batch_buckets
from frieren.streaming import StreamingGenerator, WindowJob

from .window import default_hop_samples

if TYPE_CHECKING:  # pragma: no cover
    from .session import Session
    from .window import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    session: "Session"
    window: "Window"
    job: WindowJob
    submitted_ns: int


class GenerationWorker:
    """Batches due windows across sessions; newest window per session wins."""

    def __init__(self, generator: StreamingGenerator, max_batch: int = 32, name: str = "frieren-worker") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.generator = generator
        self.max_batch = max_batch
        self._pending: "OrderedDict[str, Submitted]" = OrderedDict()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.batches = 0
        self.windows = 0
        self.dropped = 0
        self.errors = 0
        self.batch_sizes: List[int] = []
        self.last_stage_s: Dict[str, float] = {}
        self._warmup_spans: Optional[List[Tuple[int, int]]] = None
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, warmup: bool = True, spans: Sequence[Tuple[int, int]] = ()) -> "GenerationWorker":
        """Start the worker thread; with ``warmup``, return once it has warmed up (see
        :meth:`warmup`). The warm-up runs on the worker thread itself, so compiled code and
        CUDA graphs are made and used on one thread. A warm-up error is raised here."""
        self._warmup_spans = list(spans) if warmup else None
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error
        return self

    def warmup(self, repeats: int = 2, spans: Sequence[Tuple[int, int]] = ()) -> None:
        """Run dummy windows so the first real tick pays no one-off costs.

        spans: (emit_start, emit_length) of the windows sessions will submit (default: the
        window's newest default hop). Eager: one window per span. Compiled generator
        (``compile_mode``): every padded batch size up to ``max_batch`` for every span, at
        least 3 calls each (compile, then CUDA graph warm-up and recording), so no session
        waits for the compiler.
        """
        g = self.generator.geometry
        S = self.generator.image_size
        hop = default_hop_samples(g)
        spans = list(spans) or [(g.window_samples - hop, hop)]
        compiled = getattr(self.generator, "compile_mode", None) is not None
        sizes = batch_buckets(self.max_batch) if compiled else (1,)
        repeats = max(repeats, 3) if compiled else repeats
        if compiled:
            log.info("worker warm-up compiles (torch.compile mode=%s) for batch sizes %s and %d emitted span(s)",
                     self.generator.compile_mode, ", ".join(map(str, sizes)), len(spans))
        t0 = time.perf_counter()
        for start, length in spans:
            job = WindowJob(frames=torch.zeros(g.frames_per_window, 3 * g.subframes, S, S),
                            noise=torch.zeros(self.generator.noise_channels, g.latent_frames),
                            emit_start=start, emit_length=length)
            for b in sizes:
                t1 = time.perf_counter()
                for _ in range(repeats):
                    self.generator.run([job] * b)
                if compiled:
                    log.info("warm-up: batch %d, span %d+%d ready in %.1f s", b, start, length,
                             time.perf_counter() - t1)
        log.info("worker warm-up: %d batches in %.0f ms", len(spans) * len(sizes) * repeats,
                 (time.perf_counter() - t0) * 1000)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ sessions
    def submit(self, session: "Session", window: "Window", job: WindowJob) -> None:
        """Thread-safe. Replaces (and counts) a not-yet-started window of the same session."""
        item = Submitted(session, window, job, time.monotonic_ns())
        with self._cv:
            old = self._pending.pop(session.session_id, None)
            if old is not None:
                self.dropped += 1
                session.count_dropped(1)
            self._pending[session.session_id] = item
            self._cv.notify()

    def forget(self, session_id: str) -> None:
        with self._cv:
            self._pending.pop(session_id, None)

    def _take_batch(self) -> List[Submitted]:
        with self._cv:
            while not self._pending and not self._stop.is_set():
                self._cv.wait(0.1)
            batch = []
            while self._pending and len(batch) < self.max_batch:
                batch.append(self._pending.popitem(last=False)[1])
            return batch

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        try:
            if self._warmup_spans is not None:
                self.warmup(spans=self._warmup_spans)
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._start_error = exc
            return
        finally:
            self._ready.set()
        while not self._stop.is_set():
            batch = self._take_batch()
            if not batch:
                continue
            started = time.monotonic_ns()
            try:
                result = self.generator.run([b.job for b in batch])
            except Exception:  # noqa: BLE001 - one bad batch must not kill every session
                self.errors += 1
                log.exception("generation failed for a batch of %d windows; they are dropped", len(batch))
                for b in batch:
                    b.session.count_dropped(1)
                continue
            self.batches += 1
            self.windows += len(batch)
            self.batch_sizes.append(len(batch))
            if len(self.batch_sizes) > 1000:
                del self.batch_sizes[:500]
            self.last_stage_s = dict(result.stage_s)
            for b, audio in zip(batch, result.audio):
                timings = {
                    "queue_ms": (started - b.submitted_ns) / 1e6,
                    "encode_ms": result.stage_s.get("cavp", 0.0) * 1000,
                    "generate_ms": (result.stage_s.get("flow", 0.0) + result.stage_s.get("vae_decode", 0.0)) * 1000,
                    "vocode_ms": result.stage_s.get("vocoder", 0.0) * 1000,
                    "batch_size": len(batch),
                }
                try:
                    b.session.deliver(b.window, audio.numpy(), timings)
                except Exception:  # noqa: BLE001
                    log.exception("session %s failed to take its audio", b.session.session_id)
