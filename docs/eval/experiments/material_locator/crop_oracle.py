"""How much of the struck material do the pixels around the impact hold? (experiment code)

A small CNN (3 convolutions, 32-64-64 channels) on square crops (``--half`` pixels each side) of
the CAVP-sized frames (``--size``), centred on the *true* impact position of the world's event list,
trained on the isolated impacts of training seeds (``--train-clips`` from 1000) and scored on the
280 held-out impacts of ``benchmarks/material_detector.py`` (seeds 900064-900095). An oracle of
localisation: what a model that knew where the impact is could name from these frames.

    python crop_oracle.py --frames instant            # the camera frame at the impact instant
    python crop_oracle.py --frames instant --offsets 0,0.033,0.066,0.1
    python crop_oracle.py --frames snapshots --next 1     # the 4 snapshots of visual frame f + 1
    python crop_oracle.py --frames snapshots --next 1,2

``snapshots``: the snapshots a 4-snapshot tiny model stacks into visual frame f + k, where f's period
[f P, (f + 1) P) holds the impact (frame f + 1's are taken 96, 64, 32 and 0 ms before (f + 1) P).
"""
import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from frieren.config import get_preset  # noqa: E402
from frieren.eval.materials import impact_samples  # noqa: E402
from frieren.synth import SceneConfig, render_clip  # noqa: E402
from frieren.training.data import _preprocess_uint8  # noqa: E402


def gather(seeds, args, scene, materials, snapshot_offsets, period):
    """Crops uint8 -> float (N, 3 * crops, 2 h + 1, 2 h + 1), material index (N,), struck source per impact."""
    xs, ys, sources = [], [], []
    size, h = args.size, args.half
    for seed in tqdm(seeds, desc="render clips", unit="clip"):
        clip = render_clip(seed, scene)
        keep = {s for s, _ in impact_samples(clip.events, scene.materials, sample_rate=scene.sample_rate)}
        cache = {}
        for e in clip.events:
            if e.kind != "impact" or e.sample not in keep:
                continue
            px, py = int(e.position[0] * (size - 1)), int(e.position[1] * (size - 1))
            f = math.floor(e.time_s / period + 1e-9)
            if args.frames == "instant":
                instants = [e.time_s + o for o in args.offsets]
            else:
                instants = [(f + k) * period + o for k in args.next for o in snapshot_offsets]
            crops = []
            for t in instants:
                i = int(np.clip(math.floor(t * clip.fps + 1e-6), 0, len(clip.frames) - 1))
                if i not in cache:
                    cache[i] = np.pad(_preprocess_uint8(clip.frames[i], size), ((0, 0), (h, h), (h, h)), mode="edge")
                crops.append(cache[i][:, py:py + 2 * h + 1, px:px + 2 * h + 1])
            xs.append(np.concatenate(crops))
            ys.append(list(materials).index(e.material))
            sources.append(e.source)
    return torch.tensor(np.stack(xs)).float() / 255, torch.tensor(ys), sources


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--half", type=int, default=8, help="crop half-width in pixels (default 8: 17 x 17)")
    p.add_argument("--frames", choices=("instant", "snapshots"), default="instant")
    p.add_argument("--offsets", default="0", help="instant: seconds after the impact, comma-separated")
    p.add_argument("--next", default="1", help="snapshots: which visual frames after f, comma-separated")
    p.add_argument("--train-clips", type=int, default=200)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    args.offsets = [float(v) for v in args.offsets.split(",")]
    args.next = [int(v) for v in args.next.split(",")]
    torch.set_num_threads(args.threads)
    preset = get_preset("tiny")
    g4 = dataclasses.replace(preset.geometry, subframes=4)
    snapshot_offsets = [o / g4.sample_rate for o in g4.subframe_offsets]
    scene = SceneConfig(duration_s=8.0, sample_rate=g4.sample_rate)
    materials = scene.materials
    xtr, ytr, _ = gather(range(1000, 1000 + args.train_clips), args, scene, materials, snapshot_offsets,
                         g4.frame_period_s)
    xte, yte, sources = gather(range(900064, 900096), args, scene, materials, snapshot_offsets, g4.frame_period_s)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(xtr.shape[1], 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, len(materials)))
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(0)
    for step in tqdm(range(args.steps), desc="crop classifier", unit="step"):
        idx = torch.randint(len(ytr), (128,), generator=gen)
        x = xtr[idx].flip(-1) if step % 2 else xtr[idx]
        loss = F.cross_entropy(net(x), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(xte).argmax(1)
    by = {}
    for s, hit in zip(sources, (pred == yte).tolist()):
        by.setdefault(s, []).append(hit)
    report = {"frames": args.frames, "offsets": args.offsets, "next": args.next, "size": args.size,
              "crop": 2 * args.half + 1, "train_impacts": len(ytr), "test_impacts": len(yte),
              "test_acc": float((pred == yte).float().mean()),
              "by_source": {k: {"impacts": len(v), "acc": sum(v) / len(v)} for k, v in sorted(by.items())}}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
