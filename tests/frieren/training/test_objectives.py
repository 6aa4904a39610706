"""Each training objective decreases on a tiny fixed batch; reference bugs stay fixed;
training-time CFG equals the sampler's CFG."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from frieren.config import CondConfig, EstimatorConfig, get_preset
from frieren.flow.guidance import cfg_velocity
from frieren.flow.path import logit_normal_weight
from frieren.flow.sampling import sample
from frieren.models.cavp import CAVPVideoEncoder
from frieren.models.cond import CondEncoder
from frieren.models.estimator import ChannelConcatDiT
from frieren.models.vae import MelVAE
from frieren.training.cavp_audio import MelAudioEncoder
from frieren.training.objectives import (CAVPObjective, unit_frames, frame_audio_targets, onset_timbre, CFMObjective, DistillObjective, ReflowObjective,
                                         VAEObjective, generate_reflow_pairs, guided_velocity,
                                         weighted_flow_loss)

torch.set_num_threads(1)
TINY = get_preset("tiny")
F_, D = 4, 16                       # frames, feature dim of the small flow test model
EST = EstimatorConfig(in_channels=4, context_dim=32, hidden_size=32, num_heads=2, depth=1, max_len=64,
                      latents_per_frame=4)


def _flow_modules(seed=0):
    torch.manual_seed(seed)
    return ChannelConcatDiT(EST), CondEncoder(CondConfig(origin_dim=D, embed_dim=32))


def _flow_batch(b=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = torch.nn.functional.normalize(torch.randn(b, F_, D, generator=g), dim=-1)
    x0 = torch.randn(b, 4, 4 * F_, generator=g)
    x1 = 0.5 * torch.randn(b, 4, 4 * F_, generator=g) + feats[:, :, :4].repeat_interleave(4, 1).transpose(1, 2)
    return {"feats": feats, "x0": x0, "x1": x1}


def _loss_at(obj, batch, seed=123):
    with torch.no_grad():
        return float(obj(batch, torch.Generator().manual_seed(seed))["loss"])


def _fit(obj, batch, steps, lr):
    opt = torch.optim.Adam([p for p in obj.parameters() if p.requires_grad], lr=lr)
    before = sum(_loss_at(obj, batch, s) for s in range(4))
    for i in range(steps):
        loss = obj(batch, torch.Generator().manual_seed(1000 + i))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = sum(_loss_at(obj, batch, s) for s in range(4))
    return before, after


def test_vae_objective_decreases():
    torch.manual_seed(0)
    obj = VAEObjective(MelVAE(TINY.vae))
    mel = torch.randn(2, 80, 32) * 0.5 - 3.0
    before, after = _fit(obj, mel, 25, 2e-3)
    assert after < 0.7 * before, (before, after)
    out = obj(mel, torch.Generator().manual_seed(0))
    assert set(out) >= {"loss", "recon", "kl"} and out["kl"] >= 0


def test_cavp_objective_decreases():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY.cavp, image_size=32)
    obj = CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32), segments=4)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 8, 3, 32, 32, generator=g)
    mel = torch.randn(3, 80, 64, generator=g)
    obj.train()
    assert all(m.training for m in obj.video.modules() if isinstance(m, torch.nn.BatchNorm3d))
    before, after = _fit(obj, (frames, mel), 15, 2e-3)
    assert after < before, (before, after)


def test_cavp_objective_takes_uint8_frames_and_channels_last_layout():
    """uint8 frames (what the CAVP stage now moves to the device) give exactly the float path's
    loss and gradients; the channels-last layout (--cavp-channels-last) the same maths."""
    cfg = dataclasses.replace(TINY.cavp, image_size=32)
    g = torch.Generator().manual_seed(0)
    frames8 = torch.randint(0, 256, (3, 8, 3, 32, 32), generator=g, dtype=torch.uint8)
    mel = torch.randn(3, 80, 64, generator=g)

    def loss_and_grad(frames, channels_last=False):
        torch.manual_seed(0)
        obj = CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32),
                            segments=4, event_weight=1.0).train()
        if channels_last:
            obj.video.to(memory_format=torch.channels_last_3d)
        loss = obj((frames, mel))["loss"]
        loss.backward()
        return loss.item(), obj.video.video_project_head.weight.grad.clone()

    ref_loss, ref_grad = loss_and_grad(frames8.float() / 255.0)
    loss, grad = loss_and_grad(frames8)
    assert loss == ref_loss and torch.equal(grad, ref_grad)
    cl_loss, cl_grad = loss_and_grad(frames8, channels_last=True)
    assert cl_loss == pytest.approx(ref_loss, rel=1e-4)
    torch.testing.assert_close(cl_grad, ref_grad, rtol=1e-3, atol=1e-5)
    # In that layout uint8 frames are converted straight into the layout the convolutions read
    # (no layout copies): the values, loss and gradients of float frames in that layout, exactly.
    unit = unit_frames(frames8, channels_last=True)
    assert torch.equal(unit, frames8.float() / 255.0)
    assert unit.permute(0, 2, 1, 3, 4).is_contiguous(memory_format=torch.channels_last_3d)
    cl_float_loss, cl_float_grad = loss_and_grad(frames8.float() / 255.0, channels_last=True)
    assert cl_loss == cl_float_loss and torch.equal(cl_grad, cl_float_grad)
    # Under bfloat16 autocast (`--bf16 cavp`) they are converted straight to bfloat16, in both layouts
    for channels_last in (False, True):
        half = unit_frames(frames8, channels_last=channels_last, dtype=torch.bfloat16)
        assert half.dtype == torch.bfloat16 and torch.equal(half, frames8.to(torch.bfloat16) / 255.0)


def test_frame_audio_targets_locate_onsets():
    mel = torch.full((1, 80, 32), -4.0)
    mel[:, :, 13:] = 0.0                               # a step (an onset) in frame 13 // 8 = 1
    t = frame_audio_targets(mel, 4, bands=8)
    assert t.shape == (1, 4, 9)
    assert int(t[0, :, 0].argmax()) == 1 and float(t[0, 0, 0]) == 0.0
    assert torch.allclose(t[0, 3, 1:], torch.zeros(8)) and torch.allclose(t[0, 0, 1:], torch.full((8,), -4.0))


def test_frame_audio_targets_time_onsets_inside_the_frame_and_give_their_spectrum():
    mel = torch.full((1, 80, 32), -4.0)
    mel[:, 60:, 13:] = 0.0                             # high bins start at mel frame 13: frame 1, slot 13 % 8 // 2 = 2
    t = frame_audio_targets(mel, 4, bands=8, slots=4, flux_bands=4)
    assert t.shape == (1, 4, 4 + 8 + 4)
    onset = t[0, :, :4]
    assert onset.flatten().argmax().item() == 1 * 4 + 2 and int((onset > 0).sum()) == 1
    spectrum = t[0, 1, 12:]                            # only the top quarter of the bins rose
    assert float(spectrum[3]) > 0 and torch.allclose(spectrum[:3], torch.zeros(3))
    assert torch.allclose(t[0, [0, 2, 3], 12:], torch.zeros(3, 4))
    with pytest.raises(ValueError, match="onset slots"):
        frame_audio_targets(mel, 4, slots=3)


def test_cavp_event_head_trains_and_stays_out_of_the_video_branch():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY.cavp, image_size=32)
    obj = CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32), segments=4,
                        event_weight=1.0)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 8, 3, 32, 32, generator=g)
    mel = torch.randn(3, 80, 64, generator=g)
    obj.train()
    out = obj((frames, mel))
    assert {"event", "onset_corr"} <= set(out)
    before, after = _fit(obj, (frames, mel), 15, 2e-3)
    assert after < before, (before, after)
    assert not any(k.startswith("event_head") for k in obj.video.state_dict())


def _event_objective(**extra):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY.cavp, image_size=32)
    return CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32), segments=4,
                         event_weight=1.0, event_slots=4, **extra)


def test_cavp_onset_log_lifts_quiet_onsets_towards_loud_ones():
    mel = torch.full((1, 80, 64), -4.0)
    mel[:, :, 13:] = -3.8                              # a quiet onset in frame 1
    mel[:, :, 45:] = 1.0                               # a loud one in frame 5
    quiet_over_loud = []
    for log in (False, True):
        t = _event_objective(onset_log=log).event_targets(mel, 8)[0, :, 2]       # slot 2 of each frame
        quiet_over_loud.append(float((t[1] - t[0]) / (t[5] - t[0])))             # frame 0: silence
    assert 0 < quiet_over_loud[0] < quiet_over_loud[1] < 1, quiet_over_loud
    with pytest.raises(ValueError, match="event_weight"):
        CAVPObjective(CAVPVideoEncoder(TINY.cavp), MelAudioEncoder(80, TINY.cavp.embed_dim, 8), onset_log=True)


def test_cavp_onset_weight_adds_a_weighted_onset_term_that_trains():
    g = torch.Generator().manual_seed(0)
    batch = (torch.rand(3, 8, 3, 32, 32, generator=g), torch.randn(3, 80, 64, generator=g))
    plain, weighted = _event_objective().eval(), _event_objective(onset_weight=2.0).eval()
    with torch.no_grad():
        a, b = plain(batch), weighted(batch)
    assert "event_onset" in b and "event_onset" not in a
    assert torch.allclose(b["loss"], a["loss"] + 2.0 * b["event_onset"], atol=1e-5)
    weighted.train()
    before, after = _fit(weighted, batch, 15, 2e-3)
    assert after < before, (before, after)


def test_onset_timbre_says_which_bins_start_not_how_loud():
    mel = torch.full((2, 80, 32), -4.0)
    mel[0, 60:, 13:] = 0.0                             # item 0: high bins start in frame 1
    mel[1, 60:, 13:] = 2.0                             # item 1: the same sound, louder
    shape = onset_timbre(mel, 4, bands=4)
    assert shape.shape == (2, 4, 4)
    assert torch.allclose(shape.sum(-1), torch.zeros(2, 4), atol=1e-5)     # loudness removed per frame
    assert int(shape[0, 1].argmax()) == 3 and int(shape[1, 1].argmax()) == 3
    assert torch.allclose(shape[:, [0, 2, 3]], torch.zeros(2, 3, 4))       # no onset: flat


@pytest.mark.parametrize("extra", [{"impact_weight": 1.0}, {"timbre_weight": 1.0, "timbre_bands": 10}])
def test_cavp_impact_and_timbre_terms_train_and_stay_out_of_the_video_branch(extra):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY.cavp, image_size=32)
    obj = CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32), segments=4,
                        **extra)
    g = torch.Generator().manual_seed(0)
    batch = (torch.rand(3, 8, 3, 32, 32, generator=g), torch.randn(3, 80, 64, generator=g))
    obj.train()
    assert ({"impact"} if "impact_weight" in extra else {"timbre"}) <= set(obj(batch))
    before, after = _fit(obj, batch, 15, 2e-3)
    assert after < before, (before, after)
    assert not any(k.startswith("timbre_head") for k in obj.video.state_dict())


def _labelled_batch():
    """(frames (3, 8, 3, 32, 32), mel (3, 80, 64), material per frame (3, 8)) with three impact frames."""
    g = torch.Generator().manual_seed(0)
    label = torch.full((3, 8), -1, dtype=torch.long)
    label[0, 2], label[1, 5], label[2, 1] = 0, 2, 1
    return torch.rand(3, 8, 3, 32, 32, generator=g), torch.randn(3, 80, 64, generator=g), label


def test_cavp_material_head_learns_labelled_frames_and_needs_labels():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY.cavp, image_size=32)
    obj = CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32), segments=4,
                        material_weight=1.0, materials=3)
    batch = _labelled_batch()
    obj.train()
    assert {"material", "material_acc"} <= set(obj(batch))
    before, after = _fit(obj, batch, 15, 2e-3)
    assert after < before, (before, after)
    assert not any(k.startswith("material_head") for k in obj.video.state_dict())
    with pytest.raises(ValueError, match="material labels"):
        obj(batch[:2])
    with pytest.raises(ValueError, match="2 material classes"):
        CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32), material_weight=1.0)


def test_cavp_presence_head_is_a_bce_on_impact_frames_and_learns_them():
    """Every labelled frame (material >= 0) is a positive however quiet its sound; the term is the
    mean binary cross-entropy over all frames, its head stays out of the video branch."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY.cavp, image_size=32)
    obj = CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32), segments=4,
                        presence_weight=2.0)
    batch = _labelled_batch()
    label = batch[2]
    obj.eval()
    with torch.no_grad():
        out = obj(batch)
        logit = obj.presence_head(obj.video(batch[0], normalize=True)).squeeze(-1)
        want = torch.nn.functional.binary_cross_entropy_with_logits(logit, (label >= 0).float())
        without = CAVPObjective(obj.video, obj.audio, segments=4)
        without.logit_scale = obj.logit_scale
        base = without(batch[:2])["loss"]
    assert torch.allclose(out["presence"], want)
    assert torch.allclose(out["loss"], base + 2.0 * want)
    assert {"presence_recall", "presence_precision"} <= set(out)
    obj.train()
    before, after = _fit(obj, batch, 15, 2e-3)
    assert after < before, (before, after)
    assert not any(k.startswith("presence_head") for k in obj.video.state_dict())
    with pytest.raises(ValueError, match="material labels"):
        obj(batch[:2])
    with pytest.raises(ValueError, match="presence_weight"):
        CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32), presence_weight=-1.0)


