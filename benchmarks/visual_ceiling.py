"""How far can *any* model see into the synthetic world at a given visual rate? Oracle bounds.

Issue 3 asks the distilled model for material accuracy >= 0.8 and onset F1 (+-125 ms) >= 0.8.
This script measures, on held-out clips and with no model at all, what the frames the model is
given could support at best, so that the gap between a trained model and its targets can be split
into "the condition lacks it" and "the model fails to use it".

* **Material, oracle localisation.** For every unambiguous impact (the material classifier's
  samples, :func:`frieren.eval.materials.impact_samples`) it takes the true impact position from
  the world's event list and reads the mean colour of three square patches (radius 1, 3 and
  6 pixels) around it in the preset's input frames (``image_size``, e.g. 64 x 64). A softmax
  regression (the same read-out as ``benchmarks/cavp_probe.py``) is fitted on the impacts of the
  first ``--train-clips`` clips and scored on the rest. A model that does not know where the
  impact is can only do worse than this read-out of the same frame; the frames are those a
  model at ``rate`` frames per second sees on the audio clock (DESIGN §3.1): the snapshot that
  opens the frame period holding the impact ("before"), the next one ("after", 0 to one period
  later) or both. "At the impact" is the camera frame at the impact instant.
* **Material, scene priors.** Guessing the clip's most frequent impact material, and guessing
  uniformly among the materials that strike in the clip: what knowing *which* materials are in a
  scene, but not which of them strikes, gives.
* **Sync, frame-resolution oracle.** A detector that knows exactly how many audible onsets
  (impacts and continuous starts, merged within 50 ms as in ``frieren eval``) fall into each frame
  period and places them evenly inside it; onset F1 at +-45 / +-125 ms. This bounds what the
  visual rate alone costs in timing.

    python benchmarks/visual_ceiling.py [--clips 96] [--train-clips 64] [--rates 1 2 4] [--json out.json]

``--rates`` are multiples of the preset's visual rate (tiny: 7.8125 fps, 128 ms frames).

Measured with it (defaults: 96 clips, 280 test impacts, majority class 0.33; table and reading in
``docs/eval/experiments/visual_ceiling/``): localised material read-out 0.39 / 0.60 / 0.63 at
7.8 fps (before / after / both), 0.77 with both at 31.25 fps, 0.68 at the impact instant; the
clip's most frequent material 0.51. Frame-resolution sync at 7.8 fps: F1 +-45 0.81, +-125 1.00.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cavp_probe import _fit_linear  # noqa: E402  (same read-out as the CAVP probes)

log = logging.getLogger("visual_ceiling")
PATCH_RADII = (1, 3, 6)


def patch_colours(frame: np.ndarray, x: int, y: int) -> np.ndarray:
    """frame (3, S, S) float -> mean RGB of squares of each PATCH_RADII around (x, y): (3 * len(PATCH_RADII),)."""
    return np.concatenate([frame[:, max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].reshape(3, -1).mean(1)
                           for r in PATCH_RADII])


class HeldOut:
    """Held-out clips with their unambiguous impacts (event objects) and merged onsets."""

    def __init__(self, seeds: Sequence[int], seconds: float, preset):
        from frieren.eval.materials import impact_samples
        from frieren.eval.sync import merge_close_events
        from frieren.eval.table import ONSET_KINDS
        from frieren.synth import SceneConfig, render_clip

        self.preset = preset
        self.scene = SceneConfig(duration_s=seconds, sample_rate=preset.geometry.sample_rate)
        self.clips, self.impacts, self.onsets = [], [], []
        sr = self.scene.sample_rate
        for seed in tqdm(seeds, desc="render held-out clips", unit="clip"):
            clip = render_clip(seed, self.scene)
            keep = {s for s, _ in impact_samples(clip.events, self.scene.materials, sample_rate=sr)}
            self.clips.append(clip)
            self.impacts.append([e for e in clip.events if e.kind == "impact" and e.sample in keep])
            self.onsets.append(merge_close_events([e.sample for e in clip.events if e.kind in ONSET_KINDS], sr))
        self._frame_cache: Dict[tuple, np.ndarray] = {}

    def frame(self, ci: int, t: float) -> np.ndarray:
        """The camera frame shown at time t (latest frame not after t), preprocessed: (3, S, S) float."""
        from frieren.training.data import _preprocess_uint8

        clip = self.clips[ci]
        i = int(np.clip(math.floor(t * clip.fps + 1e-6), 0, len(clip.frames) - 1))
        if (ci, i) not in self._frame_cache:
            self._frame_cache[(ci, i)] = _preprocess_uint8(clip.frames[i], self.preset.cavp.image_size
                                                           ).astype(np.float32) / 255.0
        return self._frame_cache[(ci, i)]


def material_oracle(data: HeldOut, times: Callable[[float], List[float]], train_clips: int) -> Dict[str, float]:
    """Linear read-out of patch colours at the true impact position in the frames at ``times(t)``."""
    from frieren.synth.materials import MATERIALS

    materials, size = sorted(MATERIALS), data.preset.cavp.image_size
    x, y, clip_of = [], [], []
    for ci, impacts in enumerate(data.impacts):
        for e in impacts:
            px, py = int(e.position[0] * (size - 1)), int(e.position[1] * (size - 1))
            x.append(np.concatenate([patch_colours(data.frame(ci, t), px, py) for t in times(e.time_s)]))
            y.append(materials.index(e.material))
            clip_of.append(ci)
    x, y, train = np.stack(x), np.array(y), np.array(clip_of) < train_clips
    clf = _fit_linear(x[train], y[train], len(materials))
    return {"material_acc": float((clf(x[~train]).argmax(1).numpy() == y[~train]).mean()),
            "majority": float(np.bincount(y[~train]).max() / (~train).sum()), "test_impacts": int((~train).sum())}


def scene_priors(data: HeldOut, train_clips: int) -> Dict[str, float]:
    """Accuracy of knowing the clip's impact materials but not which one strikes (test clips)."""
    top = uniform = n = 0
    for ci in range(train_clips, len(data.clips)):
        struck = [e.material for e in data.clips[ci].events if e.kind == "impact"]
        if not struck:
            continue
        counts, present = collections.Counter(struck), set(struck)
        for e in data.impacts[ci]:
            n += 1
            top += e.material == counts.most_common(1)[0][0]
            uniform += (e.material in present) / len(present)
    return {"clip_majority_material": top / max(1, n), "uniform_among_present": uniform / max(1, n),
            "test_impacts": n}


