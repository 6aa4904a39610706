"""Condition encoder against the golden reference (02_cond_encoder).

Every configuration value is read from the reference JSON files, so the tests run
unchanged on another reference folder of the same layout.
"""
from __future__ import annotations

import pytest
import torch

from frieren.config import CondConfig, config_from_dict
from frieren.models.cond import CondEncoder

from conftest import load_json, load_tensors

ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def cond_dir(ref_dir):
    return ref_dir / "02_cond_encoder"


@pytest.fixture(scope="module")
def io(cond_dir):
    return load_tensors(cond_dir / "io.safetensors")


@pytest.fixture(scope="module")
def manifest(cond_dir):
    return load_json(cond_dir / "manifest_full.json")


@pytest.fixture(scope="module")
def model(cond_dir):
    cfg = config_from_dict(CondConfig, load_json(cond_dir / "config.json")["config"])
    enc = CondEncoder(cfg).eval()
    enc.load_state_dict(load_tensors(cond_dir / "weights_full_random.safetensors"), strict=True)
    return enc


def _close(actual, expected, name):
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("feats_key,out_key", [("feats40", "context40"), ("feats32", "context32"),
                                               ("zero_embed", "uncond_context")])
def test_outputs(model, io, feats_key, out_key):
    with torch.no_grad():
        _close(model(io[feats_key]), io[out_key], out_key)


def test_null_condition(model, io):
    zeros = io["zero_embed"]
    batch, frames, _ = zeros.shape
    nf = model.null_features(frames, batch)
    assert nf.dtype == zeros.dtype and torch.equal(nf, zeros)
    with torch.no_grad():
        _close(model.null_condition(frames, batch), io["uncond_context"], "null_condition")
        two = model.null_condition(frames, batch=2)
    assert two.shape == (2, frames, model.cfg.embed_dim)
    assert model.null_features(3, dtype=torch.float64).dtype == torch.float64


def test_manifest_keys_and_shapes(manifest):
    prefix = manifest["checkpoint_prefix"]
    expected = {}
    for t in manifest["tensors"]:
        ck = t["checkpoint_key"]
        assert ck.startswith(prefix), f"{ck} lacks prefix {prefix}"
        assert ck[len(prefix):] == t["key"]
        expected[ck[len(prefix):]] = tuple(t["shape"])
    cfg = config_from_dict(CondConfig, manifest["config"])
    with torch.device("meta"):
        enc = CondEncoder(cfg)
    got = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert got == expected
    assert len(got) == manifest["num_state_dict_keys"]
    assert sum(p.numel() for p in enc.parameters()) == manifest["num_parameters"]


def test_shape_assert(model):
    with pytest.raises(AssertionError, match=r"got shape \(2, 5, 7\)"):
        model(torch.zeros(2, 5, 7))
