"""The presence channel's threshold, chosen on validation clips (``--presence-channel``).

A CAVP trained with ``--cavp-presence-weight`` has a linear head that gives, per visual frame,
the logit that an impact starts in that frame. With ``--presence-channel`` the generator is
conditioned on that head's *decision* (0 or 1, one more channel after the feature): a flow model
shown only the feature renders an uncertain impact as often as it is sure of it, while the head's
decision at a tuned threshold already places onsets better than the generated audio does
(docs/eval/experiments/cavp_presence_head/). The threshold is a logit that maximises onset F1
±125 ms of "an onset at the centre of every frame above it" against the world's merged onsets,
the matching of ``frieren eval``, on synthetic validation clips that neither the training (seeds
from 1000 up) nor the evaluation (900000 up, 950000 up for its classifier) uses.

On the training clips the head is nearly always right, so the flow stages learn from a channel
that says where the impacts are; at inference it says where the head thinks they are.

With ``--presence-slots S`` > 1 the decision has S channels, one per equal slot of the frame's
period (S = latents_per_frame: one per latent), and says in which slot an onset (an impact or a
continuous start, merged like ``frieren eval``'s) starts. That head is fitted here, a linear map
of the frozen CAVP features of the flow stages' clips to their slot labels
(:func:`fit_slot_head`), and read as a detector, an onset at the centre of every slot above the
threshold, merged within 50 ms like the reference onsets.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from frieren.training.atomic_io import write_json_atomic

log = logging.getLogger("frieren.train")

VALIDATION_SEED0 = 800000
VALIDATION_CLIPS = 48
TOLERANCE_MS = 125.0
THRESHOLD_GRID = tuple(float(x) for x in np.round(np.linspace(-4.0, 4.0, 81), 6))

__all__ = ["VALIDATION_SEED0", "VALIDATION_CLIPS", "choose_threshold", "validation_threshold",
           "onset_slot_labels", "truth_channels", "material_channels", "fit_slot_head", "slot_onsets", "window_edge_logits"]


def frame_onsets(logits: np.ndarray, threshold: float, samples_per_frame: int) -> np.ndarray:
    """Frames whose logit exceeds ``threshold``, as onsets at their centre: logits (N,) -> sample
    indices (K,)."""
    return np.flatnonzero(logits > threshold) * samples_per_frame + samples_per_frame // 2


def slot_onsets(logits: np.ndarray, threshold: float, samples_per_frame: int, sample_rate: int) -> np.ndarray:
    """The presence head read as a detector: logits (N,) (one slot per frame) or (N, S) -> sample
    indices (K,) of an onset at the centre of every slot above ``threshold``, merged within 50 ms
    (one audible onset, as ``frieren eval`` merges its references). One slot: :func:`frame_onsets`."""
    from frieren.eval.sync import merge_close_events

    x = np.asarray(logits)
    if x.ndim == 1 or x.shape[-1] == 1:
        return frame_onsets(x.reshape(-1), threshold, samples_per_frame)
    slot = samples_per_frame // x.shape[-1]
    hits = np.flatnonzero(x.reshape(-1) > threshold) * slot + slot // 2
    return np.asarray(merge_close_events(hits, sample_rate), np.int64)


def onset_slot_labels(onsets: Sequence[int], num_frames: int, samples_per_frame: int, slots: int,
                      sample_rate: int) -> torch.Tensor:
    """The slot labels of one clip: onsets (sample indices) merged within 50 ms like ``frieren
    eval``'s references -> float32 (num_frames, slots), 1.0 in the slot where one starts."""
    from frieren.eval.sync import merge_close_events

    if samples_per_frame % slots:
        raise ValueError(f"{slots} presence slots do not split a frame of {samples_per_frame} samples")
    slot = samples_per_frame // slots
    y = torch.zeros(num_frames * slots)
    for s in merge_close_events(onsets, sample_rate):
        if 0 <= s // slot < len(y):
            y[s // slot] = 1.0
    return y.reshape(num_frames, slots)


def material_channels(frame_material: torch.Tensor, classes: int) -> torch.Tensor:
    """The material channels a perfect detector would give (``--material-channel-steps``): per frame
    struck material int64 (N,), -1 = none -> float32 (N, classes), one-hot, all zero where none."""
    from frieren.training.presence_detector import material_targets

    return torch.nn.functional.one_hot(material_targets(frame_material, classes), classes + 1)[:, :classes].float()


def truth_channels(events, num_frames: int, samples_per_frame: int, slots: int, sample_rate: int,
                   materials: Sequence[str] = ()) -> torch.Tensor:
    """What a perfect presence head would say of a synthetic clip, the channels ``--presence-channel-train
    truth`` trains on: events (synth Events) -> float32 (num_frames, slots [+ len(materials)]); one slot:
    1.0 in every frame where an impact starts, more: :func:`onset_slot_labels` of its onsets; with
    ``materials`` (the scene's material names, a bundle with material channels) then the one-hot of
    each frame's struck material (:func:`material_channels`)."""
    if materials:
        from frieren.training.data import frame_materials

        slot_part = truth_channels(events, num_frames, samples_per_frame, slots, sample_rate)
        labels = torch.from_numpy(frame_materials(events, list(materials), num_frames, samples_per_frame / sample_rate))
        return torch.cat([slot_part, material_channels(labels, len(materials))], 1)
    from frieren.eval.table import ONSET_KINDS

    if slots == 1:
        y = torch.zeros(num_frames, 1)
        for e in events:
            if e.kind == "impact" and 0 <= e.sample // samples_per_frame < num_frames:
                y[e.sample // samples_per_frame, 0] = 1.0
        return y
    return onset_slot_labels([e.sample for e in events if e.kind in ONSET_KINDS], num_frames, samples_per_frame,
                             slots, sample_rate)


def fit_slot_head(feats: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], *, steps: int = 600,
                  lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0) -> Tuple[torch.nn.Linear, Dict[str, float]]:
    """A linear slot presence head: frozen normalised features (N_c, D) per clip and their slot
    labels (N_c, S) -> (Linear D -> S fitted by full-batch Adam on the binary cross-entropy,
    {"loss", "precision", "recall"} on these frames at logit 0). Deterministic per ``seed``."""
    x = torch.cat([f.float() for f in feats])
    y = torch.cat([t.float() for t in labels])
    if x.shape[0] != y.shape[0] or not len(x):
        raise ValueError(f"{x.shape[0]} feature frames vs {y.shape[0]} labelled frames")
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], y.shape[1])
    with torch.no_grad():
        bound = 1.0 / x.shape[1] ** 0.5
        head.weight.uniform_(-bound, bound, generator=g)
        head.bias.zero_()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(x), y)
            loss.backward()
            opt.step()
    with torch.no_grad():
        said, hit = head(x) > 0, y > 0.5
        scores = {"loss": float(torch.nn.functional.binary_cross_entropy_with_logits(head(x), y)),
                  "precision": float((said & hit).sum() / said.sum().clamp_min(1)),
                  "recall": float((said & hit).sum() / hit.sum().clamp_min(1))}
    return head.eval(), scores


