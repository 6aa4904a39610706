"""Loading the official checkpoint formats, and the project's own bundle format.

Official files (FRIEREN_SPEC §8), as users download them:
  * Frieren Lightning ``.ckpt``: ``state_dict`` with prefixes ``model.diffusion_model.``
    (estimator), ``cond_stage_model.`` (condition encoder) and ``first_stage_model.``
    (VAE), plus unused DDPM schedule buffers, ignored by name.
  * MAA2 VAE ``.ckpt``: bare ``encoder.* decoder.* quant_conv.* post_quant_conv.*``
    (plus training-only ``loss.*``, ignored).
  * Diff-Foley CAVP ``.ckpt``: ``video_encoder.* video_project_head.*`` (maybe under
    ``module.``), plus the unused audio branch ``spec_encoder.*`` and ``logit_scale``.
  * BigVGAN directory: ``best_netG.pt`` (``['generator']``) and ``args.yml``.

Bundle (what every command loads): a directory with ``model.safetensors`` (keys
prefixed by the FrierenStack submodule names) and ``config.json`` (preset,
provenance, sha256 of the sources). Every load is strict: a missing, truncated or
mismatched file raises :class:`CheckpointError` naming the file, the missing and
unexpected keys and the shape mismatches. Nothing loads silently at random init.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from frieren.config import Preset, config_from_dict, config_to_dict

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "frieren-bundle/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

DDPM_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
    "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
})
LIGHTNING_PREFIXES = {
    "model.diffusion_model.": "estimator",
    "cond_stage_model.": "cond",
    "first_stage_model.": "vae",
}
# Lightning bookkeeping that may sit next to the weights and carries no model weights.
_IGNORED_LIGHTNING_KEYS = ("model_ema.", "logvar", "lvlb_weights", "zero_embed", "scale_factor")


class CheckpointError(RuntimeError):
    """A checkpoint or bundle could not be loaded; the message says what and how to fix it."""


@dataclass(frozen=True)
class KeyReport:
    """Differences between a state dict and a module."""
    missing: Tuple[str, ...] = ()
    unexpected: Tuple[str, ...] = ()
    mismatched: Tuple[Tuple[str, Tuple[int, ...], Tuple[int, ...]], ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 12) -> str:
        parts = []
        for label, items in (("missing keys", self.missing), ("unexpected keys", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
                parts.append(f"{label}: {shown}")
        if self.mismatched:
            shown = ", ".join(f"{k} (file {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched[:limit])
            parts.append(f"shape mismatches: {shown}")
        return "; ".join(parts)


def compare_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor]) -> KeyReport:
    expected = module.state_dict()
    missing = tuple(sorted(k for k in expected if k not in state))
    unexpected = tuple(sorted(k for k in state if k not in expected))
    mismatched = tuple(sorted((k, tuple(state[k].shape), tuple(expected[k].shape))
                              for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)))
    return KeyReport(missing, unexpected, mismatched)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, what: str) -> None:
    """Load ``state`` into ``module`` or raise CheckpointError naming every difference."""
    report = compare_state_dict(module, state)
    if not report.ok:
        raise CheckpointError(f"{source}: the {what} weights do not match the model ({report.describe()}). "
                              "Check that the file is the right checkpoint for this preset and is complete.")
    module.load_state_dict(dict(state), strict=True)


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_torch_file(path: os.PathLike) -> dict:
    """torch.load with clear errors. Tries weights_only first; Lightning files may need pickle."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found. Download it from the authors' page (see README) "
                              "and pass its path.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty (interrupted download?). Download it again.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:  # noqa: BLE001 - we retry and then report both
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
            log.warning("%s holds pickled Python objects besides tensors; loaded it with weights_only=False "
                        "because you chose this file", path)
            return obj
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(error).__name__}: "
                                  f"{error}); the file is probably truncated or not a checkpoint. "
                                  "Download it again and compare its sha256.") from safe_error


def _state_dict_of(obj: object, path: os.PathLike) -> Dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (or a dict with 'state_dict').")
    return dict(obj)


def split_lightning_state_dict(state: Mapping[str, torch.Tensor], source: str) -> Dict[str, Dict[str, torch.Tensor]]:
    """Split a Frieren Lightning state dict into {'estimator','cond','vae'} parts.

    DDPM buffers and Lightning bookkeeping are ignored by name; any other key is an error.
    """
    parts: Dict[str, Dict[str, torch.Tensor]] = {name: {} for name in LIGHTNING_PREFIXES.values()}
    unknown: List[str] = []
    for key, value in state.items():
        for prefix, part in LIGHTNING_PREFIXES.items():
            if key.startswith(prefix):
                parts[part][key[len(prefix):]] = value
                break
        else:
            if key in DDPM_BUFFERS or key.startswith(_IGNORED_LIGHTNING_KEYS):
                continue
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: unexpected keys outside the Frieren prefixes: {sorted(unknown)[:12]}")
    return parts


def load_frieren_lightning(stack: nn.Module, path: os.PathLike, *, require_vae: bool = True) -> None:
    """Load a Frieren Lightning checkpoint into ``stack.estimator/cond/vae``."""
    state = _state_dict_of(read_torch_file(path), path)
    load_frieren_state_dict(stack, state, str(path), require_vae=require_vae)


