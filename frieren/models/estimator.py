"""ChannelConcatDiT: Frieren's vector-field estimator (FRIEREN_SPEC §4).

A bidirectional transformer over ``1 + T`` tokens: a prepended time token followed
by T latent frames whose features are ``[x_proj(latent) | c_proj(upsampled context)]``
(audio channels first, visual channels second). There is no cross-attention and no
adaLN: time enters only through the prepended token.

Submodule names and parameter names follow the reference so that the state_dict keys
match the checkpoint (after stripping ``model.diffusion_model.``) and forward hooks on
``t_embedder``, ``c_embedder``, ``c_upsampler``, ``proj_in``, ``x_proj``, ``c_proj``,
``pos_emb``, ``blocks.<i>`` and ``final_layer`` see the same tensors as the reference:

=============  ==========================
module         hook output
=============  ==========================
t_embedder     (B, H)
c_embedder     (B, F, H)
c_upsampler    (B, H, T)
proj_in        (B, H, T)
x_proj/c_proj  (B, T, H/2)
pos_emb        (B, 1+T, H)  (time token first, positions already added)
blocks.<i>     (B, H, 1+T)
final_layer    (B, C, T)
=============  ==========================

This module is the network only: it knows nothing about flow matching, solvers or CFG.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frieren.config import EstimatorConfig

__all__ = ["ChannelConcatDiT", "timestep_embedding", "ATTENTION_BACKENDS"]

TIME_FREQ_DIM = 256  # size of the sinusoidal timestep features


def timestep_embedding(t: Tensor, dim: int = TIME_FREQ_DIM, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features ``[cos(t f), sin(t f)]`` (cos first), shape (B,) -> (B, dim).

    ``t`` is in network units (0..999); integer tensors are converted to float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].to(torch.float32) * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoid(256) -> Linear -> SiLU -> Linear. (B,) -> (B, H)."""

    def __init__(self, hidden_size: int, freq_dim: int = TIME_FREQ_DIM) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


class ConditionEmbedder(nn.Module):
    """Linear -> GELU(tanh) -> Linear -> LayerNorm. (B, F, context_dim) -> (B, F, H)."""

    def __init__(self, context_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(context_dim, hidden_size),
            nn.GELU(approximate="tanh"),
            nn.Linear(hidden_size, hidden_size),
            nn.LayerNorm(hidden_size, eps=1e-5),
        )

    def forward(self, c: Tensor) -> Tensor:
        return self.mlp(c)


