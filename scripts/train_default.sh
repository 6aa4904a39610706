#!/usr/bin/env bash
# Regenerate the shipped model (frieren/assets/default) from nothing.
#
# Tiny preset, trained on 300 synthetic Foley clips (seeds 1000..1299, 8 s each) rendered
# in memory: VAE -> CAVP (contrastive) -> CFM -> reflow pairs (25 Euler steps, CFG 4.5)
# -> reflow -> one-step distillation -> bundle. All seeds are fixed and a rerun with the
# same thread count gives bit-identical weights; an interrupted run resumes (finished
# stages are skipped). Measured: 40.6 min on the shared 2-core CPU (see the bundle's
# provenance for per-stage times and losses).
#
#   bash scripts/train_default.sh                 # -> frieren/assets/default
#   RUN_DIR=runs/other OUT=/tmp/bundle bash scripts/train_default.sh
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
RUN_DIR=${RUN_DIR:-runs/default}
OUT=${OUT:-frieren/assets/default}
THREADS=${FRIEREN_TRAIN_THREADS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export OMP_NUM_THREADS=$THREADS
export FRIEREN_TRAIN_SCRIPT=scripts/train_default.sh
exec .venv/bin/python -m frieren.train_cli default \
    --run-dir "$RUN_DIR" --out "$OUT" --preset tiny --seed 0 --threads "$THREADS" \
    --synthetic 300 --synthetic-seed 1000 --clip-seconds 8 --window-stride 2 \
    --vae-steps 1500 --vae-batch-size 16 \
    --cavp-steps 350 --cavp-batch-size 16 \
    --cfm-steps 3402 --cfm-batch-size 32 \
    --reflow-pairs 1536 --teacher-steps 25 --cfg-scale 4.5 \
    --reflow-steps 1000 --reflow-batch-size 32 \
    --distill-steps 800 --distill-batch-size 32 \
    --weight-floor 0.05 --max-minutes 30 "$@"
