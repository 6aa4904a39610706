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
    meta = tmp_path / "latents" / "meta.json"
    before = meta.stat().st_ino
    again = build_latent_cache(clips, w, cavp, vae, P, tmp_path, 0.5, "fp1", progress=False)
    assert torch.equal(again.mean, lat.mean)
    # DDP ranks load a cache rank 0 just built: a current cache's meta is never rewritten
    # (a rank reading it mid-rewrite saw an empty file and dropped the cache)
    assert meta.stat().st_ino == before and not list(meta.parent.glob(".*.tmp"))
    with torch.no_grad():
        direct = vae.encode(wd.mel(torch.tensor([2]))).mean
    assert torch.allclose(direct[0], lat.mean[2], atol=1e-5)


def test_frame_material_labels_follow_the_strongest_impact_of_each_frame():
    from frieren.synth.config import Event
    from frieren.training.data import frame_materials

    period = G.frame_period_s

    def hit(t, material, strength, kind="impact"):
        return Event(time_s=t, sample=0, kind=kind, source="floor", material=material, strength=strength,
                     speed=1.0, position=(0.0, 0.0), object_id=0)
    events = [hit(0.5 * period, "wood", 0.2), hit(0.6 * period, "glass", 0.9),       # frame 0: glass wins
              hit(2.0 * period, "metal", 0.5),                                       # frame 2 starts here
              hit(3.5 * period, "fan", 1.0, kind="continuous_start"),                # not an impact
              hit(9.0 * period, "wood", 1.0)]                                        # past the clip
    labels = frame_materials(events, ["wood", "metal", "glass"], 5, period)
    assert labels.tolist() == [2, -1, 1, -1, -1]


def test_labelled_clips_keep_their_labels_through_padding_and_windows(tmp_path):
    def load_labelled(n, labels):
        def load():
            rng = np.random.default_rng(n)
            frames = rng.integers(0, 255, (n, 3, 64, 64), dtype=np.uint8)
            return frames, np.zeros(n * G.samples_per_frame, np.float32), labels
        return load
    labels = np.arange(SHORT, dtype=np.int64) % 3
    clips = load_clip_cache(build_clip_cache([ClipItem("s", load_labelled(SHORT, labels))], tmp_path, P,
                                             progress=False))
    got = clips[0].frame_material
    assert got.shape == (G.frames_per_window,) and got[:SHORT].tolist() == labels.tolist()
    assert (got[SHORT:] == -1).all()                                   # padded frames strike nothing
    wd = WindowData(clips, window_index(clips, G.frames_per_window, 1), G.frames_per_window, 8)
    assert wd.has_frame_material() and wd.frame_material(torch.tensor([0])).shape == (1, G.frames_per_window)
    unlabelled = load_clip_cache(build_clip_cache(_items([]), tmp_path / "u", P, progress=False))
    assert not WindowData(unlabelled, window_index(unlabelled, G.frames_per_window, 1),
                          G.frames_per_window, 8).has_frame_material()


def _unreadable_clip():
    raise ValueError("moov atom not found")


def test_clip_cache_with_workers_equals_the_sequential_cache(tmp_path, caplog):
    """Rendering in spawned worker processes writes the same files; a bad item is skipped
    with a warning naming it, the others are kept."""
    import functools

    from frieren.synth import SceneConfig
    from frieren.training.data import synthetic_source

    scene = SceneConfig(duration_s=2.5, sample_rate=G.sample_rate)
    items = synthetic_source(3, 11, P, scene)
    items.insert(1, ClipItem("broken", functools.partial(_unreadable_clip)))
    seq = build_clip_cache(items, tmp_path / "seq", P, progress=False)
    with caplog.at_level("WARNING"):
        par = build_clip_cache(items, tmp_path / "par", P, progress=False, workers=2)
    assert [p.name for p in par] == [p.name for p in seq] == ["00000.pt", "00002.pt", "00003.pt"]
    assert "broken" in caplog.text and "moov atom not found" in caplog.text
    for a, b in zip(load_clip_cache(seq), load_clip_cache(par)):
        assert a.key == b.key
        assert torch.equal(a.frames, b.frames) and torch.equal(a.mel, b.mel)
        assert torch.equal(a.frame_material, b.frame_material)