def sync_oracle(data: HeldOut, period_s: float, tolerances_ms=(45.0, 125.0)) -> Dict[str, float]:
    """Onset F1 of evenly placing the true number of onsets inside each frame period (all clips)."""
    from frieren.eval.sync import match

    sr = data.scene.sample_rate
    period = period_s * sr
    totals = {tol: [0, 0, 0] for tol in tolerances_ms}          # matched, detected, events
    for onsets in data.onsets:
        per_frame = collections.Counter(int(s // period) for s in onsets)
        guesses = sorted(int((f + (j + 0.5) / k) * period) for f, k in per_frame.items() for j in range(k))
        for tol in tolerances_ms:
            s = match(guesses, onsets, sr, tol)
            totals[tol][0] += s.matched
            totals[tol][1] += s.detected
            totals[tol][2] += s.events
    out = {}
    for tol, (m, d, e) in totals.items():
        p, r = m / max(1, d), m / max(1, e)
        out[f"f1_{int(tol)}ms"] = 2 * p * r / (p + r) if p + r else 0.0
    return out


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--clips", type=int, default=96, help="held-out clips (default 96)")
    ap.add_argument("--train-clips", type=int, default=64, help="of which the material read-out trains on")
    ap.add_argument("--seed0", type=int, default=900000, help="first held-out seed (training used 1000..)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rates", type=int, nargs="+", default=[1, 2, 4],
                    help="visual rates to bound, as multiples of the preset's (default 1 2 4)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 0 < args.train_clips < args.clips:
        ap.error("--train-clips must be between 1 and --clips - 1")
    if any(r < 1 for r in args.rates):
        ap.error("--rates must be positive integers")
    import torch
    torch.set_num_threads(1)
    from frieren.config import get_preset

    preset = get_preset(args.preset)
    data = HeldOut(list(range(args.seed0, args.seed0 + args.clips)), args.seconds, preset)
    base = preset.geometry.frame_period_s
    rows: List[Dict[str, object]] = []

    def report(row: Dict[str, object]) -> None:
        rows.append(row)
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()

    report({"what": "material: scene priors", **scene_priors(data, args.train_clips)})
    report({"what": "material: camera frame at the impact instant",
            **material_oracle(data, lambda t: [t], args.train_clips)})
    for rate in args.rates:
        p = base / rate
        fps = round(1.0 / p, 2)
        for name, times in (("before", lambda t, p=p: [math.floor(t / p + 1e-9) * p]),
                            ("after", lambda t, p=p: [(math.floor(t / p + 1e-9) + 1) * p]),
                            ("before+after", lambda t, p=p: [math.floor(t / p + 1e-9) * p,
                                                             (math.floor(t / p + 1e-9) + 1) * p])):
            report({"what": f"material: snapshot {name}", "fps": fps,
                    **material_oracle(data, times, args.train_clips)})
        report({"what": "sync: onsets placed evenly in their frame period", "fps": fps, **sync_oracle(data, p)})
    if args.json:
        Path(args.json).write_text(json.dumps({"preset": args.preset, "clips": args.clips,
                                               "train_clips": args.train_clips, "seed0": args.seed0,
                                               "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
