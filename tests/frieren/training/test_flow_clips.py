"""`frieren train --flow-clips N`: the flow stages train on synthetic clips the CAVP never saw."""
from __future__ import annotations

import json

import pytest
import torch

from frieren import train_cli


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state"]


def test_flow_stages_train_on_their_own_clips_and_the_bundle_records_both(tmp_path, tiny_recipe_args):
    same, own = tmp_path / "same", tmp_path / "own"
    assert train_cli.main(tiny_recipe_args(same, tmp_path / "b_same")) == 0
    assert train_cli.main(tiny_recipe_args(own, tmp_path / "b_own", "--flow-clips", "2")) == 0

    source = json.loads((own / "cache_flow" / "source.json").read_text())
    assert (source["kind"], source["clips"], source["seed0"]) == ("synthetic", 2, 9)  # right after 7..8
    assert len(list((own / "cache_flow" / "latents").glob("0*.pt"))) == 2
    assert not (own / "cache" / "latents").exists()        # the CAVP's clips get no latents
    # the VAE and CAVP are the same; the flow model learned from other clips
    for stage in ("vae", "cavp"):
        a, b = _state(same / stage / "final.pt"), _state(own / stage / "final.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), stage
    a, b = _state(same / "cfm" / "final.pt"), _state(own / "cfm" / "final.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a)

    data = json.loads((tmp_path / "b_own" / "config.json").read_text())["provenance"]["data"]
    assert (data["seed0"], data["clips"]) == (7, 2) and (data["flow"]["seed0"], data["flow"]["clips"]) == (9, 2)
    assert "flow" not in json.loads((tmp_path / "b_same" / "config.json").read_text())["provenance"]["data"]


@pytest.mark.parametrize("extra, message", [
    (["--flow-clips", "2", "--flow-synthetic-seed", "8"], "overlap the CAVP's clips"),
    (["--flow-clips", "-1"], "must be 0"),
    (["--flow-synthetic-seed", "100"], "needs --flow-clips"),
])
def test_flow_clip_settings_that_cannot_work_are_refused(tmp_path, extra, message, tiny_recipe_args):
    with pytest.raises(SystemExit, match=message):
        train_cli.main(tiny_recipe_args(tmp_path / "run", tmp_path / "b", *extra))


def test_flow_clips_are_refused_for_a_folder_of_videos(tmp_path, tiny_recipe_args):
    with pytest.raises(SystemExit, match="--data-dir"):
        train_cli.main(tiny_recipe_args(tmp_path / "run", tmp_path / "b", "--data-dir", str(tmp_path),
                                     "--flow-clips", "2"))
