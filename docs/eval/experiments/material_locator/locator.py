"""A material locator: name the struck material where the impact is (experiment code, not the product's).

The material channels' detector names the struck material of held-out isolated impacts at
0.71-0.75 (`../material_spatial_head/`): its heads read a feature averaged over the frame or
attend without being told where the impact is. A small CNN on a 17 x 17 crop around the true
impact point of a 64 x 64 camera frame names it at about 0.91 (`crop_oracle.py`): the pixels
hold the material; finding the striking body is the hard part. The locator learns both at once
from the world's event positions.

Model: a fully convolutional network on visual frames f and f + 1 stacked (2 x 3K channels at
S x S; frame f + 1's snapshots show the bodies of impacts in frame f's period, [f P, (f + 1) P)),
with a map of (M + 1) logits per cell of a (S / 4) x (S / 4) grid: the material of an impact of
frame f's period whose event position lies within ``radius`` cells, else none (class M); ``--before B --after A``
read frames f - B .. f + A instead (the default: B = 0, A = 1). Frame
f's decision: per material the largest probability over cells; the best material if that exceeds
``--threshold``, else none. The clip's last frame has no next one: frame f is repeated.

    python locator.py train RUN_DIR/cache [RUN_DIR/cache_material ...] --out locator.pt --steps 3000
    python locator.py score locator.pt [--first-seed 900064 --clips 32] [--json out.json]

Training draws half its frames from those where an impact starts; the event positions come from
the world's physics replayed per seed (no rendering: the same random streams as ``render_clip``).
Checkpoints every 250 steps; an interrupted ``train`` resumes.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import Counter
from pathlib import Path
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

log = logging.getLogger("material_locator")
GRID_STRIDE = 4


def impact_events(seed: int, scene) -> list:
    """The world's impact events of ``seed``'s clip (as ``render_clip`` lists them), physics only."""
    from frieren.synth.scene import Scene

    s = Scene(seed, scene)
    out = []
    for i in range(scene.num_frames):
        for _ in range(scene.physics_substeps):
            s.director.update()
            out += [e for e in s.world.step() if e.kind == "impact" and e.sample < scene.num_samples]
    return out


class Locator(nn.Module):
    """(B, 2 * 3K, S, S) in [0, 1] -> (B, M + 1, S / 4, S / 4) logits."""

    def __init__(self, in_channels: int, classes: int, width: int = 48):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(2 * w, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def context_frames(frames: torch.Tensor, before: int = 0, after: int = 1) -> torch.Tensor:
    """uint8 (N, 3K, S, S) -> float (N, (before + 1 + after) * 3K, S, S): frames f - before .. f + after
    side by side, oldest first (indices clamped: the first and last frames repeated at the edges)."""
    n = frames.shape[0]
    idx = (torch.arange(n)[:, None] + torch.arange(-before, after + 1)[None, :]).clamp(0, n - 1)   # (N, L)
    return frames[idx].flatten(1, 2).float() / 255.0


def frame_scores(logits: torch.Tensor) -> torch.Tensor:
    """(N, M + 1, G, G) -> per frame and material the largest probability over cells (N, M)."""
    return logits.softmax(1)[:, :-1].flatten(2).amax(-1)


def cell_targets(impacts: Sequence[Tuple[int, int, float, float]], n: int, grid: int, classes: int,
                 radius: float) -> torch.Tensor:
    """(frame, material, x, y) in normalised image coordinates -> int64 (n, grid, grid), ``classes`` = none."""
    t = torch.full((n, grid, grid), classes, dtype=torch.long)
    centres = (torch.arange(grid).float() + 0.5) / grid
    for f, m, x, y in impacts:
        if 0 <= f < n:
            near = ((centres[None, :] - x) ** 2 + (centres[:, None] - y) ** 2).sqrt() * grid <= radius
            t[f][near] = m
    return t


def load_training(caches: Sequence[str], materials: Sequence[str], grid: int, radius: float, spf: int):
    from tqdm import tqdm

    from frieren.synth import SceneConfig

    clips = []
    for cache in caches:
        src = json.loads((Path(cache) / "source.json").read_text())
        if src.get("kind") != "synthetic":
            raise SystemExit(f"{cache} is not a synthetic clip cache: the locator needs the world's event positions")
        scene = SceneConfig(duration_s=float(src["clip_seconds"]), sample_rate=16000)
        memo = Path(cache) / "locator_impacts.json"         # the replayed physics, kept beside the cache
        known = json.loads(memo.read_text()) if memo.is_file() else {}
        for path in tqdm(sorted((Path(cache) / "clips").glob("*.pt")), desc=f"clips of {cache}", unit="clip"):
            d = torch.load(path, map_location="cpu", weights_only=False)
            seed = int(d["key"].rsplit("_", 1)[1])
            n = d["frames"].shape[0]
            if str(seed) not in known or any(len(e) < 5 for e in known[str(seed)]):   # older memos lack the source
                known[str(seed)] = [(e.sample, e.material, e.position[0], e.position[1], e.source)
                                    for e in impact_events(seed, scene)]
            hits = [(sample // spf, list(materials).index(m), x, y) for sample, m, x, y, _ in known[str(seed)]
                    if m in materials]
            struck = {}                                     # frame -> what its impacts struck
            for sample, m, _, _, source in known[str(seed)]:
                if m in materials and sample // spf < n:
                    struck.setdefault(sample // spf, set()).add(source)
            clips.append((d["frames"], cell_targets(hits, n, grid, len(materials), radius), struck))
        tmp = memo.with_suffix(".json.tmp")                 # whole or not at all: a later run parses it
        tmp.write_text(json.dumps(known))
        tmp.replace(memo)
    return clips


def parse_source_mix(text: str) -> dict:
    """"floor=1,wall=1,object=1" -> {"floor": 1.0, ...}: the ratio in which impact frames are drawn by
    what was struck ("" -> {}: impact frames drawn uniformly, as the world makes them)."""
    mix = {}
    for part in filter(None, (text or "").split(",")):
        name, _, w = part.partition("=")
        if name not in ("floor", "wall", "object") or not w:
            raise SystemExit(f"--source-mix takes floor=W,wall=W,object=W, got {part!r}")
        try:
            mix[name] = float(w)
        except ValueError:
            raise SystemExit(f"--source-mix weights are numbers, got {part!r}") from None
        if mix[name] < 0:
            raise SystemExit(f"--source-mix weights cannot be negative, got {part!r}")
    if mix and sum(mix.values()) <= 0:
        raise SystemExit(f"--source-mix needs at least one positive weight, got {text!r}")
    return mix


def train(args) -> int:
    from tqdm import tqdm

    from frieren.config import get_preset
    from frieren.synth import SceneConfig
    from frieren.training.atomic_io import atomic_torch_save

    torch.set_num_threads(args.threads)
    materials = SceneConfig().materials
    g = get_preset("tiny").geometry
    spf = g.samples_per_frame
    first = torch.load(next((Path(args.caches[0]) / "clips").glob("*.pt")), weights_only=False)["frames"]
    c, s = first.shape[1], first.shape[-1]
    grid = s // GRID_STRIDE
    clips = load_training(args.caches, materials, grid, args.radius, spf)
    index_all = [(ci, f) for ci, (fr, _, _) in enumerate(clips) for f in range(fr.shape[0])]
    index_hit = [(ci, f) for ci, (_, t, _) in enumerate(clips) for f in range(t.shape[0])
                 if bool((t[f] < len(materials)).any())]
    log.info("%d clips, %d frames, %d with an impact", len(clips), len(index_all), len(index_hit))
    mix = parse_source_mix(args.source_mix)
    by_struck = {s: [(ci, f) for ci, (_, _, struck) in enumerate(clips) for f, kinds in struck.items() if s in kinds]
                 for s in mix}
    for s, pool in by_struck.items():
        if not pool:
            raise SystemExit(f"--source-mix names {s!r} but no training frame holds an impact on it")
    if mix:
        log.info("impact frames by what was struck: %s; drawn in the ratio %s",
                 {s: len(p) for s, p in by_struck.items()}, mix)
    mix_names = list(mix)
    mix_weights = torch.tensor([mix[s] for s in mix_names], dtype=torch.float)
    torch.manual_seed(args.seed)
    model = Locator((args.before + 1 + args.after) * c, len(materials) + 1, args.width)
    opt = torch.optim.AdamW(model.parameters(), args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    weight = torch.ones(len(materials) + 1)
    weight[-1] = args.none_weight
    step, ckpt = 0, Path(args.out + ".ckpt")
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        model.load_state_dict(saved["model"]), opt.load_state_dict(saved["opt"]), gen.set_state(saved["rng"])
        step = saved["step"]
        log.info("resuming at step %d", step)
    bar = tqdm(total=args.steps, initial=step, desc="locator", unit="step")
    recent: List[float] = []
    while step < args.steps:
        xs, ts = [], []
        for b in range(args.batch):
            pool = index_hit if b % 2 == 0 or args.hit_only else index_all
            if mix and pool is index_hit:                      # impact frames drawn by what was struck
                pool = by_struck[mix_names[int(torch.multinomial(mix_weights, 1, generator=gen))]]
            ci, f = pool[int(torch.randint(len(pool), (1,), generator=gen))]
            frames, targets, _ = clips[ci]
            lo, hi = max(0, f - args.before), min(frames.shape[0], f + args.after + 1)
            x = context_frames(frames[lo:hi], args.before, args.after)[f - lo]
            t = targets[f]
            if float(torch.rand((), generator=gen)) < 0.5:
                x, t = x.flip(-1), t.flip(-1)
            xs.append(x)
            ts.append(t)
        for group in opt.param_groups:                         # cosine decay to zero
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        loss = F.cross_entropy(model(torch.stack(xs)), torch.stack(ts), weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        recent = (recent + [float(loss.detach())])[-50:]
        bar.update(1)
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
        if step % 250 == 0 or step == args.steps:
            atomic_torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": gen.get_state(),
                               "step": step}, ckpt)
    bar.close()
    atomic_torch_save({"model": model.state_dict(), "before": args.before, "after": args.after,
                       "in_channels": (args.before + 1 + args.after) * c, "classes": len(materials) + 1,
                       "width": args.width, "materials": list(materials), "radius": args.radius,
                       "steps": args.steps, "source_mix": mix}, args.out)
    log.info("wrote %s", args.out)
    return 0


def load_locator(path: str):
    """A locator checkpoint, or several joined by commas (an ensemble: their frame scores averaged);
    a trailing ``+mirror`` also averages each over the left-right mirrored frames."""
    mirror = path.endswith("+mirror")
    path = path[:-len("+mirror")] if mirror else path
    models = []
    for one in path.split(","):
        saved = torch.load(one, map_location="cpu", weights_only=False)
        model = Locator(saved["in_channels"], saved["classes"], saved["width"])
        model.load_state_dict(saved["model"])
        model.context = (saved.get("before", 0), saved.get("after", 1))     # frames read before / after f
        model.mirror = mirror
        models.append(model.eval())
    return models[0] if len(models) == 1 else models


@torch.no_grad()
def clip_scores(model, frames: torch.Tensor, chunk: int = 64, pool: str = "max") -> torch.Tensor:
    """frames uint8 or [0, 1] float (N, 3K, S, S) -> per frame and material the best cell's probability (N, M).
    ``model``: a Locator or a list of them (the mean of their scores)."""
    if isinstance(model, list):
        return torch.stack([clip_scores(m, frames, chunk, pool) for m in model]).mean(0)
    if getattr(model, "mirror", False):
        return 0.5 * (_one_locator_scores(model, frames, chunk, pool)
                      + _one_locator_scores(model, frames.flip(-1), chunk, pool))
    return _one_locator_scores(model, frames, chunk, pool)


@torch.no_grad()
def _one_locator_scores(model: Locator, frames: torch.Tensor, chunk: int, pool: str) -> torch.Tensor:
    x = frames if frames.dtype == torch.uint8 else (frames * 255).round().to(torch.uint8)
    pairs = context_frames(x, *getattr(model, "context", (0, 1)))
    if pool == "sum":
        return torch.cat([model(pairs[i:i + chunk]).softmax(1)[:, :-1].flatten(2).sum(-1)
                          for i in range(0, pairs.shape[0], chunk)])
    return torch.cat([frame_scores(model(pairs[i:i + chunk])) for i in range(0, pairs.shape[0], chunk)])


def score(args) -> int:
    from frieren.config import get_preset
    from frieren.eval.table import render_clips
    from frieren.synth import SceneConfig

    torch.set_num_threads(args.threads)
    model = load_locator(args.locator)
    materials = SceneConfig().materials
    preset = get_preset("tiny")
    import dataclasses
    preset = dataclasses.replace(preset, geometry=dataclasses.replace(preset.geometry, subframes=4),
                                 cavp=dataclasses.replace(preset.cavp, subframes=4))
    spf = preset.geometry.samples_per_frame
    clips = render_clips(list(range(args.first_seed, args.first_seed + args.clips)), args.seconds, preset)
    detector = None
    if args.bundle:                                      # also: the bundle's material head and the locator together
        from frieren.checkpoints import load_bundle
        detector = load_bundle(args.bundle)[0].cavp
    totals, by_source, false_pos, frames_without = Counter(), {}, 0, 0
    for clip in clips:
        source = {e.sample: e.source for e in clip.events if e.kind == "impact"}
        sc = clip_scores(model, clip.frames)
        sc_sum = clip_scores(model, clip.frames, pool="sum")
        impact_frames = {e.sample // spf for e in clip.events if e.kind == "impact"}
        if detector is not None:
            with torch.no_grad():
                said_feats = detector.presence_net.extract(clip.frames)
                det_all = detector.presence_material_head(said_feats)
                slots_on = (detector.presence_logits(said_feats) > detector.presence_threshold).any(-1)
            det = det_all[:, :-1]
            det_on = det_all.argmax(-1) < det.shape[1]
            joint = det.log_softmax(-1) + sc.clamp_min(1e-6).log()
            for f in range(sc.shape[0]):
                if f not in impact_frames:
                    totals["quiet_frames"] += 1
                    totals["false_det"] += int(det_on[f])
                    totals["false_either"] += int(det_on[f] or slots_on[f])
        for f in range(sc.shape[0]):
            if f not in impact_frames:
                frames_without += 1
                false_pos += int(sc[f].max() > args.threshold)
        for sample, name in zip(clip.impacts, clip.materials):
            f = sample // spf
            if f >= sc.shape[0]:
                continue
            k = list(materials).index(name)
            best = int(sc[f].argmax())
            right = {"impacts": 1, "decided": int(best == k and sc[f, best] > args.threshold),
                     "said_none": int(sc[f, best] <= args.threshold), "best_material": int(best == k),
                     "best_material_sum": int(int(sc_sum[f].argmax()) == k)}
            if detector is not None:
                right["joint_best"] = int(int(joint[f].argmax()) == k)
                right["detector_best"] = int(int(det[f].argmax()) == k)
                right["decided_joint_det"] = int(bool(det_on[f]) and int(joint[f].argmax()) == k)
                right["decided_joint_either"] = int(bool(det_on[f] or slots_on[f]) and int(joint[f].argmax()) == k)
            totals.update(right)
            by_source.setdefault(source.get(sample, "unknown"), Counter()).update(right)

    def rates(c):
        return {"impacts": c["impacts"], **{k: c[k] / c["impacts"] for k in ("decided", "said_none", "best_material", "best_material_sum", "joint_best",
                                                            "detector_best", "decided_joint_det",
                                                            "decided_joint_either") if k in c}}
    report = {"locator": args.locator, "threshold": args.threshold, **rates(totals),
              "false_material_rate": false_pos / max(1, frames_without),
              "by_source": {k: rates(v) for k, v in sorted(by_source.items())}}
    if detector is not None:
        report["false_det_rate"] = totals["false_det"] / max(1, totals["quiet_frames"])
        report["false_either_rate"] = totals["false_either"] / max(1, totals["quiet_frames"])
    log.info("%s", json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("caches", nargs="+")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--width", type=int, default=48)
    t.add_argument("--radius", type=float, default=1.5, help="cells around the event position that name it")
    t.add_argument("--none-weight", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--before", type=int, default=0, help="frames before f the locator reads (default 0)")
    t.add_argument("--after", type=int, default=1, help="frames after f the locator reads (default 1)")
    t.add_argument("--hit-only", action="store_true", help="train on frames where an impact starts only")
    t.add_argument("--source-mix", default="", help="draw impact frames by what was struck in this ratio, "
                   "for example floor=1,wall=1,object=1 (default: as the world makes them)")
    t.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("score")
    s.add_argument("locator")
    s.add_argument("--first-seed", type=int, default=900064)
    s.add_argument("--clips", type=int, default=32)
    s.add_argument("--seconds", type=float, default=8.0)
    s.add_argument("--threshold", type=float, default=0.5)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--json")
    s.add_argument("--bundle", help="a bundle with material channels: also score its head and both together")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return train(args) if args.cmd == "train" else score(args)


if __name__ == "__main__":
    sys.exit(main())
