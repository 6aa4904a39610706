"""The generator's ceiling: the tiny flow model trained and sampled with a perfect condition.

Issue 3's targets (onset F1 +-125 ms >= 0.8, material accuracy >= 0.8) are missed; is it the
visual condition (what the CAVP features know) or the generator (condition encoder, DiT, VAE and
vocoder) that falls short? This replaces the CAVP features with an oracle made from the ground
truth and trains the CFM stage on it exactly as the recipe does (same windows, VAE posteriors,
hyper-parameters), then scores its 25-step CFG samples like ``frieren eval``.

The oracle condition of a visual frame (what a perfect CAVP event head would say, plus the
struck material): the onset strength of each of its ``latents_per_frame`` slots and its band
loudness, both from the ground-truth mel (:func:`frieren.training.objectives.frame_audio_targets`,
the CAVP event head's own targets), and a one-hot of the material of its strongest impact
(:func:`frieren.training.data.frame_materials`; zeros without one). Standardised with the training
clips' statistics and zero-padded to the CAVP's ``embed_dim``.

It needs a run directory of the recipe whose VAE stage finished and whose latent cache exists
(``cache/clips``, ``cache/latents``, ``vae/final.pt``, ``vae/scale.json``; synthetic clips, which
carry per-frame materials). It trains under ``OUT/cfm`` (resumable) and writes ``OUT/oracle.json``
and ``OUT/oracle.md``.

    python benchmarks/oracle_condition.py --run-dir runs/v8 --out runs/oracle [--steps 4000] [--clips 64]

``--condition head`` asks the same question of a trained CAVP instead of the ground truth: the
condition of a frame is what the CAVP's own event and material heads say about it (their
outputs on its video feature, standardised like the oracle), so the flow model is told the
head's onset slots explicitly instead of finding them in the 128-d feature. Compared with the
recipe's teacher on the same CAVP's features, it measures how much of the gap between the
head's onsets and the teacher's is the flow model reading the feature:

    python benchmarks/oracle_condition.py --condition head --subframes 4 --run-dir runs/v29 --out runs/head_v29
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger("oracle_condition")


def oracle_rows(mel: Tensor, material: Tensor, frames: int, slots: int, materials: int) -> Tensor:
    """Raw oracle descriptors of ``frames`` visual frames: mel (n_mels, >= frames * m) log10,
    material int64 (frames,) (-1 = no impact) -> (frames, slots + AUX_BANDS + materials)."""
    from frieren.training.objectives import AUX_BANDS, frame_audio_targets

    targets = frame_audio_targets(mel[None].float(), frames, AUX_BANDS, slots=slots)[0]
    onehot = torch.zeros(frames, materials)
    hit = material >= 0
    onehot[hit, material[hit]] = 1.0
    return torch.cat([targets, onehot], -1)


class OracleScaler:
    """Standardises oracle rows with training statistics and pads them to the feature width."""

    def __init__(self, rows: Sequence[Tensor], dim: int):
        x = torch.cat(list(rows))
        self.mean, self.std, self.dim = x.mean(0), x.std(0).clamp_min(1e-3), dim
        if x.shape[1] > dim:
            raise ValueError(f"oracle rows have {x.shape[1]} values, more than the feature width {dim}")

    def __call__(self, rows: Tensor) -> Tensor:
        z = (rows - self.mean) / self.std
        return torch.nn.functional.pad(z, (0, self.dim - z.shape[1]))

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "dim": self.dim}


class OracleFeatures(torch.nn.Module):
    """Stands in for the CAVP of a stack during scoring: ``extract`` returns the features set for
    the current clip, padded like the frames (last row repeated)."""

    def __init__(self) -> None:
        super().__init__()
        self.current: Tensor = torch.zeros(0)

    def extract(self, frames: Tensor, chunk_frames=None) -> Tensor:
        n = frames.shape[0]
        f = self.current[:n]
        if f.shape[0] < n:
            f = torch.cat([f, f[-1:].expand(n - f.shape[0], -1)])
        return f.to(frames.device)


def head_rows(feats: Tensor, state: dict) -> Tensor:
    """A CAVP's event and material heads on its features: feats (N, D) normalised video features
    -> (N, event targets + materials), the heads' raw outputs (linear, as trained)."""
    heads = [feats @ state[f"{h}.weight"].T + state[f"{h}.bias"] for h in ("event_head", "material_head")
             if f"{h}.weight" in state]
    if not heads:
        raise SystemExit("the CAVP checkpoint has no event or material head (train it with --cavp-event-weight)")
    return torch.cat(heads, -1)


