"""Read-outs of the struck material from a material detector's *frozen* feature maps.

Fits small heads on the detector network (``presence_net``) of a bundle with material channels, at
the impact frames of its training clips (a run's clip cache), and scores them on the isolated impacts
of held-out clips (``benchmarks/material_detector.py``'s 280): the linear head on the pooled feature
(what the material phase trains) against heads that attend over positions of layer4 (2 x 2), layer3
(4 x 4) and layer2 (8 x 8): per position an attention logit and material logits, summed with the
softmax of the attention over positions. Only the best of the materials is scored ("none" is not a class).

    python docs/eval/experiments/material_spatial_head/frozen_map_probe.py runs/v13mc6_bundle runs/v13mc/cache
"""
import argparse
import glob
import logging
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

log = logging.getLogger("frozen_map_probe")
LAYERS = ("layer2", "layer3", "layer4", "head")


class Attend(nn.Module):
    """(B, C, h, w) -> (B, M): material logits per position, summed with softmax attention weights;
    ``hidden`` > 0 puts a ReLU layer of that width before both."""

    def __init__(self, channels: int, materials: int, hidden: int = 0):
        super().__init__()
        def conv(out):
            return (nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, out, 1)) if hidden
                    else nn.Conv2d(channels, out, 1))
        self.attend, self.read = conv(1), conv(materials)

    def forward(self, x):
        w = self.attend(x).flatten(1).softmax(-1)                 # (B, hw)
        return (self.read(x).flatten(2) * w[:, None]).sum(-1)


def features(net, frames, idx):
    """frames (N, C, S, S) float -> per layer the features of frames ``idx``, 40-frame chunks as extract."""
    out = {k: [] for k in LAYERS}
    with torch.no_grad():
        for s in range(0, frames.shape[0], 40):
            sel = [i - s for i in idx if s <= i < s + 40]
            if not sel:
                continue
            st = net.backbone_stages(frames[s:s + 40].unsqueeze(0))
            for k in LAYERS[:3]:
                out[k].append(st[k][0].permute(1, 0, 2, 3)[sel])
            out["head"].append(net.head(st["pooled"])[0][sel])
    return {k: torch.cat(v) for k, v in out.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("cache", help="a run's clip cache (its clips/*.pt carry frame_material)")
    p.add_argument("--train-clips", type=int, default=600)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    from frieren.checkpoints import load_bundle
    from frieren.eval.table import render_clips
    from frieren.synth import SceneConfig
    from frieren.training.data import load_clip_cache

    stack, _ = load_bundle(args.bundle)
    net, spf = stack.cavp.presence_net, stack.preset.geometry.samples_per_frame
    mats = SceneConfig().materials
    train, ytr = {k: [] for k in LAYERS}, []
    for c in load_clip_cache(sorted(glob.glob(f"{args.cache}/clips/*.pt"))[:args.train_clips]):
        idx = [int(i) for i in torch.nonzero(c.frame_material >= 0).flatten()]
        if idx:
            for k, v in features(net, c.frames.float() / 255.0, idx).items():
                train[k].append(v)
            ytr += [int(c.frame_material[i]) for i in idx]
    train, ytr = {k: torch.cat(v) for k, v in train.items()}, torch.tensor(ytr)
    test, yte = {k: [] for k in LAYERS}, []
    for clip in render_clips(list(range(900064, 900096)), 8.0, stack.preset):
        pairs = [(s // spf, mats.index(m)) for s, m in zip(clip.impacts, clip.materials) if s // spf < clip.frames.shape[0]]
        if pairs:
            for k, v in features(net, clip.frames, [f for f, _ in pairs]).items():
                test[k].append(v)
            yte += [y for _, y in pairs]
    test, yte = {k: torch.cat(v) for k, v in test.items()}, torch.tensor(yte)
    log.info("%d training impacts, %d held-out isolated impacts", len(ytr), len(yte))
    m = len(mats)
    heads = [("linear, pooled feature", "head", lambda: nn.Linear(train["head"].shape[1], m)),
             ("attend, layer4", "layer4", lambda: Attend(train["layer4"].shape[1], m)),
             ("attend, layer3", "layer3", lambda: Attend(train["layer3"].shape[1], m)),
             ("attend, layer2", "layer2", lambda: Attend(train["layer2"].shape[1], m)),
             ("attend (hidden 64), layer3", "layer3", lambda: Attend(train["layer3"].shape[1], m, 64)),
             ("attend (hidden 64), layer2", "layer2", lambda: Attend(train["layer2"].shape[1], m, 64))]
    for name, key, make in heads:
        torch.manual_seed(0)
        head = make()
        opt = torch.optim.Adam(head.parameters(), 1e-3, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(0)
        for _ in range(args.steps):
            b = torch.randint(len(ytr), (256,), generator=gen)
            loss = F.cross_entropy(head(train[key][b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            fit = float(head(train[key]).argmax(-1).eq(ytr).float().mean())
            held = float(head(test[key]).argmax(-1).eq(yte).float().mean())
        log.info("%-28s training impacts %.3f, held-out %.3f", name, fit, held)


if __name__ == "__main__":
    main()
