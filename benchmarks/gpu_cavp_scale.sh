#!/usr/bin/env bash
# The recipe's CAVP stage at GPU scale, on a lent H100/H200 (torch preinstalled, no network).
#
# Why: issue 3's measured limit is the visual encoder (docs/eval/experiments/visual_ceiling/:
# with a perfect condition the tiny generator meets both targets; with the shipped CAVP it
# stays at F1 +-125 0.68, material 0.38). On the 2-core CPU a CAVP step costs 0.5-0.7 s, so the
# one-hour recipe gives it 4000 steps of 16 windows. This script trains the same CAVP stage for as
# many steps as fit in its time budget, so the CPU can then train the rest of the recipe on it
# and `frieren eval` can say whether more CAVP training closes the gap.
#
#   bash benchmarks/gpu_cavp_scale.sh        # results in $OUT (default ./gpu-out)
#   DEVICE=cpu CLIPS=4 BUDGET_S=150 WORKERS=2 bash benchmarks/gpu_cavp_scale.sh   # CPU dry run of the wiring
#
# Steps:
#   0. install: `pip install -e .` with --no-deps --no-index (fallback: PYTHONPATH=repo)
#   1. render CLIPS synthetic clips (seeds 1000.., 8 s: the 1200-clip data of
#      docs/eval/experiments/data_scale/, the seeds of runs/v10/cache) with WORKERS processes
#   2. train the CAVP stage of each variant at the same time (one process each, one GPU):
#        base      event head (4 onset slots, 20 flux bands), self-supervised (the v4 recipe's flags)
#        material  the same + --cavp-material-weight 1 (names the struck material; synthetic labels)
#        recipe    the shipped (v9) recipe's CAVP flags: material + --cavp-onset-weight 2 --cavp-onset-log
#        recipe_d26, recipe_d14   the same with --cavp-depth 26 / 14 (two / one blocks per stage; on
#                  the CPU, at the recipe's CAVP time, depth 26 equalled depth 50:
#                  docs/eval/experiments/cavp_depth/)
#      BATCH windows per step, constant LR (the recipe's), for as many steps as fit in the time
#      left (--max-minutes: with a constant LR a time-bounded stop is a clean cut; MAX_STEPS caps)
#      Before that, benchmarks/cavp_step_speed.py times a step in each memory layout (uint8 frames
#      moved, converted on the device) -> $OUT/cavp_step_speed.json; LAYOUT=auto trains in the faster
#   3. $OUT/cavp_<variant>.pt (the stage's final.pt), cavp_<variant>_ckpt.pt (with the optimiser, to
#      resume) and $OUT/cavp_<variant>_log.jsonl
#   gpu_cavp_log.txt   everything printed
# Env: DEVICE (cuda), CLIPS (1200), WORKERS (15), BATCH (64), MAX_STEPS (100000), THREADS (6 per
# variant), BUDGET_S (560: the whole script), VARIANTS ("recipe"; also base, material, recipe_d26,
# recipe_d14, and recipe_presence: the recipe + --cavp-presence-weight 1,
# docs/eval/experiments/cavp_presence_head/), SUBFRAMES (4, the
# shipped recipe's snapshots per visual frame; the first runs of docs/eval/experiments/cavp_gpu_scale/
# were VARIANTS="base material" SUBFRAMES=1, its second run the defaults with BUDGET_S=590 THREADS=8:
# 6821 steps in 427 s on an H200), RUNS (runs/gpu_cavp),
# LAYOUT (auto | default | channels_last), FLIP (0) and SHIFT (0): --cavp-flip / --cavp-shift for
# every variant (0.5 and 4 stopped the 300-clip CPU CAVP memorising its clips,
# docs/eval/experiments/cavp_augmentation/), PYTHON (python3), SKIP_INSTALL=1 (no pip step: the
# package is already installed).
#
# On the CPU afterwards (see docs/eval/experiments/cavp_gpu_scale/README.md):
#   python benchmarks/cavp_probe.py $OUT/cavp_base.pt $OUT/cavp_material.pt --clips 96 --train-clips 64
#   # a run dir with a finished 1200-clip VAE stage (vae/{final.pt,scale.json}) and the variant's CAVP
#   # as cavp/final.pt; the recipe skips both finished stages and trains CFM, reflow and distillation:
#   RUN_DIR=runs/vX OUT=runs/vX_bundle bash scripts/train_default.sh --synthetic 1200 \
#       --cavp-steps <its steps> --cavp-batch-size 64 [--cavp-depth N]
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
CLIPS="${CLIPS:-1200}"
WORKERS="${WORKERS:-15}"
BATCH="${BATCH:-64}"
MAX_STEPS="${MAX_STEPS:-100000}"
THREADS="${THREADS:-6}"
BUDGET_S="${BUDGET_S:-560}"
VARIANTS="${VARIANTS:-recipe}"
SUBFRAMES="${SUBFRAMES:-4}"
RUNS="${RUNS:-runs/gpu_cavp}"
LAYOUT="${LAYOUT:-auto}"
FLIP="${FLIP:-0}"
SHIFT="${SHIFT:-0}"
for v in $VARIANTS; do   # one try on a lent device: refuse a typo before rendering anything
  case "$v" in base|material|recipe|recipe_d26|recipe_d14|recipe_presence) ;;
    *) echo "gpu_cavp_scale.sh: unknown variant '$v' in VARIANTS (base material recipe recipe_d26 recipe_d14 recipe_presence)" >&2; exit 2 ;;
  esac
done
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
START=$(date +%s)
LOG="$OUT/gpu_cavp_log.txt"
: > "$LOG"
log() { echo "[gpu_cavp_scale +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG" >&2; }

