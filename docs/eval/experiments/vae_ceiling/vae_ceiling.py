"""How much of the struck material survives the VAE, and does more VAE training keep more?
(experiment code, not the product's)

The generator told the world's truth names the material at 0.864, about what the ground-truth mel
keeps through the VAE and Griffin-Lim (0.853), while Griffin-Lim of the mel itself keeps 0.921
(`docs/eval/table.md`). If the VAE is the ceiling, a VAE that keeps more lifts every model built on it.

    python vae_ceiling.py score BUNDLE [--vae CKPT] [--clips 64] [--json out.json]
    python vae_ceiling.py finetune BUNDLE CACHE [CACHE ...] --out vae_ft.pt --steps 6000 [--lr 3e-4]

``score``: the 'GT mel + VAE + vocoder' row of ``frieren eval`` (the same held-out clips, material
classifier and onset scoring), for the bundle's VAE or the VAE of a ``finetune`` checkpoint, plus the
held-out log-mel L1 of the VAE's reconstruction (posterior mode), overall and per 16-bin band.
``finetune``: goes on training the bundle's VAE (the recipe's objective: L1 on a posterior sample,
KL 1e-6) on the mel windows of clip caches, with a cosine learning rate from ``--lr`` to a tenth;
a resumable checkpoint every 250 steps (``OUT.ckpt``) and a copy of the VAE every ``--save-every``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

log = logging.getLogger("vae_ceiling")


def vae_config(preset, z_channels: int | None, width: int | None):
    """The preset's VAE config with another latent channel count and/or base width."""
    cfg = preset.vae
    if z_channels:
        cfg = dataclasses.replace(cfg, z_channels=z_channels, embed_dim=z_channels)
    if width:
        cfg = dataclasses.replace(cfg, ch=width)
    return cfg


def load_stack(bundle: str, vae_ckpt: str | None):
    from frieren.bundles import load_model
    from frieren.models.vae import MelVAE

    stack, info = load_model(bundle)
    if vae_ckpt:
        saved = torch.load(vae_ckpt, map_location="cpu", weights_only=False)
        cfg = vae_config(stack.preset, saved.get("z_channels"), saved.get("width"))
        if cfg != stack.preset.vae:
            stack.vae = MelVAE(cfg)
        stack.vae.load_state_dict(saved["vae"])
    stack.eval()
    return stack


