"""`--presence-edge-steps N`: the presence detector also learns, and gets a threshold for, the
newest frame of a window, the frame a stream without look-ahead emits and reads with nothing after it."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from frieren import train_cli
from frieren.checkpoints import load_bundle
from frieren.config import get_preset, with_presence_channel
from frieren.models.cavp import CAVPVideoEncoder
from frieren.training.presence import window_edge_logits


def _slot_cavp(edge: bool) -> CAVPVideoEncoder:
    p = with_presence_channel(get_preset("tiny"), slots=4, detector=True, edge=edge)
    torch.manual_seed(0)
    return CAVPVideoEncoder(dataclasses.replace(p.cavp, depth=14)).eval()


def test_a_stream_window_is_decided_by_the_edge_detector_its_newest_frame_at_its_own_threshold():
    cavp = _slot_cavp(edge=True)
    assert cavp.cfg.condition_dim == cavp.cfg.embed_dim + 4
    with torch.no_grad():   # the two detectors differ, as after the newest-frame phase
        cavp.presence_edge_net.load_state_dict(_slot_cavp(edge=False).presence_net.state_dict())
        cavp.presence_edge_net.video_project_head.weight.mul_(-1)
        cavp.presence_edge_head.load_state_dict(cavp.presence_head.state_dict())
    video = torch.rand(2, 6, cavp.cfg.in_channels, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        edge = cavp.presence_edge_head(cavp.presence_edge_net(video, normalize=True))
        whole = cavp.presence_logits(cavp.presence_net(video, normalize=True))
        assert not torch.allclose(edge, whole)
        assert torch.equal(cavp.window_presence_logits(video), edge)
        cavp.presence_edge_window_threshold.fill_(float(edge.max()) + 1)  # no earlier frame passes its threshold...
        cavp.presence_edge_threshold.fill_(float(edge.min()) - 1)         # ...every slot of the newest passes its own
        cavp.presence_threshold.fill_(float(whole.min()) - 1)             # (the whole-clip detector's: all pass)
        cond = cavp.condition(video)
        assert cond.shape == (2, 6, cavp.cfg.condition_dim)
        assert torch.equal(cond[..., :-4], cavp(video))
        assert cond[:, :-1, -4:].sum() == 0 and bool((cond[:, -1, -4:] == 1).all())
        # a whole clip (offline) is read by the first detector at its one threshold
        offline = cavp.extract_condition(video[0])
        assert bool((offline[:, -4:] == 1).all())
        assert torch.allclose(cavp.extract_presence_logits(video[0], edge=True), edge[0], atol=1e-5)
    # without the flag there is no edge detector and nothing changes (bundles made before it load as they were)
    plain = _slot_cavp(edge=False)
    assert not any(k.startswith("presence_edge_") for k in plain.state_dict())
    plain.load_state_dict({k: v for k, v in cavp.state_dict().items() if not k.startswith("presence_edge_")})
    with torch.no_grad():
        assert torch.equal(plain.condition(video)[..., -4:], (whole > plain.presence_threshold).float())
    with pytest.raises(RuntimeError, match="no edge detector"):
        plain.extract_presence_logits(video[0], edge=True)
    with pytest.raises(ValueError, match="needs presence_detector"):
        with_presence_channel(get_preset("tiny"), slots=4, edge=True)


def test_edge_logits_read_each_frame_as_the_newest_of_its_window():
    cavp = _slot_cavp(edge=True)
    frames = torch.rand(7, cavp.cfg.in_channels, 64, 64, generator=torch.Generator().manual_seed(2))
    got = window_edge_logits(cavp, frames, window=4, batch=3)
    ahead = window_edge_logits(cavp, frames, window=4, lookahead=1)
    with torch.no_grad():
        def newest(idx, pos=-1):
            return cavp.presence_edge_head(cavp.presence_edge_net(frames[idx][None], normalize=True))[0, pos]
        assert torch.allclose(got[5], newest([2, 3, 4, 5]), atol=1e-6)
        assert torch.allclose(got[1], newest([0, 0, 0, 1]), atol=1e-6)            # start-up: the first frame repeated
        assert torch.allclose(ahead[2], newest([0, 1, 2, 3], pos=-2), atol=1e-6)  # one frame after it seen
        assert torch.allclose(ahead[6], newest([4, 5, 6, 6], pos=-2), atol=1e-6)
    assert got.shape == (7, 4)


def test_a_run_with_the_newest_frame_phase_ships_both_thresholds(tmp_path, tiny_recipe_args, benchmark_module):
    run, out = tmp_path / "run", tmp_path / "bundle"
    assert train_cli.main(tiny_recipe_args(run, out, "--presence-channel", "--presence-slots", "4",
                                           "--presence-detector-steps", "2", "--presence-edge-steps", "2",
                                           "--presence-channel-train", "truth",
                                           "--presence-validation-clips", "1")) == 0
    assert json.loads((run / "cavp.json").read_text()) == {"presence_channel": True, "presence_slots": 4,
                                                          "presence_detector": True, "presence_edge": True}
    first = torch.load(run / "cavp" / "presence_detector.pt", weights_only=True)
    second = torch.load(run / "cavp" / "presence_detector_edge.pt", weights_only=True)
    assert second["info"]["steps"] == 2 and second["info"]["edge_weight"] == 1.0
    chosen = json.loads((run / "cavp" / "presence_edge_threshold.json").read_text())
    window = json.loads((run / "cavp" / "presence_edge_window_threshold.json").read_text())
    stack, info = load_bundle(out)
    cavp = stack.cavp
    assert info.preset.cavp.presence_edge
    assert float(cavp.presence_edge_threshold) == pytest.approx(chosen["threshold"])
    assert float(cavp.presence_edge_window_threshold) == pytest.approx(window["threshold"])
    assert info.provenance["stages"]["presence_edge_threshold"]["threshold"] == chosen["threshold"]
    key = "video_project_head.weight"
    assert torch.equal(cavp.presence_net.state_dict()[key], first["net"][key])         # whole clips: the first
    assert torch.equal(cavp.presence_edge_net.state_dict()[key], second["net"][key])   # stream windows: the second
    assert torch.equal(cavp.presence_edge_head.weight, second["head"]["weight"])
    assert not torch.equal(second["net"][key], first["net"][key])
    # the two benchmarks that read the newest frame run on such a bundle and write their JSON
    edge_json, replica_json = tmp_path / "edge.json", tmp_path / "replica.json"
    assert benchmark_module("edge_presence").main([str(out), "--clips", "1", "--seconds", "2.5",
                                                   "--json", str(edge_json)]) == 0
    scored = json.loads(edge_json.read_text())
    assert scored["edge_threshold"] == pytest.approx(chosen["threshold"])
    assert scored["window, look-ahead 0"]["threshold"] == scored["edge_threshold"]
    assert benchmark_module("stream_replica").main([str(out), "--clips", "1", "--seconds", "2.5", "--lookahead", "1",
                                                    "--padded-generator", "--json", str(replica_json)]) == 0
    rows = json.loads(replica_json.read_text())["bundles"][str(out)]
    assert set(rows) <= {"stream", "stream, whole-clip channels", "whole-clip condition per hop", "offline",
                         "stream, look-ahead 1", "stream, generator window padded 1"}
    assert {"stream, look-ahead 1", "stream, generator window padded 1"} <= set(rows)
    assert all(0 <= r["f1"] <= 1 and r["events"] > 0 for r in rows.values())
    # `bundle` of another stage repeats no flag: the recorded phase is reused, and missing it is named
    bundle_argv = ["bundle", "--run-dir", str(run), "--preset", "tiny", "--synthetic", "2", "--synthetic-seed", "7",
                   "--clip-seconds", "3", "--stage", "cfm", "--out", str(tmp_path / "cfm"), "--no-progress",
                   "--threads", "1"]
    assert train_cli.main(bundle_argv) == 0
    (run / "cavp" / "presence_detector_edge.pt").unlink()
    with pytest.raises(SystemExit, match="pass --presence-edge-steps"):
        train_cli.main(bundle_argv)
    with pytest.raises(SystemExit, match="needs --presence-detector-steps"):
        train_cli.main(tiny_recipe_args(tmp_path / "r2", tmp_path / "b2", "--presence-channel", "--presence-slots",
                                        "4", "--presence-edge-steps", "2"))


@pytest.mark.parametrize("slots, materials", [(4, 0), (4, 5), (0, 0)])
def test_padded_conditions_shift_the_window_and_say_nothing_starts(slots, materials, benchmark_module):
    """The padded generator window: the stream's window less its oldest frame, then the newest frame's
    features again with every decided channel off (none without a presence channel)."""
    from types import SimpleNamespace

    cavp = SimpleNamespace(presence_channel=bool(slots), presence_slots=slots, material_channel=materials)
    stack = SimpleNamespace(preset=SimpleNamespace(cavp=cavp))
    edge = torch.rand(3, 5, 8 + slots + materials) + 0.5                   # (N, F, D), nothing zero
    before = edge.clone()
    padded = benchmark_module("stream_replica").padded_conditions(stack, edge)
    assert padded.shape == edge.shape
    assert torch.equal(padded[:, :-1], edge[:, 1:])
    decided = slots + materials
    assert torch.equal(padded[:, -1, :8], edge[:, -1, :8])
    assert torch.equal(padded[:, -1, 8:], torch.zeros(3, decided))
    assert torch.equal(edge, before)                                       # the stream's windows untouched
