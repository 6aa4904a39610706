"""The end of a training run: the bundle from the finished stages, and its provenance record."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from frieren.training.hparams import current_hparams
from frieren.training.run import Run, sub_state

log = logging.getLogger("frieren.train")

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
    stack.estimator.load_state_dict(sub_state(state, "estimator."))
    stack.cond.load_state_dict(sub_state(state, "cond."))
    stack.eval()
    path = save_bundle(stack, out, provenance)
    size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    log.info("bundle written to %s (%.1f MB)", out, size / 1e6)
    return path


def provenance_record(run: Run, results: dict) -> dict:
    """What the bundle's ``config.json`` records about how it was trained (command, args, data, stages)."""
    import platform
    argv = list(sys.argv)
    if argv and argv[0].endswith(("train_cli.py", "train_cli")):
        argv[0:1] = ["python", "-m", "frieren.train_cli"]
    cmd = " ".join(shlex.quote(x) for x in argv)
    return {
        "trained_by": "frieren.train_cli", "command": cmd, "script": os.environ.get("FRIEREN_TRAIN_SCRIPT"), "args": {k: v for k, v in vars(run.args).items()
                                                                     if isinstance(v, (int, float, str, bool, type(None)))},
        "data": run.data_record(), "seed": run.args.seed, "stages": results,
        "hparams": {k: dataclasses.asdict(v) for k, v in current_hparams(run.args).items()},
        "torch": torch.__version__, "python": platform.python_version(),
        # torch's vector kernels in the process that trained the later stages: weights repeat bit for bit
        # only with the same kernels (scripts/train_default.sh sets them for the stages after the CAVP)
        "cpu_kernels": {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                        **{k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}},
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "notes": "tiny preset trained from scratch on the synthetic Foley world; one-step distilled, "
                 "use CFG 4.5 and 1 Euler step; vocoder Griffin-Lim",
    }


def stage_summaries(r: Run) -> dict:
    """The results of the finished stages of ``r``, the teacher-pair settings and the latent scale."""
    from frieren.training.loop import load_final
    out = {}
    for s in ("vae", "cavp", "cfm", "reflow", "distill"):
        fin = load_final(r.stage_dir(s))
        if fin is not None:
            out[s] = dict(fin["result"], stopped_early=bool(fin.get("stopped_early", False)))
    meta = r.stage_dir("reflow-data") / "meta.json"
    if meta.is_file():
        out["reflow-data"] = json.loads(meta.read_text())
    presence = r.stage_dir("cavp") / "presence_threshold.json"
    if presence.is_file():  # --presence-channel: the threshold and the validation clips it was chosen on
        out["presence_threshold"] = json.loads(presence.read_text())
    for name in ("presence_edge_threshold", "presence_edge_window_threshold"):   # --presence-edge-steps
        edge = r.stage_dir("cavp") / f"{name}.json"
        if edge.is_file() and r.preset.cavp.presence_edge:
            out[name] = json.loads(edge.read_text())
    material = r.stage_dir("cavp") / "presence_detector_material.pt"
    if material.is_file() and r.preset.cavp.material_channel:     # --material-channel-steps
        info = torch.load(material, map_location="cpu", weights_only=True)["info"]
        out["material_detector"] = {k: float(v) for k, v in info.items()}
    scale = r.stage_dir("vae") / "scale.json"
    if scale.is_file():
        out["latent_scale"] = json.loads(scale.read_text())
    return out