def load_run(run_dir: Path, preset):
    """Clips, windows, VAE posteriors, scale and CAVP features (one (N, D) per clip) of a recipe run directory."""
    from frieren.training.data import load_clip_cache

    clip_paths = sorted((run_dir / "cache" / "clips").glob("[0-9]*.pt"))
    lat_paths = sorted((run_dir / "cache" / "latents").glob("[0-9]*.pt"))
    scale_path = run_dir / "vae" / "scale.json"
    if not clip_paths or len(lat_paths) != len(clip_paths) or not scale_path.is_file():
        raise SystemExit(f"{run_dir} lacks a finished VAE stage or its caches ({len(clip_paths)} clips, "
                         f"{len(lat_paths)} latent files, scale.json {'found' if scale_path.is_file() else 'missing'}); "
                         "run the recipe up to its CFM stage first (scripts/train_default.sh)")
    clips = load_clip_cache(clip_paths)
    if any(c.frame_material is None for c in clips):
        raise SystemExit(f"{run_dir}: its clips carry no per-frame materials (synthetic clips only)")
    windows, means, stds, feats = [], [], [], []
    for c, path in enumerate(lat_paths):
        d = torch.load(path, map_location="cpu", weights_only=True)
        feats.append(d["feats"])
        windows += [(c, int(s)) for s in d["starts"]]
        if len(d["starts"]):
            means.append(d["mean"])
            stds.append(d["std"])
    scale = float(json.loads(scale_path.read_text())["scale_factor"])
    return clips, torch.tensor(windows, dtype=torch.int64), torch.cat(means), torch.cat(stds), scale, feats