def choose_threshold(logits: Sequence[np.ndarray], onsets: Sequence[Sequence[int]], samples_per_frame: int,
                     sample_rate: int, grid: Sequence[float] = THRESHOLD_GRID) -> Tuple[float, Dict[str, float]]:
    """The logit threshold of ``grid`` with the best onset F1 ±125 ms over all clips.

    logits: per clip (N_c,) presence logits, or (N_c, S) with S slots per frame (:func:`slot_onsets`);
    onsets: per clip the reference onsets (samples; merged like ``frieren eval`` here). ->
    (threshold, {"f1", "precision", "recall"} at it). Ties go to the lowest threshold of the grid."""
    from frieren.eval.sync import match, merge_close_events

    if len(logits) != len(onsets) or not logits:
        raise ValueError(f"need one onset list per clip, got {len(logits)} logit series and {len(onsets)} onset lists")
    refs = [merge_close_events(list(o), sample_rate) for o in onsets]
    best: Tuple[float, Dict[str, float]] = (float(grid[0]), {"f1": -1.0})
    for t in grid:
        m = d = e = 0
        for x, ref in zip(logits, refs):
            s = match(slot_onsets(np.asarray(x), t, samples_per_frame, sample_rate), ref, sample_rate, TOLERANCE_MS)
            m, d, e = m + s.matched, d + s.detected, e + s.events
        p, r = m / max(d, 1), m / max(e, 1)
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if f1 > best[1]["f1"]:
            best = (float(t), {"f1": f1, "precision": p, "recall": r})
    return best


