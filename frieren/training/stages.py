"""The training stages of the recipe: VAE, CAVP, base CFM, teacher pairs, reflow and distillation.

Each stage writes ``<run-dir>/<stage>/{ckpt.pt,final.pt,log.jsonl}`` through the generic
:class:`frieren.training.loop.Trainer`, resumes an interrupted run and skips a finished one.
Every flow stage starts from the previous stage's estimator *and* condition encoder
(FRIEREN_SPEC §10.1 fix, see :meth:`frieren.training.run.Run.flow_modules`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Optional

import torch

from frieren.training.atomic_io import atomic_torch_save
from frieren.training.hparams import StageHParams
from frieren.training.run import Run, sub_state

log = logging.getLogger("frieren.train")


def _idx(gen: torch.Generator, n: int, b: int) -> torch.Tensor:
    return torch.randint(0, n, (b,), generator=gen)


def finished_stage(run: Run, stage: str, steps: Optional[int] = None) -> Optional[dict]:
    """The result record of ``stage`` if it already finished in the run dir (None to train it);
    refuses a finished stage of another step count (another recipe's weights)."""
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

    done = finished_stage(run, "vae", hp.steps)
    w = run.windows()
    if done is None and getattr(run.args, "vae_from", None):
        done = adopt_bundle_vae(run, run.args.vae_from)
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
        vae.load_state_dict(sub_state(run.final("vae")["state"], "vae."))
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


def adopt_bundle_vae(run: Run, bundle: os.PathLike) -> dict:
    """Finish the VAE stage with the VAE of ``bundle`` (``--vae-from``): writes the stage's
    ``final.pt`` as training would, with a result that names the bundle (steps None, so a rerun
    with other ``--vae-steps`` still skips it). Refuses a bundle whose VAE has another shape."""
    from frieren.checkpoints import CheckpointError, load_bundle
    from frieren.training.loop import FINAL_FILE

    try:
        stack, info = load_bundle(bundle)
    except (CheckpointError, OSError) as error:
        raise SystemExit(f"--vae-from {bundle}: {error}") from error
    if info.preset.vae != run.preset.vae:
        raise SystemExit(f"--vae-from {bundle}: its VAE ({info.preset.vae}) is not the {run.preset.name!r} "
                         f"preset's ({run.preset.vae}); pass a bundle of the same preset or train the VAE")
    trained = (info.provenance or {}).get("stages", {}).get("vae", {})
    result = {"name": "vae", "steps": None, "adopted_from": str(bundle),
              "source_steps": trained.get("steps"), "losses": trained.get("losses", {})}
    state = {f"vae.{k}": v.detach().clone() for k, v in stack.vae.state_dict().items()}
    if run.ctx.is_main:
        run.stage_dir("vae").mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"state": state, "result": result, "stopped_early": False}, run.stage_dir("vae") / FINAL_FILE)
    log.info("VAE adopted from bundle %s (trained %s steps there)", bundle, trained.get("steps", "?"))
    return result