def train(args, preset, out: Path, heads: dict = None):
    """Trains the CFM stage on oracle features (or, given ``heads``, a CAVP state dict, on its heads'
    outputs); returns (estimator state, cond state, scaler, scale)."""
    from frieren.models.cond import CondEncoder
    from frieren.models.estimator import ChannelConcatDiT
    from frieren.synth import SceneConfig
    from frieren.training.data import LatentCache
    from frieren.training.ddp import setup
    from frieren.training.hparams import DEFAULTS
    from frieren.training.loop import Trainer, TrainConfig
    from frieren.training.objectives import CFMObjective

    g = preset.geometry
    materials = len(SceneConfig().materials)
    clips, windows, mean, std, scale, run_feats = load_run(Path(args.run_dir), preset)
    if heads is not None:
        rows = [head_rows(f, heads) for f in run_feats]
    else:
        rows = [oracle_rows(c.mel, c.frame_material, c.num_frames, g.latents_per_frame, materials) for c in clips]
    scaler = OracleScaler(rows, preset.cavp.embed_dim)
    cache = LatentCache([scaler(r) for r in rows], windows, mean, std, scale, g.frames_per_window)
    log.info("%d clips, %d windows, oracle width %d (padded to %d)", len(clips), len(windows),
             rows[0].shape[1], preset.cavp.embed_dim)
    torch.manual_seed(args.seed + 3)
    est, cond = ChannelConcatDiT(preset.estimator), CondEncoder(preset.cond)
    obj = CFMObjective(est, cond, drop_prob=0.2, weight_floor=args.weight_floor)
    hp = DEFAULTS["cfm"]
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=hp.lr, warmup_steps=hp.warmup,
                      grad_clip=hp.grad_clip, ema_decay=hp.ema, final_lr_factor=hp.final_lr_factor,
                      seed=args.seed + 2 * 101, ckpt_every=max(50, min(500, args.steps // 5)), log_every=10)
    n = len(cache)

    def batches(step, gen):
        idx = torch.randint(0, n, (args.batch_size,), generator=gen)
        return {"feats": cache.window_feats(idx), "x1": cache.latents(idx, gen)}
    result = Trainer("cfm", obj, batches, out / "cfm", cfg, setup("cpu"), progress=not args.no_progress).run(resume=True)
    log.info("oracle CFM: %s", result)
    state = torch.load(out / "cfm" / "final.pt", map_location="cpu", weights_only=False)["state"]
    vae_state = torch.load(Path(args.run_dir) / "vae" / "final.pt", map_location="cpu", weights_only=False)["state"]
    return state, vae_state, scaler, scale


def held_out(seeds: Sequence[int], seconds: float, preset, scaler: OracleScaler, heads: dict = None, encoder=None):
    """The evaluation's clips and their oracle features (given ``heads`` and the CAVP ``encoder``:
    its heads' outputs on its features of the clip)."""
    from frieren.audio import MelFrontend
    from frieren.eval.table import render_clips
    from frieren.synth import SceneConfig
    from frieren.training.data import frame_materials

    g = preset.geometry
    m = g.latents_per_frame * g.mel_per_latent
    scene = SceneConfig(duration_s=seconds, sample_rate=g.sample_rate)
    clips = render_clips(seeds, seconds, preset)
    front = MelFrontend(preset.mel).eval()
    feats = []
    for c in clips:
        if heads is not None:
            with torch.no_grad():
                feats.append(scaler(head_rows(encoder.extract(c.frames), heads)))
            continue
        n = c.frames.shape[0]
        with torch.no_grad():
            mel = front(torch.from_numpy(c.audio)[None])[0]
        mel = torch.nn.functional.pad(mel[None], (0, max(0, n * m - mel.shape[1])), mode="replicate")[0]
        labels = torch.from_numpy(frame_materials(c.events, list(scene.materials), n, g.frame_period_s))
        feats.append(scaler(oracle_rows(mel, labels, n, g.latents_per_frame, len(scene.materials))))
    return clips, feats


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True, help="a recipe run (VAE stage and latent cache done)")
    ap.add_argument("--out", required=True, help="where the oracle CFM trains and the results go")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--subframes", type=int, default=1, help="the run's --subframes (head condition only)")
    ap.add_argument("--condition", choices=("oracle", "head"), default="oracle",
                    help="oracle: the ground truth; head: a trained CAVP's event and material heads")
    ap.add_argument("--cavp", help="CAVP checkpoint of --condition head (default RUN_DIR/cavp/final.pt)")
    ap.add_argument("--steps", type=int, default=4000, help="CFM steps (the shipped recipe's 4000)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--weight-floor", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clips", type=int, default=64, help="held-out clips (seeds 900000..)")
    ap.add_argument("--classifier-clips", type=int, default=80)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--sample-steps", type=int, nargs="+", default=[25], help="sampling steps to score")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    import dataclasses

    from frieren.audio import MelFrontend
    from frieren.config import get_preset
    from frieren.eval.metrics import make_embedding
    from frieren.eval.table import CLASSIFIER_SEED_OFFSET, Scorer, train_material_classifier
    from frieren.pipeline import GenerateOptions, OfflineGenerator
    from frieren.stack import FrierenStack
    from frieren.training.run import sub_state

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preset = get_preset(args.preset)
    heads = encoder = None
    if args.condition == "head":
        from frieren.config import with_subframes
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from cavp_probe import cavp_encoder, load_stage_state

        preset = with_subframes(preset, args.subframes)
        ckpt = args.cavp or str(Path(args.run_dir) / "cavp" / "final.pt")
        heads = load_stage_state(ckpt)
        encoder = cavp_encoder(ckpt, preset, heads)
    state, vae_state, scaler, scale = train(args, preset, out, heads)

    stack = FrierenStack(dataclasses.replace(preset, scale_factor=scale))
    stack.estimator.load_state_dict(sub_state(state, "estimator."))
    stack.cond.load_state_dict(sub_state(state, "cond."))
    stack.vae.load_state_dict(sub_state(vae_state, "vae."))
    stack.cavp = OracleFeatures()
    stack.eval()

    seed0 = 900000
    clips, feats = held_out(list(range(seed0, seed0 + args.clips)), args.seconds, preset, scaler, heads, encoder)
    frontend = MelFrontend(preset.mel).eval()
    clf_seeds = list(range(seed0 + CLASSIFIER_SEED_OFFSET, seed0 + CLASSIFIER_SEED_OFFSET + args.classifier_clips))
    classifier = train_material_classifier(clf_seeds, args.seconds, preset, frontend)
    scorer = Scorer(clips, preset, frontend, classifier, {"logmel": make_embedding("logmel", preset, None)})
    gen = OfflineGenerator(stack, "cpu")
    rows = []
    for steps in args.sample_steps:
        audios = []
        for c, f in zip(clips, feats):
            stack.cavp.current = f
            with torch.no_grad():
                audios.append(gen.generate_frames(c.frames, len(c.audio),
                                                  GenerateOptions(steps=steps, seed=c.seed, progress=False)).audio)
        row = {"model": f"{args.condition} condition (CFM)", "steps": steps, "cfg_scale": preset.sampling.cfg_scale,
               **scorer.score(audios)}
        rows.append(row)
        log.info(args.condition + " %d steps: F1 +-45 %.3f +-125 %.3f material %.3f FD(log-mel) %.2f mel L1 %.3f", steps,
                 row["f1_45ms"], row["f1_125ms"], row["material_acc"] or math.nan, row["fd_logmel"], row["mel_l1"])
    report = {"run_dir": args.run_dir, "condition": args.condition, "cavp": args.cavp, "cfm_steps": args.steps, "clips": args.clips, "seed0": seed0,
              "classifier_clips": args.classifier_clips, "oracle_scaler": scaler.state(), "rows": rows}
    (out / "oracle.json").write_text(json.dumps(report, indent=2, default=float))
    lines = ["| condition | steps | F1 ±45 ms | F1 ±125 ms | material acc. | FD (log-mel) | mel L1 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {args.condition} | {r['steps']} | {r['f1_45ms']:.3f} | {r['f1_125ms']:.3f} | {r['material_acc']:.3f} | "
              f"{r['fd_logmel']:.2f} | {r['mel_l1']:.3f} |" for r in rows]
    (out / "oracle.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
