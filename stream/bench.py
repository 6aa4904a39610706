"""`frieren-stream bench`: the whole engine on the synthetic world, measured (DESIGN §6).

1. One real-time synthetic session for ``--duration`` seconds through the Engine
   (source thread -> window -> worker -> crossfade -> sink): RTF per stage (compute
   seconds per second of audio produced), glass-to-ear latency p50/p95/max (frame
   capture instant -> the chunk carrying that instant leaves the engine into the sinks),
   drops and (virtual playout) underruns per minute.
2. Sync of the streamed audio against the scene's ground-truth events (onsets within
   ±45 / ±125 ms: precision, recall, F1, mean signed offset), the same for offline
   generation (OfflineGenerator on exactly the frames the stream saw) and for the
   scene's own audio (the onset detector's ceiling).
3. Seam ratio: spectral flux at hop boundaries / elsewhere (streamed audio; the offline
   audio at the same positions is the control).
4. Throughput: 1, 2, 3... concurrent real-time synthetic sessions for ``--ramp-seconds``
   each (drops counted after ``--settle-seconds``) until drops appear, within
   ``--ramp-budget`` seconds: the most sessions with no dropped window.

Numbers, never pass/fail; with random weights the sync and seam figures are computed but
mean nothing (the output says so).
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .window import default_hop_samples

log = logging.getLogger(__name__)

ONSET_KINDS = ("impact", "continuous_start")


def add_bench_parser(sub) -> None:
    from .cli import add_model_args, add_stream_args

    b = sub.add_parser("bench", help="measure RTF, latency, sync, seams and throughput on the synthetic world")
    add_stream_args(b)
    b.set_defaults(duration=60.0)
    add_model_args(b)
    r = b.add_argument_group("bench")
    r.add_argument("--max-sessions", type=int, default=8, help="ramp at most this many sessions (default 8)")
    r.add_argument("--ramp-seconds", type=float, default=10.0, help="seconds per ramp step (default 10)")
    r.add_argument("--settle-seconds", type=float, default=2.0, help="start-up seconds not counted (default 2)")
    r.add_argument("--ramp-budget", type=float, default=90.0, help="most seconds for the whole ramp (default 90)")
    r.add_argument("--ramp-fps", type=int, default=10,
                   help="camera rate of the ramp's synthetic scenes (default 10: rendering them is CPU work)")
    r.add_argument("--ramp", choices=("linear", "double"), default="linear",
                   help="sessions per step: 1, 2, 3... or 1, 2, 4, 8... (default linear)")
    r.add_argument("--no-offline", action="store_true", help="skip the offline comparison")
    r.add_argument("--json-out", help="write the JSON report here")
    b.set_defaults(func=cmd_bench)


def _pct(values, q) -> Optional[float]:
    return float(np.percentile(values, q)) if len(values) else None


def run_single(engine, config, duration: float, seed: int, offline: bool = True,
               dtype: Optional[str] = None) -> Dict[str, Any]:
    from frieren.synth import SceneConfig

    from .engine import CollectSink
    from .eval_sync import seam_ratio, sync_scores
    from .sources.synthetic import SyntheticSource

    g = engine.geometry
    sr = g.sample_rate
    S = engine.meter.image_size
    src = SyntheticSource(seed, SceneConfig(sample_rate=sr), realtime=True, duration_s=duration,
                          record_s=duration + 5, record_size=S)
    col = CollectSink("bench", queue_size=1 << 14)
    lat: List[float] = []
    tick: List[float] = []  # compute per tick (encode + generate + vocode), excluding queueing

    def on_chunk(c) -> None:
        if c.timings:   # the final flushed tail has no timings and no real capture instant
            lat.append((time.monotonic_ns() - c.capture_ns) / 1e6)
            tick.append(sum(c.timings.get(k, 0.0) for k in ("encode_ms", "generate_ms", "vocode_ms")))

    hop_ms = (config.hop_samples or default_hop_samples(g)) / sr * 1000
    engine.start()
    engine.meter.reset()
    a0 = engine.audio_samples
    t0 = time.monotonic()
    h = engine.add_session(src, [col], config, session_id=f"bench{seed}", on_chunk=on_chunk)
    h.done.wait(duration + 120)
    wall = time.monotonic() - t0
    engine.remove_session(h)
    m = engine.meter.snapshot()
    audio_s = (engine.audio_samples - a0) / sr
    final = next((f for f in engine.status()["finished"] if f["session"] == h.session_id), {})
    minutes = max(duration, 1e-9) / 60.0

    events = src.events_on(sr, ONSET_KINDS)
    audio, origin = col.audio()
    o = h.session.crossfader.overlap
    bounds = [c.start_sample - origin + o // 2 for c in col.chunks[1:]]
    out: Dict[str, Any] = {
        "wall_s": wall, "audio_s": audio_s, "windows": m["windows"], "batches": m["batches"],
        "rtf": {k: v / audio_s for k, v in m["stage_s"].items()} if audio_s else {},
        "latency_ms": {"p50": _pct(lat, 50), "p95": _pct(lat, 95), "max": max(lat) if lat else None, "n": len(lat)},
        "tick_ms": {"p50": _pct(tick, 50), "p95": _pct(tick, 95), "max": max(tick) if tick else None,
                    "p95_fraction_of_hop": (_pct(tick, 95) / hop_ms) if tick else None},
        "drops": final.get("dropped", 0), "underruns": final.get("virtual_underruns", 0),
        "drops_per_min": final.get("dropped", 0) / minutes,
        "underruns_per_min": final.get("virtual_underruns", 0) / minutes,
        "events": len(events),
        "sync_stream": sync_scores(audio, sr, events, origin=origin),
        "sync_reference_audio": sync_scores(src.reference_audio(), sr, events),
        "seam_ratio": seam_ratio(audio, bounds),
    }
    if offline and len(audio):
        from frieren.pipeline import GenerateOptions, OfflineGenerator
        import torch

        end = origin + len(audio)
        P = g.samples_per_frame
        rec = src.recorded_frames()
        last = max(rec)
        n = max(1, math.ceil(end / P))
        # Visual frame j: its K snapshots (at j * P + offset, as FrameWindow) on the channel axis.
        frames = np.stack([np.concatenate([rec[min(src.frame_at_sample(j * P + off), last)]
                                           for off in g.subframe_offsets], axis=-1) for j in range(n)])
        frames = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)  # (n, 3K, S, S)
        t1 = time.perf_counter()
        gen = OfflineGenerator(engine.meter.stack, device=engine.device)
        res = gen.generate_frames(frames, end, GenerateOptions(seed=config.seed, progress=False, dtype=dtype))
        out["offline_s"] = time.perf_counter() - t1
        out["offline_rtf"] = out["offline_s"] / (end / sr)
        out["sync_offline"] = sync_scores(res.audio, sr, events)
        out["seam_ratio_offline_control"] = seam_ratio(res.audio, [b + origin for b in bounds])
    return out


def run_ramp(engine, config, max_sessions: int, ramp_s: float, settle_s: float, budget_s: float,
             seed: int, mode: str = "linear", fps: int = 10) -> Dict[str, Any]:
    from frieren.synth import SceneConfig

    from .sources.synthetic import SyntheticSource

    sr = engine.sample_rate
    steps: List[Dict[str, Any]] = []
    best = 0
    deadline = time.monotonic() + budget_s
    n = 1
    while n <= max_sessions and time.monotonic() + ramp_s + 5 <= deadline:
        b0 = engine.worker.batches
        w0 = engine.worker.windows
        handles = []
        for i in range(n):
            src = SyntheticSource(seed + 1000 * n + i, SceneConfig(sample_rate=sr, fps=fps), realtime=True,
                                  duration_s=ramp_s, record_s=0)
            handles.append(engine.add_session(src, [], config, session_id=f"ramp{n}-{i}"))
        time.sleep(min(settle_s, ramp_s))
        base = [h.session.counters["dropped"] for h in handles]
        base_u = [h.playout.underruns for h in handles]
        for h in handles:
            h.done.wait(ramp_s + 60)
        drops = sum(h.session.counters["dropped"] - b for h, b in zip(handles, base))
        under = sum(h.playout.underruns - b for h, b in zip(handles, base_u))
        lats = [s for h in handles for s in list(h.session._latency_ms)]
        batches = engine.worker.batches - b0
        steps.append({"sessions": n, "drops": drops, "underruns": under,
                      "latency_p95_ms": _pct(lats, 95),
                      "batch_mean": (engine.worker.windows - w0) / batches if batches else None})
        log.info("ramp %d sessions: %d drops, %d underruns", n, drops, under)
        if drops > 0:
            break
        best = n
        n = n * 2 if mode == "double" else n + 1
    return {"max_realtime_sessions": best, "steps": steps, "ramp_seconds": ramp_s, "settle_seconds": settle_s,
            "ramp": mode, "scene_fps": fps,
            "stopped_by": ("drops" if steps and steps[-1]["drops"] > 0 else
                           "max_sessions" if n > max_sessions else "time budget")}


def _sync_text(name: str, s: Dict[str, Any]) -> List[str]:
    lines = []
    for tol, v in s.items():
        off = "-" if v["mean_offset_ms"] is None else f"{v['mean_offset_ms']:+.1f} ms"
        lines.append(f"  {name:<22} ±{tol:<6} F1 {v['f1']:.3f}  P {v['precision']:.3f}  R {v['recall']:.3f}  "
                     f"offset {off}  ({v['matched']}/{v['events']} events, {v['detected']} onsets)")
    return lines


def report_text(r: Dict[str, Any]) -> str:
    s = r["single"]
    compiled = f", torch.compile {r['compile']}" if r.get("compile") else ""
    L = [f"frieren-stream bench: preset {r['preset']} on {r['device']} ({r['dtype'] or 'float32'}{compiled}), "
         f"hop {r['hop_ms']:g} ms, look-ahead {r['lookahead_frames']}, {r['duration_s']:g} s"]
    env = r.get("environment") or {}
    if env.get("cpu"):
        L.append(f"  machine: {env['cpu']}, {env.get('cpu_count')} CPUs, torch kernels {env.get('torch_cpu_capability')}")
    if r["random_weights"]:
        L.append("  NOTE: random weights: sync and seam figures are computed but meaningless")
    L.append("  RTF per stage (compute s / audio s): " +
             ", ".join(f"{k} {v:.3f}" for k, v in s["rtf"].items()))
    lm = s["latency_ms"]
    f = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    tk = s.get("tick_ms", {})
    if tk.get("p50") is not None:
        L.append(f"  tick compute: p50 {tk['p50']:.0f} ms, p95 {tk['p95']:.0f} ms, max {tk['max']:.0f} ms "
                 f"(p95 = {tk['p95_fraction_of_hop']:.0%} of the hop)")
    L.append(f"  glass-to-ear latency: p50 {f(lm['p50'])} ms, p95 {f(lm['p95'])} ms, max {f(lm['max'])} ms "
             f"({lm['n']} chunks)")
    L += _sync_text("sync stream", s["sync_stream"])
    if "sync_offline" in s:
        L += _sync_text("sync offline", s["sync_offline"])
    L += _sync_text("sync scene audio", s["sync_reference_audio"])
    sr_ = s["seam_ratio"]
    ctl = s.get("seam_ratio_offline_control")
    L.append(f"  seam ratio: {'-' if sr_ is None else f'{sr_:.3f}'} (offline at same positions: "
             f"{'-' if ctl is None else f'{ctl:.3f}'})")
    L.append(f"  drops {s['drops']} ({s['drops_per_min']:.2f}/min), underruns {s['underruns']} "
             f"({s['underruns_per_min']:.2f}/min)")
    t = r.get("throughput")
    if t:
        steps = "; ".join(f"{x['sessions']}: {x['drops']} drops" for x in t["steps"])
        L.append(f"  real-time sessions at once: {t['max_realtime_sessions']} (ramp {steps}; stopped by {t['stopped_by']})")
    return "\n".join(L)


def cmd_bench(args) -> int:
    import torch

    from frieren.machine import machine_description

    from .cli import UsageError, load_engine, session_config

    if args.duration <= 0:
        raise UsageError("--duration must be > 0 for bench")
    if args.max_sessions < 0 or args.ramp_seconds <= 0 or args.ramp_fps <= 0:
        raise UsageError("--max-sessions must be >= 0, --ramp-seconds and --ramp-fps > 0")
    engine = load_engine(args)
    config = session_config(args, engine)
    hop = config.hop_samples or default_hop_samples(engine.geometry)
    report: Dict[str, Any] = {
        "preset": engine.preset_name, "device": str(args.device), "dtype": args.dtype, "compile": args.compile,
        "threads": torch.get_num_threads(), "random_weights": bool(args.random_init),
        "note": ("random weights: sync and seam figures are computed but meaningless" if args.random_init
                 else ""),
        "hop_ms": hop / engine.sample_rate * 1000, "lookahead_frames": config.lookahead_frames,
        "crossfade_ms": config.crossfade_samples / engine.sample_rate * 1000, "duration_s": args.duration,
        "seed": args.seed, "environment": machine_description(),
    }
    try:
        engine.start(config)
        report["single"] = run_single(engine, config, args.duration, args.seed, offline=not args.no_offline,
                                      dtype=args.dtype)
        if args.max_sessions > 0:
            report["throughput"] = run_ramp(engine, config, args.max_sessions, args.ramp_seconds,
                                            args.settle_seconds, args.ramp_budget, args.seed, args.ramp,
                                            args.ramp_fps)
        else:
            report["throughput"] = None
    finally:
        engine.stop()
    sys.stdout.write(report_text(report) + "\n")
    text = json.dumps(report, indent=2, default=float)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text)
    else:
        sys.stdout.write(text + "\n")
    return 0
