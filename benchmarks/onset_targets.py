"""What the onset training targets say about impacts of each strength.

On held-out synthetic clips (seeds 900000.. by default), for each impact of the world's event
list, binned by its strength (0..1 loudness scale from its normal speed):

* the CAVP event head's onset strength target (``frame_audio_targets``, 32 ms slots): the
  largest slot value within one slot of the impact, against the median and 90th percentile
  over all slots;
* the CFM's per-latent loss weight (``latent_onset_weight`` with each ``--weights`` W, on
  2.048 s windows): the largest latent weight within one latent of the impact, against the
  median and 90th percentile over all latents.

    python benchmarks/onset_targets.py --clips 8 --weights 4 12
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BINS = (0.0, 0.1, 0.25, 0.5, 1.01)


def _binned(rows: List[tuple]) -> Dict[str, Dict[str, float]]:
    r = np.asarray(rows, np.float64).reshape(-1, 2)
    out = {}
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        m = (r[:, 0] >= lo) & (r[:, 0] < hi)
        out[f"{lo:.2f}-{min(hi, 1.0):.2f}"] = {"impacts": int(m.sum()),
                                               "median": float(np.median(r[m, 1])) if m.any() else float("nan")}
    return out


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seed0", type=int, default=900000)
    ap.add_argument("--weights", type=float, nargs="*", default=[4.0, 12.0], help="--cfm-onset-weight values")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from frieren.audio import MelFrontend
    from frieren.config import get_preset
    from frieren.eval.metrics import log_mel
    from frieren.synth import SceneConfig, render_clip
    from frieren.training.objectives import frame_audio_targets, latent_onset_weight

    p = get_preset("tiny")
    g = p.geometry
    frontend = MelFrontend(p.mel).eval()
    scene = SceneConfig(duration_s=8.0, sample_rate=g.sample_rate)
    mel_per_frame = g.latents_per_frame * g.mel_per_latent
    window_mels = g.frames_per_window * mel_per_frame
    slot_samples = g.mel_per_latent * p.mel.hop_length           # one onset slot = one latent (32 ms)
    slot_rows, all_slots = [], []
    weight_rows = {w: [] for w in args.weights}
    all_weights = {w: [] for w in args.weights}
    for seed in range(args.seed0, args.seed0 + args.clips):
        clip = render_clip(seed, scene)
        mel = log_mel(frontend, clip.audio)
        impacts = [(e.strength, e.sample // slot_samples) for e in clip.events if e.kind == "impact"]
        frames = mel.shape[-1] // mel_per_frame
        slots = frame_audio_targets(mel[None, :, :frames * mel_per_frame], frames,
                                    slots=g.latents_per_frame)[0, :, :g.latents_per_frame].reshape(-1)
        all_slots.append(slots.numpy())
        slot_rows += [(s, float(slots[max(0, k - 1):k + 2].max())) for s, k in impacts if k < len(slots)]
        for start in range(0, mel.shape[-1] - window_mels + 1, window_mels):
            first = start // g.mel_per_latent
            for w in args.weights:
                lw = latent_onset_weight(mel[None, :, start:start + window_mels], g.mel_per_latent, w)[0]
                all_weights[w].append(lw.numpy())
                weight_rows[w] += [(s, float(lw[max(0, k - first - 1):k - first + 2].max()))
                                   for s, k in impacts if 0 <= k - first < len(lw)]
    slots_all = np.concatenate(all_slots)
    result = {"clips": args.clips, "seed0": args.seed0,
              "onset_slot_target": {"all_slots_median": float(np.median(slots_all)),
                                    "all_slots_p90": float(np.percentile(slots_all, 90)),
                                    "impacts_by_strength": _binned(slot_rows)},
              "cfm_latent_weight": {}}
    for w in args.weights:
        v = np.concatenate(all_weights[w])
        result["cfm_latent_weight"][str(w)] = {"all_latents_median": float(np.median(v)),
                                              "all_latents_p90": float(np.percentile(v, 90)),
                                              "impacts_by_strength": _binned(weight_rows[w])}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
