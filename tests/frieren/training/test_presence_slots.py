"""`--presence-slots S`: the presence channel says in which slot of each frame an onset starts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frieren import train_cli
from frieren.checkpoints import load_bundle
from frieren.config import get_preset, with_presence_channel
from frieren.training.presence import choose_threshold, fit_slot_head, frame_onsets, onset_slot_labels, slot_onsets


def test_the_preset_widens_the_condition_by_one_channel_per_slot():
    base = get_preset("tiny")
    p = with_presence_channel(base, slots=4)
    assert p.cavp.presence_slots == 4 and p.cond.origin_dim == base.cavp.embed_dim + 4 == p.cavp.condition_dim
    assert with_presence_channel(p, on=False) == base
    with pytest.raises(ValueError, match="presence_slots"):
        with_presence_channel(base, slots=0)


def test_slot_labels_mark_where_each_merged_onset_starts():
    """Frames of 100 samples at 1000 Hz, 4 slots of 25: onsets at 10 and 40 (30 ms apart: one audible
    onset, the first kept), 130 and 199 (frame 1, slots 1 and 3), one past the clip ignored."""
    y = onset_slot_labels([40, 10, 130, 199, 900], num_frames=3, samples_per_frame=100, slots=4, sample_rate=1000)
    assert y.shape == (3, 4) and y.dtype == torch.float32
    assert y.nonzero().tolist() == [[0, 0], [1, 1], [1, 3]]
    with pytest.raises(ValueError, match="do not split"):
        onset_slot_labels([], 3, 100, 3, 1000)


def test_the_slot_detector_places_onsets_at_slot_centres_and_merges_neighbours():
    logits = np.full((3, 4), -5.0)
    logits[0, 1] = logits[0, 2] = 2.0        # two neighbouring slots, 25 ms apart: one onset
    logits[2, 3] = 1.0
    assert slot_onsets(logits, 0.0, 100, 1000).tolist() == [37, 287]
    assert slot_onsets(logits, 1.5, 100, 1000).tolist() == [37]
    one = np.array([-1.0, 2.0, 0.5])
    assert np.array_equal(slot_onsets(one[:, None], 0.0, 100, 1000), frame_onsets(one, 0.0, 100))
    # the threshold search reads slots too: the onset in frame 1, slot 2 is found at its slot's centre
    t, s = choose_threshold([np.where(np.arange(12).reshape(3, 4) == 6, 3.0, -3.0)], [[162]], 100, 1000)
    assert s == {"f1": 1.0, "precision": 1.0, "recall": 1.0} and -3.0 <= t < 3.0


def test_the_fitted_head_learns_separable_slot_labels():
    g = torch.Generator().manual_seed(0)
    labels = [(torch.rand(40, 4, generator=g) < 0.3).float() for _ in range(3)]
    feats = [torch.cat([2 * y - 1, torch.zeros(40, 4)], 1) + 0.3 * torch.randn(40, 8, generator=g) for y in labels]
    head, scores = fit_slot_head(feats, labels, steps=300)
    assert head.weight.shape == (4, 8)
    with torch.no_grad():
        pred = head(torch.cat(feats)) > 0
    assert (pred == (torch.cat(labels) > 0.5)).float().mean() > 0.99
    assert scores["precision"] > 0.95 and scores["recall"] > 0.95
    again, _ = fit_slot_head(feats, labels, steps=300)
    assert torch.equal(again.weight, head.weight)               # deterministic


def test_a_run_with_slots_trains_on_the_worlds_onsets_loads_and_generates(tmp_path, tiny_recipe_args):
    from frieren.synth import SceneConfig, render_clip

    run, out = tmp_path / "run", tmp_path / "bundle"
    assert train_cli.main(tiny_recipe_args(run, out, "--presence-channel", "--presence-slots", "4",
                                           "--presence-channel-train", "truth", "--presence-validation-clips", "2")) == 0
    assert json.loads((run / "cavp.json").read_text()) == {"presence_channel": True, "presence_slots": 4}
    fitted = torch.load(run / "cavp" / "presence_slot_head.pt", weights_only=True)
    chosen = json.loads((run / "cavp" / "presence_threshold.json").read_text())

    stack, info = load_bundle(out)
    p = info.preset
    assert p.cavp.presence_slots == 4 and p.cond.origin_dim == p.cavp.embed_dim + 4
    assert torch.equal(stack.cavp.presence_head.weight, fitted["state"]["weight"])
    assert float(stack.cavp.presence_threshold) == pytest.approx(chosen["threshold"])

    # the flow stages saw the world's onsets in the four channels, recomputed here from the seeds
    import argparse

    from frieren.training.run import Run
    argv = tiny_recipe_args(run, out, "--presence-channel-train", "truth")
    ap = argparse.ArgumentParser()
    train_cli.add_arguments(ap)
    lat = Run(ap.parse_args(argv)).latents()
    g = p.geometry
    for seed, f in zip((7, 8), lat.feats):
        events = render_clip(seed, SceneConfig(duration_s=3.0, sample_rate=g.sample_rate)).events
        onsets = [e.sample for e in events if e.kind in ("impact", "continuous_start")]
        assert torch.equal(f[:, -4:], onset_slot_labels(onsets, len(f), g.samples_per_frame, 4, g.sample_rate))
    assert any(bool(f[:, -4:].any()) for f in lat.feats)
    assert set(json.loads((run / "cache" / "onsets.json").read_text())["onsets"]) == {"synth_000007", "synth_000008"}

    # offline generation reads the four channels from the fitted head
    from frieren.pipeline import OfflineGenerator
    frames = torch.rand(20, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    cond = stack.cavp.extract_condition(frames)
    assert cond.shape == (20, p.cavp.embed_dim + 4) and set(cond[:, -4:].unique().tolist()) <= {0.0, 1.0}
    audio = OfflineGenerator(stack).generate_frames(frames, 20 * g.samples_per_frame).audio
    assert np.isfinite(np.asarray(audio)).all() and len(audio) == 20 * g.samples_per_frame
    # and so does streaming
    from frieren.streaming import StreamingGenerator, WindowJob
    job = WindowJob(frames=frames[:g.frames_per_window], noise=torch.randn(p.estimator.in_channels, g.latent_frames),
                    emit_start=0, emit_length=g.samples_per_frame)
    out_audio = StreamingGenerator(stack).run([job]).audio[0]
    assert out_audio.shape == (g.samples_per_frame,) and torch.isfinite(out_audio).all()


def test_slots_that_do_not_split_a_frame_or_come_without_the_channel_are_refused(tmp_path, tiny_recipe_args):
    with pytest.raises(SystemExit, match="does not split a visual frame"):
        train_cli.main(tiny_recipe_args(tmp_path / "a", tmp_path / "b", "--presence-channel", "--presence-slots", "3"))
    with pytest.raises(SystemExit, match="needs --presence-channel"):
        train_cli.main(tiny_recipe_args(tmp_path / "c", tmp_path / "d", "--presence-slots", "4"))


def test_the_slot_head_refuses_clips_that_are_not_synthetic(tmp_path):
    from frieren.training.onset_labels import synthetic_onsets

    with pytest.raises(SystemExit, match="not a synthetic clip"):
        synthetic_onsets(["my_holiday_video"], 3.0, 16000, tmp_path / "onsets.json")


def test_the_truth_channels_are_impact_frames_or_onset_slots():
    from frieren.synth.config import Event
    from frieren.training.presence import truth_channels

    def ev(sample, kind="impact"):
        return Event(time_s=sample / 1000, sample=sample, kind=kind, source="floor", material="wood",
                     strength=0.5, speed=1.0, position=(0.5, 0.9))
    events = [ev(30), ev(160, "continuous_start"), ev(260), ev(275, "continuous_stop")]
    assert truth_channels(events, 3, 100, 1, 1000)[:, 0].tolist() == [1.0, 0.0, 1.0]   # impacts only
    assert truth_channels(events, 3, 100, 4, 1000).nonzero().tolist() == [[0, 1], [1, 2], [2, 2]]


def _detector_inputs():
    import dataclasses
    from frieren.models.cavp import CAVPVideoEncoder

    cfg = dataclasses.replace(get_preset("tiny").cavp, depth=14)
    torch.manual_seed(0)
    video = CAVPVideoEncoder(cfg).state_dict()
    head = torch.nn.Linear(cfg.embed_dim, 4).state_dict()
    g = torch.Generator().manual_seed(3)
    frames = [torch.randint(0, 256, (18, 3, 64, 64), generator=g, dtype=torch.uint8) for _ in range(2)]
    labels = [(torch.rand(18, 4, generator=g) < 0.2).float() for _ in range(2)]
    return cfg, video, head, frames, labels


def test_the_detector_fine_tunes_deterministically_and_resumes(tmp_path):
    from frieren.training.presence_detector import fine_tune_detector

    cfg, video, head, frames, labels = _detector_inputs()
    kw = dict(seed=5, batch_size=2, window=16, ckpt_every=2, progress=False)
    net_a, head_a, info = fine_tune_detector(cfg, video, head, frames, labels, steps=4, ckpt=tmp_path / "a.pt", **kw)
    assert not torch.equal(net_a["video_project_head.weight"], video["video_project_head.weight"])   # it trained
    assert info["steps"] == 4 and info["loss"] > 0
    fine_tune_detector(cfg, video, head, frames, labels, steps=2, ckpt=tmp_path / "b.pt", **kw)   # interrupted at 2
    net_b, head_b, _ = fine_tune_detector(cfg, video, head, frames, labels, steps=4, ckpt=tmp_path / "b.pt", **kw)
    assert all(torch.equal(net_a[k], net_b[k]) for k in net_a) and torch.equal(head_a["weight"], head_b["weight"])
    with pytest.raises(SystemExit, match="windows of 32 frames"):
        fine_tune_detector(cfg, video, head, frames, labels, steps=1, ckpt=tmp_path / "c.pt", **{**kw, "window": 32})


@pytest.mark.parametrize("option, bad, message", [
    ({"edge_weight": 2.0}, {"edge_weight": -1.0}, ">= 0"),         # --presence-edge-steps: the last frame's loss added
    ({"rotate": 1.0}, {"rotate": 1.5}, "within \\[0, 1\\]"),    # --presence-detector-rotate: quarter turns
])
def test_an_option_changes_the_fine_tuning_and_stays_deterministic(tmp_path, option, bad, message):
    from frieren.training.presence_detector import fine_tune_detector

    cfg, video, head, frames, labels = _detector_inputs()
    kw = dict(steps=2, seed=5, batch_size=2, window=16, progress=False)
    plain, _, _ = fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "a.pt", **kw)
    off, _, _ = fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "b.pt",
                                   **{k: 0.0 for k in option}, **kw)
    on, _, info = fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "c.pt", **option, **kw)
    again, _, _ = fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "d.pt", **option, **kw)
    key = "video_project_head.weight"
    assert torch.equal(plain[key], off[key])                  # off: the same run as without the option
    assert not torch.equal(plain[key], on[key]) and torch.equal(on[key], again[key]) and info["loss"] > 0
    with pytest.raises(ValueError, match=message):
        fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "e.pt", **bad, **kw)


def test_detector_kernel_settings_give_the_same_detector_within_their_precision(tmp_path):
    """--presence-detector-channels-last (same maths, another layout) and --bf16 detector (bfloat16 matrix
    products): each reproducible, close to the float32 default layout's weights, returned contiguous float32."""
    from frieren.training.presence_detector import fine_tune_detector
    cfg, video, head, frames, labels = _detector_inputs()
    kw = dict(steps=2, seed=5, batch_size=2, window=16, progress=False)
    plain, plain_head, _ = fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "p.pt", **kw)
    for name, option, tol in (("cl", {"channels_last": True}, 1e-4), ("bf16", {"bf16": True}, 2e-2)):
        net, net_head, info = fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / f"{name}.pt",
                                                 **option, **kw)
        again, _, _ = fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / f"{name}2.pt", **option, **kw)
        assert info["loss"] > 0 and all(torch.equal(net[k], again[k]) for k in net), name
        for k, v in net.items():
            assert v.is_contiguous() and v.dtype == plain[k].dtype, (name, k)
            torch.testing.assert_close(v, plain[k], rtol=tol, atol=tol, msg=f"{name} {k}")
        torch.testing.assert_close(net_head["weight"], plain_head["weight"], rtol=tol, atol=tol)


