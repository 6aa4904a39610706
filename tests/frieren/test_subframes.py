"""Visual frames that stack several camera snapshots (WindowGeometry.subframes)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from frieren.config import WindowGeometry, get_preset, with_subframes
from frieren.models.cavp import CAVPVideoEncoder
from frieren.training.data import audio_clock_indices, snapshot_indices
from frieren.video_io import stack_snapshots


def test_snapshots_end_at_the_frame_instant_evenly_spaced():
    g = get_preset("tiny").geometry
    p = g.samples_per_frame
    for k in (1, 2, 4):
        gk = dataclasses.replace(g, subframes=k)
        off = gk.subframe_offsets
        assert len(off) == k and off[-1] == 0 and all(b - a == p // k for a, b in zip(off, off[1:]))
        t = gk.snapshot_instants_s(5)
        assert t.shape == (5, k)
        np.testing.assert_allclose(t[:, -1], np.arange(5) * g.frame_period_s)
        assert (t >= 0).all() and (np.diff(t.reshape(-1)) >= 0).all()   # clamped at 0, time order


def test_bad_snapshot_counts_are_refused():
    with pytest.raises(ValueError, match="subframes"):
        WindowGeometry(frames_per_window=16, latents_per_frame=4, subframes=3)   # 2048 % 3 != 0
    with pytest.raises(ValueError, match="subframes"):
        WindowGeometry(subframes=0)
    tiny = get_preset("tiny")
    with pytest.raises(ValueError, match="cavp.subframes"):
        dataclasses.replace(tiny, geometry=dataclasses.replace(tiny.geometry, subframes=2))


def test_snapshot_indices_generalise_the_audio_clock():
    g = get_preset("tiny").geometry
    np.testing.assert_array_equal(snapshot_indices(g, 40, 30.0, 300)[:, 0],
                                  audio_clock_indices(40, g.frame_period_s, 30.0, 300))
    g4 = dataclasses.replace(g, subframes=4)
    # 30 fps source: snapshots at 32, 64, 96, 128 ms -> frames 0, 1, 2, 3 (latest not after)
    assert snapshot_indices(g4, 2, 30.0, 300).tolist() == [[0, 0, 0, 0], [0, 1, 2, 3]]
    frames = np.arange(2 * 4 * 3).reshape(8, 3, 1, 1)
    stacked = stack_snapshots(frames, 4)
    assert stacked.shape == (2, 12, 1, 1) and stacked[1, :3, 0, 0].tolist() == [12, 13, 14]


def test_cavp_takes_stacked_snapshots():
    preset = with_subframes(get_preset("tiny"), 2)
    enc = CAVPVideoEncoder(preset.cavp)
    assert preset.cavp.in_channels == 6
    out = enc(torch.rand(2, 5, 6, 64, 64))
    assert out.shape == (2, 5, preset.cavp.embed_dim)
    assert enc.extract(torch.rand(7, 6, 64, 64), chunk_frames=4).shape == (7, preset.cavp.embed_dim)
    with pytest.raises(ValueError, match=r"\(B, T, 6, H, W\) \(2 RGB snapshot"):
        enc(torch.rand(1, 5, 3, 64, 64))


def test_one_snapshot_presets_are_unchanged():
    for name in ("tiny", "frieren-16k"):
        p = get_preset(name)
        assert p.geometry.subframes == 1 and p.cavp.in_channels == 3
        assert p.geometry.subframe_offsets == (0,)
