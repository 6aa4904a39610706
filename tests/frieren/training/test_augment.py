"""CAVP frame augmentation (--cavp-flip, --cavp-shift, --cavp-zoom, --cavp-brightness,
--cavp-contrast, --cavp-color, --cavp-noise): what it does to a window, and that the CAVP stage
really trains on the augmented frames."""
from __future__ import annotations

import pytest
import torch

from frieren import train_cli
from frieren.training.augment import FrameAugment


def _frames(b=6, f=3, s=8):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (b, f, 3, s, s), generator=g, dtype=torch.uint8)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_off_is_identity_and_always_flip_mirrors_every_frame():
    x = _frames()
    assert not FrameAugment(flip=0.0, shift=0).active
    assert torch.equal(FrameAugment(flip=0.0, shift=0)(x, _gen()), x)
    y = FrameAugment(flip=1.0, shift=0)(x, _gen())
    assert y.dtype == x.dtype and torch.equal(y, x.flip(-1))


def test_shift_moves_the_whole_window_alike_and_repeats_the_edge():
    x = _frames(b=32)
    aug = FrameAugment(flip=0.0, shift=2)
    y = aug(x, _gen(3))
    moved = 0
    for i in range(x.shape[0]):
        # find the (dy, dx) that explains window i: every frame moved by the same amount
        found = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = (torch.arange(8) - dy).clamp(0, 7)
                cols = (torch.arange(8) - dx).clamp(0, 7)
                if torch.equal(y[i], x[i][..., rows[:, None], cols[None, :]]):
                    found.append((dy, dx))
        assert found, f"window {i} is not a shifted copy of itself"
        moved += found[0] != (0, 0)
    assert moved > 16, "with shifts of up to 2 px most of 32 windows should move"


def test_same_generator_state_gives_the_same_windows_and_flips_about_half():
    x = _frames(b=200, f=1, s=4)
    aug = FrameAugment(flip=0.5, shift=1)
    a, b = aug(x, _gen(5)), aug(x, _gen(5))
    assert torch.equal(a, b)
    flipped = FrameAugment(flip=0.5, shift=0)(x, _gen(5))
    n = sum(torch.equal(flipped[i], x[i].flip(-1)) for i in range(200))
    assert 60 < n < 140