THRESHOLD_BUFFERS = ("presence_threshold", "presence_edge_threshold", "presence_edge_window_threshold")


def validation_threshold(cavp, preset, record: Path, seconds: float = 8.0, clips: int = VALIDATION_CLIPS,
                         seed0: int = VALIDATION_SEED0, edge: bool = False, newest: bool = False) -> float:
    """The threshold of ``cavp``'s presence head (a CAVPVideoEncoder with ``presence_channel``; one
    threshold for all its slots) reading whole clips, chosen on ``clips`` validation clips rendered
    from ``seed0``. ``edge``: of its edge detector (``cfg.presence_edge``) reading whole clips;
    ``newest``: of what decides a window's newest frame, every frame read as a stream without
    look-ahead reads it (:func:`window_edge_logits`). The choice and its scores are kept in the JSON
    file ``record`` and reused while the CAVP's weights are the same."""
    from frieren.eval.table import render_clips
    from frieren.training.data import state_fingerprint

    if clips < 1:
        raise SystemExit(f"--presence-validation-clips must be at least 1 (the threshold is chosen on them), got {clips}")
    # the weights the threshold is chosen for, not the threshold buffers themselves
    fp = state_fingerprint({k: v for k, v in cavp.state_dict().items() if k not in THRESHOLD_BUFFERS})
    if record.is_file():
        kept = json.loads(record.read_text())
        if kept.get("fingerprint") == fp and kept.get("clips") == clips and kept.get("seed0") == seed0:
            return float(kept["threshold"])
    g = preset.geometry
    which = ("the presence threshold of a window's newest frame" if newest else
             "the edge detector's presence threshold" if edge else "the presence threshold")
    log.info("choosing %s on %d validation clips (seeds %d..%d)", which, clips, seed0, seed0 + clips - 1)
    rendered = render_clips(list(range(seed0, seed0 + clips)), seconds, preset)
    was_training = cavp.training
    cavp.eval()
    with torch.no_grad():
        logits: List[np.ndarray] = [
            (window_edge_logits(cavp, c.frames, g.frames_per_window) if newest
             else cavp.extract_presence_logits(c.frames, edge=edge)).numpy() for c in rendered]
    cavp.train(was_training)
    threshold, scores = choose_threshold(logits, [c.onsets for c in rendered], g.samples_per_frame, g.sample_rate)
    log.info("%s %.2f (logit): onset F1 +-125 ms %.3f (P %.3f, R %.3f) on the validation clips", which,
             threshold, scores["f1"], scores["precision"], scores["recall"])
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, {"threshold": threshold, "fingerprint": fp, "clips": clips, "seed0": seed0,
                               "seconds": seconds, "tolerance_ms": TOLERANCE_MS, "read": (
                                   "newest frame of a window" if newest else "whole clips"), **scores}, indent=1)
    return threshold


def window_edge_logits(cavp, frames: torch.Tensor, window: int, lookahead: int = 0, batch: int = 16) -> torch.Tensor:
    """The presence head read as a stream reads it: frames (N, C, S, S) in [0, 1] of one clip ->
    (N, slots), frame j's logits from a window of ``window`` frames whose newest is j +
    ``lookahead`` (frames before the clip's first repeat it, as a stream's start-up padding does;
    frames after its last repeat the last). ``cavp`` is a CAVPVideoEncoder with the presence channel,
    read as :meth:`~frieren.models.cavp.CAVPVideoEncoder.condition` reads it (its edge detector
    with ``cfg.presence_edge``)."""
    n = frames.shape[0]
    out = []
    with torch.no_grad():
        for s in range(0, n, batch):
            video = torch.stack([frames[torch.arange(j + lookahead - window + 1, j + lookahead + 1).clamp(0, n - 1)]
                                 for j in range(s, min(n, s + batch))])                  # (B, window, C, S, S)
            out.append(cavp.window_presence_logits(video)[:, window - 1 - lookahead])
    return torch.cat(out)
