"""`frieren train` whose flow stages learn the material channels from the material locator's decisions
(experiment code, not the product's).

With ``--presence-channel-train truth`` the flow stages learn every presence and material channel
from the world's truth, which marks an impact's material in its own frame only. At inference the
material locator (``../material_locator/locator.py``) also names it in the frames around the impact
(f - 1 .. f + 2), and the generator, never having seen that, loses onsets (F1 +-125 0.788 -> 0.764).
This wrapper patches ``frieren.training.run.presence_truth`` in its own process: the slots stay the
truth, the last M channels (the material decision) become the locator's on each training clip's
frames (per frame the best material where its best cell's probability exceeds ``--threshold``, else
none: ``locator_eval.py --rule locator``). ``--material truth-near``: the same frames, each naming
the world's material of the impact the locator fires for (the nearest impact starting in frame
t, t - 1, t + 1 or t - 2, as the locator fires at f - 1 .. f + 2 around an impact in frame f), the
locator's own material only where no impact is that near (its false alarms): the locator's timing
with the truth's materials. Everything after (reflow pairs, reflow, distillation) reads the same
conditions.

    python docs/eval/experiments/locator_trained_flow/train_on_locator.py runs/loc/loc_g.pt -- \
        default --run-dir ... (the arguments of `python -m frieren.train_cli`)
"""
import argparse
import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "material_locator"))

import frieren.training.run as run  # noqa: E402
from locator import clip_scores, load_locator  # noqa: E402

log = logging.getLogger("locator_trained_flow")


def locator_channels(model, frames: torch.Tensor, classes: int, threshold: float) -> torch.Tensor:
    """A clip's frames uint8 (N, 3K, S, S) -> the locator's material decision float32 (N, classes):
    one-hot of the best material where its score exceeds ``threshold``, all zero elsewhere."""
    scores = clip_scores(model, frames)
    if scores.shape[1] != classes:
        raise SystemExit(f"the locator names {scores.shape[1]} materials and the run's condition has {classes} "
                         f"material channels: train the locator on this world's materials")
    on = scores.amax(-1) > threshold
    return F.one_hot(scores.argmax(-1), classes).float() * on[:, None].float()


def truth_near(fired: torch.Tensor, told: torch.Tensor) -> torch.Tensor:
    """The locator's decision fired (N, M) with each named frame's material replaced by the world's
    (told (N, M), one-hot at impact frames) of the nearest impact in frame t, t - 1, t + 1 or t - 2,
    kept where none is that near."""
    out = fired.clone()
    n = len(told)
    for t in torch.nonzero(fired.amax(-1) > 0).flatten().tolist():
        for f in (t, t - 1, t + 1, t - 2):
            if 0 <= f < n and told[f].amax() > 0:
                out[t] = told[f]
                break
    return out


def main(argv) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("locator")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--material", choices=("locator", "truth-near"), default="locator",
                   help="the named frames' material: the locator's, or the world's of the impact it fires for")
    args = p.parse_args(argv[:split])
    model = load_locator(args.locator)
    truth = run.presence_truth

    def located_truth(feats, clips, slot_labels=None, materials: int = 0):
        out = truth(feats, clips, slot_labels, materials)
        if not materials:
            return out
        said = agree = impacts = 0
        located = []
        for f, c in tqdm(list(zip(out, clips)), desc="locator decisions", unit="clip"):
            ch = locator_channels(model, c.frames, materials, args.threshold)[:len(f)].to(f.dtype)
            told = f[:, -materials:]
            if args.material == "truth-near":
                ch = truth_near(ch, told)
            said += int(ch.amax(-1).gt(0).sum())
            impacts += int(told.amax(-1).gt(0).sum())
            agree += int(((ch.argmax(-1) == told.argmax(-1)) & ch.amax(-1).gt(0) & told.amax(-1).gt(0)).sum())
            located.append(torch.cat([f[:, :-materials], ch], 1))
        log.info("locator decisions on %d training clips: %d frames named (the truth: %d impact frames, "
                 "%d of them named rightly)", len(clips), said, impacts, agree)
        return located

    run.presence_truth = located_truth
    from frieren.train_cli import main as train_main
    return train_main(argv[split + 1:])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
