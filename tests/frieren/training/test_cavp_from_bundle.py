"""`frieren train ... --cavp-from BUNDLE`: the CAVP stage adopts a bundle's video branch instead of training."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from frieren import train_cli
from frieren.bundles import DEFAULT_BUNDLE
from frieren.checkpoints import load_bundle, save_bundle
from frieren.config import with_presence_channel
from frieren.stack import FrierenStack
from frieren.training.run import sub_state


@pytest.fixture
def recipe(tiny_recipe_args):
    """The shared tiny recipe with the shipped bundle's snapshots per frame, ``extra`` appended."""
    def build(run_dir, bundle, subframes, *extra):
        return tiny_recipe_args(run_dir, bundle, "--subframes", str(subframes), "--presence-validation-clips", "1",
                                *extra)
    return build


def _video_branch(cavp_state: dict) -> dict:
    return {k: v for k, v in cavp_state.items() if not k.startswith(("presence_head.", "presence_net.",
                                                                      "presence_threshold"))}


def test_the_run_uses_the_bundles_cavp_and_trains_the_rest(tmp_path, recipe):
    shipped, info = load_bundle(DEFAULT_BUNDLE)
    run_dir = tmp_path / "run"
    subframes = info.preset.geometry.subframes
    assert train_cli.main(recipe(run_dir, tmp_path / "bundle", subframes, "--cavp-from", str(DEFAULT_BUNDLE))) == 0
    assert not (run_dir / "cavp" / "log.jsonl").exists(), "the CAVP was trained although --cavp-from was given"
    fin = torch.load(run_dir / "cavp" / "final.pt", map_location="cpu", weights_only=False)
    assert fin["result"]["adopted_from"] == str(DEFAULT_BUNDLE)
    expected = _video_branch(shipped.cavp.state_dict())
    adopted = sub_state(fin["state"], "video.")
    assert adopted.keys() == expected.keys()
    for k in expected:
        assert torch.equal(adopted[k], expected[k]), k
    made, made_info = load_bundle(tmp_path / "bundle")
    for k, v in made.cavp.state_dict().items():
        assert torch.equal(v, expected[k]), k
    assert made_info.provenance["stages"]["cavp"]["adopted_from"] == str(DEFAULT_BUNDLE)
    assert (run_dir / "distill" / "final.pt").is_file()
    # a rerun (even with other --cavp-steps) finds the stage finished and does not train it
    assert train_cli.main(recipe(run_dir, tmp_path / "bundle", subframes, "--cavp-steps", "5")) == 0
    assert not (run_dir / "cavp" / "log.jsonl").exists()


def test_a_frame_presence_head_comes_along_and_a_slot_bundle_has_none(tmp_path, recipe):
    """A bundle with a one-slot presence channel lends its frame head (the threshold is chosen again
    on this run's validation clips); one with slots has no frame head, and the run says what to pass."""
    shipped, info = load_bundle(DEFAULT_BUNDLE)
    frame = FrierenStack(with_presence_channel(info.preset, slots=1))
    frame.cavp.load_state_dict(_video_branch(shipped.cavp.state_dict()), strict=False)
    save_bundle(frame, tmp_path / "frame")
    argv = recipe(tmp_path / "run", tmp_path / "bundle", info.preset.geometry.subframes,
                         "--cavp-from", str(tmp_path / "frame"), "--presence-channel")
    assert train_cli.main(argv) == 0
    made, _ = load_bundle(tmp_path / "bundle")
    for k, v in frame.cavp.presence_head.state_dict().items():
        assert torch.equal(made.cavp.presence_head.state_dict()[k], v), k
    slotted = FrierenStack(with_presence_channel(info.preset, slots=info.preset.geometry.latents_per_frame))
    save_bundle(slotted, tmp_path / "slotted")
    argv = recipe(tmp_path / "run2", tmp_path / "bundle2", info.preset.geometry.subframes,
                         "--cavp-from", str(tmp_path / "slotted"), "--presence-channel")
    with pytest.raises(SystemExit, match=r"--cavp-from adopted has none.*--presence-slots"):
        train_cli.main(argv)


def test_slots_and_a_detector_are_fitted_on_the_adopted_branch(tmp_path, recipe):
    shipped, info = load_bundle(DEFAULT_BUNDLE)
    run_dir = tmp_path / "run"
    assert train_cli.main(recipe(run_dir, tmp_path / "bundle", info.preset.geometry.subframes,
                                        "--cavp-from", str(DEFAULT_BUNDLE), "--presence-channel",
                                        "--presence-slots", str(info.preset.geometry.latents_per_frame),
                                        "--presence-detector-steps", "1")) == 0
    made, made_info = load_bundle(tmp_path / "bundle")
    assert made_info.preset.cavp.presence_detector
    expected = _video_branch(shipped.cavp.state_dict())
    for k, v in _video_branch(made.cavp.state_dict()).items():
        assert torch.equal(v, expected[k]), k  # the generator's features are the adopted ones


def test_a_bundle_with_another_video_branch_is_refused(tmp_path, recipe):
    _, info = load_bundle(DEFAULT_BUNDLE)
    other_cavp = dataclasses.replace(info.preset.cavp, base_channels=info.preset.cavp.base_channels * 2)
    other = FrierenStack(dataclasses.replace(info.preset, cavp=other_cavp))
    save_bundle(other, tmp_path / "other")
    with pytest.raises(SystemExit, match=r"--cavp-from .*other.*video branch"):
        train_cli.main(recipe(tmp_path / "run", tmp_path / "bundle", info.preset.geometry.subframes,
                                     "--cavp-from", str(tmp_path / "other"), "--vae-steps", "1"))


def test_an_unreadable_bundle_is_named(tmp_path, recipe):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"--cavp-from .*broken"):
        train_cli.main(recipe(tmp_path / "run", tmp_path / "bundle", 1, "--cavp-from", str(tmp_path / "broken")))
