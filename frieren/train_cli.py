"""`frieren train ...`: train a preset from nothing, stage by stage, resumably.

Stages (each writes ``<run-dir>/<stage>/{ckpt.pt,final.pt,log.jsonl}``; a rerun resumes an
interrupted stage and skips a finished one):

====================  ===========================================================  ==============
subcommand            what                                                          needs
====================  ===========================================================  ==============
``vae``               mel VAE: L1 recon + 1e-6 KL; then measures the latent scale   clip cache
``cavp``              CAVP video branch + small mel encoder, contrastive            clip cache
``cfm``               base CFM (logit-normal weight, CFG dropout 0.2)                vae, cavp
``reflow-data``       teacher (cfm) samples: 25 Euler steps, CFG 4.5, noise+sample  cfm
``reflow``            guided-velocity reflow on the pairs                            reflow-data
``distill``           one-step distillation at t = 0                                 reflow
``bundle``            writes the bundle (model.safetensors + config.json)            distill
``default``           all of the above in order
====================  ===========================================================  ==============

A finished stage is never retrained implicitly: after retraining one with ``--no-resume``,
delete the directories of the stages after it (reflow-data notices a changed teacher by
itself and regenerates its pairs).

Data: ``--synthetic N`` renders N clips of the synthetic Foley world in memory (default),
``--data-dir DIR`` reads a folder of videos with audio (a synthetic dataset folder works
too) and ``--csv FILE`` restricts it to a VGGSound-style manifest.

Reference bug fixed at stage boundaries (FRIEREN_SPEC §10.1): the reference re-initialises
the trainable condition Linear at the start of reflow and of distillation (it restores only
the DiT). Here every flow stage starts from the previous stage's estimator *and* condition
encoder. See :mod:`frieren.training.objectives` for the batch-size-1 and t≈0 fixes.

Mount under the main CLI with ``add_arguments(sub.add_parser("train"))`` and ``run(args)``;
``python -m frieren.train_cli ...`` works standalone.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

log = logging.getLogger("frieren.train")

STAGES = ("vae", "cavp", "cfm", "reflow-data", "reflow", "distill", "bundle")


@dataclass(frozen=True)
class StageHParams:
    steps: int
    batch_size: int
    lr: float
    warmup: int
    ema: float = 0.0
    grad_clip: float = 1.0
    final_lr_factor: float = 1.0   # <1: cosine decay to lr * this (see TrainConfig)


# Defaults sized for the tiny preset on a 2-core CPU (see scripts/train_default.sh).
DEFAULTS: Dict[str, StageHParams] = {
    # The VAE decays its LR (cosine to 0.1x): at a constant 1e-3 its loss kept jumping
    # between batches and the last step's weights are what the model ships.
    "vae": StageHParams(steps=1500, batch_size=16, lr=1e-3, warmup=100, ema=0.0, final_lr_factor=0.1),
    "cavp": StageHParams(steps=600, batch_size=16, lr=1e-3, warmup=50, ema=0.0),
    "cfm": StageHParams(steps=3000, batch_size=32, lr=1e-3, warmup=200, ema=0.999),
    "reflow": StageHParams(steps=1000, batch_size=32, lr=2e-4, warmup=50, ema=0.995),
    "distill": StageHParams(steps=1000, batch_size=32, lr=2e-4, warmup=50, ema=0.995),
}


# --------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default="runs/default", help="where caches, checkpoints and logs go")
    p.add_argument("--preset", default="tiny", help="preset to train (default tiny)")
    p.add_argument("--synthetic", type=int, default=400, metavar="N",
                   help="render N synthetic clips in memory (default 400; ignored with --data-dir)")
    p.add_argument("--synthetic-seed", type=int, default=0, help="seed of the first synthetic clip")
    p.add_argument("--clip-seconds", type=float, default=8.0, help="synthetic clip length")
    p.add_argument("--data-dir", help="folder of videos with audio (or a synthetic dataset folder)")
    p.add_argument("--csv", help="VGGSound-style manifest (id, start, label, split) inside --data-dir")
    p.add_argument("--csv-split", help="keep only rows of this split (4th column)")
    p.add_argument("--window-stride", type=int, default=2, help="frames between training windows")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and noise")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", help="cpu / cuda (default: cuda:LOCAL_RANK if available)")
    p.add_argument("--weight-floor", type=float, default=0.05,
                   help="min logit-normal loss weight (0 = reference; >0 trains t≈0, see objectives)")
    p.add_argument("--max-minutes", type=float, help="per-stage wall-time safety budget")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints of the stage")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--cavp-event-weight", type=float, default=0.0,
                   help="CAVP stage: weight of the per-frame audio-event regression (onset strength and "
                        "band loudness of each frame's audio predicted from its video feature); 0 = "
                        "contrastive only (the original recipe)")
    p.add_argument("--cavp-event-slots", type=int, default=1,
                   help="CAVP event head: onset-strength values per frame, one per equal part of the frame "
                        "(default 1; 4 = one per latent of the tiny preset, asks when inside the frame)")
    p.add_argument("--cavp-event-flux-bands", type=int, default=0,
                   help="CAVP event head: also regress the spectrum of what starts in each frame (positive "
                        "spectral flux in this many mel-bin groups; default 0 = off)")


def _hparams(p: argparse.ArgumentParser, stage: Optional[str]) -> None:
    d = DEFAULTS.get(stage) if stage else None
    p.add_argument("--steps", type=int, default=d.steps if d else None)
    p.add_argument("--batch-size", type=int, default=d.batch_size if d else None)
    p.add_argument("--lr", type=float, default=d.lr if d else None)
    p.add_argument("--warmup", type=int, default=d.warmup if d else None)


def _reflow_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reflow-pairs", type=int, default=2048, help="number of teacher (noise, sample) pairs")
    p.add_argument("--teacher-steps", type=int, default=25, help="Euler steps of the teacher")
    p.add_argument("--cfg-scale", type=float, default=4.5, help="CFG scale of teacher, reflow and distill")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training subcommands to ``parser`` (e.g. the ``train`` subparser of `frieren`)."""
    sub = parser.add_subparsers(dest="train_command", required=True)
    for stage, help_ in (("vae", "train the mel VAE"), ("cavp", "train CAVP (contrastive)"),
                         ("cfm", "train the base CFM model"), ("reflow", "reflow training"),
                         ("distill", "one-step distillation")):
        p = sub.add_parser(stage, help=help_)
        _common(p)
        _hparams(p, stage)
        if stage in ("reflow", "distill"):
            _reflow_data_args(p)
    p = sub.add_parser("reflow-data", help="generate teacher pairs for reflow/distill")
    _common(p)
    _reflow_data_args(p)
    p = sub.add_parser("bundle", help="write the bundle from the finished stages")
    _common(p)
    p.add_argument("--out", required=True, help="bundle directory")
    p.add_argument("--stage", default="distill", choices=sorted(BUNDLE_STEPS),
                   help="flow weights to ship: distill (1 step), reflow (4 steps) or cfm (25 steps)")
    p.add_argument("--cfg-scale", type=float, default=4.5, help="CFG scale stored in the preset")
    p = sub.add_parser("default", help="all stages in order (resumable), then the bundle")
    _common(p)
    _reflow_data_args(p)
    for stage, d in DEFAULTS.items():
        p.add_argument(f"--{stage}-steps", type=int, default=d.steps)
        p.add_argument(f"--{stage}-batch-size", type=int, default=d.batch_size)
    p.add_argument("--out", default="frieren/assets/default", help="bundle directory")


