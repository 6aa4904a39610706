"""`--presence-channel`: the generator is conditioned on the CAVP presence head's decision too."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from frieren import train_cli
from frieren.checkpoints import load_bundle
from frieren.config import get_preset, with_presence_channel
from frieren.models.cavp import CAVPVideoEncoder
from frieren.training.presence import choose_threshold


def _small_cavp(threshold: float = 0.0) -> CAVPVideoEncoder:
    preset = with_presence_channel(get_preset("tiny"))
    torch.manual_seed(0)
    cavp = CAVPVideoEncoder(dataclasses.replace(preset.cavp, depth=14))
    cavp.presence_threshold.fill_(threshold)
    return cavp.eval()


def test_the_preset_widens_the_condition_by_one_channel_and_checks_it():
    base = get_preset("tiny")
    p = with_presence_channel(base)
    assert p.cavp.presence_channel and p.cond.origin_dim == base.cavp.embed_dim + 1 == p.cavp.condition_dim
    assert with_presence_channel(p, on=False) == base
    with pytest.raises(ValueError, match="presence channel"):
        dataclasses.replace(p, cond=base.cond)


def test_the_condition_is_the_feature_and_the_heads_decision():
    cavp = _small_cavp()
    video = torch.rand(2, 6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = cavp(video, normalize=True)
        logits = cavp.presence_logits(feats)[..., 0]                           # (2, 6): one slot
        threshold = float(logits.median())
        cavp.presence_threshold.fill_(threshold)
        cond = cavp.condition(video)
    assert cond.shape == (2, 6, cavp.cfg.embed_dim + 1)
    assert torch.equal(cond[..., :-1], feats)
    assert torch.equal(cond[..., -1], (logits > threshold).float())
    assert 0 < int(cond[..., -1].sum()) < 12          # the median splits the frames: both decisions occur
    # a whole clip, chunked like the reference extractor, gives the same per frame
    clip = cavp.extract_condition(video[0], chunk_frames=6)
    assert torch.allclose(clip, cond[0], atol=1e-6)


def test_without_the_channel_the_condition_is_the_feature():
    cavp = CAVPVideoEncoder(dataclasses.replace(get_preset("tiny").cavp, depth=14)).eval()
    video = torch.rand(1, 4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(cavp.condition(video), cavp(video, normalize=True))
    assert not hasattr(cavp, "presence_head")
    with pytest.raises(RuntimeError, match="no presence head"):
        cavp.presence_logits(torch.zeros(1, 128))


def test_the_threshold_keeps_the_impact_frames_and_drops_the_rest():
    """Two clips of 10 frames (100 samples each at 1000 Hz, so +-125 ms is about one frame): the
    impact frames have logits 1.5 and 0.3, the others -2 and one distractor 0.0. The best threshold
    lies in [0.0, 0.3): every impact found, nothing else."""
    spf, sr = 100, 1000
    a = np.full(10, -2.0)
    a[[2, 7]] = [1.5, 0.3]
    a[5] = 0.0
    b = np.full(10, -2.0)
    b[4] = 1.5
    onsets = [[2 * spf + 30, 7 * spf + 60], [4 * spf + 10]]
    t, scores = choose_threshold([a, b], onsets, spf, sr)
    assert 0.0 <= t < 0.3 and scores == {"f1": 1.0, "precision": 1.0, "recall": 1.0}
    t_strict, s = choose_threshold([a, b], onsets, spf, sr, grid=[0.5, 1.0])
    assert t_strict == 0.5 and s["recall"] == pytest.approx(2 / 3) and s["precision"] == 1.0
    with pytest.raises(ValueError, match="one onset list per clip"):
        choose_threshold([a], onsets, spf, sr)


def test_a_run_with_the_channel_trains_loads_and_generates(tmp_path, tiny_recipe_args):
    run, out = tmp_path / "run", tmp_path / "bundle"
    assert train_cli.main(tiny_recipe_args(run, out, "--cavp-presence-weight", "1.0", "--presence-channel",
                                           "--presence-validation-clips", "2")) == 0
    assert json.loads((run / "cavp.json").read_text()) == {"presence_channel": True}
    chosen = json.loads((run / "cavp" / "presence_threshold.json").read_text())
    assert chosen["clips"] == 2 and chosen["seed0"] == 800000 and 0.0 <= chosen["f1"] <= 1.0

    # the flow stages learned from the feature plus a 0/1 channel
    feats = torch.load(next((run / "cache" / "latents").glob("0*.pt")), weights_only=True)["feats"]
    assert feats.shape[1] == 129 and set(feats[:, -1].unique().tolist()) <= {0.0, 1.0}

    stack, info = load_bundle(out)
    assert info.preset.cavp.presence_channel and info.preset.cond.origin_dim == 129
    assert float(stack.cavp.presence_threshold) == pytest.approx(chosen["threshold"])
    state = torch.load(run / "cavp" / "final.pt", map_location="cpu", weights_only=False)["state"]
    assert torch.equal(stack.cavp.presence_head.weight, state["presence_head.weight"])
    assert json.loads((out / "config.json").read_text())["provenance"]["stages"]["presence_threshold"] == chosen

    # `bundle` of another stage needs no flag: the run dir records it
    assert train_cli.main(["bundle", "--run-dir", str(run), "--preset", "tiny", "--synthetic", "2",
                           "--synthetic-seed", "7", "--clip-seconds", "3", "--stage", "cfm",
                           "--out", str(tmp_path / "cfm"), "--no-progress", "--threads", "1"]) == 0
    assert load_bundle(tmp_path / "cfm")[1].preset.cond.origin_dim == 129

    # offline and streaming generation run on it
    from frieren.pipeline import OfflineGenerator
    from frieren.streaming import StreamingGenerator, WindowJob
    g = stack.preset.geometry
    frames = torch.rand(20, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    audio = OfflineGenerator(stack).generate_frames(frames, 20 * g.samples_per_frame).audio
    assert np.isfinite(np.asarray(audio)).all() and len(audio) == 20 * g.samples_per_frame
    job = WindowJob(frames=frames[:g.frames_per_window], noise=torch.randn(stack.preset.estimator.in_channels,
                                                                             g.latent_frames),
                    emit_start=0, emit_length=g.samples_per_frame)
    out_audio = StreamingGenerator(stack).run([job]).audio[0]
    assert out_audio.shape == (g.samples_per_frame,) and torch.isfinite(out_audio).all()


def test_truth_mode_gives_the_flow_stages_the_ground_truth_channel(tmp_path, tiny_recipe_args):
    """--presence-channel-train truth: the flow stages' conditions carry the synthetic world's impact
    frames in the channel (the features are the CAVP's); the cache on disk holds the features alone, so
    the flow stages never depend on the presence head's decisions."""
    import argparse

    from frieren.training.run import Run

    run_dir = tmp_path / "run"
    argv = tiny_recipe_args(run_dir, tmp_path / "b", "--cavp-presence-weight", "1.0", "--presence-channel",
                            "--presence-validation-clips", "1", "--presence-channel-train", "truth")
    assert train_cli.main(argv) == 0
    ap = argparse.ArgumentParser()
    train_cli.add_arguments(ap)
    run = Run(ap.parse_args(argv))
    lat, clips = run.latents(), run.clips("flow")
    cached = [torch.load(p, weights_only=True)["feats"] for p in sorted((run_dir / "cache" / "latents").glob("0*.pt"))]
    for f, c, disk in zip(lat.feats, clips, cached):
        assert torch.equal(f[:, -1], (c.frame_material >= 0).float())
        assert torch.equal(f[:, :-1], disk)
    assert any(bool((c.frame_material >= 0).any()) for c in clips)


def test_the_channel_needs_a_cavp_with_a_presence_head(tmp_path, tiny_recipe_args):
    with pytest.raises(SystemExit, match="--cavp-presence-weight"):
        train_cli.main(tiny_recipe_args(tmp_path / "run", tmp_path / "b", "--presence-channel",
                                        "--presence-validation-clips", "2"))


def test_the_training_channel_mode_needs_the_channel(tmp_path, tiny_recipe_args):
    with pytest.raises(SystemExit, match="needs --presence-channel"):
        train_cli.main(tiny_recipe_args(tmp_path / "run", tmp_path / "b", "--presence-channel-train", "truth"))


def test_no_validation_clips_is_refused_by_name(tmp_path):
    from frieren.training.presence import validation_threshold

    with pytest.raises(SystemExit, match="--presence-validation-clips"):
        validation_threshold(_small_cavp(), with_presence_channel(get_preset("tiny")), tmp_path / "t.json", clips=0)