def load_frieren_state_dict(stack: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                            *, require_vae: bool = True) -> None:
    parts = split_lightning_state_dict(state, source)
    if not parts["estimator"]:
        raise CheckpointError(f"{source}: no 'model.diffusion_model.*' keys; this is not a Frieren CFM checkpoint.")
    load_strict(stack.estimator, parts["estimator"], source, "vector-field estimator (model.diffusion_model.*)")
    load_strict(stack.cond, parts["cond"], source, "condition encoder (cond_stage_model.*)")
    if parts["vae"] or require_vae:
        load_strict(stack.vae, parts["vae"], source, "VAE (first_stage_model.*)")


def load_vae_checkpoint(vae: nn.Module, path: os.PathLike) -> None:
    """MAA2 VAE checkpoint: bare keys; training-only ``loss.*`` keys are ignored."""
    state = _state_dict_of(read_torch_file(path), path)
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}
    load_strict(vae, state, str(path), "VAE")


def cavp_video_state(state: Mapping[str, torch.Tensor], source: str) -> Dict[str, torch.Tensor]:
    """Strip ``module.`` and keep the video branch of a Diff-Foley CAVP state dict."""
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(("video_encoder.", "video_project_head.")):
            out[key] = value
    if not out:
        raise CheckpointError(f"{source}: no 'video_encoder.*' keys; this is not a Diff-Foley CAVP checkpoint.")
    return out


def load_cavp_checkpoint(cavp: nn.Module, path: os.PathLike) -> None:
    state = _state_dict_of(read_torch_file(path), path)
    load_strict(cavp, cavp_video_state(state, str(path)), str(path), "CAVP video branch")


def read_bigvgan_dir(path: os.PathLike) -> Tuple[dict, Dict[str, torch.Tensor], Path]:
    """(args.yml dict, generator state dict, path of best_netG.pt) of a BigVGAN directory."""
    import yaml

    path = Path(path)
    ckpt = path / "best_netG.pt" if path.is_dir() else path
    args_path = ckpt.parent / "args.yml"
    if not args_path.is_file():
        raise CheckpointError(f"{args_path}: missing. The BigVGAN folder must hold best_netG.pt and args.yml.")
    with open(args_path) as fh:
        args = yaml.safe_load(fh) or {}
    obj = read_torch_file(ckpt)
    if not isinstance(obj, Mapping) or "generator" not in obj:
        raise CheckpointError(f"{ckpt}: no 'generator' entry; expected BigVGAN's best_netG.pt.")
    return args, dict(obj["generator"]), ckpt


# --- bundles ------------------------------------------------------------------------

@dataclass(frozen=True)
class BundleInfo:
    path: Path
    preset: Preset
    provenance: dict = field(default_factory=dict)


def save_bundle(stack: nn.Module, out_dir: os.PathLike, provenance: Optional[dict] = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` atomically (temp files, then rename)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in stack.state_dict().items()}
    weights = out / WEIGHTS_FILE
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
    os.close(fd)
    save_file(state, tmp, metadata={"format": BUNDLE_FORMAT})
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; a bundle is meant to be shared and shipped
    os.replace(tmp, weights)
    config = {
        "format": BUNDLE_FORMAT,
        "preset": config_to_dict(stack.preset),
        "weights_sha256": sha256_file(weights),
        "provenance": provenance or {},
    }
    tmp_cfg = out / (CONFIG_FILE + ".tmp")
    tmp_cfg.write_text(json.dumps(config, indent=2))
    os.replace(tmp_cfg, out / CONFIG_FILE)
    return out


def read_bundle_info(path: os.PathLike) -> BundleInfo:
    path = Path(path)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{path}: not a bundle (no {CONFIG_FILE}). Make one with `frieren convert`.")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({error}); the bundle is damaged.") from error
    if config.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{cfg_path}: unknown bundle format {config.get('format')!r} (expected {BUNDLE_FORMAT}).")
    preset = config_from_dict(Preset, config["preset"])
    return BundleInfo(path=path, preset=preset, provenance=config.get("provenance", {}))


def load_bundle(path: os.PathLike, device: str = "cpu", verify_sha256: bool = False):
    """Build a FrierenStack from a bundle directory, strictly. Returns (stack, BundleInfo)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from frieren.stack import FrierenStack

    info = read_bundle_info(path)
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing; the bundle is incomplete.")
    if verify_sha256:
        expected = json.loads((Path(path) / CONFIG_FILE).read_text()).get("weights_sha256")
        actual = sha256_file(weights)
        if expected and expected != actual:
            raise CheckpointError(f"{weights}: sha256 {actual} differs from config.json's {expected}; re-convert.")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights}: cannot be read ({error}); the file is truncated or damaged.") from error
    # Built on the CPU (not the meta device): non-persistent buffers such as mel
    # filterbanks and windows are computed at construction and must stay valid.
    stack = FrierenStack(info.preset)
    load_strict(stack, state, str(weights), "bundle")
    stack.eval()
    return stack.to(device), info
