"""Per-stage timing of one model window (``frieren bench``), and the streaming tick at
growing batch sizes (:func:`run_tick_benchmark`, used by ``benchmarks/gpu.sh``).

Times are medians over ``repeats`` calls after one warm-up call; on CUDA each call is
synchronised. These are benchmarks (numbers to read and compare as ratios within one
run), never pass/fail tests.
"""
from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageReport:
    preset: str
    device: str
    threads: int
    window_s: float
    stages_s: Dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        keys = ("cavp", "cond_encoder", "estimator_step_cfg", "vae_decode", "vocoder_window")
        return sum(self.stages_s[k] for k in keys if k in self.stages_s)

    def as_dict(self) -> dict:
        return {"preset": self.preset, "device": self.device, "threads": self.threads,
                "window_s": self.window_s, "stages_s": self.stages_s, "total_one_step_s": self.total_s,
                "rtf_one_step": self.total_s / self.window_s}

    def as_text(self) -> str:
        lines = [f"preset {self.preset} on {self.device} ({self.threads} threads), window {self.window_s:.3f} s"]
        for name, sec in self.stages_s.items():
            lines.append(f"  {name:<24} {sec * 1000:10.2f} ms")
        lines.append(f"  {'total (1 step, CFG)':<24} {self.total_s * 1000:10.2f} ms   RTF {self.total_s / self.window_s:.3f}")
        return "\n".join(lines)


def _time(fn: Callable[[], object], repeats: int, cuda: bool) -> float:
    def once() -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


@torch.inference_mode()
def run_stage_benchmark(bundle: Optional[str] = None, *, preset: Optional[str] = None, random_init: bool = False,
                        device: str = "cpu", repeats: int = 5, threads: Optional[int] = None) -> StageReport:
    from frieren.bundles import load_model

    if threads:
        torch.set_num_threads(threads)
    stack, _ = load_model(bundle, preset=preset, random_init=random_init, device=device)
    p = stack.preset
    g = p.geometry
    cuda = torch.device(device).type == "cuda"
    S = p.cavp.image_size
    frames = torch.rand(1, g.frames_per_window, p.cavp.in_channels, S, S, device=device)
    x = torch.randn(1, p.estimator.in_channels, g.latent_frames, device=device)
    feats = stack.features(frames)
    cond = stack.encode_condition(feats)
    null = stack.null_condition(g.frames_per_window)
    t = torch.zeros(1, dtype=torch.long, device=device)
    x2, t2, c2 = torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, cond])
    mel = stack.decode(x)
    mel_per_frame = g.latents_per_frame * g.mel_per_latent
    T = mel.shape[-1]
    stages = {
        "cavp": _time(lambda: stack.features(frames), repeats, cuda),
        "cond_encoder": _time(lambda: stack.encode_condition(feats), repeats, cuda),
        "estimator_step": _time(lambda: stack.estimator(x, t, context=cond), repeats, cuda),
        "estimator_step_cfg": _time(lambda: stack.estimator(x2, t2, context=c2), repeats, cuda),
        "vae_decode": _time(lambda: stack.decode(x), repeats, cuda),
        "vocoder_window": _time(lambda: stack.vocode(mel), repeats, cuda),
        "vocoder_hop": _time(lambda: stack.vocode_span(mel, T - mel_per_frame, T), repeats, cuda),
    }
    return StageReport(preset=p.name, device=str(device), threads=torch.get_num_threads(),
                       window_s=g.window_samples / g.sample_rate, stages_s=stages)