# ------------------------------------------------------------------ 0. install
if [[ "${SKIP_INSTALL:-0}" == 1 ]]; then
  log "SKIP_INSTALL=1: using the installed package"
elif timeout 120 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>&1 | tee -a "$LOG"; then
  log "pip install -e . done"
else
  log "pip install -e . failed; running from the source tree"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')" 2>&1 | tee -a "$LOG"

COMMON=(--preset tiny --subframes "$SUBFRAMES" --seed 0 --synthetic "$CLIPS" --synthetic-seed 1000 --clip-seconds 8 --window-stride 2
        --device "$DEVICE" --threads "$THREADS" --no-progress)

# ------------------------------------------------------------------ 1. the clip cache, rendered once
first=${VARIANTS%% *}
# -c, not a here-doc on stdin: the spawned render workers re-import __main__ by path.
RENDER_PY=$(cat <<'EOF'
import argparse, logging, sys
from frieren.train_cli import add_arguments
from frieren.training.run import Run
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
run_dir, workers, common = sys.argv[1], sys.argv[2], sys.argv[3:]
ap = argparse.ArgumentParser()
add_arguments(ap)
args = ap.parse_args(["cavp", "--run-dir", run_dir, "--data-workers", workers, *common])
Run(args).windows()
EOF
)
"$PY" -c "$RENDER_PY" "$RUNS/$first" "$WORKERS" "${COMMON[@]}" 2>&1 | tee -a "$LOG"
log "clip cache ready in $RUNS/$first/cache"
for v in $VARIANTS; do
  [[ "$v" == "$first" ]] && continue
  mkdir -p "$RUNS/$v/cache"
  ln -sfn "$(cd "$RUNS/$first/cache" && pwd)/clips" "$RUNS/$v/cache/clips"
  cp "$RUNS/$first/cache/source.json" "$RUNS/$v/cache/source.json"
done

# ------------------------------------------------------------------ 2. CAVP stages side by side
if [[ "$LAYOUT" == auto ]]; then
  LAYOUT=default
  if timeout 120 "$PY" benchmarks/cavp_step_speed.py --device "$DEVICE" --batch "$BATCH" --material \
       --subframes "$SUBFRAMES" \
       --threads "$THREADS" --inputs uint8 --warmup 5 --steps 10 --rounds 2 \
       --out "$OUT/cavp_step_speed.json" >> "$LOG" 2>&1; then
    LAYOUT=$("$PY" -c "import json, sys; r = json.load(open(sys.argv[1]))['rows']
print(min(r, key=lambda x: x['ms_per_step'])['layout'])" "$OUT/cavp_step_speed.json")
  else
    log "step-speed benchmark failed; training in the default layout"
  fi
fi
LAYOUT_FLAG=()
[[ "$LAYOUT" == channels_last ]] && LAYOUT_FLAG=(--cavp-channels-last)
log "memory layout: $LAYOUT"
left=$(( BUDGET_S - ($(date +%s) - START) - 60 ))
(( left < 30 )) && { log "only ${left}s left for training; stopping"; exit 1; }
MINUTES=$("$PY" -c "print(round($left / 60, 2))")
log "training variants [$VARIANTS] for at most $MINUTES min each (batch $BATCH, $SUBFRAMES snapshot(s) per frame, at most $MAX_STEPS steps, flip $FLIP, shift $SHIFT px)"
# The CAVP flags of scripts/train_default.sh beyond the event head's (which every variant has).
RECIPE=(--cavp-material-weight 1.0 --cavp-onset-weight 2 --cavp-onset-log)
pids=()
for v in $VARIANTS; do
  case "$v" in
    base) EXTRA=() ;;
    material) EXTRA=(--cavp-material-weight 1.0) ;;
    recipe) EXTRA=("${RECIPE[@]}") ;;
    recipe_d26) EXTRA=("${RECIPE[@]}" --cavp-depth 26) ;;
    recipe_d14) EXTRA=("${RECIPE[@]}" --cavp-depth 14) ;;
    recipe_presence) EXTRA=("${RECIPE[@]}" --cavp-presence-weight 1.0) ;;
    *) log "unknown variant $v"; exit 2 ;;
  esac
  "$PY" -m frieren.train_cli cavp --run-dir "$RUNS/$v" "${COMMON[@]}" --steps "$MAX_STEPS" --batch-size "$BATCH" \
      --max-minutes "$MINUTES" --cavp-event-weight 1.0 --cavp-event-slots 4 --cavp-event-flux-bands 20 \
      --cavp-flip "$FLIP" --cavp-shift "$SHIFT" "${EXTRA[@]}" "${LAYOUT_FLAG[@]}" > "$OUT/train_$v.txt" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
log "training finished (rc=$rc)"

# ------------------------------------------------------------------ 3. results
for v in $VARIANTS; do
  tail -n 5 "$OUT/train_$v.txt" | tee -a "$LOG"
  if [[ -f "$RUNS/$v/cavp/final.pt" ]]; then
    cp "$RUNS/$v/cavp/final.pt" "$OUT/cavp_$v.pt"
    cp "$RUNS/$v/cavp/log.jsonl" "$OUT/cavp_${v}_log.jsonl"
    [[ -f "$RUNS/$v/cavp/ckpt.pt" ]] && cp "$RUNS/$v/cavp/ckpt.pt" "$OUT/cavp_${v}_ckpt.pt"
  fi
done
log "done in $(( $(date +%s) - START ))s"
ls -la "$OUT" | tee -a "$LOG" >&2
exit "$rc"
