"""`frieren train ...`: train a preset from nothing, stage by stage, resumably.

Stages (each writes ``<run-dir>/<stage>/{ckpt.pt,final.pt,log.jsonl}``; a rerun resumes an
interrupted stage and skips a finished one):

====================  ===========================================================  ==============
subcommand            what                                                          needs
====================  ===========================================================  ==============
``vae``               mel VAE: L1 recon + 1e-6 KL; then measures the latent scale   clip cache
``cavp``              CAVP video branch + small mel encoder, contrastive            clip cache
``cfm``               base CFM (logit-normal weight, CFG dropout 0.2)                vae, cavp
``reflow-data``       teacher (cfm) samples: 25 Euler steps, CFG 4.5, noise+sample  cfm
``reflow``            guided-velocity reflow on the pairs                            reflow-data
``distill``           one-step distillation at t = 0                                 reflow
``bundle``            writes the bundle (model.safetensors + config.json)            distill
``default``           all of the above in order
====================  ===========================================================  ==============

A finished stage is never retrained implicitly: after retraining one with ``--no-resume``,
delete the directories of the stages after it (reflow-data notices a changed teacher by
itself and regenerates its pairs).

Data: ``--synthetic N`` renders N clips of the synthetic Foley world in memory (default),
``--data-dir DIR`` reads a folder of videos with audio (a synthetic dataset folder works
too) and ``--csv FILE`` restricts it to a VGGSound-style manifest.

Reference bug fixed at stage boundaries (FRIEREN_SPEC §10.1): the reference re-initialises
the trainable condition Linear at the start of reflow and of distillation (it restores only
the DiT). Here every flow stage starts from the previous stage's estimator *and* condition
encoder. See :mod:`frieren.training.objectives` for the batch-size-1 and t≈0 fixes.

The pieces live in :mod:`frieren.training`: ``hparams`` (per-stage defaults), ``run`` (the
``--run-dir`` context: data, caches, finished stages), ``stages`` (the stage functions) and
``bundle`` (bundle export and provenance). This module only parses arguments and dispatches.

Mount under the main CLI with ``add_arguments(sub.add_parser("train"))`` and ``run(args)``;
``python -m frieren.train_cli ...`` works standalone.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import List, Optional

import torch

from frieren.models.cavp import CAVP_DEPTHS
from frieren.training.bundle import BUNDLE_STEPS, export_bundle, provenance_record, stage_summaries
from frieren.training.hparams import DEFAULTS, current_hparams, hp_from_args
from frieren.training.precision import check_bf16
from frieren.training.run import Run
from frieren.training.stages import (finished_stage, pair_stage, stage_cavp, stage_cfm, stage_reflow_data,
                                     stage_vae)

log = logging.getLogger("frieren.train")


# --------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default="runs/default", help="where caches, checkpoints and logs go")
    p.add_argument("--preset", default="tiny", help="preset to train (default tiny)")
    p.add_argument("--estimator-hidden", type=int, metavar="N",
                   help="the flow estimator's hidden size instead of the preset's (tiny: 64); the run dir "
                        "(estimator.json) and the bundle record it, so later stages and `bundle` need not repeat it")
    p.add_argument("--estimator-depth", type=int, metavar="N",
                   help="the flow estimator's number of DiT blocks instead of the preset's (tiny: 2)")
    p.add_argument("--cavp-depth", type=int, choices=CAVP_DEPTHS, metavar="N",
                   help="the CAVP video branch's ResNet depth instead of the preset's (tiny: 50, the official "
                        f"layout; one of {', '.join(map(str, CAVP_DEPTHS))}: 26 and 14 hold two and one "
                        "bottleneck blocks per stage and cost less per CPU step); recorded like --estimator-hidden")
    p.add_argument("--presence-channel", action="store_true", default=None,
                   help="condition the generator on the CAVP presence head's decision too (one more channel per "
                        "frame, 1 where an impact starts; threshold chosen on validation clips, seeds 800000 up). "
                        "Needs a CAVP trained with --cavp-presence-weight; recorded like --estimator-hidden")
    p.add_argument("--presence-channel-train", choices=("head", "truth"), default="head",
                   help="what the presence channel says while the flow stages train: the head's decision on the "
                        "training clips (head, default: what inference gives) or the synthetic world's ground "
                        "truth (truth: the generator learns to follow the channel exactly; synthetic data only)")
    p.add_argument("--presence-slots", type=int, metavar="S",
                   help="with --presence-channel: S channels per frame, one per equal slot of its period (the tiny "
                        "preset's 4: one per latent), saying in which slot an onset (impact or continuous start) "
                        "starts; the head is fitted on the frozen CAVP features of the training clips (synthetic "
                        "data only). Default 1: the CAVP stage's per-frame impact head. Recorded like --estimator-hidden")
    p.add_argument("--presence-detector-steps", type=int, default=0, metavar="N",
                   help="with --presence-slots > 1: fine-tune a copy of the CAVP video branch with the slot head for N "
                        "steps on the slot labels, and let the head read that network (the generator's features stay "
                        "the CAVP's); 0 (default): the head reads the CAVP's frozen features. Recorded")
    p.add_argument("--presence-detector-rotate", type=float, default=0.0, metavar="P",
                   help="with --presence-detector-steps: turn each training window a quarter (either way) with "
                        "probability P, so that floor bounces also show as sideways (wall) ones, which the detector "
                        "finds least; 0 (default): mirrored only")
    p.add_argument("--presence-detector-clips", type=int, default=0, metavar="N",
                   help="with --presence-detector-steps: the detector also trains on N more synthetic clips of its "
                        "own (seeds right after the last clips the run renders, as --material-channel-clips; "
                        "<run-dir>/cache_detector), so it sees more scenes than the flow stages' clips; with "
                        "--side-by-side they are rendered while the CAVP trains, once the VAE is done. 0 (default): "
                        "those clips only")
    p.add_argument("--presence-detector-seed", type=int, default=None, metavar="S",
                   help="with --presence-detector-steps: the detector's own seed (the windows it draws and their flips), so "
                        "its spread can be measured with every other stage kept; default: --seed + 7")
    p.add_argument("--presence-detector-channels-last", action="store_true",
                   help="with --presence-detector-steps: fine-tune the detector in channels-last memory layout, as "
                        "--cavp-channels-last does the CAVP (same maths, cheaper CPU steps, other last bits); the first "
                        "fine-tuning only (--presence-edge-steps and --material-channel-steps phases keep the default)")
    p.add_argument("--bf16", default="", metavar="PARTS",
                   help="train these parts' forward passes under bfloat16 autocast (weights and optimiser stay "
                        "float32), comma-separated from cavp, detector (its first fine-tuning), cfm, pairs (the teacher's reflow pairs), "
                        "reflow, distill; cheaper steps on CPUs with AVX512_BF16 or AMX (refused on a CPU without them, "
                        "where bfloat16 is emulated and many times slower). Default: none (float32 throughout)")
    p.add_argument("--presence-edge-steps", type=int, default=0, metavar="N",
                   help="with --presence-detector-steps: then fine-tune the detector N more steps with the loss of each "
                        "window's newest frame added (--presence-edge-weight), the frame a stream without look-ahead "
                        "emits and the detector reads with nothing after it; the result ships as a second detector, "
                        "with thresholds of its own chosen on validation clips, that decides stream windows only "
                        "(whole clips keep the first). 0 (default): no second detector. Recorded")
    p.add_argument("--presence-edge-weight", type=float, default=1.0, metavar="W",
                   help="with --presence-edge-steps: weight of the newest frame's loss beside the whole window's "
                        "(default 1.0)")
    p.add_argument("--material-channel-steps", type=int, default=0, metavar="N",
                   help="with --presence-detector-steps: then fine-tune the detector N more steps with a material head "
                        "added (which material's impact starts in each frame, or none; the synthetic world's labels), "
                        "and give the generator its decision as one more condition channel per material (trained on "
                        "the world's truth with --presence-channel-train truth), so it is told which material "
                        "strikes. Synthetic data only. 0 (default): no material channels. Recorded")
    p.add_argument("--material-channel-weight", type=float, default=1.0, metavar="W",
                   help="with --material-channel-steps: weight of the material cross-entropy beside the slot loss "
                        "(default 1.0)")
    p.add_argument("--material-channel-clips", type=int, default=0, metavar="N",
                   help="with --material-channel-steps: the material phase also trains on N more synthetic clips of "
                        "its own (seeds right after the last clips the run renders; <run-dir>/cache_material), so the "
                        "detector sees more scenes than the flow stages' clips. 0 (default): those clips only")
    p.add_argument("--presence-validation-clips", type=int, default=48, metavar="N",
                   help="synthetic validation clips the --presence-channel threshold is chosen on (default 48)")
    p.add_argument("--subframes", type=int, default=1, metavar="K",
                   help="camera snapshots per visual frame, stacked on the CAVP's input channels (default 1, "
                        "the published model: one frame per feature). K > 1 shows the CAVP the motion between "
                        "its frames (snapshots every frame_period / K up to each frame's instant) at the same "
                        "feature rate and latency; the bundle records it")
    p.add_argument("--synthetic", type=int, default=400, metavar="N",
                   help="render N synthetic clips in memory (default 400; ignored with --data-dir)")
    p.add_argument("--synthetic-seed", type=int, default=0, help="seed of the first synthetic clip")
    p.add_argument("--flow-clips", type=int, default=0, metavar="N",
                   help="render N more synthetic clips for the flow stages (latents, CFM, reflow pairs): the "
                        "CFM then learns from CAVP features of scenes the CAVP never trained on, as at inference, "
                        "not from its sharper features of its own training clips (default 0: the CAVP's clips); "
                        "cached in <run-dir>/cache_flow")
    p.add_argument("--flow-synthetic-seed", type=int, metavar="S",
                   help="seed of the first --flow-clips clip (default: --synthetic-seed + --synthetic, the "
                        "seeds right after the CAVP's)")
    p.add_argument("--clip-seconds", type=float, default=8.0, help="synthetic clip length")
    p.add_argument("--data-dir", help="folder of videos with audio (or a synthetic dataset folder)")
    p.add_argument("--csv", help="VGGSound-style manifest (id, start, label, split) inside --data-dir")
    p.add_argument("--csv-split", help="keep only rows of this split (4th column)")
    p.add_argument("--window-stride", type=int, default=2, help="frames between training windows")
    p.add_argument("--data-workers", type=int, default=1, metavar="N",
                   help="processes that render / decode clips into the clip cache (default 1; the cache is "
                        "the same for any N)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and noise")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", help="cpu / cuda (default: cuda:LOCAL_RANK if available)")
    p.add_argument("--weight-floor", type=float, default=0.05,
                   help="min logit-normal loss weight (0 = reference; >0 trains t≈0, see objectives)")
    p.add_argument("--max-minutes", type=float, help="per-stage wall-time safety budget")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints of the stage")
    p.add_argument("--vae-from", metavar="BUNDLE",
                   help="VAE stage: adopt the VAE of this bundle instead of training one (same preset VAE "
                        "shape; the latent scale is measured again on this run's data). For experiments "
                        "that change only later stages, or to fine-tune the flow model on your own data")
    p.add_argument("--cavp-from", metavar="BUNDLE",
                   help="CAVP stage: adopt the CAVP video branch of this bundle (and its frame presence head, "
                        "if it has one) instead of training one (same video-branch shape). The CAVP is the "
                        "longest stage; for experiments on the stages after it (presence slots and detector, "
                        "flow stages), or to train the flow model on your own data with the shipped features")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--cavp-event-weight", type=float, default=0.0,
                   help="CAVP stage: weight of the per-frame audio-event regression (onset strength and "
                        "band loudness of each frame's audio predicted from its video feature); 0 = "
                        "contrastive only (the original recipe)")
    p.add_argument("--cavp-event-slots", type=int, default=1,
                   help="CAVP event head: onset-strength values per frame, one per equal part of the frame "
                        "(default 1; 4 = one per latent of the tiny preset, asks when inside the frame)")
    p.add_argument("--cavp-event-flux-bands", type=int, default=0,
                   help="CAVP event head: also regress the spectrum of what starts in each frame (positive "
                        "spectral flux in this many mel-bin groups; default 0 = off)")
    p.add_argument("--cavp-onset-weight", type=float, default=0.0,
                   help="CAVP event head: extra weight on its onset slots (when a sound starts), added as a "
                        "second MSE over those slots only; 0 = off (they weigh as any other target)")
    p.add_argument("--cavp-onset-log", action="store_true",
                   help="CAVP event head: regress log(1 + onset strength), so quiet impacts count as much "
                        "against silence as loud ones against quiet ones (default: the raw strength)")
    p.add_argument("--cavp-event-offset", type=int, default=0, metavar="FRAMES",
                   help="CAVP event head: regress each audio period from the feature this many frames later "
                        "(1 = the frame whose snapshots span the period; a frame's snapshots look back from the "
                        "instant that opens its own period); 0 = the period's own frame (default)")
    p.add_argument("--cfm-onset-weight", type=float, default=0.0,
                   help="CFM stage: weigh each latent's flow loss by 1 + W x (log spectral flux above the "
                        "window's median, scaled to about 1 for an impact), so the teacher learns the starts of "
                        "quiet sounds as well as loud ones; 0 = every latent alike (the paper's objective)")
    p.add_argument("--reflow-onset-weight", type=float, default=0.0,
                   help="reflow stage: the same per-latent weight as --cfm-onset-weight on the reflow loss, from "
                        "the ground-truth audio of each pair's window; 0 = every latent alike")
    p.add_argument("--distill-onset-weight", type=float, default=0.0,
                   help="distillation stage: the same per-latent weight as --cfm-onset-weight on the one-step "
                        "MSE to the teacher's sample, from the ground-truth audio of each pair's window; 0 = off")
    p.add_argument("--cavp-impact-weight", type=float, default=0.0,
                   help="CAVP stage: weight of an impact contrast (the batch's 2 x batch-size strongest-onset "
                        "frames: each frame's video feature must pick its own audio among the other impacts'); "
                        "0 = off")
    p.add_argument("--cavp-timbre-weight", type=float, default=0.0,
                   help="CAVP stage: weight of an onset-weighted regression of the loudness-free spectrum of "
                        "what starts in each frame (20 mel-bin groups); 0 = off")
    p.add_argument("--cavp-material-weight", type=float, default=0.0,
                   help="CAVP stage, synthetic data only: weight of a cross-entropy that names, from each "
                        "impact frame's video feature, the struck material (the synthetic world's ground "
                        "truth); 0 = off (self-supervised, as Diff-Foley)")
    p.add_argument("--cavp-material-offset", type=int, default=0, metavar="FRAMES",
                   help="CAVP material head: ask the feature this many frames after the impact's frame "
                        "(1 = the frame that shows the object where it struck; 0 = the impact's own frame)")
    p.add_argument("--cavp-presence-weight", type=float, default=0.0,
                   help="CAVP stage, synthetic data only: weight of a binary cross-entropy that says, from each "
                        "frame's video feature, whether an impact starts in its period (the synthetic world's "
                        "ground truth, every impact alike however quiet); 0 = off")
    p.add_argument("--cavp-flip", type=float, default=0.0,
                   help="CAVP stage: probability of mirroring each training window left-right (all its frames; "
                        "the audio is unchanged); 0 = off")
    p.add_argument("--cavp-shift", type=int, default=0,
                   help="CAVP stage: shift each training window by a random -N..N pixels along each axis (all its "
                        "frames alike, edge pixels repeated); 0 = off")
    p.add_argument("--cavp-zoom", type=float, default=0.0,
                   help="CAVP stage: zoom each training window about its centre by a factor between 1/(1+Z) and "
                        "1+Z (all its frames alike); 0 = off")
    p.add_argument("--cavp-brightness", type=float, default=0.0,
                   help="CAVP stage: add a random brightness offset in [-B, B] (of the 0..1 range) to each training "
                        "window; 0 = off")
    p.add_argument("--cavp-contrast", type=float, default=0.0,
                   help="CAVP stage: scale each training window's contrast about its mean by a factor in "
                        "[1-C, 1+C]; 0 = off")
    p.add_argument("--cavp-color", type=float, default=0.0,
                   help="CAVP stage: multiply each colour channel of a training window by a gain in [1-G, 1+G] "
                        "(keep it small: the materials differ by colour); 0 = off")
    p.add_argument("--cavp-noise", type=float, default=0.0,
                   help="CAVP stage: add Gaussian pixel noise of this standard deviation (0..1 range) to every "
                        "training frame; 0 = off")
    p.add_argument("--cavp-channels-last", action="store_true",
                   help="CAVP stage: train the video branch in channels-last memory layout (same maths; "
                        "1.38-1.47x faster per step on a 2-core CPU, benchmarks/cavp_step_speed.py; results "
                        "differ in the last bits from the default layout's; the shipped recipe uses it)")


def _hparams(p: argparse.ArgumentParser, stage: Optional[str]) -> None:
    d = DEFAULTS.get(stage) if stage else None
    p.add_argument("--steps", type=int, default=d.steps if d else None)
    p.add_argument("--batch-size", type=int, default=d.batch_size if d else None)
    p.add_argument("--lr", type=float, default=d.lr if d else None)
    p.add_argument("--warmup", type=int, default=d.warmup if d else None)
    p.add_argument("--final-lr-factor", type=float, default=d.final_lr_factor if d else None,
                   help="cosine LR decay after warm-up down to lr x this (1 = constant LR)")
    p.add_argument("--decay-steps", type=int, default=d.decay_steps if d else None,
                   help="with --final-lr-factor < 1: hold the LR after warm-up and decay it over only the last "
                        "this many steps (0 = the decay spans the whole run after warm-up). A finished constant-LR "
                        "run resumed with more --steps gets a decay tail")
    p.add_argument("--ema", type=float, default=d.ema if d else None,
                   help="decay of the exponential moving average of the weights that the stage hands on "
                        f"(0 = the last step's weights{f'; default {d.ema}' if d else ''}). Resuming a checkpoint "
                        "trained without it starts the average from the resumed weights")


def _reflow_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reflow-pairs", type=int, default=2048, help="number of teacher (noise, sample) pairs")
    p.add_argument("--teacher-steps", type=int, default=25, help="Euler steps of the teacher")
    p.add_argument("--cfg-scale", type=float, default=4.5, help="CFG scale of teacher, reflow and distill")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training subcommands to ``parser`` (e.g. the ``train`` subparser of `frieren`)."""
    sub = parser.add_subparsers(dest="train_command", required=True)
    for stage, help_ in (("vae", "train the mel VAE"), ("cavp", "train CAVP (contrastive)"),
                         ("cfm", "train the base CFM model"), ("reflow", "reflow training"),
                         ("distill", "one-step distillation")):
        p = sub.add_parser(stage, help=help_)
        _common(p)
        _hparams(p, stage)
        if stage in ("reflow", "distill"):
            _reflow_data_args(p)
    p = sub.add_parser("reflow-data", help="generate teacher pairs for reflow/distill")
    _common(p)
    _reflow_data_args(p)
    p = sub.add_parser("bundle", help="write the bundle from the finished stages")
    _common(p)
    p.add_argument("--out", required=True, help="bundle directory")
    p.add_argument("--stage", default="distill", choices=sorted(BUNDLE_STEPS),
                   help="flow weights to ship: distill (1 step), reflow (4 steps) or cfm (25 steps)")
    p.add_argument("--cfg-scale", type=float, default=4.5, help="CFG scale stored in the preset")
    p = sub.add_parser("default", help="all stages in order (resumable), then the bundle")
    _common(p)
    _reflow_data_args(p)
    for stage, d in DEFAULTS.items():
        p.add_argument(f"--{stage}-steps", type=int, default=d.steps)
        p.add_argument(f"--{stage}-batch-size", type=int, default=d.batch_size)
        p.add_argument(f"--{stage}-final-lr-factor", type=float, default=d.final_lr_factor,
                       help=f"{stage}: cosine LR decay down to lr x this (1 = constant)")
        p.add_argument(f"--{stage}-decay-steps", type=int, default=d.decay_steps,
                       help=f"{stage}: decay only over the last this many steps (0 = all after warm-up)")
        p.add_argument(f"--{stage}-ema", type=float, default=d.ema,
                       help=f"{stage}: EMA decay of the weights handed on (0 = the last step's weights)")
    p.add_argument("--out", default="frieren/assets/default", help="bundle directory")
    p.add_argument("--side-by-side", action="store_true",
                   help="train the VAE and CAVP stages at the same time, CAVP in a second process with its "
                        "own --threads (they are independent; on a 2-core machine with --threads 1 this saves "
                        "the VAE's time); with --presence-detector-steps and --presence-channel-train truth also "
                        "the presence detector beside the flow stages, which never read it. Same weights as one "
                        "after the other; single-process runs only")
    p.add_argument("--stop-after", choices=("vae+cavp",),
                   help="stop once this stage is done, without a bundle; the same command without it resumes "
                        "from there, for example in another process with other CPU kernels (scripts/train_default.sh "
                        "did so for v12r's AVX2 later stages up to commit 8760d91)")