def run_tick_benchmark(stack, *, device: str = "cpu", batches: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
                       repeats: int = 10, dtype: Optional[str] = None, compile: Optional[str] = None,
                       compile_backend: Optional[str] = None, hop_ms: float = 256.0, crossfade_samples: int = 256,
                       deadline: Optional[float] = None,
                       on_row: Optional[Callable[[dict], None]] = None) -> Dict[str, Any]:
    """One streaming tick: ``StreamingGenerator.run`` over ``b`` windows that each emit one hop
    (plus the crossfade lead), at each batch size ``b`` in ``batches`` (increasing).

    Per row: tick p50 / max over ``repeats`` timed calls (after warm-up), per-window time, the
    stage medians, and ``first_call_s`` (the first call alone: with ``compile`` it includes
    compiling for that batch size). The ladder stops at the first batch slower than the hop,
    at CUDA out-of-memory, or before a batch that would not finish by ``deadline`` (a
    ``time.monotonic()`` instant; estimated from the previous row). ``on_row(result)`` is
    called after every row with the result so far (to save partial results).
    Returns {"dtype", "compile", "compile_backend", "hop_ms", "rows", "one_stream_tick_ms",
    "max_realtime_batch", "stopped_by", "compiled_parts", "compile_failures"}.
    """
    from frieren.streaming import StreamingGenerator, WindowJob

    g = stack.preset.geometry
    cuda = torch.device(device).type == "cuda"
    spl = g.samples_per_latent
    hop = max(spl, int(hop_ms / 1000 * g.sample_rate) // spl * spl)
    hop_s = hop / g.sample_rate
    gen = StreamingGenerator(stack, device=device, dtype=dtype, compile=compile, compile_backend=compile_backend)
    S, C, L = gen.image_size, gen.noise_channels, g.latent_frames
    res: Dict[str, Any] = {"dtype": dtype or "fp32", "compile": compile,
                           "compile_backend": (compile_backend or "inductor") if compile else None,
                           "hop_ms": hop_s * 1000, "rows": [], "one_stream_tick_ms": None,
                           "max_realtime_batch": 0, "stopped_by": "batches"}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(jobs) -> tuple:
        sync()
        t0 = time.perf_counter()
        r = gen.run(jobs)
        sync()
        return time.perf_counter() - t0, r

    last_cost = 0.0
    for b in batches:
        if deadline is not None and time.monotonic() + 1.5 * last_cost > deadline:
            res["stopped_by"] = "deadline"
            break
        t_row = time.monotonic()
        jobs = [WindowJob(frames=torch.rand(g.frames_per_window, 3 * g.subframes, S, S), noise=torch.randn(C, L),
                          emit_start=g.window_samples - hop - crossfade_samples,
                          emit_length=hop + crossfade_samples) for _ in range(int(b))]
        try:
            first, _ = timed(jobs)
            for _ in range(2):   # more warm-up (CUDA graphs record on a later call)
                gen.run(jobs)
            runs = [timed(jobs) for _ in range(repeats)]
        except torch.cuda.OutOfMemoryError:
            res["rows"].append({"batch": int(b), "error": "out of memory"})
            res["stopped_by"] = "out of memory"
            log.warning("tick benchmark: batch %d out of memory", b)
            torch.cuda.empty_cache()
            break
        times = [t for t, _ in runs]
        med = statistics.median(times)
        row = {"batch": int(b), "padded_batch": gen.padded_batch(int(b)), "first_call_s": first,
               "tick_ms_p50": med * 1000, "tick_ms_max": max(times) * 1000, "per_window_ms": med * 1000 / b,
               "realtime": med < hop_s,
               "stage_ms_p50": {k: statistics.median(r.stage_s[k] for _, r in runs) * 1000
                                for k in runs[0][1].stage_s}}
        if cuda:
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        res["rows"].append(row)
        last_cost = time.monotonic() - t_row
        if res["one_stream_tick_ms"] is None:
            res["one_stream_tick_ms"] = row["tick_ms_p50"]
        log.info("tick %s%s batch %3d: p50 %8.2f ms  max %8.2f ms  per window %7.2f ms  first call %.1f s  %s",
                 res["dtype"], f" compile={compile}" if compile else "", b, med * 1000, max(times) * 1000,
                 med * 1000 / b, first, "REAL TIME" if med < hop_s else "too slow")
        if med < hop_s:
            res["max_realtime_batch"] = int(b)
        if compile:
            res["compiled_parts"] = list(gen.stages.compiled_parts)
            res["compile_failures"] = gen.stages.failures
        if on_row is not None:
            on_row(res)
        if med >= hop_s:
            res["stopped_by"] = "slower than the hop"
            break
    if compile:
        res["compiled_parts"] = list(gen.stages.compiled_parts)
        res["compile_failures"] = gen.stages.failures
    return res
