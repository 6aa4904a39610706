#!/usr/bin/env bash
# Regenerate the shipped model (frieren/assets/default) from nothing.
#
# Tiny preset, trained on 600 synthetic Foley clips (seeds 1000..1599, 8 s each) rendered
# in memory by two processes, each visual frame a stack of four camera snapshots 32 ms apart
# (--subframes 4): VAE and, at the same time in a second process, CAVP (contrastive +
# per-frame audio-event head weighing its onset slots + struck-material head, channels-last
# layout) -> CFM -> reflow pairs (25 Euler steps, CFG 4.5) -> reflow -> one-step distillation ->
# bundle. All seeds are fixed and a rerun with the same thread count on the same kind of CPU gives
# bit-identical weights (also with --side-by-side, which also trains the presence detector beside the
# flow stages: each stage seeds itself); an interrupted run resumes (finished stages are skipped).
# The shipped model is v14 (2026-12-06, seed 1 of the bfloat16 recipe). This script at commit efec4c1, run from nothing
# (`RUN_DIR=runs/v14fresh OUT=runs/v14fresh_bundle bash scripts/train_default.sh --no-progress`, empty run dir,
# nothing else running), gave its weights and its cfm and reflow bundles byte for byte in 60.6 min on this 2-core
# AMD EPYC with AVX512_BF16: clips 2.1; VAE 29.2 beside the CAVP 40.1 (40.3 the pair); onsets 1.8; the presence
# detector beside latents and the flow stages 16.1 (latents 1.0, CFM 7.6, pairs 1.6, reflow 3.3, distill 2.7);
# bundles 0.3.
# On a CPU without native bfloat16 kernels (AVX512_BF16 or AMX) the script trains in float32: about 86 min here,
# and other weights. How v14 and every earlier shipped model were made: docs/eval/model_history.md.
#
#   bash scripts/train_default.sh                 # -> frieren/assets/default (+ $RUN_DIR/bundle_cfm, bundle_reflow)
#   .venv/bin/frieren eval --clips 64 --classifier-clips 80 --out docs/eval    # the Table-2 style table
#   RUN_DIR=runs/other OUT=/tmp/bundle bash scripts/train_default.sh
#
# Why these settings (each measured on held-out synthetic clips, see README "Measured figures"):
# * VAE 4000 steps (12000 since v6), cosine LR decay, 16 channels x width 64 (the tiny preset): the earlier
#   8-channel, width-32, 1500-step VAE was the ceiling of the whole model. A ground-truth mel
#   through encode -> decode -> Griffin-Lim kept onset F1 +-125 ms 0.81 and material accuracy
#   0.59 (16 clips); this VAE keeps 0.86 and 0.78 (Griffin-Lim of the mel itself: 0.89, 0.95).
# * CAVP 2000 steps, --cavp-event-weight 1.0: each frame's video feature also regresses what
#   the audio of that frame does. Contrastive terms alone left the features nearly blind to
#   impact timing (linear onset probe AUC 0.59; with the head 0.92). --cavp-event-slots 4 asks
#   when inside the 128 ms frame the sound starts (one value per 32 ms latent) and
#   --cavp-event-flux-bands 20 what starts (the spectrum of the rise): a linear material probe
#   at impact frames went 0.34 -> 0.47 (48 held-out clips, majority class 0.40;
#   python benchmarks/cavp_probe.py runs/default_v2/cavp/final.pt runs/default_v3/cavp/final.pt).
# * CFM 4000 steps (loss still falling at 3400).
# * CAVP 4000 steps (v4; v3 had 2000; v6: 8000 on twice the clips): at 2000 every term of the CAVP loss was still falling,
#   and the features, not the flow model, limited sync (the CAVP's own event head placed onsets
#   at F1 +-125 0.60, the flow model made 0.66 of them). Doubling the CFM instead improved FD but
#   not sync. docs/eval/experiments/training_length/.
# * --cavp-material-weight 1.0 (v5): the CAVP also names the struck material of each impact
#   frame (cross-entropy against the synthetic world's ground truth; a supervised addition to
#   Diff-Foley's self-supervised CAVP, synthetic data only). Material accuracy 0.378 -> 0.516
#   (with seed 1: 0.339 -> 0.519), sync unchanged, FD (log-mel) 3.81 -> 4.61;
#   docs/eval/experiments/cavp_material_head_recipe/.
# * v6: 600 clips (was 300) with CAVP 8000 steps (was 4000), so the CAVP sees each clip as often
#   while memorising less (docs/eval/experiments/data_scale/), and VAE 12000 steps (was 4000),
#   free in wall time as the VAE trains beside the CAVP. Each change alone lifted the distilled
#   model (600 clips + CAVP 8000: F1 +-125 0.698, material 0.558; VAE 12000: FD 3.32), together
#   F1 +-125 0.700, material 0.556, FD 3.13, and the VAE ceiling (GT mel -> VAE -> Griffin-Lim)
#   rose to F1 +-125 0.873, material 0.853 (v5's VAE 0.851, 0.791);
#   docs/eval/experiments/recipe_budget/.
# * --subframes 4 (v7): the CAVP sees four snapshots per 128 ms frame (the 96 ms before each
#   frame's instant and the instant itself, stacked on its input channels) at the same feature rate
#   and streaming latency. Material accuracy 0.556 -> 0.640, F1 +-45 0.574 -> 0.591, F1 +-125
#   unchanged (0.700), FD (log-mel) 3.13 -> 4.12; the CAVP's event head recall 0.52 -> 0.62, its
#   material probe 0.69 -> 0.73. Costs 1.6x per CAVP step (the stem's 12 input channels);
#   docs/eval/experiments/stacked_snapshots/.
# * --cavp-onset-weight 2 --cavp-onset-log (v8): the event head's four onset slots (4 of its 32
#   targets) get a second MSE of weight 2, on log(1 + onset strength), so a missed quiet impact
#   costs the head as much as a misjudged loud one. The event head's onset F1 +-125 0.688 -> 0.779
#   (recall 0.624 -> 0.779), distilled F1 +-45 0.591 -> 0.620, +-125 0.700 -> 0.715, FD 4.12 ->
#   3.95, material 0.640 -> 0.632 (within the seed's spread; the CAVP's material probe 0.729 ->
#   0.686). --cavp-channels-last (same maths, mkldnn's channels-last convolutions) makes each
#   CAVP step about 1.3x cheaper. docs/eval/experiments/onset_emphasis/.
# * --cfm-onset-weight 12 (v9): the CFM loss of each latent is weighed by 1 + 12 x its log spectral
#   flux above the window's median (scaled to about 1 for an impact, then normalised to mean 1),
#   3.5-4x the median latent's weight where an impact starts, quiet about as much as loud. With
#   v8's features the teacher had dropped the quiet impacts its condition marked (event head
#   recall 0.75, teacher audio 0.67). Distilled (1-thread evals, v8 -> v9): F1 +-45 0.625 -> 0.630,
#   +-125 0.715 -> 0.725, material 0.630 -> 0.657, FD 3.95 -> 3.43, mel L1 0.337 -> 0.332; onset
#   recall 0.613 -> 0.639, of the quietest impacts 0.36 -> 0.44. Weight 4 gave about half of it.
# * --cavp-flip 0.5 --cavp-shift 4 (v10): each CAVP training window mirrored left-right with
#   probability 0.5 and shifted by -4..4 pixels (a mirrored or shifted picture sounds the same), so
#   the CAVP memorises its 600 clips less. Distilled (1-thread evals, v9 -> v10): F1 +-45 0.627 ->
#   0.661, +-125 0.725 -> 0.746, material 0.657 -> 0.688, FD (log-mel) 3.43 -> 2.75, mel L1 0.332 ->
#   0.308; with --seed 1 0.649, 0.729, 0.700, 2.56, 0.308. docs/eval/experiments/recipe_augmentation/.
# * --cavp-presence-weight 1 --presence-channel --presence-channel-train truth (v11): a CAVP head says
#   whether an impact starts in each frame (trained on the synthetic world's labels), and its decision at
#   a threshold chosen on validation clips (seeds 800000..800047) is one more condition channel; the flow
#   stages learn that channel from the world's labels, so the generator renders what the head decides
#   instead of sampling an uncertain feature. Distilled (1-thread evals, v10 -> v11): F1 +-45 0.661 ->
#   0.673, +-125 0.746 -> 0.756 (recall 0.656 -> 0.692), material 0.688 -> 0.707, FD (log-mel) 2.75 ->
#   2.58, mel L1 0.308 -> 0.309; with --seed 1 0.661, 0.751, 0.659, 2.75, 0.312 (v10's seed 1: 0.649,
#   0.729, 0.700, 2.56, 0.308). docs/eval/experiments/presence_channel/.
# * --presence-slots 4 --presence-detector-steps 6000 (v12): the channel says in which 32 ms slot of the frame
#   an onset (an impact or a continuous start) starts, four channels per frame; a copy of the CAVP video branch
#   fine-tuned with the slot head on the world's onsets of the flow stages' clips decides them (a second CAVP
#   at inference). One bit per frame could not place onsets 50-100 ms apart: v11 told the world's truth reached
#   F1 +-125 0.795, the slot model told the truth 0.886-0.889. Distilled (1-thread evals, v11 -> v12): F1 +-45
#   0.673 -> 0.722, +-125 0.756 -> 0.806, material 0.707 -> 0.686, FD (log-mel) 2.58 -> 2.44, mel L1 0.309 ->
#   0.310; with --seed 1 after the CAVP 0.712, 0.790, 0.684, 2.47, 0.309 (detector at 3000 steps: 0.709, 0.797,
#   0.678, 2.47, 0.309; seed 1 0.713, 0.795, 0.700, 2.59, 0.310). Streaming: CAVP RTF 0.178 -> 0.358, glass-to-ear p50 102 -> 124 ms.
#   docs/eval/experiments/presence_slots/.
# * CAVP 8000 steps, not the 5000 that fit the hour (2026-12-06): the script with --cavp-steps 5000 ran from nothing
#   in 66.1 min on an AVX-512 CPU, but its model scored material 0.579 (8000 steps, same VAE: 0.682), FD 3.91 (2.43),
#   F1 +-125 0.790 (0.798); resumed to 12000 steps the same CAVP gave 0.694, 3.05, 0.803, so 8000 is where more CAVP
#   steps stop paying. docs/eval/experiments/cavp_length/.
# * --bf16 cavp,detector,cfm,pairs,reflow,distill --presence-detector-channels-last (v13), only where the CPU has native
#   bfloat16 kernels: the recipe in 63.5 min instead of about 86 on this AVX512_BF16 CPU (a CAVP step 1.27-1.36x
#   cheaper, the detector 1.95x with channels-last and bfloat16 together, the flow stages 1.4-1.9x). Costs fidelity: FD (log-mel) 2.99
#   against 2.43 for the same recipe in float32 from nothing on the same CPU (runs/fresh_v12), material 0.659 vs 0.682,
#   F1 +-125 0.799 vs 0.798; most of it with the CAVP (its 25-step teacher: FD 3.38 with a bfloat16 CFM, 3.12 with a
#   float32 one on the same CAVP; v12r's 2.62), reflow pairs in float32 changed nothing. docs/eval/experiments/bf16_recipe/.
# Distilled 1-step model, v2 -> v3 -> v4 -> v5 -> v6 -> v7 -> v8 -> v9 -> v10 -> v11 -> v12 (`frieren eval`, 64
# held-out clips, full tables; v10's to v12's from 1-thread evals): onset F1 +-125 ms 0.631 -> 0.656 -> 0.678 ->
# 0.676 -> 0.700 -> 0.700 -> 0.715 -> 0.725 -> 0.746 -> 0.756 -> 0.806, +-45 ms 0.498 -> 0.526 -> 0.560 -> 0.540 ->
# 0.574 -> 0.591 -> 0.620 -> 0.627 -> 0.661 -> 0.673 -> 0.722, material accuracy 0.351 -> 0.374 -> 0.378 -> 0.516 ->
# 0.556 -> 0.640 -> 0.632 -> 0.657 -> 0.688 -> 0.707 -> 0.686, FD (log-mel) 7.4 -> 4.2 -> 3.8 -> 4.6 -> 3.1 -> 4.1 ->
# 4.0 -> 3.4 -> 2.75 -> 2.58 -> 2.44, mel L1 0.388 -> 0.334 -> 0.315 -> 0.356 -> 0.353 -> 0.338 -> 0.337 -> 0.332 ->
# 0.308 -> 0.309 -> 0.310.
#
# --max-minutes is only a safety net (no stage came near it in the shipped run; a stage that
# hit it would stop early and give other weights).
#
# Threads: one torch thread by default. On this shared 2-core machine two threads were
# 2-3x *slower* per step whenever other processes ran (OpenMP threads spin-waiting for a
# busy core); set FRIEREN_TRAIN_THREADS=2 on an idle machine (results then differ in the
# last bits, as float reductions are ordered differently).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs/default}
OUT=${OUT:-frieren/assets/default}
CLIPS=600   # synthetic seeds 1000..1599
THREADS=${FRIEREN_TRAIN_THREADS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export OMP_NUM_THREADS=$THREADS
export FRIEREN_TRAIN_SCRIPT=scripts/train_default.sh
RECIPE=(--run-dir "$RUN_DIR" --out "$OUT" --preset tiny --subframes 4 --seed 1 --threads "$THREADS"
    --synthetic "$CLIPS" --synthetic-seed 1000 --clip-seconds 8 --window-stride 2 --data-workers 2
    --vae-steps 12000 --vae-batch-size 16
    --cavp-steps 8000 --cavp-batch-size 16 --cavp-event-weight 1.0 --cavp-event-slots 4 --cavp-event-flux-bands 20
    --cavp-onset-weight 2 --cavp-onset-log --cavp-material-weight 1.0 --cavp-channels-last
    --cavp-flip 0.5 --cavp-shift 4 --cavp-presence-weight 1 --presence-channel --presence-channel-train truth
    --presence-slots 4 --presence-detector-steps 6000 --presence-detector-channels-last
    --cfm-steps 4000 --cfm-batch-size 32 --cfm-onset-weight 12
    --reflow-pairs 1536 --teacher-steps 25 --cfg-scale 4.5
    --reflow-steps 1000 --reflow-batch-size 32
    --distill-steps 800 --distill-batch-size 32
    --weight-floor 0.05 --max-minutes 90 --side-by-side)
# bfloat16 autocast for every stage after the VAE where the CPU has native bfloat16 kernels (AVX512_BF16 or
# AMX): same recipe, cheaper steps. Elsewhere float32 (emulated bfloat16 is far slower), which gives other weights.
if .venv/bin/python -c 'import sys; from frieren.training.precision import cpu_has_bf16; sys.exit(not cpu_has_bf16())'; then
  RECIPE+=(--bf16 cavp,detector,cfm,pairs,reflow,distill)
else
  echo "train_default.sh: no native bfloat16 kernels on this CPU; training in float32 (slower, other weights)" >&2
fi
.venv/bin/python -m frieren.train_cli default "${RECIPE[@]}" "$@"
# The teacher and reflow stages as bundles too, for `frieren eval` (its defaults point here).
for stage in cfm reflow; do
  .venv/bin/python -m frieren.train_cli bundle --run-dir "$RUN_DIR" --preset tiny --subframes 4 --threads "$THREADS" \
      --synthetic "$CLIPS" --synthetic-seed 1000 --stage "$stage" --out "$RUN_DIR/bundle_$stage" --no-progress
done
