"""Griffin-Lim vocoder: the fallback for bundles without a neural vocoder.

Inverts the log10 Slaney mel of ``frieren.audio.MelFrontend`` (FRIEREN_SPEC §1.1):

1. ``10 ** mel`` back to linear mel power-of-one magnitudes;
2. mel -> linear magnitude with a non-negative least-squares fit to the filterbank
   (a few multiplicative NNLS updates started from the clamped pseudo-inverse; see
   ``GriffinLimVocoder.mel_to_magnitude``);
3. fast Griffin-Lim (momentum 0.99, Perraudin et al. 2013) with the front end's own
   framing: reflect padding of (n_fft - hop)/2, STFT with ``center=False``, periodic Hann.

The framing is why the loop is written here rather than calling
``torchaudio.functional.griffinlim``: torchaudio's STFT is ``center=True`` (frame k
centred on sample hop*k), while the front end centres frame k on hop*k + hop/2, so
torchaudio's output would be misaligned by half a hop and could not have length T*hop
with frame-exact spans. The inverse STFT is a least-squares overlap-add (sum w*frame /
sum w^2) over the padded signal, cropped to T*hop samples.

Deterministic: the initial phase is zero (or drawn from a seeded generator).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frieren.config import MelConfig
from frieren.models.vocoder import vocode_span

__all__ = ["GriffinLimVocoder"]


def _mel_basis(cfg: MelConfig) -> Tensor:
    """The front end's (n_mels, n_fft//2 + 1) Slaney filterbank, float64."""
    from frieren.audio import slaney_mel_filterbank

    basis = slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    return torch.from_numpy(basis).double()


