"""Continue a bundle's material detector N steps, with its linear material head alone or plus a head
that attends over positions of layer3 (4 x 4), and score the decision at held-out isolated impacts.

The material phase's loss and data (``frieren.training.presence_detector.fine_tune_detector``: slot
BCE plus material cross-entropy, random 16-frame windows of 8, mirrored with probability 0.5,
learning rates 1e-4 for the network and 1e-3 for the heads), from the bundle's trained detector and
heads. With ``--head attend`` the material logits become the linear head's plus
``sum over positions of softmax(a) * m(layer3)`` (a: 1x1 conv, m: 1x1 conv, ReLU, 1x1 conv whose last
layer starts at zero, so the model starts where the bundle's is). ``--lr`` and ``--material-weight``
change the network's learning rate and the material loss's weight. A fresh optimiser; no resume.

    python docs/eval/experiments/material_spatial_head/continue_detector.py runs/v13mc6_bundle \
        runs/v13mc/cache runs/v13mc/cache_material --steps 3000 --head attend --json out.json
"""
import argparse
import glob
import json
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

log = logging.getLogger("continue_detector")


class AttendLayer3(nn.Module):
    """(B, C, T, h, w) -> (B, T, classes): per position material logits, summed with the softmax of
    an attention logit over positions; the read-out's last layer starts at zero."""

    def __init__(self, channels: int, classes: int, hidden: int = 64):
        super().__init__()
        self.attend = nn.Conv3d(channels, 1, 1)
        self.read = nn.Sequential(nn.Conv3d(channels, hidden, 1), nn.ReLU(), nn.Conv3d(hidden, classes, 1))
        nn.init.zeros_(self.read[2].weight)
        nn.init.zeros_(self.read[2].bias)

    def forward(self, x):
        w = self.attend(x).flatten(3).softmax(-1)                    # (B, 1, T, hw)
        return (self.read(x).flatten(3) * w).sum(-1).permute(0, 2, 1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("caches", nargs="+", help="clip caches the material phase trained on (clips/*.pt, onsets.json)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--head", choices=("linear", "attend"), default="attend")
    p.add_argument("--lr", type=float, default=1e-4, help="the network's learning rate (the material phase's 1e-4)")
    p.add_argument("--material-weight", type=float, default=1.0,
                   help="the material cross-entropy's weight beside the slot loss (the phase's default 1)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    p.add_argument("--save", help="write the continued detector (network, slot head, material head[, attend head]) here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    from tqdm import tqdm

    from frieren.checkpoints import load_bundle
    from frieren.eval.table import render_clips
    from frieren.models.cavp import material_one_hot
    from frieren.synth import SceneConfig
    from frieren.training.data import load_clip_cache
    from frieren.training.presence import onset_slot_labels
    from frieren.training.presence_detector import material_targets

    stack, _ = load_bundle(args.bundle)
    g, cv = stack.preset.geometry, stack.cavp
    net, slot_head, material_head = cv.presence_net, cv.presence_head, cv.presence_material_head
    m = len(SceneConfig().materials)
    torch.manual_seed(1)
    attend = AttendLayer3(net.video_encoder.layer3[-1].conv3.conv.out_channels, m + 1) if args.head == "attend" else None
    clips, labels = [], []
    for cache in args.caches:
        loaded = load_clip_cache(sorted(glob.glob(f"{cache}/clips/*.pt")))
        onsets = json.loads(Path(cache, "onsets.json").read_text())["onsets"]
        clips += loaded
        labels += [onset_slot_labels(onsets[c.key], c.num_frames, g.samples_per_frame, stack.preset.cavp.presence_slots,
                                     g.sample_rate) for c in loaded]
    groups = [{"params": net.parameters(), "lr": args.lr},
              {"params": list(slot_head.parameters()) + list(material_head.parameters()), "lr": 1e-3}]
    if attend is not None:
        groups.append({"params": attend.parameters(), "lr": 1e-3})
    opt = torch.optim.Adam(groups)

    def forward(video):
        stages = net.backbone_stages(video)
        feats = net.head(stages["pooled"])
        logits = material_head(feats)
        return feats, logits if attend is None else logits + attend(stages["layer3"])

    gen = torch.Generator().manual_seed(77)
    net.train()
    start = time.time()
    for _ in tqdm(range(args.steps), desc=f"material detector, {args.head} head", unit="step"):
        xs, ys, ms = [], [], []
        for _ in range(8):
            c = int(torch.randint(len(clips), (1,), generator=gen))
            s = int(torch.randint(clips[c].frames.shape[0] - 15, (1,), generator=gen))
            x = clips[c].frames[s:s + 16].float() / 255.0
            xs.append(x.flip(-1) if float(torch.rand((), generator=gen)) < 0.5 else x)
            ys.append(labels[c][s:s + 16])
            ms.append(material_targets(clips[c].frame_material[s:s + 16], m))
        feats, material_logits = forward(torch.stack(xs))
        slot_logits = slot_head(feats)
        loss = (F.binary_cross_entropy_with_logits(slot_logits, torch.stack(ys).to(slot_logits))
                + args.material_weight * F.cross_entropy(material_logits.flatten(0, 1), torch.stack(ms).flatten()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    minutes = (time.time() - start) / 60
    tally = {"impacts": 0, "decided": 0, "said_none": 0, "best_material": 0}
    mats = SceneConfig().materials
    with torch.no_grad():
        for clip in render_clips(list(range(900064, 900096)), 8.0, stack.preset):
            logits = torch.cat([forward(clip.frames[s:s + 40].unsqueeze(0))[1][0]
                                for s in range(0, clip.frames.shape[0], 40)])
            said = material_one_hot(logits)
            for sample, name in zip(clip.impacts, clip.materials):
                f, k = sample // g.samples_per_frame, mats.index(name)
                if f < logits.shape[0]:
                    tally["impacts"] += 1
                    tally["decided"] += int(said[f, k] == 1)
                    tally["said_none"] += int(logits[f].argmax() == m)
                    tally["best_material"] += int(logits[f, :m].argmax() == k)
    report = {"bundle": args.bundle, "head": args.head, "steps": args.steps, "lr": args.lr,
              "material_weight": args.material_weight, "minutes": round(minutes, 1),
              "impacts": tally["impacts"], **{k: v / tally["impacts"] for k, v in tally.items() if k != "impacts"}}
    log.info("%s", report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.save:
        torch.save({"net": net.state_dict(), "head": slot_head.state_dict(), "mhead": material_head.state_dict(),
                    "attend": attend.state_dict() if attend is not None else None}, args.save)


if __name__ == "__main__":
    main()
