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
#   5. tick_compile_reduce-overhead.json / tick_compile_default.json  the tick of step 2 in bf16 with
#                      torch.compile (StreamingGenerator(compile=MODE), as `frieren-stream --compile`;
#                      reduce-overhead = CUDA graphs) at batch 1, 4, 16, 64; first_call_s per row is
#                      the compile cost; the ladder stops early when the next batch would not fit
#   gpu_log.txt        everything printed
# Env: PRESET (frieren-16k-1step), DEVICE (cuda), PYTHON (python3), BUDGET_S (450), QUICK=1
# (tiny CPU dry run of the script's logic: PRESET=tiny DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh);
# COMPILE_MODES ("reduce-overhead default"; "" skips step 5), COMPILE_BATCHES, COMPILE_TIMEOUT_S (150
# per mode), COMPILE_BACKEND (inductor; QUICK: aot_eager, which checks the wiring, not the compiler);
# SKIP: step names not to run, e.g. SKIP="stream_bench frieren_bench_fp32 frieren_bench_bf16".
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
COMPILE_TIMEOUT_S="${COMPILE_TIMEOUT_S:-150}"
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
  if [[ " ${SKIP-} " == *" $name "* ]]; then log "SKIP $name: in \$SKIP"; return 0; fi
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
# TICK_PY OUT PRESET DEVICE "BATCHES" REPS CONFIGS BACKEND SECONDS: frieren.bench.run_tick_benchmark for
# each config (fp32, bf16, or DTYPE+MODE for torch.compile, e.g. bf16+reduce-overhead), stopping
# before a batch that would not finish within SECONDS; the JSON is rewritten after every row.
TICK_PY=$(cat <<'EOF'
import json, logging, sys, time
import torch
from frieren.bench import run_tick_benchmark
from frieren.bundles import load_model

out, preset, device, batches, reps, configs, backend, seconds = sys.argv[1:9]
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
deadline = time.monotonic() + float(seconds)
torch.backends.cudnn.benchmark = True
stack, _ = load_model(preset=preset, random_init=True, device=device)
g = stack.preset.geometry
report = {"preset": preset, "device": device, "window_s": g.window_samples / g.sample_rate,
          "frames_per_window": g.frames_per_window, "results": {}}
if device.startswith("cuda") and torch.cuda.is_available():
    report["gpu"] = torch.cuda.get_device_name()

def keep(res, name):
    report["hop_ms"] = res["hop_ms"]
    report["results"][name] = res
    json.dump(report, open(out, "w"), indent=2)

for name in configs.split(","):
    dtype, _, mode = name.partition("+")
    res = run_tick_benchmark(stack, device=device, batches=[int(b) for b in batches.split()], repeats=int(reps),
                             dtype=None if dtype == "fp32" else dtype, compile=mode or None,
                             compile_backend=None if backend in ("", "inductor") else backend,
                             deadline=deadline, on_row=lambda r, name=name: keep(r, name))
    keep(res, name)
print(json.dumps({k: {"one_stream_tick_ms": v["one_stream_tick_ms"], "max_realtime_batch": v["max_realtime_batch"],
                      "stopped_by": v["stopped_by"]} for k, v in report["results"].items()}))
EOF
)
if [[ "$QUICK" == 1 ]]; then BATCHES="1 2"; REPS=2; else BATCHES="1 2 4 8 16 32 64"; REPS=10; fi
if [[ "$DEVICE" == cuda* ]]; then TICK_CONFIGS="fp32,bf16"; else TICK_CONFIGS="fp32"; fi
T=$(left); (( T > 150 )) && T=150
step tick "$T" "$PY" -c "$TICK_PY" "$OUT/tick.json" "$PRESET" "$DEVICE" "$BATCHES" "$REPS" "$TICK_CONFIGS" "" \
  $(( T > 30 ? T - 10 : T ))

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

# ------------------------------------------------------------------ 5. torch.compile'd tick
# The tick of step 2 with torch.compile (bf16 on CUDA), one process and one JSON per mode;
# first_call_s per row is the compile cost at that batch size. Last, so steps 2-4 keep their budget.
if [[ "$QUICK" == 1 ]]; then
  CBATCHES="${COMPILE_BATCHES:-1}"; CBACKEND="${COMPILE_BACKEND:-aot_eager}"  # the script's logic, not inductor
else
  CBATCHES="${COMPILE_BATCHES:-1 4 16 64}"; CBACKEND="${COMPILE_BACKEND:-inductor}"
fi
if [[ "$DEVICE" == cuda* ]]; then CDTYPE=bf16; else CDTYPE=fp32; fi
for mode in ${COMPILE_MODES-reduce-overhead default}; do
  T=$(left); (( T > COMPILE_TIMEOUT_S )) && T=$COMPILE_TIMEOUT_S
  step "tick_compile_$mode" "$T" "$PY" -c "$TICK_PY" "$OUT/tick_compile_$mode.json" "$PRESET" "$DEVICE" \
    "$CBATCHES" "$REPS" "$CDTYPE+$mode" "$CBACKEND" $(( T > 30 ? T - 15 : T ))
done

log "done in $(( $(date +%s) - START ))s; failed: ${FAILED[*]-none}"
ls -la "$OUT" | tee -a "$LOG" >&2
(( ${#FAILED[@]} == 0 ))
