"""Linear probes on a trained CAVP video branch: what do its per-frame features know?

On held-out synthetic clips (seeds never used in training) it computes the video features
of every frame (audio-clock sampling, the preset's image size) and fits two linear probes
on the first ``--train-clips`` clips, scored on the rest:

* material: softmax regression from the feature of the frame holding an isolated impact
  (the material classifier's samples, :func:`frieren.eval.materials.impact_samples`) to
  the struck material; reported with the majority-class rate of the test impacts. A second
  read-out adds the next frame's feature (that frame is shot 0 to one period after the
  impact, when the struck object is still near where it hit; ``benchmarks/visual_ceiling.py``).
* onset: logistic regression "this frame holds an onset event" (impact or continuous
  start); reported as ROC AUC.

* event head (checkpoints trained with ``--cavp-event-weight``): the onset F1 at +-45 and
  +-125 ms of the CAVP's own per-slot onset prediction, peak-picked, with no flow model:
  how well the video features alone place audible onsets (:func:`event_head_sync`).
* presence head (checkpoints trained with ``--cavp-presence-weight``): the same for its
  per-frame logit "an impact starts in this frame", every frame above the threshold an onset at
  the frame's centre.

``--raw-baseline`` adds the same probes on raw pixels (each frame and its difference to the
previous one, average-pooled to 8x8): what a linear read-out of the input itself reaches.

    python benchmarks/cavp_probe.py runs/default/cavp/final.pt [more checkpoints] [--raw-baseline] [--json out.json]
    python benchmarks/cavp_probe.py frieren/assets/default      # a bundle: its video branch (no event head)

Measured with it (48 clips, 32 to train): material 0.34 for the CAVP with the onset and
loudness head, 0.47 with onset slots and onset spectrum (majority class 0.40); onset AUC 0.92.
Raw pixels: material 0.24, onset AUC 0.60. Which object strikes is not linearly readable from
the frames of these multi-object scenes; the learned features do better, but not by much.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pickle
import sys
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

log = logging.getLogger("cavp_probe")


def _fit_linear(x: np.ndarray, y: np.ndarray, classes: int, steps: int = 300, seed: int = 0
                ) -> Callable[[np.ndarray], torch.Tensor]:
    """Softmax regression on standardised x (N, D) -> labels y (N,); returns x -> logits."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    torch.manual_seed(seed)
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.int64)
    lin = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.Adam(lin.parameters(), lr=0.03, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(xt), yt).backward()
        opt.step()
    return lambda z: lin(torch.tensor((z - mu) / sd, dtype=torch.float32)).detach()


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    pos, neg = score[label], score[~label]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def load_stage_state(checkpoint: str) -> Dict[str, torch.Tensor]:
    """The state dict of a CAVP stage checkpoint (video branch, audio branch, training heads),
    or, for a model bundle directory (``frieren/assets/default``), its video branch alone."""
    from pathlib import Path

    bundle = Path(checkpoint)
    if bundle.is_dir():
        from frieren.checkpoints import CheckpointError, load_bundle

        try:
            stack, _ = load_bundle(bundle)
        except CheckpointError as error:
            raise SystemExit(f"cannot read the bundle's weights in {bundle}: {error} "
                             "(expected a model bundle directory, e.g. frieren/assets/default)")
        # A bundle with the presence channel keeps the stage's presence head (and, with a detector, the
        # detector network) in its video branch: they go back under their own keys (so the presence
        # detector reads the head), the thresholds and a stream's edge detector are dropped.
        return {(k if k.startswith(("presence_head.", "presence_net.")) else "video." + k): v
                for k, v in stack.cavp.state_dict().items()
                if k != "presence_threshold" and not k.startswith("presence_edge_")}
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if "state" in saved:       # the stage's final.pt
            return saved["state"]
        if saved.get("ema") is None:  # a resumable ckpt.pt of a stage without EMA (the CAVP's), mid-run
            return saved["model"]
        raise KeyError("state (this resume checkpoint keeps EMA weights; probe the stage's final.pt)")
    except (OSError, KeyError, RuntimeError, EOFError, ValueError, AttributeError, pickle.UnpicklingError) as error:
        raise SystemExit(f"cannot read CAVP stage checkpoint {checkpoint}: {error} "
                         "(expected a 'frieren train cavp' final.pt or ckpt.pt, or a model bundle directory)")


