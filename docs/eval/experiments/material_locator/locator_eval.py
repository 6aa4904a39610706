"""`frieren eval` with the material channels decided by the material locator (experiment code).

Patches ``CAVPVideoEncoder.extract_condition`` (the whole-clip path of ``frieren eval``) in this
process only: the bundle's condition as it is, its last M channels (the material decision) replaced
by the locator's (``locator.py``): per frame the best material where its best cell's probability
exceeds ``--threshold``, else none (``--rule locator``). ``--rule either``: name a material where the
bundle's material head says an impact starts or a presence slot fires, the most likely material of
the head and the locator together (the sum of their log-probabilities). ``--rule joint``: where the
locator's best cell exceeds ``--threshold`` or a slot fires or the head says an impact starts, that
most likely material of the two together. ``--rule gated``: the locator's material where its best
cell exceeds ``--threshold`` and one of the bundle's presence slots fires in that frame, or within
``--gate-reach`` frames of it (no material on frames the generator's own presence channel keeps
quiet). ``--nms``: the locator's decision only where its best
cell's probability is the largest of the frame and its two neighbours (one frame per impact).

    python docs/eval/experiments/material_locator/locator_eval.py runs/loc/loc_a.pt [--threshold 0.5] \
        [--rule locator|either|joint|gated] -- --teacher '' --reflow '' --distilled runs/v13mc6_bundle --clips 64 \
        --classifier-clips 80 --fd logmel --no-plot --no-vocoder-row --threads 1 --out runs/loc_eval
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from frieren.models.cavp import CAVPVideoEncoder  # noqa: E402
from locator import clip_scores, load_locator  # noqa: E402


def main(argv):
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("locator")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--nms", action="store_true")
    p.add_argument("--gate-reach", type=int, default=0, metavar="K",
                   help="--rule gated: a slot firing up to K frames before or after also opens the frame")
    p.add_argument("--rule", choices=("locator", "either", "joint", "gated"), default="locator")
    args = p.parse_args(argv[:split])
    if args.gate_reach < 0 or (args.gate_reach and args.rule != "gated"):
        p.error("--gate-reach K takes K >= 0 frames and acts only with --rule gated")
    model = load_locator(args.locator)
    own = CAVPVideoEncoder.extract_condition

    def located(self, frames, chunk_frames=None):
        cond = own(self, frames, chunk_frames)
        m = self.cfg.material_channel
        if not m:
            raise SystemExit("this bundle has no material channels (train it with --material-channel-steps)")
        scores = clip_scores(model, frames.float().cpu()).to(cond)              # (T, M)
        peak = scores.amax(-1)
        if args.nms:                                    # keep a frame only if no neighbour scores higher
            padded = torch.cat([peak[:1] * 0, peak, peak[:1] * 0])
            keep = (peak >= padded[:-2]) & (peak >= padded[2:])
            scores = scores * keep[:, None].to(scores)
        if args.rule in ("either", "joint"):
            head = self.presence_material_head(self.presence_net.extract(frames, chunk_frames)).to(cond)
            slots = cond[:, -m - self.cfg.presence_slots:-m]
            on = (head.argmax(-1) < m) | (slots.amax(-1) > 0.5)
            if args.rule == "joint":
                on = on | (scores.amax(-1) > args.threshold)
            best = (head[:, :m].log_softmax(-1) + scores.clamp_min(1e-6).log()).argmax(-1)
        else:
            best = scores.argmax(-1)
            on = scores.amax(-1) > args.threshold
            if args.rule == "gated":
                fires = (cond[:, -m - self.cfg.presence_slots:-m].amax(-1) > 0.5).float()
                k = args.gate_reach
                if k > 0:                                   # open the K frames either side too
                    fires = F.max_pool1d(fires[None, None], 2 * k + 1, stride=1, padding=k)[0, 0]
                on = on & (fires > 0)
        said = F.one_hot(best, m).to(cond) * on[:, None].to(cond)
        return torch.cat([cond[:, :-m], said], dim=-1)

    CAVPVideoEncoder.extract_condition = located
    from frieren.cli import main as frieren_main
    return frieren_main(["eval"] + argv[split + 1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
