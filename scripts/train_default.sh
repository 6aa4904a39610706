#!/usr/bin/env bash
# Regenerate the shipped model (frieren/assets/default) from nothing.
#
# Tiny preset, trained on 300 synthetic Foley clips (seeds 1000..1299, 8 s each) rendered
# in memory: VAE -> CAVP (contrastive) -> CFM -> reflow pairs (25 Euler steps, CFG 4.5)
# -> reflow -> one-step distillation -> bundle. All seeds are fixed and a rerun with the
# same thread count gives bit-identical weights; an interrupted run resumes (finished
# stages are skipped). Measured: about 55 min on the shared 2-core CPU (VAE 2 min, CAVP
# 16 min, CFM 11-14 min, pairs 3 min, reflow 6-7 min, distill 5-8 min, under load; see the bundle's
# provenance for per-stage times and losses).
#
#   bash scripts/train_default.sh                 # -> frieren/assets/default
#   RUN_DIR=runs/other OUT=/tmp/bundle bash scripts/train_default.sh
#
# CAVP: 2000 steps with --cavp-event-weight 1.0 (each frame's video feature also regresses
# the onset strength and 8-band loudness of that frame's audio, besides the contrastive
# terms). The earlier recipe (350 contrastive-only steps) gave features nearly blind to
# impact timing: a linear per-frame onset probe on held-out clips reached AUC 0.59 (raw
# frame differences: 0.83); this recipe reaches 0.93 (1000 steps: 0.91). Measured on the
# distilled 1-step model, old recipe -> this one:
#   frieren-stream bench --hop-ms 256 --duration 30 --threads 1, onset F1 +-125 ms:
#     stream 0.335 -> 0.652, offline 0.295 -> 0.672
#   frieren eval (distilled only, 32 held-out clips): F1 +-125 0.302 -> 0.617 (chance 0.28-0.34),
#     F1 +-45 0.183 -> 0.486, material accuracy 0.219 -> 0.372
# The VAE and data are unchanged from the first shipped model.
#
# --cfm-steps 3402: the shipped run asked for 3500 and its 14-minute safety budget stopped
# the CFM stage at step 3402; pinning that number makes this script reproduce the shipped
# weights. --max-minutes is only a safety net here.
#
# Threads: one torch thread by default. On this shared 2-core machine two threads were
# 2-3x *slower* per step whenever other processes ran (OpenMP threads spin-waiting for a
# busy core); set FRIEREN_TRAIN_THREADS=2 on an idle machine (results then differ in the
# last bits, as float reductions are ordered differently).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs/default_v2}   # runs/default holds the first (350-step CAVP) recipe
OUT=${OUT:-frieren/assets/default}
THREADS=${FRIEREN_TRAIN_THREADS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export OMP_NUM_THREADS=$THREADS
export FRIEREN_TRAIN_SCRIPT=scripts/train_default.sh
exec .venv/bin/python -m frieren.train_cli default \
    --run-dir "$RUN_DIR" --out "$OUT" --preset tiny --seed 0 --threads "$THREADS" \
    --synthetic 300 --synthetic-seed 1000 --clip-seconds 8 --window-stride 2 \
    --vae-steps 1500 --vae-batch-size 16 \
    --cavp-steps 2000 --cavp-batch-size 16 --cavp-event-weight 1.0 \
    --cfm-steps 3402 --cfm-batch-size 32 \
    --reflow-pairs 1536 --teacher-steps 25 --cfg-scale 4.5 \
    --reflow-steps 1000 --reflow-batch-size 32 \
    --distill-steps 800 --distill-batch-size 32 \
    --weight-floor 0.05 --max-minutes 30 "$@"