class GriffinLimVocoder(nn.Module):
    """log10 mel (B, n_mels, T) -> wav (B, 1, T * hop_length), no learned weights.

    ``n_iter`` Griffin-Lim iterations with ``momentum``; ``nnls_iter`` multiplicative
    NNLS refinements of the mel inverse (0 = clamped pseudo-inverse only). ``seed=None``
    starts from zero phase, an int from a phase drawn with that seed.
    """

    def __init__(self, mel_cfg: MelConfig, n_iter: int = 32, momentum: float = 0.99,
                 nnls_iter: int = 16, seed: Optional[int] = None) -> None:
        super().__init__()
        if (mel_cfg.n_fft - mel_cfg.hop_length) % 2:
            raise ValueError("n_fft - hop_length must be even for the front end's framing")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.cfg = mel_cfg
        self.n_iter = n_iter
        self.momentum = momentum
        self.nnls_iter = nnls_iter
        self.seed = seed
        self.hop_length = mel_cfg.hop_length
        self.pad = (mel_cfg.n_fft - mel_cfg.hop_length) // 2
        # Each iteration couples a frame with its overlapping neighbours, so in principle
        # the reach grows with n_iter; in practice it is about one frame per iteration
        # (n_iter=32 with 32 frames of context: span output within ~1e-5 relative of
        # whole-window output; with 16 frames ~3e-2).
        self.receptive_field_frames = max(n_iter, mel_cfg.n_fft // mel_cfg.hop_length)

        basis = _mel_basis(mel_cfg)
        self.register_buffer("mel_basis", basis.float(), persistent=False)
        self.register_buffer("mel_pinv", torch.linalg.pinv(basis).float(), persistent=False)
        win = torch.hann_window(mel_cfg.win_length, dtype=torch.float64)
        left = (mel_cfg.n_fft - mel_cfg.win_length) // 2
        win = F.pad(win, (left, mel_cfg.n_fft - mel_cfg.win_length - left))
        self.register_buffer("window", win.float(), persistent=False)

    # ------------------------------------------------------------------ mel inverse
    def mel_to_magnitude(self, mel: Tensor) -> Tensor:
        """log10 mel (B, n_mels, T) -> non-negative linear magnitude (B, n_freqs, T).

        Minimises ||M x - 10**mel|| over x >= 0: clamped pseudo-inverse, then
        ``nnls_iter`` Lee-Seung multiplicative updates x <- x * M^T y / (M^T M x).
        """
        y = torch.pow(10.0, mel.float())
        x = torch.matmul(self.mel_pinv, y).clamp_min(0.0)
        if self.nnls_iter:
            m = self.mel_basis
            mty = torch.matmul(m.t(), y)
            # Start every bin that some filter sees from a strictly positive value.
            x = x + 1e-3 * mty
            for _ in range(self.nnls_iter):
                x = x * mty / (torch.matmul(m.t(), torch.matmul(m, x)) + 1e-12)
        return x

    # ------------------------------------------------------------------ STFT pair
    def _stft(self, wav: Tensor) -> Tensor:
        """(B, N) -> complex (B, n_freqs, N // hop), the front end's framing."""
        y = F.pad(wav.unsqueeze(1), (self.pad, self.pad), mode="reflect").squeeze(1)
        return torch.stft(y, n_fft=self.cfg.n_fft, hop_length=self.hop_length,
                          window=self.window, center=False, onesided=True,
                          return_complex=True)

    def _istft(self, spec: Tensor, envelope: Tensor) -> Tensor:
        """complex (B, n_freqs, T) -> least-squares overlap-add (B, T * hop)."""
        n_fft, hop = self.cfg.n_fft, self.hop_length
        T = spec.shape[-1]
        frames = torch.fft.irfft(spec, n=n_fft, dim=1) * self.window[:, None]
        length = n_fft + hop * (T - 1)
        ola = F.fold(frames, output_size=(1, length), kernel_size=(1, n_fft),
                     stride=(1, hop)).reshape(spec.shape[0], length)
        return (ola / envelope)[:, self.pad:self.pad + T * hop]

    def _envelope(self, T: int) -> Tensor:
        n_fft, hop = self.cfg.n_fft, self.hop_length
        w2 = (self.window ** 2)[None, :, None].expand(1, n_fft, T)
        env = F.fold(w2, output_size=(1, n_fft + hop * (T - 1)), kernel_size=(1, n_fft),
                     stride=(1, hop)).reshape(-1)
        return env.clamp_min(1e-11)

    # ------------------------------------------------------------------ forward
    def forward(self, mel: Tensor) -> Tensor:
        if mel.dim() != 3 or mel.shape[1] != self.cfg.n_mels:
            raise ValueError(f"GriffinLimVocoder expects mel (B, {self.cfg.n_mels}, T), "
                             f"got {tuple(mel.shape)}")
        B, _, T = mel.shape
        # The front end's reflect padding needs more than `pad` samples.
        if T * self.hop_length <= self.pad:
            raise ValueError(f"GriffinLimVocoder needs at least {self.pad // self.hop_length + 1} "
                             f"mel frames, got {T}")
        mag = self.mel_to_magnitude(mel)
        if self.seed is None:
            angles = torch.ones_like(mag, dtype=torch.complex64)
        else:
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            phase = torch.rand(mag.shape, generator=g).to(mag.device) * (2 * torch.pi)
            angles = torch.polar(torch.ones_like(phase), phase)
        envelope = self._envelope(T)
        prev = torch.zeros_like(angles)
        coef = self.momentum / (1.0 + self.momentum)
        for _ in range(self.n_iter):
            rebuilt = self._stft(self._istft(mag * angles, envelope))
            angles = rebuilt - coef * prev if self.momentum else rebuilt
            angles = angles / (angles.abs() + 1e-16)
            prev = rebuilt
        wav = self._istft(mag * angles, envelope)
        return wav.clamp(-1.0, 1.0).unsqueeze(1)

    def vocode_span(self, mel: Tensor, start: int, end: int, context: int | None = None) -> Tensor:
        """Vocode mel frames [start, end) of mel (B, n_mels, T) -> wav (B, 1, (end-start)*hop).

        Griffin-Lim is not strictly local (each iteration couples frames within n_fft),
        so spans only approximate the whole-window output near their edges.
        """
        return vocode_span(self, mel, start, end,
                           self.receptive_field_frames if context is None else context)
