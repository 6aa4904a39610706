"""BigVGAN generator (inference only), loadable from ``best_netG.pt['generator']``.

FRIEREN_SPEC §7. Frieren vocodes its log10 mel with Make-An-Audio-2's 16 kHz BigVGAN:
conv_pre -> N x [ConvTranspose1d upsampler -> mean of AMP residual blocks] ->
anti-aliased SnakeBeta -> conv_post -> tanh.

Weight norm is implemented here as explicit parameters ``weight_g`` / ``weight_v``
(w = g * v / ||v||, norm over every dim except 0), so the legacy checkpoint keys load
with a strict ``load_state_dict`` and no compatibility hooks. ``fold_weight_norm()``
replaces each (g, v) pair by a plain ``weight`` parameter for speed; after folding the
state_dict has ``<conv>.weight`` instead of ``<conv>.weight_g``/``<conv>.weight_v`` and no
longer loads official checkpoints (fold after loading).

Module names follow the reference (``conv_pre``, ``ups.{i}.0``, ``resblocks.{j}``,
``resblocks.{j}.activations.{k}``, ``activation_post``, ``conv_post``) so forward hooks
registered by name see the same tensors as in the reference.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frieren.config import VocoderConfig, config_from_dict

__all__ = [
    "BigVGAN",
    "vocoder_config_from_args",
    "receptive_field",
    "kaiser_sinc_filter1d",
    "vocode_span",
]


# --------------------------------------------------------------------------- config

def vocoder_config_from_args(args: Mapping[str, Any]) -> VocoderConfig:
    """Build a VocoderConfig from a BigVGAN ``args.yml`` dict.

    Training-only keys (batch size, learning rate, segment size, ...) are ignored;
    missing generator keys keep the VocoderConfig defaults (the official 16 kHz model).
    """
    data = dict(args)
    if "resblock" in data and data["resblock"] is not None:
        data["resblock"] = str(data["resblock"])
    return config_from_dict(VocoderConfig, data)


# --------------------------------------------------------------------------- weight norm

class _WNMixin:
    """Explicit legacy weight norm: parameters ``weight_g`` and ``weight_v`` (dim 0)."""

    def _init_wn(self, weight: Tensor) -> None:
        self.weight_v = nn.Parameter(weight.detach().clone())
        norm = weight.detach().flatten(1).norm(dim=1)
        self.weight_g = nn.Parameter(norm.reshape(-1, *([1] * (weight.dim() - 1))).clone())
        self.folded = False

    def effective_weight(self) -> Tensor:
        if self.folded:
            return self.weight
        # Same kernel as torch.nn.utils.weight_norm: v * (g / ||v||), norm over dims != 0.
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def fold(self) -> None:
        if self.folded:
            return
        with torch.no_grad():
            w = self.effective_weight().detach().clone()
        del self.weight_g
        del self.weight_v
        self.weight = nn.Parameter(w)
        self.folded = True


class WNConv1d(_WNMixin, nn.Module):
    """Conv1d with legacy weight norm (keys ``weight_g``, ``weight_v``, ``bias``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, padding: int = 0) -> None:
        super().__init__()
        proto = nn.Conv1d(cin, cout, kernel_size, stride, padding=padding, dilation=dilation)
        self.stride, self.dilation, self.padding = stride, dilation, padding
        self._init_wn(proto.weight)
        self.bias = nn.Parameter(proto.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.effective_weight(), self.bias, self.stride, self.padding,
                        self.dilation)


