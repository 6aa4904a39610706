"""Which onsets does a model miss? Onset recall at +-125 ms broken down by what made the sound.

`frieren eval` reports one pooled recall. This script scores the same held-out clips (seeds
900000.. by default, never used in training) and the same merged events and matching as
`frieren eval`, but keeps, for every expected onset, whether the audio placed one within
+-125 ms, together with the synthetic world's description of the event that opens it:

* kind: an impact on the floor, a wall or another object, or the start of a continuous
  sound (a sliding object, the fan);
* strength: the impact's loudness scale (0..1, from its relative normal speed), in bins;
* crowding: whether another expected onset lies within 250 ms (two onsets in one 128 ms
  visual frame or its neighbour);
* gap: how far the nearest other expected onset is, in bins (50-100 ms: a bounce or a second
  contact, often inside the same visual frame; 100-150 ms: usually the neighbouring frame);
* material;
* place: for impacts, whether the event lies within 10 % of the frame's width from its left or right
  edge (the world's walls are those edges) or further in, by its position before camera shake;
* kind and strength together (is a wall impact missed because it is quieter, or at equal strength?).

The ground-truth audio is scored the same way: its recall is what the onset detector itself
finds, the ceiling of each bin. Each bundle generates with its own default steps (a
distilled bundle: one step), seed = clip seed, as `frieren eval` does.

    python benchmarks/onset_recall.py runs/v8_bundle runs/v9_bundle --clips 64 --json out.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("onset_recall")

TOLERANCE_MS = 125.0
CROWD_S = 0.25
EDGE_FRACTION = 0.1                  # "place": this close to the frame's left or right edge
GAP_BINS_MS = (50, 100, 150, 250)   # the last bin: this far or more (merged onsets are >= 50 ms apart)
STRENGTH_BINS = (0.0, 0.1, 0.25, 0.5, 1.01)


def onset_descriptions(events, sample_rate: int) -> List[Dict[str, object]]:
    """The expected onsets of a clip as `frieren eval` merges them (impacts and continuous
    starts, those within 50 ms of the previous kept one dropped), each described by the event
    that opens it. Returns [{sample, kind, material, strength, crowding, gap, kind_strength[, place]}] in
    time order (``place`` for impacts only)."""
    from frieren.eval.sync import merge_close_events
    from frieren.eval.table import ONSET_KINDS

    opening = {}
    for e in sorted((e for e in events if e.kind in ONSET_KINDS), key=lambda e: e.sample):
        opening.setdefault(int(e.sample), e)
    kept = merge_close_events(opening, sample_rate)
    out = []
    for k, s in enumerate(kept):
        e = opening[s]
        kind = f"impact on {e.source}" if e.kind == "impact" else f"start of {e.source}"
        near = [t for t in kept[max(0, k - 1):k + 2] if t != s]
        crowded = any(abs(t - s) < CROWD_S * sample_rate for t in near)
        nearest_ms = min((abs(t - s) for t in near), default=None)
        nearest_ms = None if nearest_ms is None else nearest_ms * 1000.0 / sample_rate
        if e.kind == "impact":
            b = int(np.searchsorted(STRENGTH_BINS, e.strength, side="right")) - 1
            strength = f"strength {STRENGTH_BINS[b]:.2f}-{min(1.0, STRENGTH_BINS[b + 1]):.2f}"
        else:
            strength = "continuous"
        row = {"sample": s, "kind": kind, "material": e.material, "strength": strength,
               "crowding": "another onset within 250 ms" if crowded else "isolated",
               "gap": gap_label(nearest_ms), "kind_strength": f"{kind}, {strength}"}
        if e.kind == "impact":
            x = float(e.position[0])
            row["place"] = (f"impact within {EDGE_FRACTION:.0%} of the left or right edge"
                            if min(x, 1.0 - x) < EDGE_FRACTION else "impact further in")
        out.append(row)
    return out


def gap_label(nearest_ms) -> str:
    """The bin of the distance to the nearest other expected onset (None: the clip's only one)."""
    if nearest_ms is None or nearest_ms >= GAP_BINS_MS[-1]:
        return f"nearest other onset {GAP_BINS_MS[-1]} ms or more"
    b = max(0, int(np.searchsorted(GAP_BINS_MS, nearest_ms, side="right")) - 1)
    return f"nearest other onset {GAP_BINS_MS[b]}-{GAP_BINS_MS[b + 1]} ms"


def head_peaks(series: np.ndarray, samples: Sequence[int], slot_len: int, sample_rate: int) -> np.ndarray:
    """The CAVP event head's largest onset value within +-125 ms of each expected onset:
    series (N * slots,) one value per slot of ``slot_len`` samples -> (len(samples),)."""
    reach = TOLERANCE_MS / 1000 * sample_rate
    out = []
    for s in samples:
        lo = max(0, int((s - reach) // slot_len))
        hi = min(len(series), int((s + reach) // slot_len) + 1)
        out.append(series[lo:hi].max() if hi > lo else -np.inf)
    return np.asarray(out, dtype=np.float64)


def quartile_labels(values: np.ndarray) -> Tuple[List[str], List[float]]:
    """Each value's quartile over all of them, as a label ('1 (lowest)' .. '4 (highest)'), and
    the three edges between the quartiles."""
    edges = np.quantile(values, [0.25, 0.5, 0.75])
    names = ("1 (lowest)", "2", "3", "4 (highest)")
    return [f"quartile {names[int(np.searchsorted(edges, v, side='right'))]}" for v in values], edges.tolist()


def recall_by(onsets: Sequence[Dict[str, object]], hit: Sequence[bool]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{attribute: {value: {events, recall}}} over all onsets of all clips."""
    table: Dict[str, Dict[str, List[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for o, h in zip(onsets, hit):
        for attr in ("kind", "strength", "crowding", "gap", "material", "place", "kind_strength", "head"):
            if attr not in o:
                continue
            cell = table[attr][str(o[attr])]
            cell[0] += 1
            cell[1] += int(h)
    return {a: {v: {"events": n, "recall": m / n} for v, (n, m) in sorted(vals.items())}
            for a, vals in table.items()}


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", help="bundle directories (each generates with its default steps)")
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--seed0", type=int, default=900000, help="first held-out seed (default: the evaluation's)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vae-ceiling", action="store_true",
                    help="also score the ground-truth mel through the first bundle's VAE and vocoder "
                         "(what its generator can render when the latents are right)")
    ap.add_argument("--cavp", nargs="*", default=[], metavar="CHECKPOINT",
                    help="CAVP stage checkpoints with an event head (runs/.../cavp/final.pt): their head read "
                         "as an onset detector (benchmarks/cavp_probe.py), its threshold maximising F1 +-125 ms "
                         "on these same clips (one scalar, so slightly optimistic): what the condition says")
    ap.add_argument("--event-slots", type=int, default=4, help="--cavp-event-slots of those checkpoints")
    ap.add_argument("--head-certainty", metavar="CHECKPOINT",
                    help="also break recall down by how strongly this CAVP's event head marks each onset (its "
                         "largest onset value within +-125 ms, in quartiles over all onsets): are the onsets a "
                         "model drops the ones its condition is unsure of?")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    from frieren.bundles import load_model
    from frieren.eval.sync import detect_onsets, match_pairs
    from frieren.audio import MelFrontend
    from frieren.eval.metrics import log_mel
    from frieren.eval.table import reference_audio, render_clips
    from frieren.pipeline import GenerateOptions, OfflineGenerator

    stacks = {b: load_model(b)[0] for b in args.bundles}
    seeds = list(range(args.seed0, args.seed0 + args.clips))
    clips_by_k = {}
    results: Dict[str, object] = {"clips": args.clips, "seed0": args.seed0, "tolerance_ms": TOLERANCE_MS}

    stack0 = next(iter(stacks.values()))
    sr = stack0.preset.geometry.sample_rate

    head_labels: List[List[str]] = []      # per clip, per expected onset (--head-certainty)

    def score(name: str, outputs: Sequence[np.ndarray], clips, detected: bool = False) -> None:
        """outputs: per clip its audio, or (``detected``) the onset samples found already."""
        onsets, hit = [], []
        for i, (out, clip) in enumerate(zip(outputs, clips)):
            described = onset_descriptions(clip.events, sr)
            for o, label in zip(described, head_labels[i] if head_labels else []):
                o["head"] = label
            found = out if detected else detect_onsets(out, sr)
            pairs = match_pairs(found, [o["sample"] for o in described], sr, TOLERANCE_MS)
            matched = {j for _, j in pairs}
            onsets += described
            hit += [j in matched for j in range(len(described))]
        results[name] = {"recall": float(np.mean(hit)), "events": len(hit), "by": recall_by(onsets, hit)}
        log.info("%s: recall +-125 ms %.3f over %d onsets", name, np.mean(hit), len(hit))

    if args.head_certainty:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from cavp_probe import event_head_series, snapshots_of
        from frieren.config import with_subframes

        preset = with_subframes(stack0.preset, snapshots_of(args.head_certainty))
        k = preset.geometry.subframes
        if k not in clips_by_k:
            clips_by_k[k] = render_clips(seeds, args.seconds, preset)
        series = event_head_series(args.head_certainty, preset, clips_by_k[k], args.event_slots)
        if series is None:
            raise SystemExit(f"{args.head_certainty} has no event head (trained without --cavp-event-weight)")
        slot_len = preset.geometry.samples_per_frame // args.event_slots
        peaks = [head_peaks(x, [o["sample"] for o in onset_descriptions(c.events, sr)], slot_len, sr)
                 for x, c in zip(series, clips_by_k[k])]
        labels, results["head_quartile_edges"] = quartile_labels(np.concatenate(peaks))
        for p in peaks:
            head_labels.append(labels[:len(p)])
            labels = labels[len(p):]

    for path, stack in stacks.items():
        k = stack.preset.geometry.subframes
        if k not in clips_by_k:
            clips_by_k[k] = render_clips(seeds, args.seconds, stack.preset)
        clips = clips_by_k[k]
        if "ground truth" not in results:
            score("ground truth", [c.audio for c in clips], clips)
        gen = OfflineGenerator(stack, "cpu")
        if args.vae_ceiling and "GT mel + VAE + vocoder" not in results:
            frontend = MelFrontend(stack.preset.mel).eval()
            score("GT mel + VAE + vocoder",
                  [reference_audio(gen, log_mel(frontend, c.audio), through_vae=True) for c in clips], clips)
        with torch.no_grad():
            audios = [gen.generate_frames(c.frames, len(c.audio), GenerateOptions(seed=c.seed, progress=False)).audio
                      for c in clips]
        score(path, audios, clips)

    if args.cavp:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from cavp_probe import event_head_onsets, snapshots_of
        from frieren.config import with_subframes

        for ck in args.cavp:
            preset = with_subframes(stack0.preset, snapshots_of(ck))
            k = preset.geometry.subframes
            if k not in clips_by_k:
                clips_by_k[k] = render_clips(seeds, args.seconds, preset)
            found = event_head_onsets(ck, preset, clips_by_k[k], args.event_slots, len(seeds))
            if found is None:
                raise SystemExit(f"{ck} has no event head (trained without --cavp-event-weight)")
            score(f"event head of {ck}", found[1], clips_by_k[k], detected=True)

    names = [n for n in results if isinstance(results[n], dict)]
    attrs = results[names[0]]["by"]
    print("| onsets | n | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for attr, values in attrs.items():
        for value, cell in values.items():
            row = [f"{results[n]['by'][attr].get(value, {}).get('recall', float('nan')):.3f}" for n in names]
            print(f"| {attr}: {value} | {cell['events']} | " + " | ".join(row) + " |")
    print("| all | " + str(results[names[0]]["events"]) + " | "
          + " | ".join(f"{results[n]['recall']:.3f}" for n in names) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
