"""Choosing the model a command runs: a bundle path, the embedded default, or (for
development and timing only) a preset at random initialisation."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from frieren.checkpoints import CheckpointError, load_bundle
from frieren.config import get_preset

log = logging.getLogger(__name__)

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "assets" / "default"


def default_bundle_available() -> bool:
    return (DEFAULT_BUNDLE / "config.json").is_file() and (DEFAULT_BUNDLE / "model.safetensors").is_file()


def load_model(bundle: Optional[str] = None, *, preset: Optional[str] = None, random_init: bool = False,
               device: str = "cpu", seed: int = 0):
    """Return (FrierenStack in eval mode on ``device``, BundleInfo or None).

    ``random_init`` builds ``preset`` (default 'tiny') with random weights: only for
    development and timing, and logged loudly. Otherwise ``bundle`` or the embedded
    default is loaded strictly.
    """
    from frieren.stack import FrierenStack

    if random_init:
        name = preset or "tiny"
        log.warning("using preset %r with RANDOM weights (--random-init): the audio is noise-like; "
                    "for timing and development only", name)
        torch.manual_seed(seed)
        stack = FrierenStack(get_preset(name)).eval().to(device)
        return stack, None
    if bundle is None:
        if not default_bundle_available():
            raise CheckpointError(f"no bundle given and the embedded default model is missing at {DEFAULT_BUNDLE}; "
                                  "pass --bundle PATH (see `frieren convert`) or reinstall the package")
        bundle = str(DEFAULT_BUNDLE)
    stack, info = load_bundle(bundle, device=device)
    if preset is not None and preset != info.preset.name:
        log.warning("--preset %s ignored: bundle %s is preset %s", preset, bundle, info.preset.name)
    return stack, info
