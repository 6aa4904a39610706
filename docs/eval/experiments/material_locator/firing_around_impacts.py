"""Where around an impact do the decisions fire? (experiment code)

At the held-out isolated impacts of ``benchmarks/material_detector.py`` (impact in frame f), the
fraction of impacts where, in frames f - 1 .. f + 2, the locator names a material (best cell > 0.5),
a bundle's presence slot fires, its material head says an impact, and an onset (impact or continuous
start) of the world really starts.

    python docs/eval/experiments/material_locator/firing_around_impacts.py runs/loc/loc_d.pt runs/v13mc6_bundle
"""
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from frieren.checkpoints import load_bundle  # noqa: E402
from frieren.config import get_preset  # noqa: E402
from frieren.eval.table import ONSET_KINDS, render_clips  # noqa: E402
from locator import clip_scores, load_locator  # noqa: E402


def main(argv) -> int:
    torch.set_num_threads(1)
    model, cavp = load_locator(argv[0]), load_bundle(argv[1])[0].cavp
    m = cavp.cfg.material_channel
    preset = get_preset("tiny")
    preset = dataclasses.replace(preset, geometry=dataclasses.replace(preset.geometry, subframes=4),
                                 cavp=dataclasses.replace(preset.cavp, subframes=4))
    spf = preset.geometry.samples_per_frame
    counts, n = Counter(), 0
    for clip in render_clips(list(range(900064, 900096)), 8.0, preset):
        located = clip_scores(model, clip.frames).amax(-1) > 0.5
        with torch.no_grad():
            feats = cavp.presence_net.extract(clip.frames)
            slots = (cavp.presence_logits(feats) > cavp.presence_threshold).any(-1)
            head = cavp.presence_material_head(feats).argmax(-1) < m
        onset = {e.sample // spf for e in clip.events if e.kind in ONSET_KINDS}
        for sample in clip.impacts:
            f = sample // spf
            if f < 1 or f + 2 >= located.shape[0]:
                continue
            n += 1
            for d in (-1, 0, 1, 2):
                counts[f"locator {d:+d}"] += int(located[f + d])
                counts[f"slot {d:+d}"] += int(slots[f + d])
                counts[f"head {d:+d}"] += int(head[f + d])
                counts[f"onset {d:+d}"] += int((f + d) in onset)
    print(json.dumps({"impacts": n, **{k: v / n for k, v in sorted(counts.items())}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
