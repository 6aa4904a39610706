"""The whole Frieren model stack for one preset, as one ``nn.Module``.

Video frames -> CAVP features -> condition encoder -> ODE over the vector-field
estimator (with CFG) -> latent -> VAE decode -> log-mel -> vocoder -> waveform.
Each stage is a separate method so the offline pipeline, the streaming engine,
the trainer and the benchmarks can time or replace stages independently.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from frieren.config import Preset
from frieren.flow.sampling import sample as flow_sample
from frieren.models.cavp import CAVPVideoEncoder
from frieren.models.cond import CondEncoder
from frieren.models.estimator import ChannelConcatDiT
from frieren.models.griffinlim import GriffinLimVocoder
from frieren.models.vae import MelVAE
from frieren.models.vocoder import BigVGAN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParameterCounts:
    cavp: int
    cond: int
    estimator: int
    vae: int
    vocoder: int

    @property
    def total(self) -> int:
        return self.cavp + self.cond + self.estimator + self.vae + self.vocoder


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class FrierenStack(nn.Module):
    """All modules of a preset. Submodule names are the bundle's weight prefixes."""

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.preset = preset
        self.cavp = CAVPVideoEncoder(preset.cavp)
        self.cond = CondEncoder(preset.cond)
        self.estimator = ChannelConcatDiT(preset.estimator)
        self.vae = MelVAE(preset.vae)
        if preset.vocoder is not None:
            self.vocoder: nn.Module = BigVGAN(preset.vocoder)
        else:
            self.vocoder = GriffinLimVocoder(preset.mel)

    @property
    def geometry(self):
        return self.preset.geometry

    @property
    def has_neural_vocoder(self) -> bool:
        return isinstance(self.vocoder, BigVGAN)

    def parameter_counts(self) -> ParameterCounts:
        return ParameterCounts(_count(self.cavp), _count(self.cond), _count(self.estimator),
                               _count(self.vae), _count(self.vocoder))

    # --- stages -------------------------------------------------------------------
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """The generator's condition. frames (B, F, 3K, S, S) in [0, 1] -> (B, F, D): L2-normalised
        CAVP features (D = cavp.embed_dim), plus the presence decision with ``cavp.presence_channel``."""
        return self.cavp.condition(frames)

    def encode_condition(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (B, F, D) -> cond (B, F, context_dim)."""
        return self.cond(feats)

    def null_condition(self, frames: int) -> torch.Tensor:
        """The CFG null condition: cond encoder of zeros, (1, F, context_dim)."""
        return self.cond.null_condition(frames)

    def sample_latent(self, feats: torch.Tensor, x0: torch.Tensor, *, steps: Optional[int] = None,
                      cfg_scale: Optional[float] = None, solver: Optional[str] = None) -> torch.Tensor:
        """Integrate the flow from noise x0 (B, C, L) given features (B, F, D) -> latent (B, C, L).

        ``L`` must equal ``latents_per_frame * F``. Conditions are encoded once and
        reused across steps and both CFG branches.
        """
        s = self.preset.sampling
        steps = s.steps if steps is None else steps
        cfg_scale = s.cfg_scale if cfg_scale is None else cfg_scale
        solver = s.solver if solver is None else solver
        cond = self.encode_condition(feats)
        null = self.null_condition(feats.shape[1]) if cfg_scale not in (None, 1.0) else None
        return flow_sample(self.estimator, cond, null, x0, steps=steps, cfg_scale=cfg_scale,
                           solver=solver, reference_time_grid=s.reference_time_grid).final

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (B, C, L) -> log10 mel (B, n_mels, mel_per_latent * L); multiplies by 1/scale."""
        return self.vae.decode(latent * (1.0 / self.preset.scale_factor))

    def encode_mel(self, mel: torch.Tensor, sample: bool = True,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """log10 mel (B, n_mels, T) -> scaled latent (B, C, T // 2) (posterior sample or mode)."""
        posterior = self.vae.encode(mel)
        z = posterior.sample(generator) if sample else posterior.mode()
        return z * self.preset.scale_factor

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """log10 mel (B, n_mels, T) -> waveform (B, T * hop) in [-1, 1]."""
        wav = self.vocoder(mel)
        return wav.reshape(wav.shape[0], -1)

    def vocode_span(self, mel: torch.Tensor, start: int, end: int, context: Optional[int] = None) -> torch.Tensor:
        """Vocode mel frames [start, end) with ``context`` frames each side (default: the
        vocoder's exact reach) -> (B, (end-start) * hop)."""
        wav = self.vocoder.vocode_span(mel, start, end, context=context)
        return wav.reshape(wav.shape[0], -1)

    def generate(self, frames: torch.Tensor, x0: torch.Tensor, **kw) -> torch.Tensor:
        """Whole window: frames (B, F, 3K, S, S) -> waveform (B, window_samples)."""
        mel = self.decode(self.sample_latent(self.features(frames), x0, **kw))
        return self.vocode(mel)