class WNConvTranspose1d(_WNMixin, nn.Module):
    """ConvTranspose1d with legacy weight norm; weight (Cin, Cout, k), so g is (Cin, 1, 1)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        proto = nn.ConvTranspose1d(cin, cout, kernel_size, stride, padding=padding)
        self.stride, self.padding = stride, padding
        self._init_wn(proto.weight)
        self.bias = nn.Parameter(proto.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose1d(x, self.effective_weight(), self.bias, self.stride,
                                  self.padding)


# --------------------------------------------------------------------------- anti-aliasing

def kaiser_sinc_filter1d(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    """Kaiser-windowed sinc low-pass filter, shape (1, 1, kernel_size), sum 1.

    Kaiser beta from the standard attenuation formula for transition width
    4 * half_width; even kernels are sampled at half-integer times.
    """
    even = kernel_size % 2 == 0
    half = kernel_size // 2
    delta_f = 4.0 * half_width
    atten = 2.285 * (half - 1) * math.pi * delta_f + 7.95
    if atten > 50.0:
        beta = 0.1102 * (atten - 8.7)
    elif atten >= 21.0:
        beta = 0.5842 * (atten - 21.0) ** 0.4 + 0.07886 * (atten - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta, device="cpu")
    if even:
        t = torch.arange(-half, half, device="cpu") + 0.5
    else:
        t = torch.arange(kernel_size, device="cpu") - half
    if cutoff == 0:
        filt = torch.zeros_like(t, dtype=torch.float32)
    else:
        filt = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
        filt = filt / filt.sum()
    return filt.reshape(1, 1, kernel_size).float()


class UpSample1d(nn.Module):
    """x ratio upsampling: replicate pad, zero-stuffing transposed conv with the sinc, crop."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None) -> None:
        super().__init__()
        self.ratio = ratio
        self.kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.pad = self.kernel_size // ratio - 1
        self.pad_left = self.pad * ratio + (self.kernel_size - ratio) // 2
        self.pad_right = self.pad * ratio + (self.kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter1d(0.5 / ratio, 0.6 / ratio,
                                                            self.kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(c, -1, -1),
                                            stride=self.ratio, groups=c)
        return x[..., self.pad_left:x.shape[-1] - self.pad_right]


class LowPassFilter1d(nn.Module):
    """Replicate-padded depthwise FIR low-pass with a stride."""

    def __init__(self, cutoff: float, half_width: float, stride: int, kernel_size: int) -> None:
        super().__init__()
        even = kernel_size % 2 == 0
        self.pad_left = kernel_size // 2 - int(even)
        self.pad_right = kernel_size // 2
        self.stride = stride
        self.register_buffer("filter", kaiser_sinc_filter1d(cutoff, half_width, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(c, -1, -1), stride=self.stride, groups=c)


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int | None = None) -> None:
        super().__init__()
        k = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, k)

    def forward(self, x: Tensor) -> Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    """x + 1/(beta + 1e-9) * sin^2(alpha * x), per-channel alpha/beta (log scale optional)."""

    def __init__(self, channels: int, logscale: bool = True) -> None:
        super().__init__()
        self.logscale = logscale
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone())

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha[None, :, None]
        b = self.beta[None, :, None]
        if self.logscale:
            a, b = a.exp(), b.exp()
        return x + (1.0 / (b + 1e-9)) * torch.sin(x * a).pow(2)


class Snake(nn.Module):
    """x + 1/(alpha + 1e-9) * sin^2(alpha * x)."""

    def __init__(self, channels: int, logscale: bool = True) -> None:
        super().__init__()
        self.logscale = logscale
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha[None, :, None]
        if self.logscale:
            a = a.exp()
        return x + (1.0 / (a + 1e-9)) * torch.sin(x * a).pow(2)


class Activation1d(nn.Module):
    """Anti-aliased activation: x2 upsample -> snake -> x2 low-pass downsample."""

    def __init__(self, act: nn.Module, up_ratio: int = 2, down_ratio: int = 2,
                 up_kernel_size: int = 12, down_kernel_size: int = 12) -> None:
        super().__init__()
        self.act = act
        self.upsample = UpSample1d(up_ratio, up_kernel_size)
        self.downsample = DownSample1d(down_ratio, down_kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.act(self.upsample(x)))