def test_cavp_material_offset_asks_the_frame_after_the_impact():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY.cavp, image_size=32)
    obj = CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32), segments=4,
                        material_weight=1.0, materials=3, material_offset=1).eval()
    g = torch.Generator().manual_seed(1)
    frames, mel = torch.rand(2, 8, 3, 32, 32, generator=g), torch.randn(2, 80, 64, generator=g)
    label = torch.full((2, 8), -1, dtype=torch.long)
    label[0, 2], label[1, 6] = 1, 2
    shifted = torch.full((2, 8), -1, dtype=torch.long)
    shifted[0, 3], shifted[1, 7] = 1, 2                                 # the frames after the impacts
    with torch.no_grad():
        asked_after = obj((frames, mel, label))["material"]
        obj.material_offset = 0
        asked_directly = obj((frames, mel, shifted))["material"]
        own_frame = obj((frames, mel, label))["material"]
    assert torch.allclose(asked_after, asked_directly)
    assert not torch.allclose(asked_after, own_frame)
    obj.material_offset = 1
    last = torch.full((2, 8), -1, dtype=torch.long)
    last[0, 7] = 0                                                      # no frame after it in the window
    with torch.no_grad():
        assert float(obj((frames, mel, last))["material"]) == 0.0
    with pytest.raises(ValueError, match="material_offset"):
        CAVPObjective(CAVPVideoEncoder(cfg), MelAudioEncoder(80, cfg.embed_dim, 8, width=32),
                      material_weight=1.0, materials=3, material_offset=-1)


