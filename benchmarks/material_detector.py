"""How well a bundle's presence detector names the struck material (``--material-channel-steps``).

A bundle with material channels tells its generator, per visual frame, which material's impact
starts there (the detector's material head: one of the world's materials, or none). This script
reads that decision on held-out synthetic clips at the frames of their isolated impacts (the
impacts ``frieren eval``'s material classifier scores, :func:`frieren.eval.materials.impact_samples`)
and reports:

* ``decided``: the fraction where the condition's material channel names the right material (what
  the generator is told; "none" counts as wrong),
* ``said_none``: the fraction where the head says no impact starts (the channels stay empty),
* ``best_material``: the fraction where the most likely of the materials alone is right (the
  head's material knowledge, whatever it says of "none"),

with the majority class of those impacts as chance, ``by_source`` the first three per what was
struck (the world's event source: ``floor``, ``wall`` or another ``object``; an object-object impact
sounds the louder body's material, which the frames show less clearly), and ``confusion``: per struck
material how often each material is the best of the materials (look-alikes, or another body's).

    python benchmarks/material_detector.py frieren/assets/default --first-seed 900064 --clips 32 --json out.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Dict

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("material_detector")


def score(cavp, clips, materials, samples_per_frame: int) -> Dict[str, float]:
    """Scores of ``cavp``'s material decision at the isolated impacts of ``clips`` (HeldOutClips)."""
    from frieren.models.cavp import material_one_hot

    m = len(materials)
    truth, totals = Counter(), Counter()
    by_source: Dict[str, Counter] = {}
    confusion = {name: Counter() for name in materials}
    for clip in clips:
        source = {e.sample: e.source for e in clip.events if e.kind == "impact"}
        with torch.no_grad():
            logits = cavp.presence_material_head(cavp.presence_net.extract(clip.frames))   # (N, M + 1)
        said = material_one_hot(logits)
        for sample, name in zip(clip.impacts, clip.materials):
            f = sample // samples_per_frame
            if f >= logits.shape[0]:
                continue
            k = list(materials).index(name)
            truth[name] += 1
            right = {"impacts": 1, "decided": int(said[f, k] == 1), "said_none": int(logits[f].argmax() == m),
                     "best_material": int(logits[f, :m].argmax() == k)}
            totals.update(right)
            confusion[name][materials[int(logits[f, :m].argmax())]] += 1
            by_source.setdefault(source.get(sample, "unknown"), Counter()).update(right)
    if not totals:
        raise SystemExit("no isolated impact in these clips: give more --clips")

    def rates(c: Counter) -> Dict[str, float]:
        return {"impacts": c["impacts"], **{k: c[k] / c["impacts"] for k in ("decided", "said_none", "best_material")}}
    return {**rates(totals), "majority_class": max(truth.values()) / totals["impacts"],
            "by_source": {src: rates(c) for src, c in sorted(by_source.items())},
            "confusion": {name: {said: confusion[name][said] for said in materials} for name in materials}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="a bundle with material channels (trained with --material-channel-steps)")
    p.add_argument("--first-seed", type=int, default=900064,
                   help="first held-out seed (default 900064: after frieren eval's 64 clips, as benchmarks/cavp_probe.py "
                        "scores its test impacts)")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the scores here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    from frieren.checkpoints import load_bundle
    from frieren.eval.table import render_clips
    from frieren.synth import SceneConfig

    stack, _ = load_bundle(args.bundle)
    preset = stack.preset
    materials = SceneConfig().materials
    if not preset.cavp.material_channel:
        raise SystemExit(f"{args.bundle} has no material channels: train it with --material-channel-steps N")
    if preset.cavp.material_channel != len(materials):
        raise SystemExit(f"{args.bundle} names {preset.cavp.material_channel} materials, the synthetic world "
                         f"{len(materials)}: it was trained on another world")
    log.info("rendering %d held-out clips (seeds %d..)", args.clips, args.first_seed)
    clips = render_clips(list(range(args.first_seed, args.first_seed + args.clips)), args.seconds, preset)
    report = {"bundle": args.bundle, "first_seed": args.first_seed, "clips": args.clips,
              **score(stack.cavp, clips, materials, preset.geometry.samples_per_frame)}
    log.info("%d isolated impacts: the channel names the right material %.3f, says none %.3f, best of the materials "
             "%.3f (majority class %.3f)", report["impacts"], report["decided"], report["said_none"],
             report["best_material"], report["majority_class"])
    for src, r in report["by_source"].items():
        log.info("  struck %-7s %3d impacts: right %.3f, none %.3f, best of the materials %.3f", src, r["impacts"],
                 r["decided"], r["said_none"], r["best_material"])
    for name, said in report["confusion"].items():
        log.info("  %-8s named as: %s", name, ", ".join(f"{k} {v}" for k, v in said.items() if v))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
