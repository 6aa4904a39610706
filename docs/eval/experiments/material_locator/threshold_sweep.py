"""The locator's decision against its threshold (experiment code): at the 280 held-out isolated impacts
of ``benchmarks/material_detector.py``, the fraction named right, and on quiet frames (at least one
frame away from any onset: impact or continuous start) the fraction where it names a material.

    python docs/eval/experiments/material_locator/threshold_sweep.py runs/loc/loc_d.pt [--json out.json]
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from frieren.config import get_preset  # noqa: E402
from frieren.eval.table import ONSET_KINDS, render_clips  # noqa: E402
from frieren.synth import SceneConfig  # noqa: E402
from locator import clip_scores, load_locator  # noqa: E402

THRESHOLDS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("locator")
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = load_locator(args.locator)
    materials = list(SceneConfig().materials)
    preset = get_preset("tiny")
    preset = dataclasses.replace(preset, geometry=dataclasses.replace(preset.geometry, subframes=4),
                                 cavp=dataclasses.replace(preset.cavp, subframes=4))
    spf = preset.geometry.samples_per_frame
    right = {t: 0 for t in THRESHOLDS}
    false = {t: 0 for t in THRESHOLDS}
    impacts = quiet = 0
    for clip in render_clips(list(range(900064, 900096)), 8.0, preset):
        scores = clip_scores(model, clip.frames)
        onset = {e.sample // spf for e in clip.events if e.kind in ONSET_KINDS}
        near = onset | {f + 1 for f in onset} | {f - 1 for f in onset}
        for f in range(scores.shape[0]):
            if f not in near:
                quiet += 1
                for t in THRESHOLDS:
                    false[t] += int(scores[f].max() > t)
        for sample, name in zip(clip.impacts, clip.materials):
            f = sample // spf
            impacts += 1
            for t in THRESHOLDS:
                right[t] += int(int(scores[f].argmax()) == materials.index(name) and scores[f].max() > t)
    report = {"locator": args.locator, "impacts": impacts, "quiet_frames": quiet,
              "rows": [{"threshold": t, "decided": right[t] / impacts, "false_on_quiet": false[t] / quiet}
                       for t in THRESHOLDS]}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
