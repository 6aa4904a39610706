"""CAVP frame augmentation (--cavp-flip, --cavp-shift): what it does to a window, and that the
CAVP stage really trains on the augmented frames."""
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


@pytest.mark.parametrize("kwargs, match", [({"flip": 1.5}, "flip probability"), ({"shift": -1}, "shift"),])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FrameAugment(**kwargs)


def test_shift_as_large_as_the_frame_is_refused():
    with pytest.raises(ValueError, match="not smaller"):
        FrameAugment(shift=8)(_frames(s=8), _gen())


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