def test_cavp_event_offset_asks_the_next_frame_for_each_period():
    """With event_offset 1 the head reads period t's targets from frame t + 1's feature (whose
    snapshots span period t); the last frame's own period is left out."""
    g = torch.Generator().manual_seed(0)
    frames, mel = torch.rand(2, 8, 3, 32, 32, generator=g), torch.randn(2, 80, 64, generator=g)
    obj = _event_objective(event_offset=1).eval()
    with torch.no_grad():
        v = obj.video(frames, normalize=True)
        want = torch.nn.functional.mse_loss(obj.event_head(v[:, 1:]), obj.event_targets(mel, 8)[:, :-1])
        got = obj((frames, mel))["event"]
        obj.event_offset = 0
        own = obj((frames, mel))["event"]
    assert torch.allclose(got, want) and not torch.allclose(got, own)
    assert int(obj.state_dict()["event_offset_frames"]) == 1                       # the read-outs find it
    assert "event_offset_frames" not in _event_objective().state_dict()           # other checkpoints unchanged
    for bad in ({"event_offset": -1}, {"event_offset": 1, "event_weight": 0.0}):
        with pytest.raises(ValueError, match="event_offset"):
            CAVPObjective(CAVPVideoEncoder(TINY.cavp), MelAudioEncoder(80, TINY.cavp.embed_dim, 8), **bad)


