"""Build official-layout checkpoint files from the reduced reference weights.

The layout (prefixes, nesting, file names) is the one users download; the weights
are the reduced random ones from the reference folder. The preset JSON is derived
from the reference JSON configs, never from copied numbers.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import yaml

from conftest import load_json, load_tensors
from frieren.config import (CAVPConfig, CondConfig, EstimatorConfig, MelConfig, Preset, VAEConfig,
                            VocoderConfig, config_from_dict, config_to_dict)


def reduced_preset(ref: Path, image_size: int = 64) -> Preset:
    est = load_json(ref / "01_vf_estimator" / "reduced_config.json")["reduced_config"]
    vae = load_json(ref / "03_vae" / "reduced_config.json")["reduced_config"]
    cond = load_json(ref / "02_cond_encoder" / "config.json")["config"]
    cavp_json = load_json(ref / "07_cavp" / "reduced_config.json")["reduced_config"]
    voc = load_json(ref / "05_bigvgan" / "reduced_config.json")["reduced_config_generator_fields"]
    mel = load_json(ref / "06_mel_frontend" / "config.json")["hparams"]
    base = int(re.search(r"base_channels=(\d+)", cavp_json["backbone"]).group(1))
    depth = int(re.search(r"depth=(\d+)", cavp_json["backbone"]).group(1))
    embed = int(re.search(r"Linear\(\d+,\s*(\d+)\)", cavp_json["video_project_head"]).group(1))
    return Preset(
        name="reduced-reference",
        mel=MelConfig.from_reference_hparams(mel),
        vae=VAEConfig.from_reference(vae),
        estimator=config_from_dict(EstimatorConfig, est),
        cond=CondConfig(origin_dim=cond["origin_dim"], embed_dim=cond["embed_dim"]),
        cavp=CAVPConfig(depth=depth, base_channels=base, embed_dim=embed, image_size=image_size),
        vocoder=config_from_dict(VocoderConfig, voc),
    )


def write_official_files(ref: Path, out: Path) -> dict:
    """Write frieren.ckpt, cavp.ckpt, vocoder/{best_netG.pt,args.yml}, preset.json under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    lightning = load_tensors(ref / "04_cfm_sampler" / "lightning_state_dict_reduced.safetensors")
    torch.save({"state_dict": lightning, "epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.4.2"},
               out / "frieren.ckpt")
    cavp = load_tensors(ref / "07_cavp" / "weights_reduced.safetensors")
    cavp_sd = {"module." + k: v for k, v in cavp.items()}
    cavp_sd["module.logit_scale"] = torch.tensor(2.6)
    cavp_sd["module.spec_encoder.fc1.weight"] = torch.zeros(4, 4)  # the unused audio branch
    torch.save({"state_dict": cavp_sd, "epoch": 66}, out / "cavp.ckpt")
    voc_dir = out / "vocoder"
    voc_dir.mkdir(exist_ok=True)
    torch.save({"generator": load_tensors(ref / "05_bigvgan" / "weights_reduced.safetensors"), "steps": 1},
               voc_dir / "best_netG.pt")
    args = dict(load_json(ref / "05_bigvgan" / "reduced_config.json")["reduced_config_generator_fields"])
    args.update({"sampling_rate": 16000, "segment_size": 8192, "learning_rate": 1e-4, "num_gpus": 1})
    (voc_dir / "args.yml").write_text(yaml.safe_dump(args))
    preset = reduced_preset(ref)
    (out / "preset.json").write_text(json.dumps({"preset": config_to_dict(preset)}))
    return {"frieren": out / "frieren.ckpt", "cavp": out / "cavp.ckpt", "vocoder": voc_dir,
            "preset": out / "preset.json"}
