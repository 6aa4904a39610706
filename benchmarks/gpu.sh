#!/usr/bin/env bash
# GPU benchmark for a lent H100/H200 (torch 2.11 preinstalled, no network). Finishes in < 8 min.
#
#   bash benchmarks/gpu.sh                 # results in $OUT (default ./gpu-out)
#
# Steps (each under its own timeout; a failed step is logged and the rest still run):
#   0. install: optional carried wheels (.whl/*.whl -> /tmp/site), then `pip install -e .`
#      with --no-deps --no-build-isolation --no-index (fallback: PYTHONPATH=repo)
#   1. env.json        torch / CUDA / GPU facts, which optional packages import
#   2. tick.json       full-size preset (frieren-16k-1step, random init): one streaming tick
#                      (256 ms hop) at batch 1, 2, 4 ... 64 windows, fp32 and bf16: per-tick
#                      latency at one stream and the compute capacity (windows per tick < hop)
#   3. stream_bench.json  `frieren-stream bench` through the whole engine, 256 ms hop: RTF per
#                      stage, glass-to-ear latency, and concurrent real-time sessions (ramp 1,2,4..)
#   4. frieren_bench_fp32.json / frieren_bench_bf16.json  `frieren bench --preset frieren-16k`
#   gpu_log.txt        everything printed
# Env: PRESET (frieren-16k-1step), DEVICE (cuda), PYTHON (python3), BUDGET_S (450), QUICK=1
# (tiny CPU dry run of the script's logic: PRESET=tiny DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
PRESET="${PRESET:-frieren-16k-1step}"
STAGE_PRESET="${STAGE_PRESET:-frieren-16k}"
DEVICE="${DEVICE:-cuda}"
BUDGET_S="${BUDGET_S:-450}"
QUICK="${QUICK:-0}"
export PYTHONUNBUFFERED=1
START=$(date +%s)
LOG="$OUT/gpu_log.txt"
: > "$LOG"
FAILED=()

log() { echo "[gpu.sh +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG" >&2; }
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
# step NAME TIMEOUT_S CMD...: run with a timeout, never abort the script on failure.
step() {
  local name="$1" t="$2"; shift 2
  local l; l=$(left)
  if (( l < 20 )); then log "SKIP $name: time budget spent"; FAILED+=("$name(skipped)"); return 0; fi
  (( t > l )) && t=$l
  log "BEGIN $name (timeout ${t}s)"
  local rc=0
  timeout --signal=INT --kill-after=15 "$t" "$@" 2>&1 | tee -a "$LOG" || rc=$?
  if (( rc != 0 )); then log "FAILED $name (rc=$rc)"; FAILED+=("$name"); else log "END $name"; fi
  return 0
}

# ------------------------------------------------------------------ 0. install
if compgen -G ".whl/*.whl" > /dev/null; then
  log "installing carried wheels from .whl/"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tee -a "$LOG" || log "carried wheels failed to install"
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if timeout 180 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tee -a "$LOG"; then
  log "pip install -e . done"
else
  log "pip install -e . failed; running from the source tree"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# ------------------------------------------------------------------ 1. environment
step env 120 "$PY" - "$OUT/env.json" "$DEVICE" <<'EOF'
import importlib, json, sys, platform
out, device = sys.argv[1], sys.argv[2]
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "device": device}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1),
                bf16=torch.cuda.is_bf16_supported())
for mod in ("torchaudio", "numpy", "cv2", "safetensors", "tqdm", "yaml", "PIL", "av", "zmq", "frieren", "stream"):
    try:
        importlib.import_module(mod)
        info[f"import_{mod}"] = True
    except Exception as exc:  # noqa: BLE001
        info[f"import_{mod}"] = f"{type(exc).__name__}: {exc}"
json.dump(info, open(out, "w"), indent=2)
print(json.dumps(info))
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("CUDA is not available")
for mod in ("numpy", "cv2", "frieren", "stream"):
    if info[f"import_{mod}"] is not True:
        sys.exit(f"required module {mod} does not import: {info[f'import_{mod}']}")
EOF
if [[ " ${FAILED[*]-} " == *" env "* ]]; then
  log "environment check failed; stopping"; exit 1
fi

# ------------------------------------------------------------------ 2. per-tick latency and capacity
if [[ "$QUICK" == 1 ]]; then BATCHES="1 2"; REPS=2; else BATCHES="1 2 4 8 16 32 64"; REPS=10; fi
step tick 150 "$PY" - "$OUT/tick.json" "$PRESET" "$DEVICE" "$BATCHES" "$REPS" <<'EOF'
import json, statistics, sys, time
import torch
from frieren.bundles import load_model
from frieren.streaming import StreamingGenerator, WindowJob

