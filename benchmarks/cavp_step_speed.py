"""Time one CAVP training step of the tiny preset in each memory layout and input form.

The recipe's CAVP stage (contrastive + event head, 4 onset slots, 20 flux bands; optionally the
material head) on random frames and mels: forward, backward and an AdamW step, for

* layout ``default`` (contiguous NCDHW weights) or ``channels_last`` (``--cavp-channels-last``);
* input ``float`` (frames converted to float on the host, then moved) or ``uint8`` (moved as
  uint8 and converted on the device, what ``stage_cavp`` now does);
* ``--depths``: the video branch's ResNet depth (``frieren train --cavp-depth``; default the
  preset's, 50 for tiny);
* ``--precisions``: ``fp32`` or ``bf16`` (the forward pass under bfloat16 autocast, ``frieren train
  --bf16 cavp``; native only on CPUs with AVX512_BF16 or AMX).

Timings are noisy on shared machines: compare the variants of one run as ratios; each variant
is timed in ``--rounds`` interleaved rounds and its median reported.

    python benchmarks/cavp_step_speed.py                         # CPU, batch 16, 1 thread
    python benchmarks/cavp_step_speed.py --device cuda --batch 64 --out cavp_speed.json
    python benchmarks/cavp_step_speed.py --subframes 4 --inputs uint8 --layouts channels_last --depths 50,26,14
    python benchmarks/cavp_step_speed.py --subframes 4 --material --inputs uint8 --layouts channels_last --precisions fp32,bf16
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path

import torch

from frieren.config import Preset, get_preset, with_subframes
from frieren.machine import machine_description
from frieren.models.cavp import CAVPVideoEncoder
from frieren.synth import SceneConfig
from frieren.training.precision import autocast, cpu_has_bf16
from frieren.training.cavp_audio import MelAudioEncoder
from frieren.training.objectives import CAVPObjective

log = logging.getLogger("cavp_step_speed")
MATERIALS = len(SceneConfig().materials)


def mel_per_frame(p: Preset) -> int:
    g = p.geometry
    return g.latents_per_frame * g.mel_per_latent


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def build(p: Preset, layout: str, material: bool, dev: torch.device) -> tuple:
    """A seeded CAVP objective on ``dev`` in ``layout`` and its AdamW optimiser."""
    torch.manual_seed(0)
    obj = CAVPObjective(CAVPVideoEncoder(p.cavp),
                        MelAudioEncoder(p.mel.n_mels, p.cavp.embed_dim, mel_per_frame(p)),
                        segments=8, event_weight=1.0, event_slots=4, event_flux_bands=20,
                        material_weight=1.0 if material else 0.0, materials=MATERIALS if material else 0).train()
    if layout == "channels_last":
        obj.video.to(memory_format=torch.channels_last_3d)
    obj.to(dev)
    return obj, torch.optim.AdamW(obj.parameters(), lr=1e-4)


def host_batch(p: Preset, batch: int, frames: int, material: bool, gen: torch.Generator) -> tuple:
    """Random uint8 frames (B, F, 3K, S, S), mels (B, n_mels, F * mel_per_frame), materials (B, F)."""
    s = p.cavp.image_size
    out = (torch.randint(0, 256, (batch, frames, p.cavp.in_channels, s, s), generator=gen, dtype=torch.uint8),
           torch.randn(batch, p.mel.n_mels, frames * mel_per_frame(p), generator=gen))
    if material:
        out += (torch.randint(-1, MATERIALS, (batch, frames), generator=gen),)
    return out


def to_device(batch: tuple, form: str, dev: torch.device) -> tuple:
    """Move a host batch to ``dev``: frames as float (converted first) or as uint8."""
    frames = batch[0].float() / 255.0 if form == "float" else batch[0]
    return (frames.to(dev),) + tuple(t.to(dev) for t in batch[1:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=16, help="windows per step (CPU recipe 16, GPU runs 64)")
    ap.add_argument("--frames", type=int, help="frames per window (default: the preset's)")
    ap.add_argument("--subframes", type=int, default=1,
                    help="camera snapshots per visual frame (the stem's 3K input channels; `frieren train --subframes`)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--material", action="store_true", help="with the material head (synthetic labels)")
    ap.add_argument("--layouts", default="default,channels_last")
    ap.add_argument("--inputs", default="float,uint8")
    ap.add_argument("--depths", help="comma-separated CAVP ResNet depths (default: the preset's)")
    ap.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16 (autocast)")
    ap.add_argument("--out", help="JSON file for the results")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here; run on the CPU (--device cpu)")
    preset = with_subframes(get_preset(a.preset), a.subframes)
    a.frames = a.frames or preset.geometry.frames_per_window
    gen = torch.Generator().manual_seed(0)
    batches = [host_batch(preset, a.batch, a.frames, a.material, gen) for _ in range(2)]
    depths = [int(d) for d in a.depths.split(",")] if a.depths else [preset.cavp.depth]
    precisions = a.precisions.split(",")
    if set(precisions) - {"fp32", "bf16"}:
        raise SystemExit(f"--precisions: fp32 and/or bf16, got {a.precisions!r}")
    variants = [(d, lay, form, prec) for d in depths for lay in a.layouts.split(",") for form in a.inputs.split(",")
                for prec in precisions]
    models = {(d, lay): build(dataclasses.replace(preset, cavp=dataclasses.replace(preset.cavp, depth=d)),
                              lay, a.material, dev)
              for d in depths for lay in a.layouts.split(",")}
    times = {v: [] for v in variants}
    for r in range(a.rounds + 1):               # round 0 is the warm-up
        for d, lay, form, prec in variants:
            obj, opt = models[(d, lay)]
            n = a.warmup if r == 0 else a.steps
            _sync(dev)
            t0 = time.perf_counter()
            for i in range(n):
                with autocast(prec == "bf16", dev):
                    out = obj(to_device(batches[i % 2], form, dev))
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
            _sync(dev)
            if r:
                times[(d, lay, form, prec)].append((time.perf_counter() - t0) / n * 1e3)
    base = statistics.median(times[variants[0]])
    rows = []
    for v in variants:
        ms = statistics.median(times[v])
        video_params = sum(p.numel() for p in models[v[:2]][0].video.parameters())
        rows.append({"depth": v[0], "layout": v[1], "input": v[2], "precision": v[3], "video_params": video_params,
                     "ms_per_step": round(ms, 2), "speedup_vs_first": round(base / ms, 3),
                     "rounds_ms": [round(t, 2) for t in times[v]]})
        log.info("depth %-3d %-14s %-6s %-5s %8.1f ms/step  x%.2f", v[0], v[1], v[2], v[3], ms, base / ms)
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "torch": torch.__version__, "batch": a.batch, "frames": a.frames, "subframes": a.subframes,
              "threads": a.threads, "cpu_native_bf16": cpu_has_bf16(),
              "material_head": a.material, "environment": machine_description(), "rows": rows}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