def score(args) -> int:
    from frieren.audio import MelFrontend
    from frieren.eval.table import (CLASSIFIER_SEED_OFFSET, Scorer, reference_audio, render_clips,
                                    train_material_classifier)
    from frieren.pipeline import OfflineGenerator

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    stack = load_stack(args.bundle, args.vae)
    preset = stack.preset
    frontend = MelFrontend(preset.mel).eval()
    seeds = list(range(args.seed0, args.seed0 + args.clips))
    clf = list(range(args.seed0 + CLASSIFIER_SEED_OFFSET, args.seed0 + CLASSIFIER_SEED_OFFSET + args.classifier_clips))
    clips = render_clips(seeds, args.seconds, preset)
    classifier = train_material_classifier(clf, args.seconds, preset, frontend)
    scorer = Scorer(clips, preset, frontend, classifier, {})
    gen = OfflineGenerator(stack, "cpu")
    audios = [reference_audio(gen, m, through_vae=True) for m in scorer.gt_mels]
    row = scorer.score([np.pad(a[:len(c.audio)], (0, max(0, len(c.audio) - len(a)))) for a, c in zip(audios, clips)])
    # The VAE's own reconstruction error of the held-out mels (posterior mode), per 16-bin band.
    whole = 2 * preset.geometry.mel_per_latent
    errs = []
    with torch.no_grad():
        for m in scorer.gt_mels:
            x = m[None, :, :m.shape[-1] // whole * whole]
            errs.append((stack.decode(stack.encode_mel(x, sample=False)) - x).abs()[0].mean(-1))
    per_bin = torch.stack(errs).mean(0)
    out = {"bundle": args.bundle, "vae": args.vae, "clips": args.clips, "impacts": row["impacts"],
           "material_acc": row["material_acc"], "f1_45ms": row["f1_45ms"], "f1_125ms": row["f1_125ms"],
           "mel_l1_vs_gt_audio": row["mel_l1"], "vae_recon_l1": float(per_bin.mean()),
           "vae_recon_l1_per_16_bins": [round(float(b), 4) for b in per_bin.reshape(-1, 16).mean(1)],
           "material_confusion": row["material_confusion"], "wall_s": round(time.perf_counter() - t0, 1)}
    log.info("material %.3f  F1 +-45 %.3f  +-125 %.3f  VAE recon L1 %.4f  bands %s", out["material_acc"],
             out["f1_45ms"], out["f1_125ms"], out["vae_recon_l1"], out["vae_recon_l1_per_16_bins"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def load_mels(caches, mel_frames: int):
    """Every clip's log10 mel (n_mels, T) from clip caches (frames dropped to save memory)."""
    from tqdm import tqdm

    mels = []
    for cache in caches:
        for path in tqdm(sorted((Path(cache) / "clips").glob("*.pt")), desc=f"mels {cache}", unit="clip"):
            mel = torch.load(path, map_location="cpu", weights_only=True)["mel"]
            if mel.shape[-1] >= mel_frames:
                mels.append(mel.clone())
    return mels


def finetune(args) -> int:
    from tqdm import tqdm

    from frieren.training.atomic_io import atomic_torch_save
    from frieren.training.objectives import VAEObjective, kl_divergence

    torch.set_num_threads(args.threads)
    stack = load_stack(args.bundle, None)
    g = stack.preset.geometry
    t = g.frames_per_window * g.latents_per_frame * g.mel_per_latent
    mels = load_mels(args.caches, t)
    log.info("%d clips' mels, windows of %d mel frames", len(mels), t)
    vae = stack.vae.train()
    if args.from_scratch:                               # a fresh VAE, the recipe's schedule (warm-up 100 steps)
        from frieren.models.vae import MelVAE
        torch.manual_seed(args.seed)
        vae = MelVAE(vae_config(stack.preset, args.z_channels, args.width)).train()
        log.info("a fresh VAE: %s, %.2f M parameters", vae_config(stack.preset, args.z_channels, args.width),
                 sum(p.numel() for p in vae.parameters()) / 1e6)
    obj = VAEObjective(vae, kl_weight=1e-6, recon="l1")
    opt = torch.optim.Adam(vae.parameters(), args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    step, ckpt = 0, Path(args.out + ".ckpt")
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(saved["vae"]), opt.load_state_dict(saved["opt"]), gen.set_state(saved["rng"])
        step = saved["step"]
        log.info("resuming at step %d", step)
    bar = tqdm(total=args.steps, initial=step, desc="vae", unit="step")
    recent = []
    while step < args.steps:
        batch = []
        for _ in range(args.batch):
            m = mels[int(torch.randint(len(mels), (1,), generator=gen))]
            s = int(torch.randint(m.shape[-1] - t + 1, (1,), generator=gen)) // 2 * 2
            batch.append(m[:, s:s + t])
        warm = min(1.0, (step + 1) / 100) if args.from_scratch else 1.0
        for group in opt.param_groups:                          # cosine from lr to lr / 10
            group["lr"] = warm * args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        mel = torch.stack(batch)
        if args.loud_weight:                    # L1 weighted towards what stands above each window's median level
            post = vae.encode(mel)
            rec = vae.decode(post.mean + post.std * torch.randn(post.mean.shape, generator=gen))
            above = (mel - mel.flatten(1).median(1).values[:, None, None]).clamp_min(0)
            w = 1 + args.loud_weight * above
            diff = (rec - mel).abs()
            losses = {"loss": (w * diff).sum() / w.sum() + 1e-6 * kl_divergence(post.mean, post.logvar) / diff[0].numel(),
                      "recon": diff.mean().detach()}
        else:
            losses = obj(mel, gen)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        step += 1
        recent = (recent + [float(losses["recon"])])[-100:]
        bar.update(1)
        bar.set_postfix(recon=f"{sum(recent) / len(recent):.4f}")
        if step % 250 == 0 or step == args.steps:
            atomic_torch_save({"vae": vae.state_dict(), "opt": opt.state_dict(), "rng": gen.get_state(),
                               "step": step}, ckpt)
        if step % args.save_every == 0 or step == args.steps:
            atomic_torch_save({"vae": vae.state_dict(), "step": step, "lr": args.lr, "bundle": args.bundle,
                               "z_channels": args.z_channels, "width": args.width, "loud_weight": args.loud_weight},
                              f"{args.out[:-3] if args.out.endswith('.pt') else args.out}_{step}.pt")
    bar.close()
    atomic_torch_save({"vae": vae.state_dict(), "step": step, "lr": args.lr, "bundle": args.bundle,
                               "z_channels": args.z_channels, "width": args.width, "loud_weight": args.loud_weight}, args.out)
    log.info("wrote %s", args.out)
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("bundle")
    s.add_argument("--vae", help="a finetune checkpoint whose VAE replaces the bundle's")
    s.add_argument("--clips", type=int, default=64)
    s.add_argument("--classifier-clips", type=int, default=80)
    s.add_argument("--seconds", type=float, default=8.0)
    s.add_argument("--seed0", type=int, default=900000)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--json")
    f = sub.add_parser("finetune")
    f.add_argument("bundle")
    f.add_argument("caches", nargs="+")
    f.add_argument("--out", required=True)
    f.add_argument("--steps", type=int, default=6000)
    f.add_argument("--batch", type=int, default=16)
    f.add_argument("--lr", type=float, default=3e-4)
    f.add_argument("--save-every", type=int, default=2000)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--loud-weight", type=float, default=0.0,
                   help="weigh each mel bin's L1 by 1 + A x its level above the window's median (log10 units)")
    f.add_argument("--from-scratch", action="store_true", help="train a fresh VAE instead of the bundle's")
    f.add_argument("--z-channels", type=int, help="with --from-scratch: latent channels (the preset's: 16)")
    f.add_argument("--width", type=int, help="with --from-scratch: the VAE's base width (the preset's: 64)")
    args = ap.parse_args(argv)
    return score(args) if args.cmd == "score" else finetune(args)


if __name__ == "__main__":
    sys.exit(main())
