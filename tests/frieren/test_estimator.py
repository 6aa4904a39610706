"""ChannelConcatDiT against the golden reference (01_vf_estimator).

Configurations come from the reference JSON files; the latent-per-frame factor is read
from the io shapes (T / F), so the tests run unchanged on another folder of this layout.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from frieren.config import EstimatorConfig, config_from_dict
from frieren.models.estimator import ChannelConcatDiT

from conftest import load_json, load_tensors

ATOL = RTOL = 1e-5
INTERMEDIATE = "A.intermediate."


@pytest.fixture(scope="module")
def est_dir(ref_dir):
    return ref_dir / "01_vf_estimator"


@pytest.fixture(scope="module")
def reduced(est_dir):
    return load_json(est_dir / "reduced_config.json")


@pytest.fixture(scope="module")
def io(est_dir):
    return load_tensors(est_dir / "io_reduced.safetensors")


@pytest.fixture(scope="module")
def manifest(est_dir):
    return load_json(est_dir / "manifest_full.json")


def _latents_per_frame(io, case="A"):
    length, frames = io[f"{case}.x"].shape[-1], io[f"{case}.context"].shape[1]
    assert length % frames == 0, f"{case}: T={length} is not a multiple of F={frames}"
    return length // frames


@pytest.fixture(scope="module")
def model(est_dir, reduced, io):
    cfg = config_from_dict(EstimatorConfig, reduced["reduced_config"])
    cfg = dataclasses.replace(cfg, latents_per_frame=_latents_per_frame(io))
    net = ChannelConcatDiT(cfg).eval()
    net.load_state_dict(load_tensors(est_dir / "weights_reduced.safetensors"), strict=True)
    return net


def _close(actual, expected, name):
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, atol=ATOL, rtol=RTOL), f"{name}: max abs diff {diff:.3e}"


def _cases(io):
    return sorted({k.split(".")[0] for k in io if k.endswith(".out")})


def test_param_count_reduced(model, reduced):
    assert sum(p.numel() for p in model.parameters()) == reduced["num_parameters_reduced"]


def test_outputs(model, io):
    cases = _cases(io)
    assert cases, "no <case>.out tensors in io_reduced.safetensors"
    with torch.no_grad():
        for case in cases:
            assert _latents_per_frame(io, case) == model.cfg.latents_per_frame
            out = model(io[f"{case}.x"], io[f"{case}.t"], io[f"{case}.context"])
            _close(out, io[f"{case}.out"], f"{case}.out")


def test_intermediates_via_hooks(model, io):
    names = sorted(k[len(INTERMEDIATE):] for k in io if k.startswith(INTERMEDIATE))
    assert names, "no A.intermediate.* tensors"
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    assert not missing, f"no submodule for hooks {missing}"
    captured = {}
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, out))
               for n in names]
    try:
        with torch.no_grad():
            model(io["A.x"], io["A.t"], io["A.context"])
    finally:
        for h in handles:
            h.remove()
    for n in names:
        _close(captured[n], io[INTERMEDIATE + n], INTERMEDIATE + n)


def test_float_time_equals_integer_time(model, io):
    with torch.no_grad():
        a = model(io["A.x"], io["A.t"], io["A.context"])
        b = model(io["A.x"], io["A.t"].to(torch.float32), io["A.context"])
    assert torch.equal(a, b)


def test_full_manifest_keys_shapes_and_count(manifest):
    cfg = config_from_dict(EstimatorConfig, manifest["config"])
    with torch.device("meta"):
        net = ChannelConcatDiT(cfg)
    sd = net.state_dict()
    prefix = manifest["checkpoint_prefix"]
    expected = {t["key"]: tuple(t["shape"]) for t in manifest["tensors"]}
    assert len(sd) == manifest["num_state_dict_keys"] == len(expected)
    assert set(sd) == set(expected), (f"missing {sorted(set(expected) - set(sd))}, "
                                      f"unexpected {sorted(set(sd) - set(expected))}")
    for t in manifest["tensors"]:
        assert tuple(sd[t["key"]].shape) == expected[t["key"]], t["key"]
        assert t["checkpoint_key"] == prefix + t["key"]
    assert sum(p.numel() for p in net.parameters()) == manifest["num_parameters"]
    assert sum(b.numel() for b in net.buffers()) == manifest["num_buffer_elements_in_state_dict"]


def _tiny_cfg(**kw):
    base = dict(in_channels=4, context_dim=12, hidden_size=32, num_heads=2, depth=1, max_len=40, latents_per_frame=4)
    base.update(kw)
    return EstimatorConfig(**base)


def test_length_mismatch_raises_clear_error():
    net = ChannelConcatDiT(_tiny_cfg())
    with pytest.raises(ValueError, match=r"latents_per_frame \(4\)"):
        net(torch.randn(1, 4, 10), torch.tensor([3]), torch.randn(1, 3, 12))


def test_max_len_exceeded_raises():
    net = ChannelConcatDiT(_tiny_cfg(max_len=16))
    with pytest.raises(ValueError, match="max_len"):
        net(torch.randn(1, 4, 16), torch.tensor([3]), torch.randn(1, 4, 12))


def test_reference_init_from_scratch():
    torch.manual_seed(0)
    net = ChannelConcatDiT(_tiny_cfg())
    for block in net.blocks:
        assert torch.count_nonzero(block.proj_out.weight) == 0 and torch.count_nonzero(block.proj_out.bias) == 0
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Linear) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0, name
    assert net.t_embedder.mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.2)
    x, ctx = torch.randn(2, 4, 8), torch.randn(2, 2, 12)
    out = net(x, torch.tensor([0, 999]), ctx)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_seeded_init_reproduces_reference_init(est_dir, reduced):
    """Weights the generator did not redraw equal a fresh ChannelConcatDiT under the same seed."""
    match = re.search(r"manual_seed\((\d+)\)", reduced["init"])
    assert match, "reduced_config.json 'init' names no torch.manual_seed"
    torch.manual_seed(int(match.group(1)))
    net = ChannelConcatDiT(config_from_dict(EstimatorConfig, reduced["reduced_config"]))
    golden = load_tensors(est_dir / "weights_reduced.safetensors")
    redrawn = set(reduced["re_randomized_keys"])
    kept = [k for k in net.state_dict() if k not in redrawn]
    assert kept
    bad = [k for k in kept if not torch.equal(net.state_dict()[k], golden[k])]
    assert not bad, f"init differs from the reference for {bad}"


def test_sdpa_backend_matches_math(model, io):
    with torch.no_grad():
        ref = model(io["B.x"], io["B.t"], io["B.context"])
        try:
            out = model.set_attention_backend("sdpa")(io["B.x"], io["B.t"], io["B.context"])
        finally:
            model.set_attention_backend("math")
    _close(out, ref, "sdpa vs math")
    with pytest.raises(ValueError, match="attention backend"):
        model.set_attention_backend("flash")
