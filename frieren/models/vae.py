"""The 1-D mel VAE of Make-An-Audio-2 / Frieren (FRIEREN_SPEC §2).

Module names mirror the reference ``AutoencoderKL`` (``Encoder1D``/``Decoder1D``) so that
state_dict keys load unchanged: ``encoder.*``, ``decoder.*``, ``quant_conv.*``,
``post_quant_conv.*`` (prefix ``first_stage_model.`` inside the Lightning checkpoint).

Asymmetries that must be kept (they are in the trained weights):
* encoder ResnetBlocks use ``kernel_size`` (5), decoder ResnetBlocks always use kernel 3;
  only the decoder's conv_in / conv_out use ``kernel_size``;
* the decoder upsamples at level ``d + 1`` for every encoder down level ``d``;
* Downsample1D pads one zero on the right, then a stride-2 kernel-3 conv (T -> T // 2);
* attention scales scores by C**-0.5 (C = channels), single head, global over time;
* the posterior's logvar is clamped to [-30, 20].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from frieren.config import VAEConfig

__all__ = ["MelVAE", "DiagonalGaussian", "Encoder1D", "Decoder1D",
           "ResnetBlock1D", "AttnBlock1D", "Downsample1D", "Upsample1D"]

_DECODER_BLOCK_KERNEL = 3  # the reference Decoder1D never passes kernel_size to its ResnetBlocks


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _conv(cin: int, cout: int, k: int, stride: int = 1, padding: Optional[int] = None) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, kernel_size=k, stride=stride, padding=k // 2 if padding is None else padding)


class ResnetBlock1D(nn.Module):
    """GN-swish-conv-GN-swish-dropout-conv with a residual; 1x1 ``nin_shortcut`` when channels change."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = _norm(in_channels)
        self.conv1 = _conv(in_channels, out_channels, kernel_size)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv(out_channels, out_channels, kernel_size)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv1d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(self.dropout(_swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock1D(nn.Module):
    """Single-head self-attention over time; scores scaled by C**-0.5. (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv1d(channels, channels, kernel_size=1)
        self.k = nn.Conv1d(channels, channels, kernel_size=1)
        self.v = nn.Conv1d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)          # (B, C, T)
        channels = q.shape[1]
        w = torch.bmm(q.permute(0, 2, 1), k)               # (B, Tq, Tk)
        w = torch.softmax(w * (channels ** -0.5), dim=2)
        h = torch.bmm(v, w.permute(0, 2, 1))               # (B, C, Tq)
        return x + self.proj_out(h)


class Downsample1D(nn.Module):
    """Right zero-pad by one, then Conv1d(k=3, stride 2): (B, C, T) -> (B, C, T // 2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1), mode="constant", value=0.0))


class Upsample1D(nn.Module):
    """Nearest x2, then Conv1d(k=3, pad 1): (B, C, T) -> (B, C, 2T)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder1D(nn.Module):
    """mel (B, in_channels, T) -> moments-before-quant (B, 2*z_channels, T // 2**len(down_layers))."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, k = cfg.ch, cfg.kernel_size
        self.num_layers = len(cfg.ch_mult)
        self.num_res_blocks = cfg.num_res_blocks
        self.down_layers = tuple(cfg.down_layers)
        self.conv_in = _conv(cfg.in_channels, ch, k)
        in_ch_mult = (1,) + tuple(cfg.ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for level in range(self.num_layers):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            block_in = ch * in_ch_mult[level]
            block_out = ch * cfg.ch_mult[level]
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock1D(block_in, block_out, k, cfg.dropout))
                block_in = block_out
                if level in cfg.attn_layers:
                    attns.append(AttnBlock1D(block_in))
            down = nn.Module()
            down.block = blocks
            down.attn = attns
            if level in self.down_layers:
                down.downsample = Downsample1D(block_in)
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock1D(block_in, block_in, k, cfg.dropout)
        self.mid.attn_1 = AttnBlock1D(block_in)
        self.mid.block_2 = ResnetBlock1D(block_in, block_in, k, cfg.dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = _conv(block_in, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level, down in enumerate(self.down):
            for i, block in enumerate(down.block):
                h = block(h)
                if len(down.attn) > 0:
                    h = down.attn[i](h)
            if level in self.down_layers:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder1D(nn.Module):
    """z (B, z_channels, T') -> mel (B, out_ch, T' * 2**len(down_layers)). Levels run high to low."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, k, kb = cfg.ch, cfg.kernel_size, _DECODER_BLOCK_KERNEL
        self.num_layers = len(cfg.ch_mult)
        self.up_layers = tuple(d + 1 for d in cfg.down_layers)
        block_in = ch * cfg.ch_mult[-1]
        self.conv_in = _conv(cfg.z_channels, block_in, k)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock1D(block_in, block_in, kb, cfg.dropout)
        self.mid.attn_1 = AttnBlock1D(block_in)
        self.mid.block_2 = ResnetBlock1D(block_in, block_in, kb, cfg.dropout)
        ups = []
        for level in reversed(range(self.num_layers)):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            block_out = ch * cfg.ch_mult[level]
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock1D(block_in, block_out, kb, cfg.dropout))
                block_in = block_out
                if level in cfg.attn_layers:
                    attns.append(AttnBlock1D(block_in))
            up = nn.Module()
            up.block = blocks
            up.attn = attns
            if level in self.up_layers:
                up.upsample = Upsample1D(block_in)
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(block_in)
        self.conv_out = _conv(block_in, cfg.out_ch, k)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(self.num_layers)):
            up = self.up[level]
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn) > 0:
                    h = up.attn[i](h)
            if level in self.up_layers:
                h = up.upsample(h)
        return self.conv_out(_swish(self.norm_out(h)))


@dataclass(frozen=True, eq=False)
class DiagonalGaussian:
    """Posterior N(mean, exp(logvar)) over latents; every tensor is (B, embed_dim, T')."""
    mean: torch.Tensor
    logvar: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_moments(cls, moments: torch.Tensor) -> "DiagonalGaussian":
        """moments (B, 2*embed_dim, T') -> posterior; logvar clamped to [-30, 20]."""
        assert moments.dim() == 3 and moments.shape[1] % 2 == 0, (
            f"moments must be (B, 2*D, T'), got shape {tuple(moments.shape)}")
        mean, logvar = torch.chunk(moments, 2, dim=1)
        logvar = torch.clamp(logvar, -30.0, 20.0)
        return cls(mean=mean, logvar=logvar, std=torch.exp(0.5 * logvar))

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """mean + std * eps.

        With ``generator=None`` eps is ``torch.randn(mean.shape)`` from the global CPU RNG
        (then moved to the mean's device), exactly like the reference, so
        ``torch.manual_seed(s); posterior.sample()`` reproduces it. With a generator, eps is
        drawn on the generator's device.
        """
        if generator is None:
            eps = torch.randn(self.mean.shape)
        else:
            eps = torch.randn(self.mean.shape, generator=generator, device=generator.device)
        return self.mean + self.std * eps.to(device=self.mean.device, dtype=self.mean.dtype)

    def mode(self) -> torch.Tensor:
        return self.mean


class MelVAE(nn.Module):
    """1-D KL autoencoder over log10 mels.

    encode: mel (B, in_channels, T) -> posterior over (B, embed_dim, T // 2**len(down_layers))
    decode: z (B, embed_dim, T') -> mel (B, out_ch, T' * 2**len(down_layers))
    Odd lengths lose a frame: 625 -> 312 -> 624.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        if not cfg.double_z:
            raise ValueError("MelVAE requires double_z=True (the reference asserts it)")
        self.cfg = cfg
        self.encoder = Encoder1D(cfg)
        self.decoder = Decoder1D(cfg)
        self.quant_conv = nn.Conv1d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv1d(cfg.embed_dim, cfg.z_channels, 1)

    @property
    def downsample_factor(self) -> int:
        return 2 ** len(self.cfg.down_layers)

    def latent_frames(self, mel_frames: int) -> int:
        """Latent length for ``mel_frames`` mel frames (each Downsample1D maps T -> T // 2)."""
        t = mel_frames
        for _ in self.cfg.down_layers:
            t //= 2
        return t

    def encode(self, mel: torch.Tensor) -> DiagonalGaussian:
        """mel (B, in_channels, T) -> DiagonalGaussian over (B, embed_dim, T')."""
        assert mel.dim() == 3 and mel.shape[1] == self.cfg.in_channels, (
            f"MelVAE.encode expects mel (B, {self.cfg.in_channels}, T), got shape {tuple(mel.shape)}")
        assert self.latent_frames(mel.shape[2]) >= 1, (
            f"mel of {mel.shape[2]} frames is too short for the VAE; shape {tuple(mel.shape)}")
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(mel)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, embed_dim, T') -> mel (B, out_ch, T' * downsample_factor)."""
        assert z.dim() == 3 and z.shape[1] == self.cfg.embed_dim, (
            f"MelVAE.decode expects z (B, {self.cfg.embed_dim}, T'), got shape {tuple(z.shape)}")
        return self.decoder(self.post_quant_conv(z))

    def forward(self, mel: torch.Tensor, sample_posterior: bool = True
                ) -> Tuple[torch.Tensor, DiagonalGaussian]:
        """mel (B, in_channels, T) -> (reconstruction (B, out_ch, T''), posterior), as the reference."""
        posterior = self.encode(mel)
        z = posterior.sample() if sample_posterior else posterior.mode()
        return self.decode(z), posterior
