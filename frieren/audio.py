"""Audio front end: loading, mono/resampling and the log10-mel spectrogram (FRIEREN_SPEC §1.1).

The mel front end reproduces the reference ``NAT_mel.MelNet`` exactly:

    clamp to [-1, 1] -> reflect-pad (n_fft - hop)/2 on both sides -> STFT (center=False,
    periodic Hann) -> sqrt(re^2 + im^2 + eps) -> mel_basis @ mag -> log10(clamp(., min))

The filterbank is librosa 0.8's ``filters.mel`` (Slaney mel scale, Slaney area norm),
recomputed here in float64 numpy with librosa's float32 storage so it is bit-identical.
``torchaudio.functional.melscale_fbanks`` differs from it by ~4e-6 relative, so it is not used.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from frieren.config import MelConfig

logger = logging.getLogger(__name__)

__all__ = [
    "MelFrontend",
    "slaney_mel_filterbank",
    "to_mono",
    "resample",
    "load_audio",
]


# --------------------------------------------------------------------------------------
# Slaney mel filterbank (librosa 0.8 ``filters.mel`` with htk=False, norm='slaney')
# --------------------------------------------------------------------------------------

_F_SP = 200.0 / 3.0           # Hz per mel in the linear region
_MIN_LOG_HZ = 1000.0          # start of the log region
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    freqs = np.asarray(freqs, dtype=np.float64)
    linear = freqs / _F_SP
    safe = np.maximum(freqs, _MIN_LOG_HZ)  # avoid log of values outside the log region
    log_part = _MIN_LOG_MEL + np.log(safe / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(freqs >= _MIN_LOG_HZ, log_part, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    linear = _F_SP * mels
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mels, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mels >= _MIN_LOG_MEL, log_part, linear)


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int,
                          fmin: float = 0.0, fmax: Optional[float] = None) -> np.ndarray:
    """Mel filterbank (n_mels, 1 + n_fft//2) float32, identical to librosa 0.8 ``filters.mel``.

    Triangles are computed in float64, stored into a float32 array, then scaled in place by
    the Slaney area normalisation 2 / (f[i+2] - f[i]) (float64 factor, float32 result), which
    is the exact rounding sequence of librosa.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    n_freqs = 1 + n_fft // 2
    weights = np.zeros((n_mels, n_freqs), dtype=np.float32)
    fft_freqs = np.linspace(0.0, float(sample_rate) / 2.0, n_freqs, endpoint=True)
    mel_pts = np.linspace(_hz_to_mel(np.float64(fmin)), _hz_to_mel(np.float64(fmax)), n_mels + 2)
    mel_f = _mel_to_hz(mel_pts)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


# --------------------------------------------------------------------------------------
# Mel front end
# --------------------------------------------------------------------------------------

class MelFrontend(nn.Module):
    """Waveform (B, N) in [-1, 1] at ``cfg.sample_rate`` -> log10 mel (B, n_mels, T).

    T = 1 + (N + 2*pad - n_fft) // hop with pad = (n_fft - hop) // 2 (see
    :meth:`frames_for_samples`); frame k is centred on sample ``hop*k + hop/2``.
    The Hann window and mel basis are non-persistent buffers (no state_dict keys).
    """

    def __init__(self, cfg: MelConfig) -> None:
        super().__init__()
        if (cfg.n_fft - cfg.hop_length) % 2:
            raise ValueError(f"n_fft - hop_length must be even, got n_fft={cfg.n_fft}, hop={cfg.hop_length}")
        if cfg.win_length > cfg.n_fft:
            raise ValueError(f"win_length={cfg.win_length} > n_fft={cfg.n_fft}")
        self.cfg = cfg
        self.pad = (cfg.n_fft - cfg.hop_length) // 2
        basis = slaney_mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        self.register_buffer("mel_basis", torch.from_numpy(basis), persistent=False)
        self.register_buffer("hann_window", torch.hann_window(cfg.win_length), persistent=False)

    @property
    def n_freqs(self) -> int:
        return self.cfg.n_fft // 2 + 1

    def frames_for_samples(self, n: int) -> int:
        """Number of mel frames produced for a waveform of ``n`` samples."""
        return 1 + (n + 2 * self.pad - self.cfg.n_fft) // self.cfg.hop_length

    def _check(self, wav: torch.Tensor) -> None:
        assert wav.dim() == 2, f"MelFrontend expects wav (B, N), got shape {tuple(wav.shape)}"
        assert wav.is_floating_point(), f"MelFrontend expects a float waveform, got {wav.dtype}"
        assert wav.shape[1] > self.pad, (
            f"waveform of {wav.shape[1]} samples is too short for reflect padding of {self.pad}; "
            f"shape {tuple(wav.shape)}")

    def linear_magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform (B, N) -> sqrt(|STFT|^2 + eps) (B, n_fft//2 + 1, T), before the mel projection."""
        self._check(wav)
        cfg = self.cfg
        y = wav.clamp(-1.0, 1.0)
        y = F.pad(y.unsqueeze(1), (self.pad, self.pad), mode="reflect").squeeze(1)
        spec = torch.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                          window=self.hann_window.to(dtype=y.dtype), center=False,
                          normalized=False, onesided=True, return_complex=True)
        spec = torch.view_as_real(spec)
        return torch.sqrt(spec.pow(2).sum(-1) + cfg.magnitude_eps)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Waveform (B, N) -> log10 mel (B, n_mels, T)."""
        mag = self.linear_magnitude(wav)
        mel = torch.matmul(self.mel_basis.to(dtype=mag.dtype), mag)
        return torch.log10(torch.clamp(mel, min=self.cfg.clamp_min))


# --------------------------------------------------------------------------------------
# Loading and resampling (the dataset's preprocessing, FRIEREN_SPEC §1.1 "loading")
# --------------------------------------------------------------------------------------

def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """(C, N) -> (1, N): average over channels (a mono input is returned unchanged)."""
    assert wav.dim() == 2, f"to_mono expects (C, N), got shape {tuple(wav.shape)}"
    if wav.shape[0] == 1:
        return wav
    return wav.mean(dim=0, keepdim=True)


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample along the last axis with ``torchaudio.functional.resample`` at its defaults
    (Hann-windowed sinc, lowpass_filter_width=6, rolloff=0.99), as the reference dataset does."""
    if int(orig_sr) == int(new_sr):
        return wav
    import torchaudio.functional as AF
    return AF.resample(wav, int(orig_sr), int(new_sr))


def _decode_with_pyav(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of ``path`` into float32 (C, N) and its sample rate."""
    import av

    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise ValueError(f"{path}: file has no audio stream")
        stream = streams[0]
        # Planar float keeps channels and rate; integer formats are scaled like ffmpeg
        # (s16 / 32768), which is what torchaudio.load's normalize=True gives.
        converter = av.AudioResampler(format="fltp")
        chunks = []
        sample_rate = None
        for frame in container.decode(stream):
            sample_rate = sample_rate or frame.sample_rate
            for out in converter.resample(frame):
                chunks.append(out.to_ndarray())
        for out in converter.resample(None):  # flush
            chunks.append(out.to_ndarray())
    if not chunks:
        raise ValueError(f"{path}: audio stream decoded to zero samples")
    data = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    return data, int(sample_rate or stream.rate)


def load_audio(path: Union[str, Path], target_sr: int) -> torch.Tensor:
    """Read an audio (or video) file -> mono float32 (1, N) at ``target_sr``.

    Decodes with PyAV, averages channels, then resamples with torchaudio defaults.
    Raises ``ValueError`` naming the file when it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"audio file {path} does not exist")
    try:
        data, sr = _decode_with_pyav(path)
    except ValueError:
        raise
    except Exception as exc:  # PyAV raises its own error hierarchy
        raise ValueError(f"{path}: could not decode audio ({type(exc).__name__}: {exc}); "
                         f"check that it is a valid audio/video file") from exc
    wav = to_mono(torch.from_numpy(np.ascontiguousarray(data)))
    logger.debug("loaded %s: %d Hz, %d samples", path, sr, wav.shape[1])
    return resample(wav, sr, target_sr)