class PositionEmbedding(nn.Module):
    """Learned absolute positions, added: (B, N, H) -> (B, N, H) with N <= max_len."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.xavier_normal_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        if n > self.max_len:
            raise ValueError(f"sequence of {n} tokens exceeds the position table (max_len={self.max_len})")
        return x + self.weight[:n].unsqueeze(0)


ATTENTION_BACKENDS = ("math", "sdpa")


class SelfAttention(nn.Module):
    """Multi-head self-attention, q/k/v without bias, fp32, no mask. (B, N, D) -> (B, N, D).

    backend "math" follows the reference's op order (q k^T, then * scale, softmax, @ v); it
    reproduced the golden block outputs bit-for-bit on our CPU. "sdpa" uses
    ``F.scaled_dot_product_attention``: same math, fused kernels, last-bit differences.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.backend = "math"

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        h = self.heads
        if self.backend == "sdpa":
            q, k, v = (p(x).view(b, n, h, -1).transpose(1, 2) for p in (self.to_q, self.to_k, self.to_v))
            out = F.scaled_dot_product_attention(q, k, v)  # default scale = dim_head ** -0.5
            return self.to_out(out.transpose(1, 2).reshape(b, n, -1))
        # (B, N, h*d) -> (B*h, N, d)
        q, k, v = (p(x).view(b, n, h, -1).transpose(1, 2).reshape(b * h, n, -1)
                   for p in (self.to_q, self.to_k, self.to_v))
        attn = (torch.bmm(q, k.transpose(1, 2)) * self.scale).softmax(dim=-1)
        out = torch.bmm(attn, v).view(b, h, n, -1).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class ConvGEGLU(nn.Module):
    """Conv1d(dim -> 2*inner, k) then a * GELU(g) with exact GELU. Channels-first."""

    def __init__(self, dim: int, inner: int, kernel_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(dim, inner * 2, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        a, g = self.proj(x).chunk(2, dim=1)
        return a * F.gelu(g)


class ConvFeedForward(nn.Module):
    """Gated conv feed-forward, run channels-first: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, mult: int = 4, kernel_size: int = 9, dropout: float = 0.0) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(
            ConvGEGLU(dim, inner, kernel_size),
            nn.Dropout(dropout),
            nn.Conv1d(inner, dim, kernel_size, padding=kernel_size // 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)


class BasicTransformerBlock(nn.Module):
    """Pre-LN: two self-attentions (attn2 is *self*-attention too) and a conv FF."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.attn1 = SelfAttention(dim, heads, dim_head)
        self.ff = ConvFeedForward(dim)
        self.attn2 = SelfAttention(dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x))
        return x + self.ff(self.norm3(x))


class TemporalTransformer(nn.Module):
    """GroupNorm(32, eps 1e-6) -> 1x1 conv -> transformer block -> 1x1 conv (zero init) + residual.

    (B, H, N) -> (B, H, N). GroupNorm statistics include the time token.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, groups: int = 32) -> None:
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, dim, eps=1e-6)
        self.proj_in = nn.Conv1d(dim, inner, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, dim_head)])
        self.proj_out = nn.Conv1d(inner, dim, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, z: Tensor) -> Tensor:
        u = self.proj_in(self.norm(z)).transpose(1, 2)
        for block in self.transformer_blocks:
            u = block(u)
        return z + self.proj_out(u.transpose(1, 2))


class FinalLayer(nn.Module):
    """GroupNorm(16, eps 1e-5) -> 1x1 conv. (B, H, T) -> (B, C, T)."""

    def __init__(self, hidden_size: int, out_channels: int, groups: int = 16) -> None:
        super().__init__()
        self.norm_final = nn.GroupNorm(groups, hidden_size, eps=1e-5)
        self.conv1d = nn.Conv1d(hidden_size, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1d(self.norm_final(x))


class ChannelConcatDiT(nn.Module):
    """Frieren's vector-field estimator.

    forward(x (B, C, T), t (B,), context (B, F, context_dim)) -> v (B, C, T), with
    ``T == cfg.latents_per_frame * F`` and ``T + 1 <= cfg.max_len``.

    ``t`` is the network time in integer units 0..999 (``long(1000 * t_flow)``), int64 as in
    the reference. A floating tensor is accepted too and is read in the *same* units
    (e.g. 500.0, not 0.5); only the sinusoid sees it, so a float t that holds an integer
    gives exactly the integer result.
    """

    def __init__(self, cfg: EstimatorConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        if h % cfg.num_heads:
            raise ValueError(f"hidden_size={h} is not divisible by num_heads={cfg.num_heads}")
        if h % 2:
            raise ValueError(f"hidden_size={h} must be even (audio and visual halves)")
        self.cfg = cfg
        self.in_channels = cfg.in_channels
        self.out_channels = cfg.in_channels

        self.t_embedder = TimestepEmbedder(h)
        self.c_embedder = ConditionEmbedder(cfg.context_dim, h)
        self.c_upsampler = nn.Upsample(scale_factor=cfg.latents_per_frame, mode="nearest")
        self.proj_in = nn.Conv1d(cfg.in_channels, h, kernel_size=5, padding=2)
        self.x_proj = nn.Linear(h, h // 2)
        self.c_proj = nn.Linear(h, h // 2)
        self.pos_emb = PositionEmbedding(cfg.max_len, h)
        self.blocks = nn.ModuleList(
            [TemporalTransformer(h, cfg.num_heads, h // cfg.num_heads) for _ in range(cfg.depth)]
        )
        self.final_layer = FinalLayer(h, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Reference init for training from scratch (FRIEREN_SPEC §4.1).

        Xavier-uniform Linear weights with zero biases; time-MLP weights N(0, 0.02);
        each block's ``proj_out`` zero; convs keep the PyTorch default; the positional
        table keeps its construction-time Xavier-normal draw. Random draws happen in the
        reference's order, so ``torch.manual_seed(s); ChannelConcatDiT(cfg)`` gives the
        reference's initial weights.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.proj_out.weight)
            nn.init.zeros_(block.proj_out.bias)

    def set_attention_backend(self, backend: str) -> "ChannelConcatDiT":
        """"math" (default; reference op order, bit-faithful on CPU) or "sdpa" (fused kernels)."""
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {ATTENTION_BACKENDS}")
        for m in self.modules():
            if isinstance(m, SelfAttention):
                m.backend = backend
        return self

    def forward(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (B, {self.in_channels}, T), got {tuple(x.shape)}")
        b, _, length = x.shape
        if context.dim() != 3 or context.shape[0] != b or context.shape[2] != self.cfg.context_dim:
            raise ValueError(f"context must be (B={b}, F, {self.cfg.context_dim}), got {tuple(context.shape)}")
        frames = context.shape[1]
        k = self.cfg.latents_per_frame
        if length != k * frames:
            raise ValueError(
                f"latent length T={length} must equal latents_per_frame ({k}) x context frames F={frames} "
                f"= {k * frames}; x {tuple(x.shape)}, context {tuple(context.shape)}")
        if length + 1 > self.cfg.max_len:
            raise ValueError(f"T={length} latent frames plus the time token exceed max_len={self.cfg.max_len}")
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must be (B={b},), got {tuple(t.shape)}")

        t_tok = self.t_embedder(t).unsqueeze(1)                      # (B, 1, H)
        c = self.c_embedder(context)                                 # (B, F, H)
        c = self.c_upsampler(c.transpose(1, 2)).transpose(1, 2)      # (B, T, H)
        c = self.c_proj(c)                                           # (B, T, H/2)
        xh = self.x_proj(self.proj_in(x).transpose(1, 2))            # (B, T, H/2)
        tokens = torch.cat([t_tok, torch.cat([xh, c], dim=-1)], dim=1)  # (B, 1+T, H)
        z = self.pos_emb(tokens).transpose(1, 2)                     # (B, H, 1+T)
        for block in self.blocks:
            z = block(z)
        return self.final_layer(z[:, :, 1:])                         # (B, C, T)