def cavp_encoder(checkpoint: str, preset, state: Optional[Dict[str, torch.Tensor]] = None):
    """The video branch of a CAVP stage checkpoint (``state``: its already loaded state dict), in eval mode."""
    from frieren.models.cavp import CAVPVideoEncoder, with_depth_of

    state = load_stage_state(checkpoint) if state is None else state
    video = {k[len("video."):]: v for k, v in state.items() if k.startswith("video.")}
    # A `--cavp-depth` run's own depth; the stage's video branch never holds the presence head (its
    # features are what is probed), even where the preset comes from a bundle with the presence channel.
    enc = CAVPVideoEncoder(dataclasses.replace(with_depth_of(preset.cavp, video), presence_channel=False))
    try:
        enc.load_state_dict(video)
    except RuntimeError as error:
        lines = str(error).strip().splitlines()  # torch: a header line, then one line per tensor
        first = lines[min(1, len(lines) - 1)].strip()
        raise SystemExit(f"CAVP checkpoint {checkpoint} does not fit the preset's CAVP {preset.cavp} "
                         f"({first}); probe it with the preset it was trained with (--preset)")
    return enc.eval()


def snapshots_of(checkpoint: str) -> int:
    """RGB snapshots per visual frame the checkpoint's CAVP stem takes (``--subframes`` of its
    training): its first conv's input channels / 3."""
    state = load_stage_state(checkpoint)
    weight = state.get("video.video_encoder.conv1.conv.weight")
    return 1 if weight is None else int(weight.shape[1]) // 3


def cavp_features(checkpoint: str, preset) -> Callable[[torch.Tensor], np.ndarray]:
    """The video branch of a CAVP stage checkpoint: frames (N, 3K, S, S) -> features (N, D)."""
    enc = cavp_encoder(checkpoint, preset)

    @torch.no_grad()
    def features(frames: torch.Tensor) -> np.ndarray:
        return enc(frames[None])[0].numpy()
    return features


