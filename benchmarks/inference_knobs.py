"""`frieren eval` with one inference-time change, to ask what a trained model gains without retraining.

Three knobs, each off by default (then this is exactly `frieren eval`):

* ``--noise-scale TAU``: every window's initial noise is multiplied by TAU (a sampling
  "temperature"; the model was trained on TAU = 1);
* ``--views "F,DY,DX;..."``: the CAVP features of each frame are the mean (before the L2
  normalisation) of the video branch's features of several views of the frames: F = 1 mirrors
  left-right, DY/DX shift by pixels with the edge repeated, as the recipe's ``--cavp-flip`` /
  ``--cavp-shift`` augmentation does in training (test-time augmentation; costs one CAVP pass per
  view);
* ``--cfg-scale S``: the distilled bundle is run at guidance scale S instead of the scale its
  reflow pairs were made with (the bundle's ``sampling.cfg_scale``; a copy of the bundle's config
  with the new scale is written next to ``--out``, the weights are linked).

The changes are made here, by wrapping ``NoiseTape.window`` and ``CAVPVideoEncoder.extract`` for
the duration of the eval in this process only; the product's code paths are untouched. Every other argument goes to
`frieren eval` unchanged (its table prints the eval command line without the knob).

    python benchmarks/inference_knobs.py --noise-scale 1.2 -- --teacher '' --reflow '' \\
        --distilled frieren/assets/default --clips 64 --classifier-clips 80 --fd logmel \\
        --no-plot --no-vocoder-row --threads 1 --out runs/knobs/tau1.2
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

log = logging.getLogger("inference_knobs")
View = Tuple[int, int, int]


def parse_views(spec: str) -> List[View]:
    """"F,DY,DX;F,DY,DX" -> [(flip, dy, dx), ...]; raises ValueError naming the bad item."""
    views = []
    for item in spec.split(";"):
        parts = item.split(",")
        if len(parts) != 3:
            raise ValueError(f"view {item!r} is not 'F,DY,DX' (e.g. '0,0,0;1,0,0' for the frames and their mirror)")
        flip, dy, dx = (int(v) for v in parts)
        views.append((int(bool(flip)), dy, dx))
    return views


def view_of(frames: torch.Tensor, flip: int, dy: int, dx: int) -> torch.Tensor:
    """frames (..., H, W) -> the same shape: shifted by (dy, dx) px (edge repeated), then mirrored."""
    h, w = frames.shape[-2:]
    rows = (torch.arange(h) - dy).clamp(0, h - 1)
    cols = (torch.arange(w) - dx).clamp(0, w - 1)
    if flip:
        cols = cols.flip(0)
    return frames[..., rows[:, None], cols[None, :]]


@contextmanager
def replaced(owner: type, name: str, value) -> Iterator[None]:
    """``owner.name`` = value inside the block, restored after it."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def scaled_noise(tau: float):
    """Inside the block every noise-tape window is multiplied by ``tau``."""
    from frieren.noise import NoiseTape

    window = NoiseTape.window

    def scaled(self, start: int, length: int) -> torch.Tensor:
        return window(self, start, length) * tau

    return replaced(NoiseTape, "window", scaled)


def averaged_views(views: Sequence[View]):
    """Inside the block the CAVP features are the mean over ``views`` (before normalising)."""
    from frieren.models.cavp import CAVPVideoEncoder

    extract = CAVPVideoEncoder.extract

    def averaged(self, frames: torch.Tensor, chunk_frames: Optional[int] = None, normalize: bool = True) -> torch.Tensor:
        e = sum(extract(self, view_of(frames, *v), chunk_frames, normalize=False) for v in views) / len(views)
        return F.normalize(e, dim=-1) if normalize else e

    return replaced(CAVPVideoEncoder, "extract", averaged)


def rescaled_bundle(bundle: Path, scale: float, where: Path) -> Path:
    """A copy of ``bundle``'s config.json with ``sampling.cfg_scale`` = scale, weights linked."""
    where.mkdir(parents=True, exist_ok=True)
    config = json.loads((bundle / "config.json").read_text())
    config["preset"]["sampling"]["cfg_scale"] = float(scale)
    (where / "config.json").write_text(json.dumps(config, indent=1))
    link = where / "model.safetensors"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink((bundle / "model.safetensors").resolve(), link)
    return where


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 usage="%(prog)s [knobs] -- [frieren eval arguments]")
    ap.add_argument("--noise-scale", type=float, default=1.0, help="multiply the initial noise (default 1)")
    ap.add_argument("--views", default="0,0,0", help="CAVP views to average, 'F,DY,DX;...' (default: the frames)")
    ap.add_argument("--cfg-scale", type=float, default=None, help="run --distilled at this guidance scale")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, eval_args = ap.parse_args(argv[:split]), argv[split + 1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.noise_scale <= 0:
        ap.error(f"--noise-scale must be positive, got {args.noise_scale}")
    try:
        views = parse_views(args.views)
    except ValueError as error:
        ap.error(str(error))
    if args.cfg_scale is not None:
        if "--distilled" not in eval_args or "--out" not in eval_args:
            ap.error("--cfg-scale needs --distilled BUNDLE and --out DIR among the eval arguments")
        i, o = eval_args.index("--distilled") + 1, eval_args.index("--out") + 1
        bundle = rescaled_bundle(Path(eval_args[i]), args.cfg_scale, Path(eval_args[o] + "_bundle"))
        eval_args[i] = str(bundle)
    log.info("noise scale %g, views %s, cfg scale %s", args.noise_scale, views, args.cfg_scale)
    from frieren.eval_cli import main as eval_main

    with ExitStack() as knobs:
        if args.noise_scale != 1.0:
            knobs.enter_context(scaled_noise(args.noise_scale))
        if views != [(0, 0, 0)]:
            knobs.enter_context(averaged_views(views))
        return eval_main(eval_args)


if __name__ == "__main__":
    sys.exit(main())