# --------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------

def _exit_with_parent(parent_pid: int, what: str, poll_s: float = 1.0) -> None:
    """Stop this process once the process that started it is gone (killed without the chance
    to stop its children, e.g. by SIGTERM or SIGKILL): an orphaned stage would go on using a
    core and writing checkpoints nobody waits for."""
    while True:
        time.sleep(poll_s)
        if os.getppid() != parent_pid:
            log.error("the training process that started this %s (pid %d) is gone; stopping. "
                      "Rerun the same command to resume from the last checkpoint.", what, parent_pid)
            logging.shutdown()
            os._exit(1)


def _side_process_main(job: str, args: argparse.Namespace, parent_pid: int) -> None:
    """Entry point of a side-by-side process (spawned: a fresh interpreter). ``job``: ``cavp`` (the
    CAVP stage) or ``detector`` (the presence detector's phases and thresholds, kept in the CAVP
    stage's folder, that :meth:`Run.trained_cavp` trains once and the bundle then reads)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    what = {"cavp": "CAVP stage", "detector": "presence detector"}[job]
    threading.Thread(target=_exit_with_parent, args=(parent_pid, what), name="parent-watch", daemon=True).start()
    torch.set_num_threads(args.threads)
    r = Run(args)
    if job == "cavp":
        stage_cavp(r, current_hparams(args)["cavp"])
    else:
        r.trained_cavp()


def _beside(r: Run, job: str, here) -> None:
    """Run ``here()`` in this process while ``job`` (:func:`_side_process_main`) runs in a spawned one.
    The two write different files and each seeds itself, so the weights are those of a sequential
    run. A failure of either stops both; a rerun resumes each from its checkpoints."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=_side_process_main, args=(job, r.args, os.getpid()),
                                                         name=f"{job}-side")
    child.start()
    what = {"cavp": "CAVP stage", "detector": "presence detector"}[job]
    log.info("%s runs side by side in process %d", what, child.pid)
    try:
        here()
        child.join()
    finally:
        if child.is_alive():
            child.terminate()
            child.join()
    if child.exitcode != 0:
        raise SystemExit(f"the side-by-side {what} failed (exit code {child.exitcode}; its error is in the "
                         f"log above); rerun the same command to resume it, or drop --side-by-side")
    log.info("%s finished side by side", what)