def _peaks(series: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the local maxima of a 1-D series that exceed ``threshold``."""
    left = np.concatenate([[-np.inf], series[:-1]])
    right = np.concatenate([series[1:], [-np.inf]])
    return np.flatnonzero((series > threshold) & (series >= left) & (series > right))


HEADS = ("event", "presence")


def event_head_series(checkpoint: str, preset, clips, slots: int, head: str = "event") -> Optional[List[np.ndarray]]:
    """Per clip, the CAVP event head's onset strength of every 1/slots of a visual frame,
    (N * slots,) in its standardised target units; None when the checkpoint has no event head
    (trained without ``--cavp-event-weight``). A head trained with ``--cavp-event-offset O``
    reads period t from frame t + O: its series is moved O frames earlier, and the last O
    frames' periods, which no frame of the clip covers, get the series' minimum.
    ``head="presence"``: the presence head's logit per frame instead, (N,) (``--cavp-presence-weight``),
    or (N, S) for a bundle's ``--presence-slots S`` head (``slots`` is then ignored; read from the
    bundle's detector network with ``--presence-detector-steps``), None without one."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
    state = load_stage_state(checkpoint)
    if f"{head}_head.weight" not in state:
        return None
    if head == "presence":
        weight, bias = state["presence_head.weight"], state["presence_head.bias"]
        # a bundle's --presence-detector-steps head reads its detector network, not the CAVP's features
        net = {f"video.{k[len('presence_net.'):]}": v for k, v in state.items() if k.startswith("presence_net.")}
        enc = cavp_encoder(checkpoint, preset, net or state)
        with torch.no_grad():
            series = [(enc(c.frames[None], normalize=True)[0] @ weight.T + bias).numpy() for c in clips]
        return [x[:, 0] if x.shape[1] == 1 else x for x in series]
    else:
        weight, bias = state["event_head.weight"][:slots], state["event_head.bias"][:slots]
        offset = int(state["event_offset_frames"]) if "event_offset_frames" in state else 0
    enc = cavp_encoder(checkpoint, preset, state)
    with torch.no_grad():
        series = [(enc(c.frames[None], normalize=True)[0] @ weight.T + bias).reshape(-1).numpy() for c in clips]
    return [shift_series(x, offset * slots) for x in series]


def shift_series(x: np.ndarray, n: int) -> np.ndarray:
    """x (L,) moved n values earlier, the n values at the end filled with x's minimum."""
    if n <= 0:
        return x
    return np.concatenate([x[n:], np.full(min(n, len(x)), x.min(), dtype=x.dtype)])


def event_head_onsets(checkpoint: str, preset, clips, slots: int, tune_clips: int, head: str = "event"):
    """The CAVP event head read as an onset detector, without any flow model: local maxima of
    its series above a threshold become onsets at their slot's centre; the threshold maximises
    F1 +-125 ms on the first ``tune_clips`` clips, against the same merged events and matching
    as ``frieren eval``. -> (threshold, detected sample indices per clip), or None without a head.
    ``head="presence"`` reads the presence head's logits: every frame (or slot of a frame) above
    the threshold is an onset at its centre (no peak picking; slots merged within 50 ms)."""
    from frieren.eval.sync import match, merge_close_events
    from frieren.training.presence import slot_onsets

    series = event_head_series(checkpoint, preset, clips, slots, head)
    if series is None:
        return None
    sr = preset.geometry.sample_rate
    slot_len = preset.geometry.samples_per_frame // slots
    events = [merge_close_events(c.onsets, sr) for c in clips]

    def detected(threshold: float) -> List[np.ndarray]:
        # The presence head says "an impact starts in this frame" of every such frame, and
        # neighbouring frames often both hold one: each frame above the threshold is an onset.
        # (the rule the training's --presence-channel threshold is chosen with)
        if head == "presence":
            return [slot_onsets(x, threshold, preset.geometry.samples_per_frame, sr) for x in series]
        return [_peaks(x, threshold) * slot_len + slot_len // 2 for x in series]

    def f1(threshold: float) -> float:
        det = detected(threshold)
        scores = [match(det[i], events[i], sr, 125.0) for i in range(tune_clips)]
        m, d, e = (sum(getattr(x, k) for x in scores) for k in ("matched", "detected", "events"))
        return 2 * m / (d + e) if d + e else 0.0

    grid = np.linspace(-4.0, 4.0, 41) if head == "presence" else np.linspace(-1.0, 3.0, 41)   # logits / std units
    threshold = max(grid, key=f1)
    return float(threshold), detected(threshold)


def event_head_sync(checkpoint: str, preset, clips, slots: int, tune_clips: int,
                    head: str = "event") -> Optional[Dict[str, float]]:
    """Onset sync of the CAVP's own event (or presence) head (:func:`event_head_onsets`), scored on
    the clips after the first ``tune_clips``: how well the video features alone place audible
    onsets. Keys ``<head>_head_...``; None when the checkpoint has no such head."""
    from frieren.eval.sync import TOLERANCES_MS, match, merge_close_events

    found = event_head_onsets(checkpoint, preset, clips, slots, tune_clips, head)
    if found is None:
        return None
    threshold, detected = found
    sr = preset.geometry.sample_rate
    out = {f"{head}_head_threshold": threshold}
    for tol in TOLERANCES_MS:
        m = d = e = 0
        for i in range(tune_clips, len(clips)):
            s = match(detected[i], merge_close_events(clips[i].onsets, sr), sr, tol)
            m, d, e = m + s.matched, d + s.detected, e + s.events
        p, r = m / max(d, 1), m / max(e, 1)
        for k, v in {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}.items():
            out[f"{head}_head_{k}_{int(tol)}ms"] = v
    return out


def raw_pixel_features(frames: torch.Tensor, size: int = 8) -> np.ndarray:
    """Baseline without learning: each frame and its difference to the previous frame,
    average-pooled to size x size x 3: (N, 3, S, S) -> (N, 6 * size * size)."""
    small = torch.nn.functional.adaptive_avg_pool2d(frames.float(), size)
    diff = torch.cat([torch.zeros_like(small[:1]), small[1:] - small[:-1]])
    return torch.cat([small, diff], 1).flatten(1).numpy()


def probe(name: str, features: Callable[[torch.Tensor], np.ndarray], clips, preset,
          train_clips: int) -> Dict[str, float]:
    from frieren.synth.materials import MATERIALS

    materials = sorted(MATERIALS)
    spf = preset.geometry.samples_per_frame
    feats, onset, clip_of, imp = [], [], [], []
    with torch.no_grad():
        for ci, c in enumerate(clips):
            f = features(c.frames)                                   # (N, D)
            n = f.shape[0]
            on = np.zeros(n, bool)
            for s in c.onsets:
                if s // spf < n:
                    on[s // spf] = True
            feats.append(f)
            onset.append(on)
            clip_of.append(np.full(n, ci))
            imp += [(ci, f[s // spf], materials.index(m), f[min(s // spf + 1, n - 1)])
                    for s, m in zip(c.impacts, c.materials) if s // spf < n]
    x, on, cl = np.concatenate(feats), np.concatenate(onset), np.concatenate(clip_of)
    train = np.array([ci < train_clips for ci, _, _, _ in imp])
    fx = np.stack([v for _, v, _, _ in imp])
    fy = np.array([m for _, _, m, _ in imp])
    clf = _fit_linear(fx[train], fy[train], len(materials))
    material_acc = float((clf(fx[~train]).argmax(1).numpy() == fy[~train]).mean())
    # the frame after the impact's frame shows the scene 0..1 period after the impact
    fxn = np.concatenate([fx, np.stack([v for _, _, _, v in imp])], 1)
    clf_next = _fit_linear(fxn[train], fy[train], len(materials))
    material_acc_next = float((clf_next(fxn[~train]).argmax(1).numpy() == fy[~train]).mean())
    majority = float(np.bincount(fy[~train]).max() / max(1, (~train).sum()))
    tr = cl < train_clips
    det = _fit_linear(x[tr], on[tr].astype(np.int64), 2)
    auc = _auc(torch.softmax(det(x[~tr]), 1)[:, 1].numpy(), on[~tr])
    return {"features": name, "material_acc": material_acc, "material_acc_with_next_frame": material_acc_next,
            "material_majority": majority,
            "test_impacts": int((~train).sum()), "onset_auc": auc}


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="*", help="CAVP stage checkpoints (runs/.../cavp/final.pt) or "
                                                  "model bundle directories (frieren/assets/default)")
    ap.add_argument("--raw-baseline", action="store_true",
                    help="also probe raw pixels (8x8 frame + frame difference): what a linear read-out "
                         "of the input itself reaches")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--clips", type=int, default=48, help="held-out clips (default 48)")
    ap.add_argument("--train-clips", type=int, default=32, help="of which the probes train on (default 32)")
    ap.add_argument("--seed0", type=int, default=900000, help="first held-out seed (the recipe trains on seeds from 1000 up)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--event-slots", type=int, default=4,
                    help="onset slots per frame of the checkpoints' event heads (--cavp-event-slots "
                         "of their training; the shipped recipe's 4)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.checkpoints and not args.raw_baseline:
        ap.error("give CAVP checkpoints and/or --raw-baseline")
    if not 0 < args.train_clips < args.clips:
        ap.error("--train-clips must be between 1 and --clips - 1")
    torch.set_num_threads(1)
    from frieren.config import get_preset, with_subframes
    from frieren.eval.table import render_clips

    base = get_preset(args.preset)
    seeds = list(range(args.seed0, args.seed0 + args.clips))
    rendered = {}

    def clips_for(subframes: int):
        """The held-out clips with ``subframes`` snapshots per visual frame (rendered once)."""
        if subframes not in rendered:
            preset = with_subframes(base, subframes)
            log.info("rendering %d held-out clips (%d snapshot(s) per frame)", args.clips, subframes)
            rendered[subframes] = preset, render_clips(seeds, args.seconds, preset)
        return rendered[subframes]

    results = []
    named = [(ck, snapshots_of(ck)) for ck in args.checkpoints]
    if args.raw_baseline:
        named.append(("raw pixels", 1))
    for name, subframes in named:
        preset, clips = clips_for(subframes)
        features = raw_pixel_features if name == "raw pixels" else cavp_features(name, preset)
        r = probe(name, features, clips, preset, args.train_clips)
        r["subframes"] = subframes
        line = (f"{name}: material {r['material_acc']:.3f} (with the next frame's features "
                f"{r['material_acc_with_next_frame']:.3f}; majority {r['material_majority']:.3f}, "
                f"{r['test_impacts']} impacts), onset AUC {r['onset_auc']:.3f}")
        for head in HEADS if name in args.checkpoints else ():
            sync = event_head_sync(name, preset, clips, args.event_slots, args.train_clips, head)
            if sync is not None:
                r.update(sync)
                line += (f", {head} head onset F1 +-45 {sync[f'{head}_head_f1_45ms']:.3f} "
                         f"+-125 {sync[f'{head}_head_f1_125ms']:.3f} (P {sync[f'{head}_head_precision_125ms']:.3f}, "
                         f"R {sync[f'{head}_head_recall_125ms']:.3f})")
        results.append(r)
        sys.stdout.write(line + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