# --------------------------------------------------------------------------------------
# shared state of a run
# --------------------------------------------------------------------------------------

class Run:
    """The data, caches and stage outputs of one ``--run-dir``."""

    def __init__(self, args: argparse.Namespace) -> None:
        from frieren.config import get_preset
        from frieren.training.ddp import setup

        self.args = args
        self.dir = Path(args.run_dir)
        self.preset = get_preset(args.preset)
        self.ctx = setup(args.device)
        self.progress = not args.no_progress
        self._clips = None
        self._windows = None
        self._latents = None

    # -- data ---------------------------------------------------------------------------
    def source_description(self) -> dict:
        a = self.args
        if a.data_dir:
            return {"kind": "folder", "data_dir": str(Path(a.data_dir).resolve()), "csv": a.csv,
                    "csv_split": a.csv_split, "preset": self.preset.name}
        return {"kind": "synthetic", "clips": a.synthetic, "seed0": a.synthetic_seed,
                "clip_seconds": a.clip_seconds, "preset": self.preset.name}

    def clips(self):
        if self._clips is None:
            from frieren.training.data import (build_clip_cache, csv_source, folder_source,
                                               load_clip_cache, synthetic_source)
            from frieren.training.ddp import barrier
            a = self.args
            cache = self.dir / "cache"
            cache.mkdir(parents=True, exist_ok=True)
            meta = cache / "source.json"
            desc = self.source_description()
            if meta.is_file() and json.loads(meta.read_text()) != desc:
                raise SystemExit(f"{cache} was built from another data source ({meta.read_text().strip()}); "
                                 f"use another --run-dir or delete {cache}")
            meta.write_text(json.dumps(desc))
            if a.data_dir:
                items = (csv_source(a.data_dir, a.csv, self.preset, a.csv_split) if a.csv
                         else folder_source(a.data_dir, self.preset))
            else:
                from frieren.synth import SceneConfig
                scene = SceneConfig(duration_s=a.clip_seconds, sample_rate=self.preset.geometry.sample_rate)
                items = synthetic_source(a.synthetic, a.synthetic_seed, self.preset, scene)
            if self.ctx.is_main:
                paths = build_clip_cache(items, cache, self.preset, progress=self.progress)
            barrier(self.ctx)
            if not self.ctx.is_main:
                paths = build_clip_cache(items, cache, self.preset, progress=False)
            self._clips = load_clip_cache(paths)
        return self._clips

    def windows(self):
        if self._windows is None:
            from frieren.training.data import WindowData, window_index
            g = self.preset.geometry
            clips = self.clips()
            self._windows = WindowData(clips, window_index(clips, g.frames_per_window, self.args.window_stride),
                                       g.frames_per_window, g.latents_per_frame * g.mel_per_latent)
            log.info("%d clips, %d training windows", len(clips), len(self._windows.windows))
        return self._windows

    # -- stage outputs ------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.dir / stage.replace("-", "_")

    def final(self, stage: str) -> dict:
        from frieren.training.loop import load_final
        fin = load_final(self.stage_dir(stage))
        if fin is None:
            raise SystemExit(f"stage {stage!r} has not finished in {self.dir}; run `frieren train {stage}` first")
        return fin

    def trained_vae(self):
        from frieren.models.vae import MelVAE
        vae = MelVAE(self.preset.vae)
        vae.load_state_dict(_sub(self.final("vae")["state"], "vae."))
        scale = json.loads((self.stage_dir("vae") / "scale.json").read_text())["scale_factor"]
        return vae.eval(), float(scale)

    def trained_cavp(self):
        from frieren.models.cavp import CAVPVideoEncoder
        cavp = CAVPVideoEncoder(self.preset.cavp)
        cavp.load_state_dict(_sub(self.final("cavp")["state"], "video."))
        return cavp.eval()

    def latents(self):
        if self._latents is None:
            from frieren.training.data import build_latent_cache, state_fingerprint
            vae, scale = self.trained_vae()
            cavp = self.trained_cavp()
            fp = state_fingerprint(vae.state_dict(), cavp.state_dict()) + f"-{scale:.6g}"
            w = self.windows()
            if self.ctx.is_main:
                build_latent_cache(w.clips, w.windows, cavp, vae, self.preset, self.dir / "cache", scale, fp,
                                   progress=self.progress)
            from frieren.training.ddp import barrier
            barrier(self.ctx)
            self._latents = build_latent_cache(w.clips, w.windows, cavp, vae, self.preset, self.dir / "cache",
                                               scale, fp, progress=False)
        return self._latents

    def flow_modules(self, init_from: Optional[str]):
        """Estimator + condition encoder, from scratch (seeded) or from a finished stage.

        Both are restored (FRIEREN_SPEC §10.1 fix: the condition encoder is *not* re-initialised)."""
        from frieren.models.cond import CondEncoder
        from frieren.models.estimator import ChannelConcatDiT
        torch.manual_seed(self.args.seed + 3)
        est, cond = ChannelConcatDiT(self.preset.estimator), CondEncoder(self.preset.cond)
        if init_from is not None:
            state = self.final(init_from)["state"]
            est.load_state_dict(_sub(state, "estimator."))
            cond.load_state_dict(_sub(state, "cond."))
        return est, cond

    def train_config(self, stage: str, hp: StageHParams):
        from frieren.training.loop import TrainConfig
        a = self.args
        return TrainConfig(steps=hp.steps, batch_size=hp.batch_size, lr=hp.lr, warmup_steps=hp.warmup,
                           grad_clip=hp.grad_clip, ema_decay=hp.ema, final_lr_factor=hp.final_lr_factor, seed=a.seed + STAGES.index(stage) * 101,
                           ckpt_every=max(50, min(500, hp.steps // 5)), log_every=10,
                           max_seconds=a.max_minutes * 60 if a.max_minutes else None)


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _idx(gen: torch.Generator, n: int, b: int) -> torch.Tensor:
    return torch.randint(0, n, (b,), generator=gen)


# --------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------

def _finished(run: Run, stage: str, steps: Optional[int] = None) -> Optional[dict]:
    from frieren.training.loop import load_final
    fin = load_final(run.stage_dir(stage))
    if fin is not None and not run.args.no_resume:
        done = fin["result"].get("steps")
        if steps is not None and done is not None and done != steps and not fin.get("stopped_early"):
            # A run dir of another recipe: skipping would silently reuse its weights.
            raise SystemExit(f"stage {stage} in {run.dir} finished with {done} steps but {steps} were "
                             f"requested; use another --run-dir (copy the stages to keep) or pass --no-resume")
        log.info("stage %s already finished (%s); skipping", stage, fin["result"])
        return fin["result"]
    return None


def _train(run: Run, stage: str, objective, batches, hp: StageHParams) -> dict:
    from frieren.training.loop import Trainer
    dev = run.ctx.device
    trainer = Trainer(stage, objective, lambda step, gen: _to(batches(step, gen), dev), run.stage_dir(stage),
                      run.train_config(stage, hp), run.ctx, progress=run.progress)
    return dataclasses.asdict(trainer.run(resume=not run.args.no_resume))


def _to(batch, dev):
    if isinstance(batch, dict):
        return {k: v.to(dev) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(v.to(dev) for v in batch)
    return batch.to(dev)


def stage_vae(run: Run, hp: StageHParams) -> dict:
    from frieren.models.vae import MelVAE
    from frieren.training.data import latent_scale
    from frieren.training.objectives import VAEObjective

    done = _finished(run, "vae", hp.steps)
    w = run.windows()
    if done is None:
        torch.manual_seed(run.args.seed + 1)
        obj = VAEObjective(MelVAE(run.preset.vae), kl_weight=1e-6, recon="l1")
        b = run.ctx.shard(hp.batch_size)
        n = len(w.windows)
        done = _train(run, "vae", obj, lambda step, gen: w.mel(_idx(gen, n, b)), hp)
    scale_path = run.stage_dir("vae") / "scale.json"
    if not scale_path.is_file() and run.ctx.is_main:
        # scale_by_std (MAA2) measured on up to 1024 windows: the tiny VAE's latents are not
        # at the scale the official 0.18215 assumes.
        from frieren.models.vae import MelVAE as _V
        vae = _V(run.preset.vae)
        vae.load_state_dict(_sub(run.final("vae")["state"], "vae."))
        vae.eval()
        g = torch.Generator().manual_seed(run.args.seed)
        idx = torch.randperm(len(w.windows), generator=g)[:1024]
        with torch.no_grad():
            posts = [vae.encode(w.mel(idx[a:a + 128])) for a in range(0, len(idx), 128)]
        mean = torch.cat([p.mean for p in posts])
        std = torch.cat([p.std for p in posts])
        scale = latent_scale(mean, std)
        scale_path.write_text(json.dumps({"scale_factor": scale, "windows": int(len(idx))}))
        log.info("VAE latent scale factor %.5f (1/std)", scale)
    from frieren.training.ddp import barrier
    barrier(run.ctx)
    return done


def stage_cavp(run: Run, hp: StageHParams) -> dict:
    from frieren.models.cavp import CAVPVideoEncoder
    from frieren.training.cavp_audio import MelAudioEncoder
    from frieren.training.objectives import CAVPObjective

    done = _finished(run, "cavp", hp.steps)
    if done is not None:
        return done
    w = run.windows()
    torch.manual_seed(run.args.seed + 2)
    p = run.preset
    obj = CAVPObjective(CAVPVideoEncoder(p.cavp),
                        MelAudioEncoder(p.mel.n_mels, p.cavp.embed_dim, w.mel_per_frame),
                        segments=8, event_weight=getattr(run.args, "cavp_event_weight", 0.0),
                        event_slots=getattr(run.args, "cavp_event_slots", 1),
                        event_flux_bands=getattr(run.args, "cavp_event_flux_bands", 0))
    b = run.ctx.shard(hp.batch_size)
    n = len(w.windows)

    def batches(step, gen):
        idx = _idx(gen, n, b)
        return w.frames(idx), w.mel(idx)
    return _train(run, "cavp", obj, batches, hp)


def stage_cfm(run: Run, hp: StageHParams) -> dict:
    from frieren.training.objectives import CFMObjective

    done = _finished(run, "cfm", hp.steps)
    if done is not None:
        return done
    lat = run.latents()
    est, cond = run.flow_modules(None)
    obj = CFMObjective(est, cond, drop_prob=0.2, weight_floor=run.args.weight_floor)
    b = run.ctx.shard(hp.batch_size)
    n = len(lat)

    def batches(step, gen):
        idx = _idx(gen, n, b)
        return {"feats": lat.window_feats(idx), "x1": lat.latents(idx, gen)}
    return _train(run, "cfm", obj, batches, hp)


def stage_reflow_data(run: Run) -> dict:
    """Teacher pairs in chunks ``reflow_data/pairs_NNNN.pt`` (resumable; ranks share chunks)."""
    from frieren.training.data import state_fingerprint
    from frieren.training.ddp import barrier
    from frieren.training.loop import step_generator
    from frieren.training.objectives import generate_reflow_pairs

    a = run.args
    out = run.stage_dir("reflow-data")
    out.mkdir(parents=True, exist_ok=True)
    lat = run.latents()
    est, cond = run.flow_modules("cfm")
    est.eval().to(run.ctx.device)
    cond.eval().to(run.ctx.device)
    fp = state_fingerprint(est.state_dict(), cond.state_dict())
    settings = {"teacher": fp, "pairs": a.reflow_pairs, "steps": a.teacher_steps, "cfg": a.cfg_scale,
                "seed": a.seed, "windows": len(lat)}
    meta = out / "meta.json"
    if meta.is_file() and json.loads(meta.read_text()).get("settings") != settings:
        if run.ctx.is_main:
            for p in out.glob("pairs_*.pt"):
                p.unlink()
    barrier(run.ctx)
    pick = torch.randperm(len(lat), generator=torch.Generator().manual_seed(a.seed + 21))
    pick = pick[:min(a.reflow_pairs, len(lat))]
    chunk = 128
    chunks = list(range(0, len(pick), chunk))
    t0 = time.perf_counter()
    from tqdm import tqdm
    for ci in tqdm(chunks, desc="reflow-data", unit="chunk", disable=not run.progress or not run.ctx.is_main):
        if (ci // chunk) % run.ctx.world_size != run.ctx.rank:
            continue
        path = out / f"pairs_{ci // chunk:04d}.pt"
        if path.is_file():
            continue
        idx = pick[ci:ci + chunk]
        feats = lat.window_feats(idx).to(run.ctx.device)
        gen = step_generator(a.seed + 21, ci // chunk)
        x0 = torch.randn((len(idx), run.preset.estimator.in_channels, run.preset.geometry.latent_frames),
                         generator=gen)
        x1 = generate_reflow_pairs(est, cond, feats, x0.to(run.ctx.device), steps=a.teacher_steps,
                                   cfg_scale=a.cfg_scale).cpu()
        tmp = path.with_suffix(".tmp")
        torch.save({"idx": idx, "x0": x0, "x1": x1}, tmp)
        os.replace(tmp, path)
    barrier(run.ctx)
    seconds = time.perf_counter() - t0
    summary = {"settings": settings, "seconds": round(seconds, 1)}
    if run.ctx.is_main:
        meta.write_text(json.dumps(summary))
    return summary


def load_pairs(run: Run):
    out = run.stage_dir("reflow-data")
    files = sorted(out.glob("pairs_*.pt"))
    if not files:
        raise SystemExit(f"no reflow pairs in {out}; run `frieren train reflow-data` first")
    parts = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    return {k: torch.cat([p[k] for p in parts]) for k in ("idx", "x0", "x1")}


def _pair_stage(run: Run, stage: str, init_from: str, hp: StageHParams) -> dict:
    from frieren.training.objectives import DistillObjective, ReflowObjective

    done = _finished(run, stage, hp.steps)
    if done is not None:
        return done
    lat = run.latents()
    pairs = load_pairs(run)
    est, cond = run.flow_modules(init_from)
    if stage == "reflow":
        obj = ReflowObjective(est, cond, cfg_scale=run.args.cfg_scale, weight_floor=run.args.weight_floor)
    else:
        obj = DistillObjective(est, cond, cfg_scale=run.args.cfg_scale)
    b = run.ctx.shard(hp.batch_size)
    n = len(pairs["idx"])

    def batches(step, gen):
        i = _idx(gen, n, b)
        return {"feats": lat.window_feats(pairs["idx"][i]), "x0": pairs["x0"][i], "x1": pairs["x1"][i]}
    return _train(run, stage, obj, batches, hp)


# Default Euler steps of a bundle exported from each flow stage (FRIEREN_SPEC §6.4): the
# base model as the reference (25), the reflow model with few steps, the distilled one 1.
BUNDLE_STEPS = {"cfm": 25, "reflow": 4, "distill": 1}


def export_bundle(run: Run, out: os.PathLike, provenance: dict, stage: str = "distill") -> Path:
    """Assemble the trained parts into a FrierenStack and save it as a bundle.

    ``stage`` picks the flow weights (distill: the shipped one-step model; cfm: the 25-step
    teacher; reflow: the few-step model). The preset's ``scale_factor`` is the measured
    1/std of this VAE's latents, and its sampling steps follow the stage (CFG 4.5 always)."""
    from frieren.checkpoints import save_bundle
    from frieren.stack import FrierenStack

    if stage not in BUNDLE_STEPS:
        raise SystemExit(f"--stage must be one of {sorted(BUNDLE_STEPS)}, got {stage!r}")
    vae, scale = run.trained_vae()
    sampling = dataclasses.replace(run.preset.sampling, steps=BUNDLE_STEPS[stage], cfg_scale=run.args.cfg_scale
                                   if hasattr(run.args, "cfg_scale") else 4.5)
    preset = dataclasses.replace(run.preset, scale_factor=scale, sampling=sampling)
    stack = FrierenStack(preset)
    stack.vae.load_state_dict(vae.state_dict())
    stack.cavp.load_state_dict(run.trained_cavp().state_dict())
    state = run.final(stage)["state"]
    provenance = dict(provenance, flow_stage=stage)
    stack.estimator.load_state_dict(_sub(state, "estimator."))
    stack.cond.load_state_dict(_sub(state, "cond."))
    stack.eval()
    path = save_bundle(stack, out, provenance)
    size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    log.info("bundle written to %s (%.1f MB)", out, size / 1e6)
    return path


# --------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------

def _hp_from_args(stage: str, args) -> StageHParams:
    d = DEFAULTS[stage]
    return dataclasses.replace(d, steps=args.steps if args.steps is not None else d.steps,
                               batch_size=args.batch_size or d.batch_size, lr=args.lr or d.lr,
                               warmup=args.warmup if args.warmup is not None else d.warmup)


def _provenance(run: Run, results: dict) -> dict:
    import platform
    argv = list(sys.argv)
    if argv and argv[0].endswith(("train_cli.py", "train_cli")):
        argv[0:1] = ["python", "-m", "frieren.train_cli"]
    cmd = " ".join(shlex.quote(x) for x in argv)
    return {
        "trained_by": "frieren.train_cli", "command": cmd, "script": os.environ.get("FRIEREN_TRAIN_SCRIPT"), "args": {k: v for k, v in vars(run.args).items()
                                                                     if isinstance(v, (int, float, str, bool, type(None)))},
        "data": run.source_description(), "seed": run.args.seed, "stages": results,
        "hparams": {k: dataclasses.asdict(v) for k, v in _current_hparams(run.args).items()},
        "torch": torch.__version__, "python": platform.python_version(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "notes": "tiny preset trained from scratch on the synthetic Foley world; one-step distilled, "
                 "use CFG 4.5 and 1 Euler step; vocoder Griffin-Lim",
    }


def _current_hparams(args) -> Dict[str, StageHParams]:
    if getattr(args, "train_command", None) == "default":
        return {s: dataclasses.replace(d, steps=getattr(args, f"{s}_steps"),
                                       batch_size=getattr(args, f"{s}_batch_size")) for s, d in DEFAULTS.items()}
    return dict(DEFAULTS)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    r = Run(args)
    cmd = args.train_command
    t0 = time.perf_counter()
    if cmd in ("vae", "cavp", "cfm", "reflow", "distill"):
        hp = _hp_from_args(cmd, args)
        res = {"vae": stage_vae, "cavp": stage_cavp, "cfm": stage_cfm}.get(cmd)
        result = res(r, hp) if res else _pair_stage(r, cmd, "cfm" if cmd == "reflow" else "reflow", hp)
    elif cmd == "reflow-data":
        result = stage_reflow_data(r)
    elif cmd == "bundle":
        result = {"bundle": str(export_bundle(r, args.out, _provenance(r, _stage_summaries(r)), args.stage))}
    elif cmd == "default":
        hps = _current_hparams(args)
        timings = {}

        def timed(name, fn):
            s = time.perf_counter()
            out = fn()
            timings[name] = round(time.perf_counter() - s, 1)
            log.info("stage %s done in %.1f s", name, timings[name])
            return out

        timed("data", lambda: r.windows())
        timed("vae", lambda: stage_vae(r, hps["vae"]))
        timed("cavp", lambda: stage_cavp(r, hps["cavp"]))
        timed("latents", lambda: r.latents())
        timed("cfm", lambda: stage_cfm(r, hps["cfm"]))
        timed("reflow-data", lambda: stage_reflow_data(r))
        timed("reflow", lambda: _pair_stage(r, "reflow", "cfm", hps["reflow"]))
        timed("distill", lambda: _pair_stage(r, "distill", "reflow", hps["distill"]))
        summaries = _stage_summaries(r)
        summaries["wall_seconds_this_invocation"] = timings
        if r.ctx.is_main:
            export_bundle(r, args.out, _provenance(r, summaries))
        result = {"bundle": args.out, "timings": timings}
    else:  # pragma: no cover - argparse guards this
        raise SystemExit(f"unknown train command {cmd!r}")
    log.info("%s finished in %.1f s: %s", cmd, time.perf_counter() - t0, json.dumps(result, default=str)[:2000])
    from frieren.training.ddp import teardown
    teardown()
    return 0


def _stage_summaries(r: Run) -> dict:
    from frieren.training.loop import load_final
    out = {}
    for s in ("vae", "cavp", "cfm", "reflow", "distill"):
        fin = load_final(r.stage_dir(s))
        if fin is not None:
            out[s] = dict(fin["result"], stopped_early=bool(fin.get("stopped_early", False)))
    meta = r.stage_dir("reflow-data") / "meta.json"
    if meta.is_file():
        out["reflow-data"] = json.loads(meta.read_text())
    scale = r.stage_dir("vae") / "scale.json"
    if scale.is_file():
        out["latent_scale"] = json.loads(scale.read_text())
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="frieren train", description="train Frieren models from scratch")
    ap.add_argument("-v", "--verbose", action="store_true")
    add_arguments(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