@pytest.mark.parametrize("kind", ["cfm", "reflow", "distill"])
def test_flow_objectives_decrease(kind):
    est, cond = _flow_modules()
    obj = {"cfm": lambda: CFMObjective(est, cond, drop_prob=0.2, weight_floor=0.05),
           "reflow": lambda: ReflowObjective(est, cond, 4.5, weight_floor=0.05),
           "distill": lambda: DistillObjective(est, cond, 4.5)}[kind]()
    batch = _flow_batch()
    before, after = _fit(obj, batch, 30, 3e-3)
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("kind", ["cfm", "reflow", "distill"])
def test_batch_size_one_does_not_crash(kind):
    """FRIEREN_SPEC §10.12: the reference crashes at B = 1 (0-d time tensor)."""
    est, cond = _flow_modules()
    obj = {"cfm": CFMObjective, "reflow": ReflowObjective, "distill": DistillObjective}[kind](est, cond)
    out = obj(_flow_batch(b=1), torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])


def test_weight_floor_trains_t0():
    """FRIEREN_SPEC §10.5: w(0) ~ 7e-25; the floor gives t = 0 a usable weight."""
    t = torch.tensor([0.0, 0.5])
    v, target = torch.ones(2, 1, 3), torch.zeros(2, 1, 3)
    ref = weighted_flow_loss(v, target, t, 0.0)["loss"]
    fl = weighted_flow_loss(v, target, t, 0.05)["loss"]
    w = logit_normal_weight(t)
    assert torch.allclose(ref, w.mean(), rtol=1e-5)
    assert torch.allclose(fl, torch.stack([torch.tensor(0.05), w[1]]).mean(), rtol=1e-5)