def adopt_bundle_cavp(run: Run, bundle: os.PathLike) -> dict:
    """Finish the CAVP stage with the CAVP video branch of ``bundle`` (``--cavp-from``): writes the
    stage's ``final.pt`` with the ``video.*`` weights (and the bundle's frame presence head, if it
    has one) as training would, with a result that names the bundle (steps None). Everything
    after the CAVP stage reads only these. A bundle's presence detector network and slot head are
    not adopted: this run fits its own. Refuses a bundle whose video branch has another shape."""
    import dataclasses

    from frieren.checkpoints import CheckpointError, load_bundle
    from frieren.training.loop import FINAL_FILE

    try:
        stack, info = load_bundle(bundle)
    except (CheckpointError, OSError) as error:
        raise SystemExit(f"--cavp-from {bundle}: {error}") from error

    def branch(cfg):  # the video branch's shape, whatever the presence channel says
        return dataclasses.replace(cfg, presence_channel=False, presence_slots=1, presence_detector=False,
                                   presence_edge=False, material_channel=0)

    if branch(info.preset.cavp) != branch(run.preset.cavp):
        raise SystemExit(f"--cavp-from {bundle}: its CAVP video branch ({branch(info.preset.cavp)}) is not this "
                         f"run's ({branch(run.preset.cavp)}; preset {run.preset.name!r}, --subframes, --cavp-depth); "
                         f"pass a bundle of the same shape or train the CAVP")
    own = info.preset.cavp
    state = {}
    for key, value in stack.cavp.state_dict().items():
        if key.startswith(("presence_net.", "presence_threshold", "presence_edge_")):
            continue
        if key.startswith("presence_head."):
            if own.presence_slots == 1:  # a frame head, as the CAVP stage trains it
                state[key] = value.detach().clone()
            continue
        state[f"video.{key}"] = value.detach().clone()
    trained = (info.provenance or {}).get("stages", {}).get("cavp", {})
    result = {"name": "cavp", "steps": None, "adopted_from": str(bundle),
              "source_steps": trained.get("steps"), "losses": trained.get("losses", {})}
    if run.ctx.is_main:
        run.stage_dir("cavp").mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"state": state, "result": result, "stopped_early": False}, run.stage_dir("cavp") / FINAL_FILE)
    log.info("CAVP video branch adopted from bundle %s (trained %s steps there)", bundle, trained.get("steps", "?"))
    return result


def stage_cavp(run: Run, hp: StageHParams) -> dict:
    from frieren.models.cavp import CAVPVideoEncoder
    from frieren.training.cavp_audio import MelAudioEncoder
    from frieren.training.augment import FrameAugment
    from frieren.training.objectives import CAVPObjective
    from frieren.synth import SceneConfig

    done = finished_stage(run, "cavp", hp.steps)
    if done is None and getattr(run.args, "cavp_from", None):
        done = adopt_bundle_cavp(run, run.args.cavp_from)
    if done is not None:
        return done
    w = run.windows()
    material_weight = getattr(run.args, "cavp_material_weight", 0.0)
    presence_weight = getattr(run.args, "cavp_presence_weight", 0.0)
    labelled = material_weight > 0 or presence_weight > 0
    if labelled and not w.has_frame_material():
        raise SystemExit("--cavp-material-weight and --cavp-presence-weight need per-frame material labels, "
                         "which only synthetic clips "
                         f"carry (and only caches built since they were added): train on --synthetic data, "
                         f"or delete {run.dir / 'cache' / 'clips'} to rebuild the clip cache")
    torch.manual_seed(run.args.seed + 2)
    p = run.preset
    # The stage trains the video branch and its heads; a --presence-channel run's CAVP takes its
    # presence head from this objective's (Run.trained_cavp).
    obj = CAVPObjective(CAVPVideoEncoder(dataclasses.replace(p.cavp, presence_channel=False)),
                        MelAudioEncoder(p.mel.n_mels, p.cavp.embed_dim, w.mel_per_frame),
                        segments=8, event_weight=getattr(run.args, "cavp_event_weight", 0.0),
                        event_slots=getattr(run.args, "cavp_event_slots", 1),
                        event_flux_bands=getattr(run.args, "cavp_event_flux_bands", 0),
                        impact_weight=getattr(run.args, "cavp_impact_weight", 0.0),
                        timbre_weight=getattr(run.args, "cavp_timbre_weight", 0.0),
                        material_weight=material_weight, materials=len(SceneConfig().materials),
                        material_offset=getattr(run.args, "cavp_material_offset", 0),
                        onset_weight=getattr(run.args, "cavp_onset_weight", 0.0),
                        onset_log=getattr(run.args, "cavp_onset_log", False),
                        event_offset=getattr(run.args, "cavp_event_offset", 0),
                        presence_weight=presence_weight)
    if getattr(run.args, "cavp_channels_last", False):
        # Same maths, another memory layout: mkldnn's channels-last 3-D convolutions.
        obj.video.to(memory_format=torch.channels_last_3d)
    # Every FrameAugment field has its --cavp-<field> flag; a run without one leaves it off.
    augment = FrameAugment(**{f.name: getattr(run.args, f"cavp_{f.name}", 0) for f in dataclasses.fields(FrameAugment)})
    if augment.active:
        log.info("CAVP training windows augmented: %s", augment)
    b = run.ctx.shard(hp.batch_size)
    n = len(w.windows)

    def batches(step, gen):
        # uint8 frames: the objective converts them on the training device (a quarter of the
        # bytes to move to a GPU; on the CPU the same numbers as converting here).
        idx = _idx(gen, n, b)
        frames = w.frames_uint8(idx)
        if augment.active:
            frames = augment(frames, gen)
        if labelled:
            return frames, w.mel(idx), w.frame_material(idx)
        return frames, w.mel(idx)
    return _train(run, "cavp", obj, batches, hp)


