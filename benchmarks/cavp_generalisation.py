"""Does a trained CAVP generalise? Its training objective on training clips vs held-out clips.

The CAVP stage logs its loss on the batches it trains on; a falling training loss does not
say whether the video features improve on scenes the model has never seen. This script
evaluates the stage's own objective (semantic and temporal contrast, event head) with the
trained weights in eval mode (batch norm running statistics) on

* ``train``: the first ``--clips`` clips of the run's clip cache (what the stage trained on);
* ``held-out``: as many synthetic clips rendered from ``--seed0`` (never used in training;
  the evaluation's seeds), cached the same way in a temporary folder;

with the same windows (every ``--stride`` frames), batch size and batch order for both, so
the two numbers differ only by the data. A held-out loss far above the training loss means
the CAVP memorises its training clips: more clips, not more steps, is then the lever.

    python benchmarks/cavp_generalisation.py runs/default/cavp/final.pt --run-dir runs/default

Each checkpoint is a CAVP stage's ``final.pt`` or a copy of its ``ckpt.pt`` taken mid-run. A
``ckpt.pt`` holds that step's live weights only for a stage trained without ``--cavp-ema``; one
with an EMA is refused with a message (score its ``final.pt``).

Measured with it (2026-11-27, 24 + 24 clips): the 300-clip recipe's CAVP after 4000 steps with
a cosine LR decay had a training loss of 0.66 against 2.21 held out (temporal contrast 0.17 vs
1.02, event head 0.43 vs 0.64): see docs/eval/experiments/data_scale/.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cavp_probe import load_stage_state  # noqa: E402  (reads final.pt and mid-run ckpt.pt alike)

log = logging.getLogger("cavp_generalisation")


def stage_state(checkpoint: str) -> Dict[str, torch.Tensor]:
    """The whole state dict (video and audio branches, event head) of a CAVP stage's ``final.pt``
    or of its resumable ``ckpt.pt`` copied mid-run."""
    if Path(checkpoint).is_dir():
        raise SystemExit(f"{checkpoint} is a model bundle, which keeps only the CAVP's video branch; this "
                         "script evaluates the whole stage objective: pass the run's cavp/final.pt or cavp/ckpt.pt")
    return load_stage_state(checkpoint)


def objective_for(state: Dict[str, torch.Tensor], preset, event_slots: int, event_flux_bands: int):
    """The CAVP stage's objective (video branch, mel encoder, event head if trained) with ``state``."""
    from frieren.models.cavp import CAVPVideoEncoder, with_depth_of
    from frieren.training.cavp_audio import MelAudioEncoder
    from frieren.training.objectives import AUX_BANDS, CAVPObjective

    g = preset.geometry
    head = state.get("event_head.weight")
    if head is not None and head.shape[0] != event_slots + AUX_BANDS + event_flux_bands:
        raise SystemExit(f"the checkpoint's event head predicts {head.shape[0]} values, not --event-slots "
                         f"{event_slots} + {AUX_BANDS} bands + --event-flux-bands {event_flux_bands}: "
                         "pass the flags it was trained with")
    cavp = with_depth_of(preset.cavp, state, prefix="video.video_encoder.")   # a `--cavp-depth` run's own depth
    obj = CAVPObjective(CAVPVideoEncoder(cavp),
                        MelAudioEncoder(preset.mel.n_mels, preset.cavp.embed_dim, g.latents_per_frame * g.mel_per_latent),
                        segments=8, event_weight=1.0 if head is not None else 0.0,
                        event_slots=event_slots, event_flux_bands=event_flux_bands if head is not None else 0)
    missing, _ = obj.load_state_dict(state, strict=False)
    needed = [k for k in missing if k.startswith(("video.", "audio.", "logit_scale", "event_head"))]
    if needed:
        raise SystemExit(f"not a CAVP stage checkpoint: {len(needed)} weights missing (first: {needed[0]})")
    return obj.eval()


@torch.no_grad()
def mean_losses(obj, windows, batch_size: int) -> Dict[str, float]:
    """The objective's terms averaged over full batches of ``windows`` (a WindowData) in a fixed order."""
    n = len(windows.windows)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    sums: Dict[str, float] = {}
    batches = 0
    for i in range(0, n - batch_size + 1, batch_size):
        idx = order[i:i + batch_size]
        for k, v in obj((windows.frames(idx), windows.mel(idx))).items():
            sums[k] = sums.get(k, 0.0) + float(v)
        batches += 1
    if not batches:
        raise SystemExit(f"{n} windows do not fill one batch of {batch_size}: use more --clips or a smaller --stride")
    return {k: v / batches for k, v in sums.items()}


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="CAVP stage checkpoints (runs/.../cavp/final.pt or ckpt.pt)")
    ap.add_argument("--run-dir", required=True, help="the training run whose clip cache the CAVP trained on")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--clips", type=int, default=24, help="clips of each kind (default 24)")
    ap.add_argument("--seed0", type=int, default=900000, help="first held-out seed (default: the evaluation's)")
    ap.add_argument("--seconds", type=float, default=8.0, help="held-out clip length")
    ap.add_argument("--stride", type=int, default=8, help="frames between windows (default 8)")
    ap.add_argument("--batch-size", type=int, default=16, help="the contrastive terms depend on it (recipe: 16)")
    ap.add_argument("--event-slots", type=int, default=4, help="--cavp-event-slots of the training (recipe: 4)")
    ap.add_argument("--event-flux-bands", type=int, default=20,
                    help="--cavp-event-flux-bands of the training (recipe: 20)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    from frieren.config import get_preset, with_subframes
    from frieren.synth import SceneConfig
    from frieren.training.data import (WindowData, build_clip_cache, load_clip_cache, synthetic_source,
                                       window_index)

    source = Path(args.run_dir) / "cache" / "source.json"
    subframes = json.loads(source.read_text()).get("subframes", 1) if source.is_file() else 1
    preset = with_subframes(get_preset(args.preset), subframes)   # frames as the run's cache holds them
    g = preset.geometry
    cached = sorted((Path(args.run_dir) / "cache" / "clips").glob("*.pt"))
    if len(cached) < args.clips:
        raise SystemExit(f"{args.run_dir}/cache/clips holds {len(cached)} clips, fewer than --clips {args.clips}")

    def windows(paths) -> WindowData:
        clips = load_clip_cache(paths)
        return WindowData(clips, window_index(clips, g.frames_per_window, args.stride), g.frames_per_window,
                          g.latents_per_frame * g.mel_per_latent)

    with tempfile.TemporaryDirectory() as tmp:
        log.info("rendering %d held-out clips (seeds %d..)", args.clips, args.seed0)
        scene = SceneConfig(duration_s=args.seconds, sample_rate=g.sample_rate)
        held = build_clip_cache(synthetic_source(args.clips, args.seed0, preset, scene), tmp, preset, progress=False)
        sets = {"train": windows(cached[:args.clips]), "held-out": windows(held)}
    results = []
    for ck in args.checkpoints:
        state = stage_state(ck)
        obj = objective_for(state, preset, args.event_slots, args.event_flux_bands)
        r = {"checkpoint": ck, **{name: mean_losses(obj, w, args.batch_size) for name, w in sets.items()}}
        results.append(r)
        terms = [k for k in r["train"] if k in ("loss", "semantic", "temporal", "event", "onset_corr")]
        sys.stdout.write(f"{ck}: " + ", ".join(f"{k} {r['train'][k]:.3f} / {r['held-out'][k]:.3f}" for k in terms)
                         + "  (train / held-out)\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