def _make_act(cfg: VocoderConfig, channels: int) -> Activation1d:
    if cfg.activation == "snakebeta":
        return Activation1d(SnakeBeta(channels, cfg.snake_logscale))
    if cfg.activation == "snake":
        return Activation1d(Snake(channels, cfg.snake_logscale))
    raise ValueError(f"BigVGAN activation {cfg.activation!r} not supported; use 'snake' or 'snakebeta'")


def _pad(kernel: int, dilation: int) -> int:
    return dilation * (kernel - 1) // 2


# --------------------------------------------------------------------------- residual blocks

class AMPBlock1(nn.Module):
    """len(dilations) units of x += conv2(act(conv1_d(act(x)))); activations interleaved."""

    def __init__(self, cfg: VocoderConfig, channels: int, kernel: int,
                 dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(WNConv1d(channels, channels, kernel, dilation=d,
                                             padding=_pad(kernel, d)) for d in dilations)
        self.convs2 = nn.ModuleList(WNConv1d(channels, channels, kernel, dilation=1,
                                             padding=_pad(kernel, 1)) for _ in dilations)
        self.activations = nn.ModuleList(_make_act(cfg, channels)
                                         for _ in range(2 * len(dilations)))

    def forward(self, x: Tensor) -> Tensor:
        acts = self.activations
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(acts[2 * i + 1](c1(acts[2 * i](x))))
        return x


class AMPBlock2(nn.Module):
    """len(dilations) units of x += conv_d(act(x))."""

    def __init__(self, cfg: VocoderConfig, channels: int, kernel: int,
                 dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(WNConv1d(channels, channels, kernel, dilation=d,
                                            padding=_pad(kernel, d)) for d in dilations)
        self.activations = nn.ModuleList(_make_act(cfg, channels) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for conv, act in zip(self.convs, self.activations):
            x = x + conv(act(x))
        return x


# --------------------------------------------------------------------------- receptive field

def receptive_field(cfg: VocoderConfig) -> Tuple[int, int]:
    """Exact (left, right) reach in mel frames of one mel frame's influence on the output.

    Interval propagation through every layer (away from the signal edges): output
    samples influenced by mel frame t lie in [(t - left) * hop, (t + 1 + right) * hop).
    Each anti-aliased activation adds 5 samples each side at its rate (x2 sinc up, x2
    low-pass down, 12 taps). For the official config this is (38, 38) frames; most of
    the energy of that reach lies within ~24 frames (FRIEREN_SPEC §7.3), but only the
    exact reach makes chunked vocoding match whole-window vocoding to float precision.
    """
    act = 5  # [2lo-5, 2hi+6] after UpSample1d(2, 12) -> [lo-5, hi+5] after DownSample1d(2, 12)
    lo, hi = -3, 3  # conv_pre, kernel 7 (in frames)
    hop = 1
    if cfg.resblock == "1":
        res = max(sum(2 * act + _pad(k, d) + _pad(k, 1) for d in ds)
                  for k, ds in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
    else:
        res = max(sum(act + _pad(k, d) for d in ds)
                  for k, ds in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
    for u, k in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes):
        p = (k - u) // 2
        lo, hi = lo * u - p, hi * u - p + k - 1
        lo, hi = lo - res, hi + res
        hop *= u
    lo, hi = lo - act - 3, hi + act + 3  # activation_post, conv_post (kernel 7)
    left = math.ceil(-lo / hop)
    right = math.ceil((hi - (hop - 1)) / hop)
    return left, right


# --------------------------------------------------------------------------- generator

class BigVGAN(nn.Module):
    """BigVGAN generator: forward(mel (B, num_mels, T)) -> wav (B, 1, T * hop) in [-1, 1].

    ``hop = prod(upsample_rates)`` (256 for the official model). ``receptive_field_frames``
    is the exact one-sided reach in mel frames (max of left/right, see ``receptive_field``);
    pass it as ``context`` to ``vocode_span`` for chunked output equal to the whole window.
    """

    def __init__(self, cfg: VocoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.hop_length = int(math.prod(cfg.upsample_rates))
        self.receptive_field_bounds = receptive_field(cfg)
        self.receptive_field_frames = max(self.receptive_field_bounds)

        c0 = cfg.upsample_initial_channel
        if c0 // 2 ** len(cfg.upsample_rates) < 1:
            raise ValueError(f"upsample_initial_channel={c0} is too small for "
                             f"{len(cfg.upsample_rates)} upsampling stages (channels halve each stage)")
        self.conv_pre = WNConv1d(cfg.num_mels, c0, 7, padding=3)
        block = {"1": AMPBlock1, "2": AMPBlock2}.get(cfg.resblock)
        if block is None:
            raise ValueError(f"BigVGAN resblock {cfg.resblock!r} not supported; use '1' or '2'")
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = c0
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            cin, ch = c0 // 2 ** i, c0 // 2 ** (i + 1)
            self.ups.append(nn.ModuleList([WNConvTranspose1d(cin, ch, k, u, (k - u) // 2)]))
            for kr, dil in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(block(cfg, ch, kr, dil))
        self.activation_post = _make_act(cfg, ch)
        self.conv_post = WNConv1d(ch, 1, 7, padding=3)

    def forward(self, mel: Tensor) -> Tensor:
        if mel.dim() != 3 or mel.shape[1] != self.cfg.num_mels:
            raise ValueError(f"BigVGAN expects mel (B, {self.cfg.num_mels}, T), got {tuple(mel.shape)}")
        x = self.conv_pre(mel)
        n = self.num_kernels
        for i, up in enumerate(self.ups):
            for layer in up:
                x = layer(x)
            xs = self.resblocks[i * n](x)
            for j in range(1, n):
                xs = xs + self.resblocks[i * n + j](x)
            x = xs / n
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x)

    def fold_weight_norm(self) -> "BigVGAN":
        """Replace every (weight_g, weight_v) by a plain ``weight`` (in place; returns self).

        Output is unchanged up to float rounding. Afterwards state_dict keys are
        ``<conv>.weight`` rather than ``weight_g``/``weight_v``: load checkpoints first.
        """
        for m in self.modules():
            if isinstance(m, _WNMixin):
                m.fold()
        return self

    @property
    def weight_norm_folded(self) -> bool:
        return all(m.folded for m in self.modules() if isinstance(m, _WNMixin))

    def vocode_span(self, mel: Tensor, start: int, end: int, context: int | None = None) -> Tensor:
        """Vocode mel frames [start, end) of mel (B, num_mels, T) -> wav (B, 1, (end-start)*hop)."""
        return vocode_span(self, mel, start, end,
                           self.receptive_field_frames if context is None else context)


def vocode_span(vocoder: nn.Module, mel: Tensor, start: int, end: int, context: int) -> Tensor:
    """Vocode mel frames [start, end) using up to ``context`` extra frames on each side.

    The context is clipped at the edges of ``mel`` (B, n_mels, T); the vocoder runs on
    frames [max(0, start - context), min(T, end + context)) and its output is cropped to
    the samples of [start, end). ``vocoder`` maps (B, n_mels, t) -> (B, 1, t * hop) and
    exposes ``hop_length``. Returns (B, 1, (end - start) * hop).
    """
    T = mel.shape[-1]
    if not (0 <= start < end <= T):
        raise ValueError(f"vocode_span: need 0 <= start < end <= T, got start={start} end={end} T={T}")
    if context < 0:
        raise ValueError(f"vocode_span: context must be >= 0, got {context}")
    hop = vocoder.hop_length
    s0, e0 = max(0, start - context), min(T, end + context)
    wav = vocoder(mel[..., s0:e0])
    return wav[..., (start - s0) * hop:(end - s0) * hop]
