"""Onset sync of the stream's way of generating, replayed deterministically on held-out clips.

`frieren-stream bench` scores one real-time 60 s scene, and its timing decides which frames each
window sees, so two runs differ. This script replays what a stream without look-ahead does on the
same held-out clips as `frieren eval` (seeds 900000.., ``--first-seed``): for every visual frame j a window of
``frames_per_window`` frames whose newest is j (start-up frames repeat the first), the CAVP's
condition of that window (``cavp.condition``, as the streaming generator computes it), one
generation from the stream's noise tape, and the mel of its newest frame kept; the kept mels,
vocoded in one piece, are scored like `frieren eval` (onset P / R / F1 ±125 ms against the
world's merged onsets). Rows:

* stream: the condition as a stream computes it (the newest frame read with nothing after it);
* stream, whole-clip channels: the same, the presence channels taken from the whole clip's read
  (what the detector says with the frames after each one: the channels' share of the gap);
* whole-clip condition per hop: features and channels of the whole clip, generated hop by hop
  (what the edge costs in all);
* offline: ``frieren generate``'s overlapping windows of the whole clip's condition;
* with ``--lookahead A`` > 0 also "stream, look-ahead A": each window ends A frames after the frame
  it emits (what ``frieren-stream --lookahead-frames A`` does for A frame periods more latency).
* with ``--padded-generator`` also "stream, generator window padded 1": the stream's condition, but
  the generator's window ends one made-up frame after the frame it emits (the newest frame's features,
  its decided channels off), so that frame is not the last the generator renders; no latency added.

Not timed; no crossfade (the mels are joined), so seams are not what it measures.

    python benchmarks/stream_replica.py frieren/assets/default --clips 16 --json out.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("stream_replica")

ROWS = ("stream", "stream, whole-clip channels", "whole-clip condition per hop", "offline")
PADDED = "stream, generator window padded 1"


def hop_conditions(stack, frames: torch.Tensor, lookahead: int = 0, batch: int = 16) -> Dict[str, torch.Tensor]:
    """frames (N, C, S, S) of one clip -> per row but offline, the condition of each hop's window
    (N, F, condition_dim): window j ends at frame j + ``lookahead`` (clamped to the clip). With a
    look-ahead only the stream's own row ("stream, look-ahead A")."""
    cavp, g = stack.cavp, stack.preset.geometry
    n, F = frames.shape[0], g.frames_per_window
    idx = torch.stack([torch.arange(j + lookahead - F + 1, j + lookahead + 1).clamp(0, n - 1)
                       for j in range(n)])                                                   # (N, F)
    with torch.no_grad():
        edge = torch.cat([cavp.condition(frames[idx[s:s + batch]]) for s in range(0, n, batch)])
        if lookahead:
            return {f"stream, look-ahead {lookahead}": edge}
        whole = cavp.extract_condition(frames, chunk_frames=stack.preset.cavp.chunk_frames)[idx]
    out = {"stream": edge, "whole-clip condition per hop": whole}
    if stack.preset.cavp.presence_channel:
        k = stack.preset.cavp.presence_slots + stack.preset.cavp.material_channel   # every decided channel
        out["stream, whole-clip channels"] = torch.cat([edge[..., :-k], whole[..., -k:]], -1)
    return out


def padded_conditions(stack, edge: torch.Tensor) -> torch.Tensor:
    """The stream's conditions (N, F, D), window j ending at frame j -> generator windows (N, F, D)
    ending one frame *after* j: the window's frames 1.. and a made-up last frame, the newest one's
    features with every decided channel (presence, material) off, "nothing starts here". Generated
    and kept as a look-ahead-1 window (frame F - 2), no frame is waited for: only the generator's
    window ends later than the frame it emits."""
    pad = edge[:, -1:].clone()
    cavp = stack.preset.cavp
    k = (cavp.presence_slots + cavp.material_channel) if cavp.presence_channel else 0
    if k:
        pad[..., -k:] = 0
    return torch.cat([edge[:, 1:], pad], 1)


