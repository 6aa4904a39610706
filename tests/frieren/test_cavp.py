"""CAVP video branch and frame pre-processing against the golden reference (07_cavp).

Every configuration value is read from the reference JSON files, so the tests run
unchanged on another reference folder of the same layout.
"""
from __future__ import annotations

import re

import pytest
import torch

from frieren.config import CAVPConfig
from frieren.models.cavp import CAVPVideoEncoder, count_parameters, select_video_branch
from frieren.models.cavp_preprocess import preprocess_frame, preprocess_frames

from conftest import load_json, load_tensors

ATOL = RTOL = 1e-5
REL_MAX = 1e-5  # intermediates: max |diff| / max |ref| (reference README)


def _int_arg(text: str, name: str) -> int:
    m = re.search(rf"\b{name}\s*=\s*(\d+)", text)
    assert m, f"could not find {name}=... in {text!r}"
    return int(m.group(1))


@pytest.fixture(scope="module")
def cavp_dir(ref_dir):
    return ref_dir / "07_cavp"


@pytest.fixture(scope="module")
def reduced(cavp_dir):
    return load_json(cavp_dir / "reduced_config.json")


@pytest.fixture(scope="module")
def manifest(cavp_dir):
    return load_json(cavp_dir / "manifest_full.json")


@pytest.fixture(scope="module")
def io(cavp_dir):
    return load_tensors(cavp_dir / "io_reduced.safetensors")


def _reduced_cfg(reduced) -> CAVPConfig:
    rc = reduced["reduced_config"]
    video_shape = reduced["io_tensors"]["video"]["shape"]
    head = re.search(r"Linear\(\s*(\d+)\s*,\s*(\d+)\s*\)", rc["video_project_head"])
    assert head, rc["video_project_head"]
    assert int(head.group(1)) == rc["feat_dim"]
    return CAVPConfig(depth=_int_arg(rc["backbone"], "depth"),
                      base_channels=_int_arg(rc["backbone"], "base_channels"),
                      embed_dim=int(head.group(2)), image_size=video_shape[-1])


def _full_cfg(reduced, manifest) -> CAVPConfig:
    full = reduced["full_config"]
    return CAVPConfig(depth=_int_arg(full, "depth"), base_channels=_int_arg(full, "base_channels"),
                      embed_dim=manifest["config"]["embed_dim"])


@pytest.fixture(scope="module")
def model(cavp_dir, reduced):
    m = CAVPVideoEncoder(_reduced_cfg(reduced))
    m.load_checkpoint_state_dict(load_tensors(cavp_dir / "weights_reduced.safetensors"))
    return m.eval()


def _rel_max(out, ref):
    return ((out - ref).abs().max() / ref.abs().max()).item()


def test_reduced_param_count(model, reduced):
    assert model.feat_dim == reduced["reduced_config"]["feat_dim"]
    assert count_parameters(model) == reduced["num_parameters_reduced"]


@torch.no_grad()
def test_features(model, io):
    video = io["video"]
    out = model(video, normalize=True)
    torch.testing.assert_close(out, io["features"], atol=ATOL, rtol=RTOL)
    # The unnormalised features have the backbone's magnitude (tens): the reference README
    # measured up to 5.5e-5 absolute (7e-7 of the max) between thread counts alone, so they
    # are compared like the intermediates, relative to the tensor's max; on this CPU
    # (AMD EPYC) the largest difference was 2.1e-5 (5e-7 of the max).
    out_u = model(video, normalize=False)
    assert out_u.shape == io["features_unnormalized"].shape
    assert _rel_max(out_u, io["features_unnormalized"]) < REL_MAX


@torch.no_grad()
def test_intermediates(model, io):
    video = io["video"]
    pooled = model.backbone(video)
    ref = io["intermediate.backbone_out"]
    assert pooled.shape == ref.shape
    assert _rel_max(pooled, ref) < REL_MAX
    stages = model.backbone_stages(video)
    ref3 = io["intermediate.layer3_out"]
    assert stages["layer3"].shape == ref3.shape
    assert _rel_max(stages["layer3"], ref3) < REL_MAX
    torch.testing.assert_close(stages["pooled"], pooled, atol=0, rtol=0)


@torch.no_grad()
def test_extract_chunks_independently(model, io):
    frames = io["video"][0]  # (T, 3, H, W)
    t = frames.shape[0]
    chunk = max(1, t - 2)  # one full chunk + one shorter trailing chunk
    out = model.extract(frames, chunk_frames=chunk)
    expect = torch.cat([model(frames[:chunk][None])[0], model(frames[chunk:][None])[0]])
    torch.testing.assert_close(out, expect, atol=0, rtol=0)
    whole = model.extract(frames, chunk_frames=t)
    torch.testing.assert_close(whole, io["features"][0], atol=ATOL, rtol=RTOL)


