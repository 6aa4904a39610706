"""Distribution and reconstruction metrics of `frieren eval`: Fréchet distance, mel L1.

Fréchet distance (FD): fit a Gaussian to each set of embeddings and compute
``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (the FAD/FID formula). The trace
of the matrix square root is taken from the eigenvalues of ``S_a^(1/2) S_b S_a^(1/2)``
(symmetric, so numpy's ``eigh`` suffices; no scipy).

Two embeddings, both per 0.128 s visual frame (one model frame, ``mel_per_frame`` log-mel
frames), so that a few dozen clips give thousands of vectors:

* ``cavp``: the audio branch of the project's own CAVP contrastive training
  (:class:`frieren.training.cavp_audio.MelAudioEncoder`, 128-d, L2-normalised), read from
  a CAVP stage checkpoint (``runs/<run>/cavp/final.pt``, keys ``audio.*``). It is a
  training-time helper and not part of any bundle, so it is used only when that
  checkpoint exists. FD values are on the unit sphere (small numbers).
* ``logmel``: a fixed, parameter-free embedding: per visual frame the mean and standard
  deviation over time of each of the 80 log10-mel bins (160-d). Always available and
  reproducible anywhere; less semantic than the CAVP branch.

Mel L1: mean absolute difference of the log10 mels (the model's own
:class:`frieren.audio.MelFrontend`) of generated and ground-truth waveforms, same length.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["frechet_distance", "log_mel", "mel_l1", "LogMelStatsEmbedding", "CAVPAudioEmbedding",
           "make_embedding"]


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """FD between the Gaussians fitted to embeddings ``a`` (N, D) and ``b`` (M, D)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings must be (N, D) and (M, D), got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least two embeddings per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.cov(a, rowvar=False) + eps * np.eye(a.shape[1])
    s_b = np.cov(b, rowvar=False) + eps * np.eye(a.shape[1])
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ s_b @ root_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    fd = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_sqrt)
    return max(fd, 0.0)


def log_mel(frontend, audio: np.ndarray) -> torch.Tensor:
    """Waveform (N,) -> log10 mel (n_mels, T) with ``frontend`` (a MelFrontend)."""
    x = torch.as_tensor(np.asarray(audio, np.float32)).reshape(1, -1)
    with torch.no_grad():
        return frontend(x)[0]


def mel_l1(frontend, generated: np.ndarray, reference: np.ndarray) -> float:
    """Mean |log10 mel(generated) - log10 mel(reference)|, both cut to the shorter length."""
    n = min(len(generated), len(reference))
    return float((log_mel(frontend, generated[:n]) - log_mel(frontend, reference[:n])).abs().mean())


def _frame_mels(mel: torch.Tensor, mel_per_frame: int) -> torch.Tensor:
    """(n_mels, T) -> (T // k, n_mels, k): whole visual frames only."""
    n = mel.shape[-1] // mel_per_frame
    return mel[:, :n * mel_per_frame].reshape(mel.shape[0], n, mel_per_frame).permute(1, 0, 2)


class LogMelStatsEmbedding:
    """Per visual frame: mean and std over time of each log10-mel bin -> (frames, 2 * n_mels)."""

    name = "logmel"

    def __init__(self, mel_per_frame: int) -> None:
        self.mel_per_frame = mel_per_frame

    def __call__(self, mel: torch.Tensor) -> np.ndarray:
        f = _frame_mels(mel, self.mel_per_frame)
        return torch.cat([f.mean(-1), f.std(-1, unbiased=False)], dim=1).numpy().astype(np.float64)


class NoAudioBranchError(ValueError):
    """A CAVP checkpoint without the audio branch the ``cavp`` FD embedding needs."""


class CAVPAudioEmbedding:
    """The trained CAVP audio branch (MelAudioEncoder) -> (frames, embed_dim), L2-normalised."""

    name = "cavp"

    def __init__(self, checkpoint: Path, n_mels: int, mel_per_frame: int, embed_dim: int) -> None:
        from frieren.training.cavp_audio import MelAudioEncoder

        state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)["state"]
        sub = {k[len("audio."):]: v for k, v in state.items() if k.startswith("audio.")}
        if not sub:
            raise NoAudioBranchError(f"{checkpoint} holds no CAVP audio branch (keys audio.*; a CAVP adopted with "
                             f"--cavp-from has none): pass the --cavp-checkpoint of a trained CAVP stage, or --fd logmel")
        width = sub["net.0.weight"].shape[0]
        self.encoder = MelAudioEncoder(n_mels, sub["head.weight"].shape[0], mel_per_frame, width).eval()
        self.encoder.load_state_dict(sub)
        self.mel_per_frame = mel_per_frame
        self.checkpoint = str(checkpoint)

    def __call__(self, mel: torch.Tensor) -> np.ndarray:
        n = mel.shape[-1] // self.mel_per_frame
        with torch.no_grad():
            out = self.encoder(mel[None, :, :n * self.mel_per_frame])[0]
        return out.numpy().astype(np.float64)


def make_embedding(kind: str, preset, cavp_checkpoint: Optional[str]):
    """'logmel' | 'cavp' -> an embedding callable (log10 mel (n_mels, T) -> (frames, D))."""
    g = preset.geometry
    k = g.latents_per_frame * g.mel_per_latent
    if kind == "logmel":
        return LogMelStatsEmbedding(k)
    if kind == "cavp":
        if not cavp_checkpoint or not Path(cavp_checkpoint).is_file():
            raise FileNotFoundError(f"CAVP checkpoint {cavp_checkpoint!r} not found (needed for --fd cavp)")
        return CAVPAudioEmbedding(Path(cavp_checkpoint), preset.mel.n_mels, k, preset.cavp.embed_dim)
    raise ValueError(f"unknown embedding {kind!r}; choose cavp or logmel")


def stack_embeddings(chunks: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([c for c in chunks if len(c)], axis=0)
