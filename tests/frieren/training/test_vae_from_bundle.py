"""`frieren train ... --vae-from BUNDLE`: the VAE stage adopts a bundle's VAE instead of training."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from frieren import train_cli
from frieren.bundles import DEFAULT_BUNDLE
from frieren.checkpoints import load_bundle, save_bundle
from frieren.stack import FrierenStack
from frieren.training.run import sub_state


def _default_args(run_dir, bundle, *extra):
    """The whole recipe on two 3-second clips, a few steps per stage (seconds on a CPU)."""
    args = ["default", "--run-dir", str(run_dir), "--out", str(bundle), "--synthetic", "2",
            "--synthetic-seed", "11", "--clip-seconds", "3", "--window-stride", "4", "--threads", "1",
            "--no-progress", "--reflow-pairs", "2", "--teacher-steps", "2"]
    for stage, steps in (("vae", 2), ("cavp", 2), ("cfm", 2), ("reflow", 1), ("distill", 1)):
        args += [f"--{stage}-steps", str(steps), f"--{stage}-batch-size", "2"]
    return args + list(extra)


def _shipped_bundle():
    return DEFAULT_BUNDLE


def test_the_run_uses_the_bundles_vae_and_trains_the_rest(tmp_path):
    source = _shipped_bundle()
    run_dir = tmp_path / "run"
    assert train_cli.main(_default_args(run_dir, tmp_path / "bundle", "--vae-from", str(source))) == 0
    assert not (run_dir / "vae" / "log.jsonl").exists(), "the VAE was trained although --vae-from was given"
    fin = torch.load(run_dir / "vae" / "final.pt", map_location="cpu", weights_only=False)
    assert fin["result"]["adopted_from"] == str(source)
    adopted = sub_state(fin["state"], "vae.")
    shipped, _ = load_bundle(source)
    expected = shipped.vae.state_dict()
    assert adopted.keys() == expected.keys()
    for k in expected:
        assert torch.equal(adopted[k], expected[k]), k
    # the new bundle carries that VAE too, and the later stages were trained
    made, _ = load_bundle(tmp_path / "bundle")
    for k, v in made.vae.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert (run_dir / "distill" / "final.pt").is_file()
    # a rerun (even with other --vae-steps) finds the stage finished and does not train it
    assert train_cli.main(_default_args(run_dir, tmp_path / "bundle", "--vae-steps", "5")) == 0
    assert not (run_dir / "vae" / "log.jsonl").exists()


def test_a_bundle_with_another_vae_shape_is_refused(tmp_path):
    shipped, info = load_bundle(_shipped_bundle())
    other_vae = dataclasses.replace(info.preset.vae, ch=info.preset.vae.ch * 2)
    other = FrierenStack(dataclasses.replace(info.preset, vae=other_vae))
    save_bundle(other, tmp_path / "other")
    with pytest.raises(SystemExit, match=r"--vae-from .*other.*not the 'tiny' preset's"):
        train_cli.main(_default_args(tmp_path / "run", tmp_path / "bundle", "--vae-from", str(tmp_path / "other"),
                                     "--vae-steps", "1"))


def test_an_unreadable_bundle_is_named(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"--vae-from .*broken"):
        train_cli.main(_default_args(tmp_path / "run", tmp_path / "bundle", "--vae-from", str(tmp_path / "broken")))