out, preset, device, batches, reps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), int(sys.argv[5])
torch.backends.cudnn.benchmark = True
stack, _ = load_model(preset=preset, random_init=True, device=device)
g = stack.preset.geometry
hop = 4096 if g.sample_rate == 16000 else int(0.256 * g.sample_rate) // g.samples_per_latent * g.samples_per_latent
hop_s = hop / g.sample_rate
xf = 256
report = {"preset": preset, "device": device, "hop_ms": hop_s * 1000, "window_s": g.window_samples / g.sample_rate,
          "frames_per_window": g.frames_per_window, "results": {}}

def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()

for dtype in (None, "bf16") if device.startswith("cuda") else (None,):
    name = dtype or "fp32"
    gen = StreamingGenerator(stack, device=device, dtype=dtype)
    S, C, L = gen.image_size, gen.noise_channels, g.latent_frames
    rows, capacity = [], 0
    for b in map(int, batches):
        jobs = [WindowJob(frames=torch.rand(g.frames_per_window, 3, S, S), noise=torch.randn(C, L),
                          emit_start=g.window_samples - hop - xf, emit_length=hop + xf) for _ in range(b)]
        try:
            for _ in range(2):
                gen.run(jobs)
            times, stages = [], []
            for _ in range(reps):
                sync(); t0 = time.perf_counter()
                r = gen.run(jobs)
                sync(); times.append(time.perf_counter() - t0)
                stages.append(r.stage_s)
        except torch.cuda.OutOfMemoryError as exc:
            rows.append({"batch": b, "error": "out of memory"})
            print(f"{name} batch {b}: out of memory", flush=True)
            torch.cuda.empty_cache()
            break
        med = statistics.median(times)
        row = {"batch": b, "tick_ms_p50": med * 1000, "tick_ms_max": max(times) * 1000,
               "per_window_ms": med * 1000 / b, "realtime": med < hop_s,
               "stage_ms_p50": {k: statistics.median(s[k] for s in stages) * 1000 for k in stages[0]}}
        if device.startswith("cuda"):
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        rows.append(row)
        print(f"{name} batch {b:3d}: tick p50 {med*1000:8.2f} ms  max {max(times)*1000:8.2f} ms  "
              f"per window {med*1000/b:7.2f} ms  {'REAL TIME' if med < hop_s else 'too slow'}", flush=True)
        if med < hop_s:
            capacity = b
        else:
            break
    report["results"][name] = {"rows": rows, "one_stream_tick_ms": rows[0].get("tick_ms_p50") if rows else None,
                               "max_realtime_batch": capacity}
    json.dump(report, open(out, "w"), indent=2)
print(json.dumps({k: {"one_stream_tick_ms": v["one_stream_tick_ms"], "max_realtime_batch": v["max_realtime_batch"]}
                  for k, v in report["results"].items()}))
EOF

# ------------------------------------------------------------------ 3. the whole engine, 256 ms hop
if [[ "$QUICK" == 1 ]]; then
  SB=(--duration 3 --max-sessions 2 --ramp-seconds 2 --settle-seconds 0.5 --ramp-budget 10)
else
  SB=(--duration 15 --max-sessions 64 --max-batch 64 --ramp double --ramp-seconds 8 --settle-seconds 2
      --ramp-budget 90)
fi
step stream_bench 240 "$PY" -m stream.cli bench --preset "$PRESET" --random-init --device "$DEVICE" \
  --hop-ms 256 "${SB[@]}" --json-out "$OUT/stream_bench.json"

# ------------------------------------------------------------------ 4. per-stage window benchmark
if [[ "$QUICK" == 1 ]]; then RP=1; SP="$PRESET"; else RP=5; SP="$STAGE_PRESET"; fi
step frieren_bench_fp32 90 "$PY" -m frieren.cli bench --preset "$SP" --random-init --device "$DEVICE" \
  --repeats "$RP" --json-out "$OUT/frieren_bench_fp32.json"
if [[ "$DEVICE" == cuda* ]]; then
  step frieren_bench_bf16 90 "$PY" - "$OUT/frieren_bench_bf16.json" "$SP" "$DEVICE" "$RP" <<'EOF'
import json, sys
import torch
from frieren.bench import run_stage_benchmark
out, preset, device, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with torch.autocast("cuda", dtype=torch.bfloat16):
    report = run_stage_benchmark(preset=preset, random_init=True, device=device, repeats=reps)
d = dict(report.as_dict(), dtype="bf16 (autocast)")
json.dump(d, open(out, "w"), indent=2)
print(report.as_text())
EOF
fi

log "done in $(( $(date +%s) - START ))s; failed: ${FAILED[*]-none}"
ls -la "$OUT" | tee -a "$LOG" >&2
(( ${#FAILED[@]} == 0 ))