def test_geometry_comes_out_channels_innermost_and_converts_to_float_exactly():
    """The geometry parts gather whole pixels into a (B, F, H, W, C) buffer: the layout the
    channels-last CAVP reads, so unit_frames converts it without a transposition, to exactly the
    values of converting the usual layout."""
    from frieren.training.objectives import unit_frames
    x = torch.randint(0, 256, (5, 4, 12, 16, 16), generator=_gen(7), dtype=torch.uint8)
    y = FrameAugment(flip=0.5, shift=3, zoom=0.2)(x, _gen(2))
    assert y.shape == x.shape and y.permute(0, 1, 3, 4, 2).is_contiguous()
    ref = y.contiguous()
    for channels_last in (False, True):
        unit = unit_frames(y, channels_last=channels_last)
        assert torch.equal(unit, ref.float() / 255.0)
    assert unit_frames(y, channels_last=False).is_contiguous()
    assert unit_frames(y, channels_last=True).permute(0, 2, 1, 3, 4).is_contiguous(
        memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("kwargs, match", [({"flip": 1.5}, "flip probability"), ({"shift": -1}, "shift"),
                                           ({"zoom": 1.0}, "zoom"), ({"brightness": -0.1}, "brightness"),
                                           ({"contrast": 1.0}, "contrast"), ({"color": 2.0}, "color"),
                                           ({"noise": -0.01}, "noise")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FrameAugment(**kwargs)


def test_shift_as_large_as_the_frame_is_refused():
    with pytest.raises(ValueError, match="not smaller"):
        FrameAugment(shift=8)(_frames(s=8), _gen())


def test_zoom_keeps_the_centre_and_the_order_of_rows_and_columns():
    """A zoom about the centre: every output row (column) is an input row (column), in order,
    the centre of an odd-sized frame stays where it is, and most windows change."""
    x = _frames(b=24, f=2, s=15)
    y = FrameAugment(flip=0.0, shift=0, zoom=0.3)(x, _gen(2))
    assert y.dtype == x.dtype and y.shape == x.shape
    changed = 0
    for i in range(x.shape[0]):
        rows = [next(r for r in range(15) if torch.equal(y[i][..., o, :][..., 7], x[i][..., r, :][..., 7]))
                for o in range(15)]
        assert rows == sorted(rows) and rows[7] == 7, rows
        cols = [next(c for c in range(15) if torch.equal(y[i][..., 7, o], x[i][..., 7, c])) for o in range(15)]
        assert cols == sorted(cols) and cols[7] == 7, cols
        changed += not torch.equal(y[i], x[i])
    assert changed > 12


def _mid_frames(b=40, f=2, k=2, s=6):
    """uint8 frames between 80 and 175, so that the light parts used here never clip."""
    g = torch.Generator().manual_seed(4)
    return torch.randint(80, 176, (b, f, 3 * k, s, s), generator=g, dtype=torch.uint8)


def test_brightness_adds_one_offset_per_window_within_the_range():
    x = _mid_frames()
    y = FrameAugment(flip=0.0, brightness=0.2)(x, _gen(1))
    assert y.dtype == torch.float32
    diff = y - x.float() / 255.0
    per_window = diff.flatten(1)
    assert torch.allclose(per_window, per_window[:, :1].expand_as(per_window), atol=1e-5)
    offsets = per_window[:, 0]
    assert offsets.abs().max() <= 0.2 + 1e-6 and offsets.std() > 0.05


def test_contrast_keeps_each_windows_mean_and_colour_gain_is_one_factor_per_colour():
    x = _mid_frames()
    xf = x.float() / 255.0
    y = FrameAugment(flip=0.0, contrast=0.3)(x, _gen(1))
    assert torch.allclose(y.mean(dim=(1, 2, 3, 4)), xf.mean(dim=(1, 2, 3, 4)), atol=1e-5)
    assert not torch.allclose(y, xf, atol=1e-3)
    y = FrameAugment(flip=0.0, color=0.1)(x, _gen(1))
    ratio = (y / xf).mean(dim=(1, 3, 4))                 # (B, 3K)
    assert torch.allclose(ratio[:, :3], ratio[:, 3:], atol=1e-5), "snapshots of one window share the gains"
    assert ((ratio - 1).abs() <= 0.1 + 1e-5).all() and (ratio - 1).abs().max() > 0.05


def test_noise_has_the_asked_spread_and_the_off_parts_draw_nothing():
    x = _mid_frames(b=8, s=16)
    y = FrameAugment(flip=0.0, noise=0.03)(x, _gen(1))
    assert abs(float((y - x.float() / 255.0).std()) - 0.03) < 0.003
    g1, g2 = _gen(6), _gen(6)
    a = FrameAugment(flip=0.5, shift=2)(x, g1)
    b = FrameAugment(flip=0.5, shift=2, zoom=0.0, brightness=0.0, contrast=0.0, color=0.0, noise=0.0)(x, g2)
    assert torch.equal(a, b) and torch.equal(g1.get_state(), g2.get_state())


def test_colour_gain_needs_rgb_channels():
    with pytest.raises(ValueError, match="multiple of 3"):
        FrameAugment(color=0.1)(torch.zeros(1, 1, 4, 4, 4, dtype=torch.uint8), _gen())


def _cavp_args(run_dir, *extra):
    return ["cavp", "--run-dir", str(run_dir), "--preset", "tiny", "--seed", "0", "--synthetic", "2",
            "--synthetic-seed", "7", "--clip-seconds", "3", "--window-stride", "4", "--threads", "1",
            "--no-progress", "--steps", "2", "--batch-size", "2", "--cavp-event-weight", "1.0", *extra]


def test_the_cavp_stage_trains_on_the_mirrored_frames(tmp_path):
    """--cavp-flip 1 gives exactly the weights of training without it on a clip cache whose
    frames were mirrored beforehand: the stage feeds the augmented frames to the objective."""
    import shutil

    flipped, mirrored, plain = tmp_path / "flipped", tmp_path / "mirrored", tmp_path / "plain"
    assert train_cli.main(_cavp_args(flipped, "--cavp-flip", "1.0")) == 0
    shutil.copytree(flipped / "cache", mirrored / "cache")
    for path in sorted((mirrored / "cache" / "clips").glob("*.pt")):
        entry = torch.load(path, map_location="cpu", weights_only=True)
        entry["frames"] = entry["frames"].flip(-1).contiguous()
        torch.save(entry, path)
    assert train_cli.main(_cavp_args(mirrored)) == 0
    assert train_cli.main(_cavp_args(plain)) == 0
    a, b, c = (torch.load(d / "cavp" / "final.pt", map_location="cpu", weights_only=False)["state"]
               for d in (flipped, mirrored, plain))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], c[k]) for k in a), "mirroring changed nothing: the flag is not applied"


def test_the_cavp_stage_trains_on_zoomed_and_relit_frames(tmp_path):
    """The zoom and light flags reach the stage: its weights differ from training without them."""
    import shutil

    plain, relit = tmp_path / "plain", tmp_path / "relit"
    assert train_cli.main(_cavp_args(plain)) == 0
    shutil.copytree(plain / "cache", relit / "cache")
    assert train_cli.main(_cavp_args(relit, "--cavp-zoom", "0.2", "--cavp-brightness", "0.2", "--cavp-contrast",
                                     "0.2", "--cavp-color", "0.05", "--cavp-noise", "0.02")) == 0
    a, b = (torch.load(d / "cavp" / "final.pt", map_location="cpu", weights_only=False)["state"] for d in (plain, relit))
    assert any(not torch.equal(a[k], b[k]) for k in a), "the zoom and light flags changed nothing"


def test_the_cavp_stage_trains_a_presence_head_on_the_synthetic_labels(tmp_path):
    """--cavp-presence-weight reaches the stage: its loss is logged, its head is trained and kept
    in the checkpoint (for resuming), and the video branch's weights differ from training without it."""
    import json
    import shutil

    plain, presence = tmp_path / "plain", tmp_path / "presence"
    assert train_cli.main(_cavp_args(plain)) == 0
    shutil.copytree(plain / "cache", presence / "cache")
    assert train_cli.main(_cavp_args(presence, "--cavp-presence-weight", "1.0")) == 0
    logged = json.loads((presence / "cavp" / "log.jsonl").read_text().splitlines()[-1])
    assert {"presence", "presence_recall", "presence_precision"} <= set(logged), logged
    a, b = (torch.load(d / "cavp" / "final.pt", map_location="cpu", weights_only=False)["state"]
            for d in (plain, presence))
    assert {"presence_head.weight", "presence_head.bias"} <= set(b) and not any("presence" in k for k in a)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("video.")), "the presence flag changed nothing"
