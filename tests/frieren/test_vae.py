"""1-D mel VAE against the golden reference (03_vae).

Every configuration value is read from the reference JSON files, so the tests run
unchanged on another reference folder of the same layout.
"""
from __future__ import annotations

import re

import pytest
import torch

from frieren.config import VAEConfig
from frieren.models.vae import DiagonalGaussian, MelVAE

from conftest import load_json, load_tensors

ATOL = RTOL = 1e-5
INTERMEDIATE = "intermediate."


@pytest.fixture(scope="module")
def vae_dir(ref_dir):
    return ref_dir / "03_vae"


@pytest.fixture(scope="module")
def reduced(vae_dir):
    return load_json(vae_dir / "reduced_config.json")


@pytest.fixture(scope="module")
def io(vae_dir):
    return load_tensors(vae_dir / "io_reduced.safetensors")


@pytest.fixture(scope="module")
def manifest(vae_dir):
    return load_json(vae_dir / "manifest_full.json")


@pytest.fixture(scope="module")
def model(vae_dir, reduced):
    vae = MelVAE(VAEConfig.from_reference(reduced["reduced_config"])).eval()
    vae.load_state_dict(load_tensors(vae_dir / "weights_reduced.safetensors"), strict=True)
    return vae


def _close(actual, expected, name):
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


def _sample_seed(reduced) -> int:
    m = re.search(r"torch\.manual_seed\((\d+)\)", reduced["calls"]["sample"])
    assert m, f"no manual_seed in {reduced['calls']['sample']!r}"
    return int(m.group(1))


@pytest.fixture(scope="module")
def run(model, io):
    """encode(mel) and decode(z) with forward hooks on every module named by an intermediate.* tensor.

    Encoder-side modules are captured during encode(mel), decoder-side ones during decode(z).
    """
    captured, handles = {}, []
    for key in io:
        if key.startswith(INTERMEDIATE):
            path = key[len(INTERMEDIATE):]
            module = model.get_submodule(path)

            def hook(_m, _inp, out, key=key):
                captured.setdefault(key, out.detach().clone())
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            posterior = model.encode(io["mel"])
            decoded = model.decode(io["z"])
    finally:
        for h in handles:
            h.remove()
    return posterior, decoded, captured


def test_encoder_and_moments(model, io):
    with torch.no_grad():
        h = model.encoder(io["mel"])
        _close(h, io["encoder_out"], "encoder_out")
        _close(model.quant_conv(h), io["moments"], "moments")


def test_posterior(run, io):
    posterior = run[0]
    assert isinstance(posterior, DiagonalGaussian)
    _close(posterior.mean, io["posterior_mean"], "posterior_mean")
    _close(posterior.logvar, io["posterior_logvar"], "posterior_logvar")
    _close(posterior.std, io["posterior_std"], "posterior_std")
    _close(posterior.mode(), io["posterior_mode"], "posterior_mode")


def test_posterior_sample_global_rng(run, io, reduced):
    posterior = run[0]
    seed = _sample_seed(reduced)
    torch.manual_seed(seed)
    eps = torch.randn(posterior.mean.shape)
    _close(eps, io["eps"], "eps")
    torch.manual_seed(seed)
    _close(posterior.sample(), io["posterior_sample"], "posterior_sample")


def test_posterior_sample_generator(run):
    posterior = run[0]
    a = posterior.sample(torch.Generator().manual_seed(5))
    eps = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, posterior.mean + posterior.std * eps)


def test_decode(run, io):
    _close(run[1], io["decoded_z"], "decoded_z")


def test_reconstruction_from_mode(model, io):
    with torch.no_grad():
        rec, posterior = model(io["mel"], sample_posterior=False)
    _close(rec, io["reconstruction_from_mode"], "reconstruction_from_mode")
    assert isinstance(posterior, DiagonalGaussian)


def test_intermediates(run, io):
    captured = run[2]
    names = [k for k in io if k.startswith(INTERMEDIATE)]
    assert names, "reference has no intermediate.* tensors"
    for key in names:
        assert key in captured, f"hook for {key} never fired"
        _close(captured[key], io[key], key)


def test_intermediates_documented(reduced, io):
    text = " ".join(str(v) for k, v in reduced["outputs"].items() if k.startswith(INTERMEDIATE))
    for key in io:
        if key.startswith(INTERMEDIATE):
            assert key[len(INTERMEDIATE):] in text, f"{key} not described in reduced_config.json"
            assert key in reduced["io_tensors"]


@pytest.mark.parametrize("frames", [625, 65, 64])
def test_odd_lengths(model, frames):
    mel = torch.randn(1, model.cfg.in_channels, frames, generator=torch.Generator().manual_seed(frames))
    with torch.no_grad():
        posterior = model.encode(mel)
        latent = model.latent_frames(frames)
        assert latent == frames // model.downsample_factor
        assert posterior.mean.shape == (1, model.cfg.embed_dim, latent)
        rec = model.decode(posterior.mode())
    assert rec.shape == (1, model.cfg.out_ch, latent * model.downsample_factor)


def test_logvar_clamp():
    moments = torch.tensor([[[1.0, -2.0], [100.0, -100.0]]])  # (1, 2, 2): mean row, logvar row
    p = DiagonalGaussian.from_moments(moments)
    assert p.logvar.tolist() == [[[20.0, -30.0]]]
    torch.testing.assert_close(p.std, torch.exp(0.5 * p.logvar))
    torch.testing.assert_close(p.var, torch.exp(p.logvar))


def test_shape_asserts(model):
    with pytest.raises(AssertionError, match=r"got shape \(1, 7, 16\)"):
        model.encode(torch.zeros(1, 7, 16))
    with pytest.raises(AssertionError, match=r"got shape \(1, 3, 16\)"):
        model.decode(torch.zeros(1, 3, 16))


def test_full_manifest(manifest):
    prefix = manifest["checkpoint_prefix"]
    expected = {}
    for t in manifest["tensors"]:
        ck = t["checkpoint_key"]
        assert ck.startswith(prefix), f"{ck} lacks prefix {prefix}"
        assert ck[len(prefix):] == t["key"]
        expected[ck[len(prefix):]] = tuple(t["shape"])
    with torch.device("meta"):
        vae = MelVAE(VAEConfig.from_reference(manifest["config"]))
    got = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    bad = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not bad, f"shape mismatches: {bad}"
    assert list(got) == list(expected), "state_dict key order differs from the reference"
    assert len(got) == manifest["num_state_dict_keys"]
    assert sum(p.numel() for p in vae.parameters()) == manifest["num_parameters"]
    assert sum(b.numel() for b in vae.buffers()) == manifest["num_buffer_elements_in_state_dict"]
