"""`frieren convert`: official checkpoint files -> one bundle (safetensors + config.json)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

from frieren import checkpoints as ck
from frieren.config import Preset

log = logging.getLogger(__name__)


def convert_official(preset: Preset, out_dir: Path, *, frieren_ckpt: Path,
                     cavp_ckpt: Optional[Path] = None, vae_ckpt: Optional[Path] = None,
                     vocoder_dir: Optional[Path] = None, allow_random_cavp: bool = False) -> Path:
    """Load every source strictly into a FrierenStack of ``preset`` and save it as a bundle.

    The VAE comes from ``frieren_ckpt`` (``first_stage_model.*``) unless that file has
    no VAE keys, in which case ``vae_ckpt`` is required. Without ``vocoder_dir`` the
    bundle uses Griffin-Lim. CAVP weights are required unless ``allow_random_cavp``
    (only for timing benchmarks); a bundle records which sources it came from.
    """
    from frieren.models.vocoder import vocoder_config_from_args
    from frieren.stack import FrierenStack

    sources = {}
    vocoder_args = None
    if vocoder_dir is not None:
        vocoder_args, vocoder_state, vocoder_file = ck.read_bigvgan_dir(vocoder_dir)
        preset = dataclasses.replace(preset, vocoder=vocoder_config_from_args(vocoder_args))
        sources["vocoder"] = vocoder_file
    else:
        preset = dataclasses.replace(preset, vocoder=None)
    stack = FrierenStack(preset)

    state = ck._state_dict_of(ck.read_torch_file(frieren_ckpt), frieren_ckpt)
    parts = ck.split_lightning_state_dict(state, str(frieren_ckpt))
    ck.load_frieren_state_dict(stack, state, str(frieren_ckpt), require_vae=vae_ckpt is None)
    sources["frieren"] = Path(frieren_ckpt)
    if vae_ckpt is not None:
        ck.load_vae_checkpoint(stack.vae, vae_ckpt)
        sources["vae"] = Path(vae_ckpt)
    elif not parts["vae"]:
        raise ck.CheckpointError(f"{frieren_ckpt}: holds no first_stage_model.* (VAE) keys; pass --vae-ckpt.")
    if cavp_ckpt is not None:
        ck.load_cavp_checkpoint(stack.cavp, cavp_ckpt)
        sources["cavp"] = Path(cavp_ckpt)
    elif not allow_random_cavp:
        raise ck.CheckpointError("no CAVP checkpoint given (--cavp-ckpt cavp_epoch66.ckpt from Diff-Foley); "
                                 "without it the video features are meaningless.")
    else:
        log.warning("CAVP left at random initialisation (--allow-random-cavp): for timing only")
    if vocoder_dir is not None:
        ck.load_strict(stack.vocoder, vocoder_state, str(sources["vocoder"]), "BigVGAN generator")

    provenance = {
        "converted_from": {k: {"path": str(p), "sha256": ck.sha256_file(p)} for k, p in sources.items()},
        "cavp_random": cavp_ckpt is None,
        "vocoder": "bigvgan" if vocoder_dir is not None else "griffin-lim",
    }
    if vocoder_args is not None:
        provenance["vocoder_args"] = {k: v for k, v in vocoder_args.items() if isinstance(v, (int, float, str, list))}
    return ck.save_bundle(stack, out_dir, provenance)