def test_cfg_dropout_uses_zero_features():
    """Dropped items see cond(0) = the bias, i.e. exactly the sampler's null condition."""
    est, cond = _flow_modules()
    seen = []
    est.register_forward_hook(lambda m, i, o: seen.append(i[2].detach()))
    obj = CFMObjective(est, cond, drop_prob=1.0)
    obj(_flow_batch(b=2), torch.Generator().manual_seed(0))
    assert torch.allclose(seen[0], cond.null_condition(F_, 2))


def test_training_cfg_matches_sampler():
    est, cond = _flow_modules()
    b = _flow_batch(b=3)
    t_int = torch.full((3,), 400, dtype=torch.long)
    with torch.no_grad():
        train_v = guided_velocity(est, cond, b["x0"], t_int, b["feats"], 4.5)
        v = cfg_velocity(est, cond(b["feats"]), cond.null_condition(F_), 4.5)(b["x0"], torch.tensor(0.4))
    assert torch.allclose(train_v, v, atol=1e-5)


def test_distill_target_is_the_one_step_sample():
    """x0 + v_cfg(x0, t=0) (distill) is exactly one Euler step of the sampler."""
    est, cond = _flow_modules()
    b = _flow_batch(b=2)
    with torch.no_grad():
        x1_hat = b["x0"] + guided_velocity(est, cond, b["x0"], torch.zeros(2, dtype=torch.long), b["feats"], 4.5)
        one = sample(est, cond(b["feats"]), cond.null_condition(F_), b["x0"], steps=1, cfg_scale=4.5).final
        teacher = generate_reflow_pairs(est, cond, b["feats"], b["x0"], steps=1, cfg_scale=4.5)
    assert torch.allclose(x1_hat, one, atol=1e-5) and torch.allclose(teacher, one, atol=1e-6)