def replay(stack, conds: torch.Tensor, num_samples: int, seed: int = 0, lookahead: int = 0,
           batch: int = 16) -> torch.Tensor:
    """Per-hop windows' conditions (N, F, D), window j ending at frame j + ``lookahead`` -> audio
    (num_samples,): each window generated from the noise tape at its own position, frame j's mel
    kept, the mels joined and vocoded."""
    from frieren.noise import NoiseTape
    from frieren.pipeline import OfflineGenerator

    g = stack.preset.geometry
    n, F = conds.shape[:2]
    tape = NoiseTape(seed, stack.preset.estimator.in_channels)
    per_frame = g.latents_per_frame * g.mel_per_latent
    end = (F - lookahead) * per_frame
    mels: List[torch.Tensor] = []
    with torch.no_grad():
        for s in range(0, n, batch):
            x0 = tape.batch([(j + lookahead - F + 1) * g.latents_per_frame for j in range(s, min(n, s + batch))],
                            g.latent_frames)
            mel = stack.decode(stack.sample_latent(conds[s:s + batch], x0))
            mels.extend(mel[..., end - per_frame:end])
        audio = OfflineGenerator(stack)._vocode_long(torch.cat(mels, -1)[None])[0]
    return audio[:num_samples].clamp(-1, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", help="bundle directories (the default model: frieren/assets/default)")
    p.add_argument("--clips", type=int, default=16, help="held-out clips, seeds 900000.. (default 16)")
    p.add_argument("--first-seed", type=int, default=900000, help="seed of the first clip (default 900000)")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--lookahead", type=int, nargs="*", default=[], metavar="A",
                   help="also replay a stream whose windows end A frames after the frame they emit")
    p.add_argument("--padded-generator", action="store_true",
                   help="also replay a stream whose generator window ends one made-up frame after the frame it emits")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the scores here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    from tqdm import tqdm

    from frieren.checkpoints import load_bundle
    from frieren.eval.sync import detect_onsets, match, merge_close_events
    from frieren.eval.table import render_clips
    from frieren.pipeline import GenerateOptions, OfflineGenerator

    report: Dict[str, object] = {"clips": args.clips, "first_seed": args.first_seed, "seconds": args.seconds,
                                 "tolerance_ms": 125.0, "bundles": {}}
    for bundle in args.bundles:
        stack, _ = load_bundle(bundle)
        g = stack.preset.geometry
        clips = render_clips(list(range(args.first_seed, args.first_seed + args.clips)), args.seconds, stack.preset)
        counts = {r: [0, 0, 0] for r in ROWS + tuple(f"stream, look-ahead {a}" for a in args.lookahead if a)
                  + ((PADDED,) if args.padded_generator else ())}
        for c in tqdm(clips, desc=Path(bundle).name, unit="clip"):
            ref = merge_close_events(sorted(c.onsets), g.sample_rate)
            conds = hop_conditions(stack, c.frames)
            audios = {name: replay(stack, cond, len(c.audio)).numpy() for name, cond in conds.items()}
            if args.padded_generator:
                audios[PADDED] = replay(stack, padded_conditions(stack, conds["stream"]), len(c.audio),
                                        lookahead=1).numpy()
            for a in args.lookahead:
                if a:
                    audios.update({name: replay(stack, cond, len(c.audio), lookahead=a).numpy()
                                   for name, cond in hop_conditions(stack, c.frames, a).items()})
            audios["offline"] = OfflineGenerator(stack).generate_frames(
                c.frames, len(c.audio), GenerateOptions(seed=0, progress=False)).audio
            for name, audio in audios.items():
                s = match(detect_onsets(audio, g.sample_rate), ref, g.sample_rate, 125.0)
                counts[name] = [counts[name][0] + s.matched, counts[name][1] + s.detected, counts[name][2] + s.events]
        rows = {}
        for name, (m, d, e) in counts.items():
            if not e:
                continue
            pr, rc = m / max(d, 1), m / e
            rows[name] = {"matched": m, "detected": d, "events": e, "precision": pr, "recall": rc,
                          "f1": 2 * pr * rc / (pr + rc) if pr + rc else 0.0}
            log.info("%s | %-30s detected %4d of %4d events: P %.3f R %.3f F1 %.3f", bundle, name, d, e, pr, rc,
                     rows[name]["f1"])
        report["bundles"][bundle] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