def _onset_windows(run: Run, lat):
    """The clip cache's windows, whose ground-truth mels an onset weight is computed from; they
    must be the windows the latent cache indexes (the flow stages' clips)."""
    w = run.windows("flow")
    if not torch.equal(w.windows, lat.windows):
        raise RuntimeError("the latent cache's windows differ from the clip cache's; delete the run's cache/latents")
    return w


def stage_cfm(run: Run, hp: StageHParams) -> dict:
    from frieren.training.objectives import CFMObjective, latent_onset_weight

    done = finished_stage(run, "cfm", hp.steps)
    if done is not None:
        return done
    lat = run.latents()
    est, cond = run.flow_modules(None)
    obj = CFMObjective(est, cond, drop_prob=0.2, weight_floor=run.args.weight_floor)
    b = run.ctx.shard(hp.batch_size)
    n = len(lat)

    onset_weight = getattr(run.args, "cfm_onset_weight", 0.0)
    w = _onset_windows(run, lat) if onset_weight > 0 else None
    mel_per_latent = run.preset.geometry.mel_per_latent

    def batches(step, gen):
        idx = _idx(gen, n, b)
        batch = {"feats": lat.window_feats(idx), "x1": lat.latents(idx, gen)}
        if w is not None:
            batch["position_weight"] = latent_onset_weight(w.mel(idx), mel_per_latent, onset_weight)
        return batch
    return _train(run, "cfm", obj, batches, hp)


def stage_reflow_data(run: Run) -> dict:
    """Teacher pairs in chunks ``reflow_data/pairs_NNNN.pt`` (resumable; ranks share chunks)."""
    from frieren.training.data import state_fingerprint
    from frieren.training.ddp import barrier
    from frieren.training.loop import step_generator
    from frieren.training.objectives import generate_reflow_pairs
    from frieren.training.precision import autocast

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
    if "pairs" in run.bf16_parts:      # recorded only when on: a float32 run's pairs keep their settings
        settings["bf16"] = True
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
        with autocast("pairs" in run.bf16_parts, run.ctx.device):
            x1 = generate_reflow_pairs(est, cond, feats, x0.to(run.ctx.device), steps=a.teacher_steps,
                                       cfg_scale=a.cfg_scale).float().cpu()
        atomic_torch_save({"idx": idx, "x0": x0, "x1": x1}, path)
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


def pair_stage(run: Run, stage: str, init_from: str, hp: StageHParams) -> dict:
    """Reflow or distillation (``stage``) on the teacher pairs, from the ``init_from`` stage's weights."""
    from frieren.training.objectives import DistillObjective, ReflowObjective, latent_onset_weight

    done = finished_stage(run, stage, hp.steps)
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
    onset_weight = getattr(run.args, f"{stage}_onset_weight", 0.0)
    w = _onset_windows(run, lat) if onset_weight > 0 else None
    mel_per_latent = run.preset.geometry.mel_per_latent

    def batches(step, gen):
        i = _idx(gen, n, b)
        windows = pairs["idx"][i]
        batch = {"feats": lat.window_feats(windows), "x0": pairs["x0"][i], "x1": pairs["x1"][i]}
        if w is not None:
            # The ground truth of the pair's window says where sounds start; the teacher's sample
            # stays the target.
            batch["position_weight"] = latent_onset_weight(w.mel(windows), mel_per_latent, onset_weight)
        return batch
    return _train(run, stage, obj, batches, hp)
