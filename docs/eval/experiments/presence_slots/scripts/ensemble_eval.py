"""`frieren eval` with the presence slots decided by two detectors together (experiment code).

Each detector's logits minus its own threshold, averaged, then compared with the evaluated bundle's
threshold: the slots fire where the two detectors' mean margin is positive. Patches
``CAVPVideoEncoder.extract_presence_logits`` in this process only (the whole-clip path that
``frieren eval`` uses); the other bundle lends only its detector.

    python docs/eval/experiments/presence_slots/scripts/ensemble_eval.py runs/v12s1d6k_bundle \
        --teacher '' --reflow '' --distilled frieren/assets/default --clips 64 --classifier-clips 80 \
        --fd logmel --no-plot --no-vocoder-row --threads 1 --out runs/ens_v12
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[5]))

from frieren.checkpoints import load_bundle  # noqa: E402
from frieren.models.cavp import CAVPVideoEncoder  # noqa: E402


def main(argv):
    other, rest = argv[0], argv[1:]
    lender = load_bundle(other)[0].cavp
    if not lender.cfg.presence_detector:
        raise SystemExit(f"{other} has no presence detector (trained without --presence-detector-steps)")
    own = CAVPVideoEncoder.extract_presence_logits

    def together(self, frames, chunk_frames=None, feats=None, edge=False):
        mine = own(self, frames, chunk_frames, feats, edge)
        if edge or not self.cfg.presence_detector:
            return mine
        theirs = lender.presence_logits(lender.presence_net.extract(frames, chunk_frames))
        margin = ((mine - self.presence_threshold) + (theirs - lender.presence_threshold)) / 2
        return margin + self.presence_threshold

    CAVPVideoEncoder.extract_presence_logits = together
    from frieren.cli import main as frieren_main
    return frieren_main(["eval"] + rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
