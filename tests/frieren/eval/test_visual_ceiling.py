"""benchmarks/visual_ceiling.py: oracle bounds of what the frames at a visual rate can support."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

SR = 16000


def _onsets_only(onsets):
    """The part of HeldOut that sync_oracle reads: the sample rate and merged onsets per clip."""
    return SimpleNamespace(scene=SimpleNamespace(sample_rate=SR), onsets=onsets)


def test_sync_oracle_places_onsets_at_frame_resolution(benchmark_module):
    mod = benchmark_module("visual_ceiling")
    period_s = 0.128
    period = int(period_s * SR)
    centred = [[int((i + 0.5) * period) for i in (0, 3, 7)]]
    assert mod.sync_oracle(_onsets_only(centred), period_s) == {"f1_45ms": 1.0, "f1_125ms": 1.0}
    # at a period's start the evenly placed guess is half a period (64 ms) late: beyond 45 ms, within 125
    starts = [[i * period + 1 for i in (0, 3, 7)]]
    assert mod.sync_oracle(_onsets_only(starts), period_s) == {"f1_45ms": 0.0, "f1_125ms": 1.0}
    # two onsets in one period are placed at its quarter and three-quarter points
    pair = [[int(0.25 * period), int(0.75 * period)]]
    assert mod.sync_oracle(_onsets_only(pair), period_s)["f1_45ms"] == 1.0
    # a finer visual rate can only help
    mixed = [[int(s * SR) for s in (0.01, 0.2, 0.33, 0.5, 0.9, 1.27)]]
    coarse, fine = mod.sync_oracle(_onsets_only(mixed), period_s), mod.sync_oracle(_onsets_only(mixed), period_s / 4)
    assert fine["f1_45ms"] >= coarse["f1_45ms"] and fine["f1_45ms"] == 1.0


def test_patch_colours_read_the_pixels_around_the_point(benchmark_module):
    mod = benchmark_module("visual_ceiling")
    frame = np.zeros((3, 32, 32), np.float32)
    frame[0, 10:13, 20:23] = 1.0                     # a red 3x3 square centred on (x=21, y=11)
    c = mod.patch_colours(frame, 21, 11)
    assert c.shape == (3 * len(mod.PATCH_RADII),)
    np.testing.assert_allclose(c[:3], [1.0, 0.0, 0.0])                  # radius 1: all red
    assert 0.0 < c[3] < 1.0 and c[4] == 0.0                             # radius 3: red diluted
    np.testing.assert_allclose(mod.patch_colours(frame, 0, 0), 0.0)     # clipped at the border


def test_main_writes_every_row(tmp_path, benchmark_module):
    mod = benchmark_module("visual_ceiling")
    out = tmp_path / "ceiling.json"
    assert mod.main(["--clips", "4", "--train-clips", "2", "--seconds", "3", "--rates", "1", "2",
                     "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["clips"] == 4 and len(rows) == 2 + 2 * 4
    for r in rows:
        for key in ("material_acc", "clip_majority_material", "uniform_among_present", "f1_45ms", "f1_125ms"):
            if key in r:
                assert 0.0 <= r[key] <= 1.0, r
    sync = [r for r in rows if r["what"].startswith("sync")]
    from frieren.config import get_preset
    period = get_preset("tiny").geometry.frame_period_s
    assert [r["fps"] for r in sync] == [round(1 / period, 2), round(2 / period, 2)]
    assert all(r["f1_125ms"] > 0.9 for r in sync)    # one frame period (128 ms) cannot miss by 125 ms often


def test_bad_arguments_are_refused(benchmark_module):
    mod = benchmark_module("visual_ceiling")
    for argv in (["--clips", "4", "--train-clips", "4"], ["--rates", "0"]):
        with pytest.raises(SystemExit):
            mod.main(argv)
