"""`--material-channel-steps N`: the presence detector also names the struck material of each frame,
and the generator is told it in one condition channel per material."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from frieren import train_cli
from frieren.checkpoints import load_bundle
from frieren.config import get_preset, with_presence_channel
from frieren.models.cavp import CAVPVideoEncoder, material_one_hot
from frieren.synth import SceneConfig
from frieren.training.presence import material_channels, truth_channels
from frieren.training.run import presence_truth

MATERIALS = len(SceneConfig().materials)


def _material_cavp(materials: int = MATERIALS) -> CAVPVideoEncoder:
    p = with_presence_channel(get_preset("tiny"), slots=4, detector=True, materials=materials)
    torch.manual_seed(0)
    return CAVPVideoEncoder(dataclasses.replace(p.cavp, depth=14)).eval()


def test_the_material_decision_is_a_one_hot_that_is_empty_where_no_impact_wins():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 1.0, 0.0, 9.0], [1.0, 1.0, 4.0, 0.0]])   # 3 materials + none
    assert torch.equal(material_one_hot(logits), torch.tensor([[0.0, 1, 0], [0, 0, 0], [0, 0, 1]]))
    labels = torch.tensor([2, -1, 0])
    assert torch.equal(material_channels(labels, 3), torch.tensor([[0.0, 0, 1], [0, 0, 0], [1, 0, 0]]))


def test_the_condition_carries_the_detector_s_slots_and_material_decision():
    cavp = _material_cavp()
    assert cavp.cfg.condition_dim == cavp.cfg.embed_dim + 4 + MATERIALS
    video = torch.rand(2, 6, cavp.cfg.in_channels, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        said = cavp.presence_net(video, normalize=True)
        materials = cavp.presence_material_head(said)
        cond = cavp.condition(video)
        assert cond.shape == (2, 6, cavp.cfg.condition_dim)
        assert torch.equal(cond[..., :cavp.cfg.embed_dim], cavp(video))
        assert torch.equal(cond[..., -MATERIALS - 4:-MATERIALS],
                           (cavp.presence_logits(said) > cavp.presence_threshold).float())
        assert torch.equal(cond[..., -MATERIALS:], material_one_hot(materials))
        offline = cavp.extract_condition(video[0])
    assert torch.allclose(offline, cond[0], atol=1e-5)
    # the switch is part of the detector: off without it, and not combined with the newest-frame detector
    plain = with_presence_channel(get_preset("tiny"), slots=4, detector=False, materials=MATERIALS)
    assert plain.cavp.material_channel == 0
    with pytest.raises(ValueError, match="presence_edge together"):
        with_presence_channel(get_preset("tiny"), slots=4, detector=True, edge=True, materials=MATERIALS)
    with pytest.raises(ValueError, match="counts material classes"):
        with_presence_channel(get_preset("tiny"), slots=4, detector=True, materials=1)


def test_truth_channels_name_the_strongest_impact_s_material_in_its_frame():
    from frieren.synth import SceneConfig, render_clip
    from frieren.training.data import frame_materials

    scene = SceneConfig(duration_s=3.0, sample_rate=16000)
    clip = render_clip(11, scene)
    spf, n = 2048, 3 * 16000 // 2048
    truth = truth_channels(clip.events, n, spf, 4, 16000, scene.materials)
    assert truth.shape == (n, 4 + MATERIALS)
    assert torch.equal(truth[:, :4], truth_channels(clip.events, n, spf, 4, 16000))
    labels = frame_materials(clip.events, list(scene.materials), n, spf / 16000)
    assert (labels >= 0).any()
    for i, m in enumerate(labels):
        assert truth[i, 4:].sum() == (1 if m >= 0 else 0)
        if m >= 0:
            assert truth[i, 4 + m] == 1
    # the flow stages' truth training replaces the last slots + materials channels, features untouched
    feats = [torch.randn(n, 8 + 4 + MATERIALS)]

    class Clip:
        frame_material = torch.from_numpy(labels)

    got = presence_truth(feats, [Clip()], [truth[:, :4]], materials=MATERIALS)[0]
    assert torch.equal(got[:, :8], feats[0][:, :8]) and torch.equal(got[:, 8:], truth)


def test_the_detector_learns_a_material_head_deterministically_and_resumes(tmp_path):
    from frieren.training.presence_detector import fine_tune_detector

    cavp = _material_cavp()
    cfg = cavp.cfg
    video = {k[len("presence_net."):]: v for k, v in cavp.state_dict().items() if k.startswith("presence_net.")}
    head = {"weight": torch.zeros(4, cfg.embed_dim), "bias": torch.zeros(4)}
    gen = torch.Generator().manual_seed(3)
    frames = [torch.randint(0, 256, (20, cfg.in_channels, 64, 64), dtype=torch.uint8, generator=gen) for _ in range(2)]
    labels = [(torch.rand(20, 4, generator=gen) > 0.8).float() for _ in range(2)]
    materials = [torch.randint(-1, MATERIALS, (20,), generator=gen) for _ in range(2)]
    kw = dict(steps=4, seed=0, batch_size=2, window=8, ckpt_every=2, progress=False, material_labels=materials,
              material_classes=MATERIALS)
    net_a, head_a, info_a = fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "a.pt", **kw)
    assert info_a["material_head"]["weight"].shape == (MATERIALS + 1, cfg.embed_dim)
    assert 0.0 <= info_a["material_acc"] <= 1.0
    fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "b.pt", **{**kw, "steps": 2})
    net_b, head_b, info_b = fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "b.pt", **kw)
    assert all(torch.equal(net_a[k], net_b[k]) for k in net_a)
    assert torch.equal(info_a["material_head"]["weight"], info_b["material_head"]["weight"])
    plain, _, info = fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "c.pt",
                                        **{**kw, "material_labels": None})
    assert "material_head" not in info and not torch.equal(plain["video_project_head.weight"],
                                                            net_a["video_project_head.weight"])
    with pytest.raises(ValueError, match="material labels"):
        fine_tune_detector(cfg, video, head, frames, labels, ckpt=tmp_path / "d.pt",
                           **{**kw, "material_labels": materials[:1]})


def test_a_run_with_material_channels_ships_the_detector_s_material_head(tmp_path, tiny_recipe_args,
                                                                         benchmark_module):
    run, out = tmp_path / "run", tmp_path / "bundle"
    assert train_cli.main(tiny_recipe_args(run, out, "--presence-channel", "--presence-slots", "4",
                                           "--presence-detector-steps", "2", "--material-channel-steps", "2",
                                           "--presence-channel-train", "truth",
                                           "--presence-validation-clips", "1")) == 0
    assert json.loads((run / "cavp.json").read_text()) == {"presence_channel": True, "presence_slots": 4,
                                                          "presence_detector": True, "material_channel": MATERIALS}
    kept = torch.load(run / "cavp" / "presence_detector_material.pt", weights_only=True)
    assert kept["info"]["steps"] == 2 and kept["info"]["material_weight"] == 1.0
    stack, info = load_bundle(out)
    cavp = stack.cavp
    assert info.preset.cavp.material_channel == MATERIALS
    assert info.preset.cond.origin_dim == cavp.cfg.embed_dim + 4 + MATERIALS
    assert torch.equal(cavp.presence_material_head.weight, kept["material_head"]["weight"])
    key = "video_project_head.weight"
    assert torch.equal(cavp.presence_net.state_dict()[key], kept["net"][key])   # the detector after the material phase
    assert info.provenance["stages"]["material_detector"]["steps"] == 2
    # the bundle generates, and eval's truth row can set its material channels too
    from frieren.eval.table import _truth_edit, render_clips
    clip = render_clips([900000], 2.5, info.preset)[0]
    cond = cavp.extract_condition(clip.frames)
    edited = _truth_edit(clip, info.preset)(cond)
    assert torch.equal(edited[:, :cavp.cfg.embed_dim], cond[:, :cavp.cfg.embed_dim])
    assert set(edited[:, -MATERIALS:].sum(1).tolist()) <= {0.0, 1.0}
    # the benchmark scores the decision at the clip's isolated impacts
    scored_json = tmp_path / "material.json"
    assert benchmark_module("material_detector").main([str(out), "--first-seed", "900000", "--clips", "1",
                                                       "--seconds", "2.5", "--json", str(scored_json)]) == 0
    scored = json.loads(scored_json.read_text())
    assert scored["impacts"] == len(clip.impacts) > 0
    assert all(0 <= scored[k] <= 1 for k in ("decided", "said_none", "best_material", "majority_class"))
    assert scored["decided"] + scored["said_none"] <= 1
    sources = {e.source for e in clip.events if e.kind == "impact"}
    assert set(scored["by_source"]) <= sources
    assert sum(r["impacts"] for r in scored["by_source"].values()) == scored["impacts"]
    assert sum(r["decided"] * r["impacts"] for r in scored["by_source"].values()) == \
        pytest.approx(scored["decided"] * scored["impacts"])
    # the confusion counts each impact once, under the material that struck, its diagonal the best-material hits
    confusion = scored["confusion"]
    assert sum(sum(row.values()) for row in confusion.values()) == scored["impacts"]
    assert {name: sum(row.values()) for name, row in confusion.items() if sum(row.values())} == \
        {name: clip.materials.count(name) for name in set(clip.materials)}
    assert sum(confusion[name][name] for name in confusion) == round(scored["best_material"] * scored["impacts"])
    # --material-channel-clips: the phase trains again on the flow stages' clips plus clips of its own, rendered
    # from the seeds after the run's, and the bundle records how many
    more_out = tmp_path / "bundle_more"
    assert train_cli.main(tiny_recipe_args(run, more_out, "--presence-channel", "--presence-slots", "4",
                                           "--presence-detector-steps", "2", "--material-channel-steps", "2",
                                           "--material-channel-clips", "1", "--presence-channel-train", "truth",
                                           "--presence-validation-clips", "1")) == 0
    assert json.loads((run / "cache_material" / "source.json").read_text())["seed0"] == 7 + 2
    assert len(list((run / "cache_material" / "clips").glob("*.pt"))) == 1
    again = torch.load(run / "cavp" / "presence_detector_material.pt", weights_only=True)
    assert again["info"]["material_clips"] == 1
    assert not torch.equal(again["material_head"]["weight"], kept["material_head"]["weight"])
    _, more_info = load_bundle(more_out)
    assert more_info.provenance["stages"]["material_detector"]["material_clips"] == 1
    # `bundle` of another stage repeats no flag: the recorded phase is reused, and missing it is named
    bundle_argv = ["bundle", "--run-dir", str(run), "--preset", "tiny", "--synthetic", "2", "--synthetic-seed", "7",
                   "--clip-seconds", "3", "--stage", "cfm", "--out", str(tmp_path / "cfm"), "--no-progress",
                   "--threads", "1"]
    assert train_cli.main(bundle_argv) == 0
    (run / "cavp" / "presence_detector_material.pt").unlink()
    with pytest.raises(SystemExit, match="pass --material-channel-steps"):
        train_cli.main(bundle_argv)
    with pytest.raises(SystemExit, match="needs --presence-channel"):
        train_cli.main(tiny_recipe_args(tmp_path / "r2", tmp_path / "b2", "--presence-channel", "--presence-slots",
                                        "4", "--material-channel-steps", "2"))


def test_material_clips_come_after_the_run_s_clips_and_need_the_material_phase():
    from argparse import Namespace

    from frieren.training.run import check_material_clips, material_seed0

    base = dict(synthetic=600, synthetic_seed=1000, flow_clips=0, flow_synthetic_seed=None, data_dir=None,
                material_channel_steps=3000, material_channel_clips=1200)
    assert material_seed0(Namespace(**base)) == 1600
    assert material_seed0(Namespace(**{**base, "flow_clips": 300})) == 1900          # after the flow stages' own
    assert material_seed0(Namespace(**{**base, "flow_clips": 300, "flow_synthetic_seed": 5000})) == 5300
    check_material_clips(Namespace(**base))
    for change, message in (({"material_channel_clips": -1}, "must be 0"),
                            ({"material_channel_steps": 0}, "needs --material-channel-steps"),
                            ({"data_dir": "clips/"}, "drop --data-dir")):
        with pytest.raises(SystemExit, match=message):
            check_material_clips(Namespace(**{**base, **change}))