def test_latent_onset_weight_marks_where_sounds_start_quiet_about_as_much_as_loud():
    from frieren.training.objectives import latent_onset_weight

    mel = torch.full((1, 80, 64), -4.0) + 0.01 * torch.randn(1, 80, 64, generator=torch.Generator().manual_seed(0))
    mel[:, :, 12:] += 0.3                              # a quiet start at mel frame 12: latent 6
    mel[:, :, 40:] += 4.0                              # a loud one at mel frame 40: latent 20
    w = latent_onset_weight(mel, 2, 4.0)[0]
    assert w.shape == (32,) and torch.isclose(w.mean(), torch.tensor(1.0))
    rest = torch.cat([w[:6], w[7:20], w[21:]])
    assert w[6] > 2 * rest.max() and w[20] > 2 * rest.max()
    base = rest.mean()                                 # log scale: a start with 1/13 of the flux gets
    assert (w[6] - base) > 0.5 * (w[20] - base)        # more than half the extra weight
    assert torch.allclose(latent_onset_weight(mel, 2, 0.0), torch.ones(1, 32))


def test_cfm_position_weight_of_ones_is_the_plain_objective():
    est, cond = _flow_modules()
    obj = CFMObjective(est, cond)
    batch = _flow_batch()
    plain = _loss_at(obj, batch)
    ones = _loss_at(obj, {**batch, "position_weight": torch.ones(4, batch["x1"].shape[-1])})
    assert abs(plain - ones) < 1e-6
    skewed = torch.ones(4, batch["x1"].shape[-1])
    skewed[:, 0] = 10.0
    assert _loss_at(obj, {**batch, "position_weight": skewed}) != plain


def test_reflow_and_distill_position_weight_of_ones_is_the_plain_objective():
    """--reflow-onset-weight / --distill-onset-weight weigh the pair losses per latent; a weight of
    ones is the paper's objective, and weight on one latent weighs that latent's error."""
    est, cond = _flow_modules()
    batch = _flow_batch()
    L = batch["x1"].shape[-1]
    for obj in (ReflowObjective(est, cond), DistillObjective(est, cond)):
        plain = _loss_at(obj, batch)
        assert abs(plain - _loss_at(obj, {**batch, "position_weight": torch.ones(4, L)})) < 1e-6
        only_first = torch.zeros(4, L)
        only_first[:, 0] = float(L)
        assert _loss_at(obj, {**batch, "position_weight": only_first}) != pytest.approx(plain, rel=1e-3)
    # Distillation is deterministic (t = 0): the weighted loss is exactly the first latent's MSE.
    obj = DistillObjective(est, cond)
    with torch.no_grad():
        x1_hat = batch["x0"] + guided_velocity(est, cond, batch["x0"], torch.zeros(4, dtype=torch.long),
                                               batch["feats"], 4.5)
        first = (x1_hat - batch["x1"])[..., 0].pow(2).mean().item()
        out = obj({**batch, "position_weight": only_first})
    assert out["loss"].item() == pytest.approx(first, rel=1e-5)
    assert out["mse"].item() == pytest.approx(_loss_at(obj, batch), rel=1e-6)
