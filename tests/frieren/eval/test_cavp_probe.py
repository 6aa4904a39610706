"""benchmarks/cavp_probe.py: linear probes on CAVP features and on the raw-pixel baseline."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from frieren.config import get_preset, with_subframes
from frieren.models.cavp import CAVPVideoEncoder



def test_probe_reads_a_stage_checkpoint_and_the_raw_baseline(tmp_path, benchmark_module):
    torch.set_num_threads(1)
    preset = get_preset("tiny")
    torch.manual_seed(0)
    enc = CAVPVideoEncoder(preset.cavp)
    ck = tmp_path / "final.pt"
    torch.save({"state": {f"video.{k}": v for k, v in enc.state_dict().items()}}, ck)
    out = tmp_path / "probe.json"
    mod = benchmark_module("cavp_probe")
    assert mod.main([str(ck), "--raw-baseline", "--clips", "4", "--train-clips", "2", "--seconds", "3",
                     "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["features"] for r in rows] == [str(ck), "raw pixels"]
    for r in rows:
        assert 0.0 <= r["material_acc"] <= 1.0 and 0.0 < r["material_majority"] <= 1.0
        assert 0.0 <= r["material_acc_with_next_frame"] <= 1.0
        assert r["test_impacts"] > 0 and (np.isnan(r["onset_auc"]) or 0.0 <= r["onset_auc"] <= 1.0)
    # the features really are the checkpoint's encoder
    frames = torch.rand(preset.geometry.frames_per_window, 3, preset.cavp.image_size, preset.cavp.image_size)
    with torch.no_grad():
        np.testing.assert_allclose(mod.cavp_features(str(ck), preset)(frames), enc.eval()(frames[None])[0].numpy(),
                                   rtol=1e-5, atol=1e-6)
    assert mod.raw_pixel_features(frames).shape == (frames.shape[0], 6 * 8 * 8)


def test_unreadable_checkpoint_names_the_problem(tmp_path, benchmark_module):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    try:
        benchmark_module("cavp_probe").cavp_features(str(bad), get_preset("tiny"))
    except SystemExit as exc:
        assert "cannot read CAVP stage checkpoint" in str(exc) and "final.pt" in str(exc)
    else:
        raise AssertionError("no error for an unreadable checkpoint")


def test_checkpoint_of_another_cavp_layout_names_the_preset(tmp_path, benchmark_module):
    import dataclasses

    preset = get_preset("tiny")
    other = dataclasses.replace(preset.cavp, inflate=(1, 1, 1, 1))
    ck = tmp_path / "final.pt"
    torch.save({"state": {f"video.{k}": v for k, v in CAVPVideoEncoder(other).state_dict().items()}}, ck)
    try:
        benchmark_module("cavp_probe").cavp_features(str(ck), preset)
    except SystemExit as exc:
        assert "does not fit the preset's CAVP" in str(exc) and "--preset" in str(exc)
    else:
        raise AssertionError("no error for a checkpoint of another CAVP layout")


def test_event_head_read_out_scores_onsets_when_the_checkpoint_has_a_head(tmp_path, benchmark_module):
    torch.set_num_threads(1)
    preset = get_preset("tiny")
    torch.manual_seed(0)
    enc = CAVPVideoEncoder(preset.cavp)
    head = torch.nn.Linear(preset.cavp.embed_dim, 4 + 8)
    state = {f"video.{k}": v for k, v in enc.state_dict().items()}
    ck_plain, ck_head = tmp_path / "plain.pt", tmp_path / "head.pt"
    torch.save({"state": state}, ck_plain)
    torch.save({"state": {**state, "event_head.weight": head.weight.detach(), "event_head.bias": head.bias.detach()}},
               ck_head)
    out = tmp_path / "probe.json"
    mod = benchmark_module("cavp_probe")
    assert mod.main([str(ck_plain), str(ck_head), "--clips", "4", "--train-clips", "2", "--seconds", "3",
                     "--json", str(out)]) == 0
    plain, with_head = json.loads(out.read_text())
    assert "event_head_f1_125ms" not in plain
    for tol in ("45ms", "125ms"):
        for k in ("f1", "precision", "recall"):
            assert 0.0 <= with_head[f"event_head_{k}_{tol}"] <= 1.0
    # a series with three local maxima, one below the threshold
    series = np.array([0.0, 2.0, 1.0, 0.5, 3.0, 0.0, 0.2, 0.1])
    assert mod._peaks(series, 0.3).tolist() == [1, 4]


def test_a_head_trained_with_an_event_offset_is_read_that_many_frames_earlier(tmp_path, benchmark_module):
    mod = benchmark_module("cavp_probe")
    x = np.arange(8.0)
    assert mod.shift_series(x, 0).tolist() == x.tolist()
    assert mod.shift_series(x, 4).tolist() == [4.0, 5.0, 6.0, 7.0, 0.0, 0.0, 0.0, 0.0]
    torch.set_num_threads(1)
    preset = get_preset("tiny")
    torch.manual_seed(0)
    enc = CAVPVideoEncoder(preset.cavp)
    head = torch.nn.Linear(preset.cavp.embed_dim, 4 + 8)
    state = {**{f"video.{k}": v for k, v in enc.state_dict().items()},
             "event_head.weight": head.weight.detach(), "event_head.bias": head.bias.detach()}
    plain, shifted = tmp_path / "plain.pt", tmp_path / "shifted.pt"
    torch.save({"state": state}, plain)
    torch.save({"state": {**state, "event_offset_frames": torch.tensor(1)}}, shifted)
    size = preset.cavp.image_size
    clips = [SimpleNamespace(frames=torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(1)))]
    a, = mod.event_head_series(str(plain), preset, clips, 4)
    b, = mod.event_head_series(str(shifted), preset, clips, 4)
    assert np.allclose(b[:-4], a[4:]) and np.all(b[-4:] == a.min())


@pytest.mark.parametrize("slots", [1, 4])
def test_the_presence_head_is_read_as_one_logit_per_frame_or_slot(tmp_path, benchmark_module, slots):
    """A frame head (one output) gives (N,), a --presence-slots head (S outputs) (N, S)."""
    mod = benchmark_module("cavp_probe")
    torch.set_num_threads(1)
    preset = get_preset("tiny")
    torch.manual_seed(0)
    enc = CAVPVideoEncoder(preset.cavp)
    head = torch.nn.Linear(preset.cavp.embed_dim, slots)
    path = tmp_path / "presence.pt"
    torch.save({"state": {**{f"video.{k}": v for k, v in enc.state_dict().items()},
                          "presence_head.weight": head.weight.detach(), "presence_head.bias": head.bias.detach()}}, path)
    size = preset.cavp.image_size
    clips = [SimpleNamespace(frames=torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(1)))]
    series, = mod.event_head_series(str(path), preset, clips, 4, head="presence")
    with torch.no_grad():
        want = head(enc(clips[0].frames[None], normalize=True)[0]).numpy()
    want = want[:, 0] if slots == 1 else want
    assert series.shape == want.shape == ((8,) if slots == 1 else (8, slots))
    assert np.allclose(series, want, atol=1e-6)
    assert mod.event_head_series(str(path), preset, clips, 4) is None          # no event head in it
    with pytest.raises(ValueError, match="unknown head"):
        mod.event_head_series(str(path), preset, clips, 4, head="material")


def test_the_presence_head_marks_every_frame_above_its_threshold(monkeypatch, benchmark_module):
    """Neighbouring impact frames are both onsets (no peak picking), the event head keeps its peaks."""
    mod = benchmark_module("cavp_probe")
    preset = get_preset("tiny")
    n = preset.geometry.samples_per_frame
    series = np.array([-5.0, 5.0, 5.0, -5.0, -5.0, -5.0, 5.0, -5.0])
    monkeypatch.setattr(mod, "event_head_series", lambda *a, **k: [series])
    clips = [SimpleNamespace(onsets=[n * 1 + n // 2, n * 2 + n // 2, n * 6 + n // 2])]
    _, (found,) = mod.event_head_onsets("ck", preset, clips, 4, 1, head="presence")
    assert found.tolist() == [n * 1 + n // 2, n * 2 + n // 2, n * 6 + n // 2]
    _, (peaks,) = mod.event_head_onsets("ck", preset, clips, 1, 1)
    assert len(peaks) == 2                                     # the plateau gives one peak


def test_a_bundle_directory_gives_its_video_branch(tmp_path, benchmark_module):
    from frieren.bundles import DEFAULT_BUNDLE
    from frieren.checkpoints import WEIGHTS_FILE
    from safetensors.torch import load_file

    mod = benchmark_module("cavp_probe")
    info = json.loads((DEFAULT_BUNDLE / "config.json").read_text())
    assert mod.snapshots_of(str(DEFAULT_BUNDLE)) == info["preset"]["cavp"].get("subframes", 1)
    preset = with_subframes(get_preset("tiny"), mod.snapshots_of(str(DEFAULT_BUNDLE)))
    enc = mod.cavp_encoder(str(DEFAULT_BUNDLE), preset)
    shipped = {k[len("cavp."):]: v for k, v in load_file(str(DEFAULT_BUNDLE / WEIGHTS_FILE)).items()
               if k.startswith("cavp.")}
    for k, v in enc.state_dict().items():
        assert torch.equal(v, shipped[k]), k
    assert mod.event_head_sync(str(DEFAULT_BUNDLE), preset, [], 4, 1) is None   # bundles carry no event head
    # a bundle with the presence channel hands its presence head back under the CAVP stage's key
    state = mod.load_stage_state(str(DEFAULT_BUNDLE))
    has_presence = info["preset"]["cavp"].get("presence_channel", False)
    assert ("presence_head.weight" in state) == has_presence and "video.presence_threshold" not in state
    if has_presence:
        assert torch.equal(state["presence_head.weight"], shipped["presence_head.weight"])
        # the presence head is read as the generator reads it: from the detector network where there is one
        from types import SimpleNamespace

        from frieren.checkpoints import load_bundle
        stack, _ = load_bundle(DEFAULT_BUNDLE)
        frames = torch.rand(8, 3 * mod.snapshots_of(str(DEFAULT_BUNDLE)), preset.cavp.image_size,
                            preset.cavp.image_size, generator=torch.Generator().manual_seed(0))
        series = mod.event_head_series(str(DEFAULT_BUNDLE), preset, [SimpleNamespace(frames=frames)], 4, "presence")
        with torch.no_grad():
            expected = stack.cavp.extract_presence_logits(frames).numpy()
        np.testing.assert_allclose(series[0], expected[:, 0] if expected.shape[1] == 1 else expected, atol=1e-4)
    broken = tmp_path / "bundle"
    broken.mkdir()
    (broken / WEIGHTS_FILE).write_bytes(b"not safetensors")
    try:
        mod.load_stage_state(str(broken))
    except SystemExit as exc:
        assert "cannot read the bundle's weights" in str(exc) and "bundle directory" in str(exc)
    else:
        raise AssertionError("no error for a broken bundle")


def test_a_shallower_cavp_and_a_mid_run_checkpoint_are_probed_as_trained(tmp_path, benchmark_module):
    """A CAVP trained with `--cavp-depth 14` is built with its own depth (from its checkpoint's
    blocks), not the preset's 50; a stage's resumable ckpt.pt (no EMA) is read like final.pt."""
    import dataclasses

    torch.set_num_threads(1)
    preset = get_preset("tiny")
    torch.manual_seed(0)
    enc = CAVPVideoEncoder(dataclasses.replace(preset.cavp, depth=14)).eval()
    state = {f"video.{k}": v for k, v in enc.state_dict().items()}
    final, mid = tmp_path / "final.pt", tmp_path / "ckpt.pt"
    torch.save({"state": state}, final)
    torch.save({"model": state, "ema": None, "step": 250}, mid)
    mod = benchmark_module("cavp_probe")
    frames = torch.rand(preset.geometry.frames_per_window, 3, preset.cavp.image_size, preset.cavp.image_size)
    with torch.no_grad():
        expected = enc(frames[None])[0].numpy()
    for ck in (final, mid):
        np.testing.assert_allclose(mod.cavp_features(str(ck), preset)(frames), expected, rtol=1e-5, atol=1e-6)
    torch.save({"model": state, "ema": {"shadow": {}}, "step": 250}, mid)
    try:
        mod.cavp_features(str(mid), preset)
    except SystemExit as exc:
        assert "EMA" in str(exc) and "final.pt" in str(exc)
    else:
        raise AssertionError("no error for a resume checkpoint that keeps EMA weights")