def _vae_and_cavp_side_by_side(r: Run, hps: dict) -> None:
    """VAE here, CAVP in a spawned process; both read the clip cache the data step wrote. The CAVP
    takes longer than the VAE, so this process then renders the presence detector's own clips
    (``--presence-detector-clips``) and simulates their onsets, with one worker, while it waits."""
    if finished_stage(r, "cavp", hps["cavp"].steps) is not None:
        stage_vae(r, hps["vae"])
        stage_cavp(r, hps["cavp"])
        return

    def here():
        stage_vae(r, hps["vae"])
        _detector_clips_ahead(r)

    _beside(r, "cavp", here)


def _detector_clips_ahead(r: Run) -> None:
    """Render ``--presence-detector-clips`` and their onsets now (one worker), so the detector's phase,
    later, only loads them; the clips are not kept in this process's memory."""
    if not (getattr(r.args, "presence_detector_clips", 0) and r.preset.cavp.presence_detector):
        return
    s = time.perf_counter()
    clips = r.clips("detector", workers=1)
    r.clip_onsets(clips, "detector", workers=1)
    r.forget_clips("detector")
    log.info("the presence detector's %d own clips and their onsets made in %.1f s while the CAVP trains",
             len(clips), time.perf_counter() - s)


def _detector_beside_flow_stages(r: Run) -> bool:
    """With ``--side-by-side``, a presence detector and channels learned from the truth
    (``--presence-channel-train truth``) the flow stages never read the detector (:meth:`Run.latents`
    caches the CAVP's features alone), so the detector's phases train in a second process while the
    flow stages run here: on a 2-core machine with ``--threads 1`` this saves the detector's time."""
    a = r.args
    return bool(a.side_by_side and not r.ctx.distributed and r.preset.cavp.presence_detector
                and r.channels_from_truth)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    r = Run(args)
    try:
        check_bf16(r.bf16_parts, r.ctx.device)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    cmd = args.train_command
    t0 = time.perf_counter()
    if cmd in ("vae", "cavp", "cfm", "reflow", "distill"):
        hp = hp_from_args(cmd, args)
        res = {"vae": stage_vae, "cavp": stage_cavp, "cfm": stage_cfm}.get(cmd)
        result = res(r, hp) if res else pair_stage(r, cmd, "cfm" if cmd == "reflow" else "reflow", hp)
    elif cmd == "reflow-data":
        result = stage_reflow_data(r)
    elif cmd == "bundle":
        if r.preset.cavp.presence_channel:   # train (or find) the presence phases first: the provenance records them
            r.trained_cavp()
        result = {"bundle": str(export_bundle(r, args.out, provenance_record(r, stage_summaries(r)), args.stage))}
    elif cmd == "default":
        hps = current_hparams(args)
        timings = {}

        def timed(name, fn):
            s = time.perf_counter()
            out = fn()
            timings[name] = round(time.perf_counter() - s, 1)
            log.info("stage %s done in %.1f s", name, timings[name])
            return out

        stop_after = getattr(args, "stop_after", None)
        timed("data", lambda: (r.windows(), r.windows("flow")))
        if args.side_by_side and not r.ctx.distributed:
            timed("vae+cavp", lambda: _vae_and_cavp_side_by_side(r, hps))
        else:
            timed("vae", lambda: stage_vae(r, hps["vae"]))
            timed("cavp", lambda: stage_cavp(r, hps["cavp"]))
        if stop_after:
            log.info("stopped after %s as asked (--stop-after); the same command without it goes on from here",
                     stop_after)
            from frieren.training.ddp import teardown
            teardown()
            return 0

        def flow_stages():
            timed("latents", lambda: r.latents())
            timed("cfm", lambda: stage_cfm(r, hps["cfm"]))
            timed("reflow-data", lambda: stage_reflow_data(r))
            timed("reflow", lambda: pair_stage(r, "reflow", "cfm", hps["reflow"]))
            timed("distill", lambda: pair_stage(r, "distill", "reflow", hps["distill"]))

        if _detector_beside_flow_stages(r):
            r.clip_onsets(r.windows("flow").clips)   # both processes read them: written once, before the split
            timed("detector+flow", lambda: _beside(r, "detector", flow_stages))
        else:
            if r.preset.cavp.presence_channel:   # the head's or detector's phases and thresholds, kept for the bundle
                timed("presence", lambda: r.trained_cavp())
            flow_stages()
        summaries = stage_summaries(r)
        summaries["wall_seconds_this_invocation"] = timings
        if r.ctx.is_main:
            export_bundle(r, args.out, provenance_record(r, summaries))
        result = {"bundle": args.out, "timings": timings}
    else:  # pragma: no cover - argparse guards this
        raise SystemExit(f"unknown train command {cmd!r}")
    log.info("%s finished in %.1f s: %s", cmd, time.perf_counter() - t0, json.dumps(result, default=str)[:2000])
    from frieren.training.ddp import teardown
    teardown()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="frieren train", description="train Frieren models from scratch")
    ap.add_argument("-v", "--verbose", action="store_true")
    add_arguments(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
