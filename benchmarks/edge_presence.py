"""The presence detector at a window's newest frame, where a stream with no look-ahead reads it.

Offline, each frame's presence logits come from the whole clip (40-frame chunks): the detector's
temporal convolutions see the frames after it, where the striking object has already struck. A
stream with ``--lookahead-frames 0`` emits the audio of the *newest* frame of its window, whose
logits the detector computes with zero temporal padding after it: it must foresee the impact.
This script reads a bundle's detector both ways on synthetic validation clips and scores each
read as an onset detector (F1 ±125 ms, ``frieren eval``'s merged events and matching) across
thresholds (at the bundle's own: with ``--presence-edge-steps`` the edge detector's, the newest
frame's for look-ahead 0, else the one threshold); ``--lookahead A`` reads the frame ``A`` before the newest instead.

    python benchmarks/edge_presence.py frieren/assets/default --clips 48 --json out.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("edge_presence")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="a bundle with the presence channel (default model: frieren/assets/default)")
    p.add_argument("--clips", type=int, default=48, help="validation clips (seeds 800000.., as the threshold's)")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--lookahead", type=int, nargs="+", default=[0, 1], help="frames of look-ahead to score")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the scores here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    from frieren.checkpoints import load_bundle
    from frieren.eval.table import render_clips
    from frieren.training.presence import VALIDATION_SEED0, choose_threshold, window_edge_logits

    stack, _ = load_bundle(args.bundle)
    cavp, preset = stack.cavp, stack.preset
    if not preset.cavp.presence_channel:
        raise SystemExit(f"{args.bundle} has no presence channel: nothing to score")
    g = preset.geometry
    clips = render_clips(list(range(VALIDATION_SEED0, VALIDATION_SEED0 + args.clips)), args.seconds, preset)
    onsets = [c.onsets for c in clips]
    shipped = float(cavp.presence_threshold)
    edge = float(cavp.presence_edge_threshold) if preset.cavp.presence_edge else None
    report: Dict[str, object] = {"bundle": args.bundle, "clips": args.clips, "threshold": shipped,
                                 "edge_threshold": edge, "window": g.frames_per_window}
    reads: Dict[str, List[np.ndarray]] = {}
    with torch.no_grad():
        reads["whole clip"] = [cavp.extract_presence_logits(c.frames).numpy() for c in clips]
        for a in args.lookahead:
            reads[f"window, look-ahead {a}"] = [window_edge_logits(cavp, c.frames, g.frames_per_window, a).numpy()
                                               for c in clips]
    for name, logits in reads.items():
        own = shipped                         # a whole clip, or a bundle without the edge detector
        if edge is not None and name.startswith("window"):   # the edge detector's own thresholds
            own = edge if name == "window, look-ahead 0" else float(cavp.presence_edge_window_threshold)
        at, s_at = choose_threshold(logits, onsets, g.samples_per_frame, g.sample_rate, grid=[own])
        best, s_best = choose_threshold(logits, onsets, g.samples_per_frame, g.sample_rate)
        report[name] = {"threshold": own, "at_threshold": s_at, "best_threshold": best, "at_best": s_best}
        log.info("%-22s at %.2f: F1 %.3f (P %.3f R %.3f) | best %.2f: F1 %.3f (P %.3f R %.3f)", name, own,
                 s_at["f1"], s_at["precision"], s_at["recall"], best, s_best["f1"], s_best["precision"],
                 s_best["recall"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
