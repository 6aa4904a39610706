"""Clip / latent caches: alignment of frames and mels, resume without recomputation."""
from __future__ import annotations

import numpy as np
import torch

from frieren.config import get_preset
from frieren.models.cavp import CAVPVideoEncoder
from frieren.models.vae import MelVAE
from frieren.training.data import (ClipItem, build_clip_cache, build_latent_cache, load_clip_cache,
                                   window_index, WindowData)

torch.set_num_threads(1)
P = get_preset("tiny")
G = P.geometry


# one clip 4 frames longer than a window, one shorter than a window (padded)
LONG, SHORT = G.frames_per_window + 4, G.frames_per_window // 2 + 1


def _items(calls, lengths=(LONG, SHORT)):
    def make(i, n):
        def load():
            calls.append(i)
            rng = np.random.default_rng(i)
            frames = rng.integers(0, 255, (n, 3, 64, 64), dtype=np.uint8)
            audio = (0.1 * rng.standard_normal(n * G.samples_per_frame + 100)).astype(np.float32)
            return frames, audio
        return load
    return [ClipItem(f"c{i}", make(i, n)) for i, n in enumerate(lengths)]


def test_clip_cache_aligns_and_resumes(tmp_path):
    calls = []
    paths = build_clip_cache(_items(calls), tmp_path, P, progress=False)
    clips = load_clip_cache(paths)
    m = G.latents_per_frame * G.mel_per_latent
    assert [c.num_frames for c in clips] == [LONG, G.frames_per_window]  # the short clip is padded
    assert all(c.mel.shape == (80, c.num_frames * m) for c in clips)
    assert calls == [0, 1]
    build_clip_cache(_items(calls), tmp_path, P, progress=False)
    assert calls == [0, 1]  # nothing recomputed

    w = window_index(clips, G.frames_per_window, 3)
    assert w.tolist() == [[0, 0], [0, 3], [0, 4], [1, 0]]  # last window of a clip ends at its end
    wd = WindowData(clips, w, G.frames_per_window, m)
    assert wd.mel(torch.tensor([1])).shape == (1, 80, G.frames_per_window * m)
    assert torch.equal(wd.mel(torch.tensor([1]))[0], clips[0].mel[:, 3 * m:(3 + G.frames_per_window) * m])
    assert wd.frames(torch.tensor([3])).shape == (1, G.frames_per_window, 3, 64, 64)

    torch.manual_seed(0)
    cavp, vae = CAVPVideoEncoder(P.cavp), MelVAE(P.vae)
    lat = build_latent_cache(clips, w, cavp, vae, P, tmp_path, 0.5, "fp1", progress=False)
    assert len(lat) == 4 and lat.mean.shape == (4, P.vae.embed_dim, G.latent_frames)
    assert lat.window_feats(torch.tensor([0, 3])).shape == (2, G.frames_per_window, P.cavp.embed_dim)
    x = lat.latents(torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    assert x.shape == (2, P.vae.embed_dim, G.latent_frames)
    again = build_latent_cache(clips, w, cavp, vae, P, tmp_path, 0.5, "fp1", progress=False)
    assert torch.equal(again.mean, lat.mean)
    with torch.no_grad():
        direct = vae.encode(wd.mel(torch.tensor([2]))).mean
    assert torch.allclose(direct[0], lat.mean[2], atol=1e-5)