def test_a_run_with_a_presence_detector_decides_the_channel_with_its_own_network(tmp_path, tiny_recipe_args):
    run, out = tmp_path / "run", tmp_path / "bundle"
    assert train_cli.main(tiny_recipe_args(run, out, "--presence-channel", "--presence-slots", "4",
                                           "--presence-detector-steps", "2", "--presence-channel-train", "truth",
                                           "--presence-validation-clips", "1", "--seed", "1")) == 0
    assert json.loads((run / "cavp.json").read_text()) == {"presence_channel": True, "presence_slots": 4,
                                                          "presence_detector": True}
    stack, info = load_bundle(out)
    cavp = stack.cavp
    assert info.preset.cavp.presence_detector and hasattr(cavp, "presence_net")
    kept = torch.load(run / "cavp" / "presence_detector.pt", weights_only=True)
    assert torch.equal(cavp.presence_net.video_project_head.weight, kept["net"]["video_project_head.weight"])
    assert not torch.equal(cavp.presence_net.video_project_head.weight, cavp.video_project_head.weight)
    frames = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = cavp.presence_head(cavp.presence_net.extract(frames))
        cond = cavp.extract_condition(frames)
        live = cavp.condition(frames[None])[0]
    assert torch.equal(cond[:, :-4], cavp.extract(frames))                   # the generator's features: the CAVP's
    assert torch.equal(cond[:, -4:], (logits > cavp.presence_threshold).float())   # the channels: the detector's
    assert torch.allclose(live, cond, atol=1e-5)
    # `bundle` of another stage needs no flag (nor the seed): the run dir records the detector, which is reused
    bundle_argv = ["bundle", "--run-dir", str(run), "--preset", "tiny", "--synthetic", "2", "--synthetic-seed", "7",
                   "--clip-seconds", "3", "--stage", "cfm", "--out", str(tmp_path / "cfm"), "--no-progress",
                   "--threads", "1"]
    assert train_cli.main(bundle_argv) == 0
    cfm, _ = load_bundle(tmp_path / "cfm")
    assert torch.equal(cfm.cavp.presence_net.video_project_head.weight, kept["net"]["video_project_head.weight"])
    # --presence-detector-rotate trains another detector (the kept one is not reused) and records it
    assert train_cli.main(tiny_recipe_args(run, tmp_path / "turned", "--presence-channel", "--presence-slots", "4",
                                           "--presence-detector-steps", "2", "--presence-detector-rotate", "1",
                                           "--presence-channel-train", "truth", "--presence-validation-clips", "1",
                                           "--seed", "1")) == 0
    turned = torch.load(run / "cavp" / "presence_detector.pt", weights_only=True)
    assert turned["info"]["rotate"] == 1.0
    assert not torch.equal(turned["net"]["video_project_head.weight"], kept["net"]["video_project_head.weight"])
    # so does --presence-detector-channels-last (another layout: another detector, recorded as such)
    assert train_cli.main(tiny_recipe_args(run, tmp_path / "laid", "--presence-channel", "--presence-slots", "4",
                                           "--presence-detector-steps", "2", "--presence-detector-rotate", "1",
                                           "--presence-detector-channels-last", "--presence-channel-train", "truth",
                                           "--presence-validation-clips", "1", "--seed", "1")) == 0
    laid = torch.load(run / "cavp" / "presence_detector.pt", weights_only=True)
    assert laid["info"]["channels_last"] and not turned["info"].get("channels_last")
    # --presence-detector-seed draws other windows (another detector, the rest of the run kept), recorded;
    # `bundle` without the flag takes it
    seeded_argv = tiny_recipe_args(run, tmp_path / "seeded", "--presence-channel", "--presence-slots", "4",
                                   "--presence-detector-steps", "2", "--presence-detector-seed", "5",
                                   "--presence-channel-train", "truth", "--presence-validation-clips", "1", "--seed", "1")
    assert train_cli.main(seeded_argv) == 0
    seeded = torch.load(run / "cavp" / "presence_detector.pt", weights_only=True)
    assert seeded["info"]["seed"] == 5 and "seed" not in laid["info"]
    assert not torch.equal(seeded["net"]["video_project_head.weight"], kept["net"]["video_project_head.weight"])
    assert train_cli.main([str(tmp_path / "cfm2") if a == str(tmp_path / "cfm") else a for a in bundle_argv]) == 0
    assert torch.equal(load_bundle(tmp_path / "cfm2")[0].cavp.presence_net.video_project_head.weight,
                       seeded["net"]["video_project_head.weight"])
    (run / "cavp" / "presence_detector.pt").unlink()
    with pytest.raises(SystemExit, match="pass --presence-detector-steps"):
        train_cli.main(bundle_argv)
    with pytest.raises(SystemExit, match="--presence-slots > 1"):
        train_cli.main(tiny_recipe_args(tmp_path / "r2", tmp_path / "b2", "--presence-channel",
                                        "--presence-detector-steps", "2"))


def test_detector_clips_share_the_material_seeds_and_need_the_detector():
    from argparse import Namespace

    from frieren.training.run import check_detector_clips

    base = dict(synthetic=600, synthetic_seed=1000, flow_clips=0, flow_synthetic_seed=None, data_dir=None,
                presence_detector_steps=6000, presence_detector_clips=1200)
    check_detector_clips(Namespace(**base))
    for change, message in (({"presence_detector_clips": -1}, "must be 0"),
                            ({"presence_detector_steps": 0}, "needs --presence-detector-steps"),
                            ({"data_dir": "clips/"}, "drop --presence-detector-clips")):
        with pytest.raises(SystemExit, match=message):
            check_detector_clips(Namespace(**{**base, **change}))