def test_bn_stays_in_eval(model):
    model.train()
    try:
        assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d))
    finally:
        model.eval()


def test_preprocess(io, reduced):
    frame = io["preprocess.frame_rgb_uint8"]
    ref = io["preprocess.out"]
    size = ref.shape[-1]
    out = preprocess_frame(frame, size)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    batch = preprocess_frames(torch.stack([frame, frame]), size)
    torch.testing.assert_close(batch, torch.stack([ref, ref]), atol=0, rtol=0)
    fast = preprocess_frames(frame[None], size, fast=True)[0]
    assert fast.shape == ref.shape
    assert (fast - ref).abs().max().item() <= 1.5 / 255  # antialiased torch path: ~1 grey level


def test_full_manifest_video_branch(manifest, reduced):
    with torch.device("meta"):
        model = CAVPVideoEncoder(_full_cfg(reduced, manifest))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = {t["key"]: t["shape"] for t in manifest["tensors"]
           if t["key"].startswith(("video_encoder.", "video_project_head."))}
    assert len(ref) == manifest["video_branch_state_dict_keys"]
    assert ours == ref
    assert count_parameters(model) == manifest["num_parameters_video_branch"]
    assert count_parameters(model.video_encoder) == manifest["num_parameters_video_encoder_backbone"]
    # The loader keeps exactly the video branch of the full checkpoint key set.
    all_keys = {("module." + t["key"]): None for t in manifest["tensors"]}
    assert set(select_video_branch(all_keys)) == set(ref)


def test_inflate_flags_set_the_temporal_reach():
    """``CAVPConfig.inflate`` turns conv1 of a stage's blocks into (3,1,1) temporal convs: a
    frame's feature then depends on more neighbours (one per inflated block each side)."""
    torch.manual_seed(0)
    official = CAVPVideoEncoder(CAVPConfig(base_channels=4, embed_dim=8, image_size=32))
    every = CAVPVideoEncoder(CAVPConfig(base_channels=4, embed_dim=8, image_size=32, inflate=(1, 1, 1, 1)))
    assert official.video_encoder.layer1[0].conv1.conv.kernel_size == (1, 1, 1)
    assert every.video_encoder.layer1[0].conv1.conv.kernel_size == (3, 1, 1)

    def reach(enc):  # frames whose feature changes when frame 0 changes
        enc = enc.double()  # the influence fades fast: compare exact zeros in float64
        video = torch.rand(1, 24, 3, 32, 32, dtype=torch.float64)
        bumped = video.clone()
        bumped[:, 0] += 0.5
        with torch.no_grad():
            diff = (enc(video) - enc(bumped)).abs().amax(-1)[0]
        return int((diff > 0).sum())

    assert reach(official) == 1 + 9   # layer3's 6 and layer4's 3 inflated blocks
    # + layer1's 3 and layer2's 4 blocks: at most 1 + 16 (ReLUs of random weights may cut it short)
    assert 1 + 9 < reach(every) <= 1 + 16
    with pytest.raises(ValueError, match="one flag per stage"):
        CAVPConfig(inflate=(1, 1))


def test_shallower_depths_hold_fewer_blocks_and_are_read_back_from_their_weights():
    """``CAVPConfig.depth`` 26 and 14 (``frieren train --cavp-depth``) stack two and one bottleneck
    blocks per stage; the depth is recovered from a state dict's keys, and an unknown layout is named."""
    from frieren.models.cavp import CAVP_DEPTHS, depth_of_state_dict

    assert {14, 26, 50} <= set(CAVP_DEPTHS)
    encs = {d: CAVPVideoEncoder(CAVPConfig(depth=d, base_channels=4, embed_dim=8, image_size=32)) for d in (14, 26, 50)}
    for d, blocks in ((14, 1), (26, 2)):
        assert [len(getattr(encs[d].video_encoder, f"layer{i}")) for i in range(1, 5)] == [blocks] * 4
    for d, enc in encs.items():
        assert depth_of_state_dict(enc.state_dict()) == d
        with torch.no_grad():  # same output shape at every depth: (B, T, embed_dim)
            assert enc(torch.rand(1, 3, 3, 32, 32)).shape == (1, 3, 8)
    params = [sum(p.numel() for p in encs[d].parameters()) for d in (14, 26, 50)]
    assert params == sorted(params)
    cut = {k: v for k, v in encs[26].state_dict().items() if not k.startswith("video_encoder.layer3.1.")}
    with pytest.raises(ValueError, match=r"\(2, 2, 1, 2\) blocks per stage"):
        depth_of_state_dict(cut)
    with pytest.raises(ValueError, match="depth must be one of"):
        CAVPVideoEncoder(CAVPConfig(depth=18, base_channels=4, embed_dim=8, image_size=32))
