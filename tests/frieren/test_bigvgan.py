"""BigVGAN generator against the 05_bigvgan golden files (reduced weights, full manifest)."""
from __future__ import annotations

import pytest
import torch

from frieren.config import VocoderConfig
from frieren.models.vocoder import BigVGAN, receptive_field, vocoder_config_from_args
from conftest import load_json, load_tensors

ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def folder(ref_dir):
    return ref_dir / "05_bigvgan"


@pytest.fixture(scope="module")
def reduced(folder):
    cfg_json = load_json(folder / "reduced_config.json")
    cfg = vocoder_config_from_args(cfg_json["reduced_config_generator_fields"])
    model = BigVGAN(cfg).eval()
    model.load_state_dict(load_tensors(folder / cfg_json["weights_file"].split()[0]), strict=True)
    return cfg_json, model


@pytest.fixture(scope="module")
def io(folder):
    return load_tensors(folder / "io_reduced.safetensors")


def test_reduced_wav_and_intermediates(reduced, io):
    cfg_json, model = reduced
    assert sum(p.numel() for p in model.parameters()) == cfg_json["num_parameters_reduced"]
    names = [k[len("intermediate."):] for k in io if k.startswith("intermediate.")]
    assert names, "no intermediate.* tensors in io_reduced.safetensors"
    modules = dict(model.named_modules())
    seen = {}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
               for n in names]
    try:
        with torch.no_grad():
            wav = model(io["mel"])
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(wav, io["wav"], atol=ATOL, rtol=RTOL)
    assert wav.shape[-1] == io["mel"].shape[-1] * model.hop_length
    for n in names:
        torch.testing.assert_close(seen[n], io[f"intermediate.{n}"], atol=ATOL, rtol=RTOL,
                                   msg=lambda m, n=n: f"intermediate.{n}: {m}")


def test_filters_computed_like_reference(reduced, folder):
    """The Kaiser-sinc buffers we compute at init equal the stored ones."""
    cfg_json, _ = reduced
    fresh = BigVGAN(vocoder_config_from_args(cfg_json["reduced_config_generator_fields"]))
    stored = load_tensors(folder / "weights_reduced.safetensors")
    filters = {k: v for k, v in fresh.state_dict().items() if k.endswith("filter")}
    assert filters
    for k, v in filters.items():
        torch.testing.assert_close(v, stored[k], atol=1e-7, rtol=0)


def test_full_manifest_keys_shapes_and_counts(folder):
    manifest = load_json(folder / "manifest_full.json")
    cfg = vocoder_config_from_args(manifest["config_full_yml"])
    assert cfg == vocoder_config_from_args(manifest["config_generator_fields"])
    with torch.device("meta"):
        model = BigVGAN(cfg)
    sd = model.state_dict()
    expected = {t["key"]: tuple(t["shape"]) for t in manifest["tensors"]}
    assert len(sd) == manifest["num_state_dict_keys"]
    assert set(sd) == set(expected), (sorted(set(sd) - set(expected))[:5],
                                      sorted(set(expected) - set(sd))[:5])
    bad = {k: (tuple(v.shape), expected[k]) for k, v in sd.items() if tuple(v.shape) != expected[k]}
    assert not bad, list(bad.items())[:5]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]
    assert sum(b.numel() for b in model.buffers()) == manifest["num_buffer_elements_in_state_dict"]
    kinds = {t["key"]: t["kind"] for t in manifest["tensors"]}
    params = dict(model.named_parameters())
    assert all((kinds[k] == "parameter") == (k in params) for k in sd)


def test_vocoder_config_from_args_ignores_training_keys(folder):
    manifest = load_json(folder / "manifest_full.json")
    cfg = vocoder_config_from_args(manifest["config_full_yml"])
    assert isinstance(cfg, VocoderConfig)
    gen = manifest["config_generator_fields"]
    assert cfg.upsample_initial_channel == gen["upsample_initial_channel"]
    assert list(cfg.upsample_rates) == gen["upsample_rates"]
    assert [list(d) for d in cfg.resblock_dilation_sizes] == gen["resblock_dilation_sizes"]


def test_fold_weight_norm_equivalence(reduced, io):
    cfg_json, model = reduced
    folded = BigVGAN(model.cfg).eval()
    folded.load_state_dict(model.state_dict())
    folded.fold_weight_norm()
    assert folded.weight_norm_folded
    keys = set(folded.state_dict())
    assert not any(k.endswith(("weight_g", "weight_v")) for k in keys)
    assert "conv_pre.weight" in keys and "ups.0.0.weight" in keys
    with torch.no_grad():
        a, b = model(io["mel"]), folded(io["mel"])
    torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


def test_receptive_field_is_exact_bound(reduced, io):
    """Changing one frame leaves every sample outside the computed reach unchanged."""
    _, model = reduced
    left, right = receptive_field(model.cfg)
    assert (left, right) == model.receptive_field_bounds
    assert model.receptive_field_frames == max(left, right)
    mel = io["mel"].double()
    T, t0, hop = mel.shape[-1], mel.shape[-1] // 2, model.hop_length
    m64 = BigVGAN(model.cfg).eval()
    m64.load_state_dict(model.state_dict())
    m64.double()
    bumped = mel.clone()
    bumped[..., t0] += 1.0
    with torch.no_grad():
        diff = (m64(bumped) - m64(mel)).abs()[0, 0]
    lo, hi = max(0, (t0 - left) * hop), min(T * hop, (t0 + 1 + right) * hop)
    assert diff[:lo].max().item() == 0.0 if lo > 0 else True
    assert diff[hi:].max().item() == 0.0 if hi < T * hop else True
    assert diff[t0 * hop:(t0 + 1) * hop].max().item() > 0.0


def test_vocode_span_matches_whole_window(reduced, ref_dir):
    _, model = reduced
    mel = load_tensors(ref_dir / "06_mel_frontend" / "io.safetensors")["mel"]
    T, hop, ctx = mel.shape[-1], model.hop_length, model.receptive_field_frames
    with torch.no_grad():
        whole = model(mel)
        spans = [(T // 2 - 16, T // 2 + 16), (0, 24), (T - 24, T)]
        for start, end in spans:
            part = model.vocode_span(mel, start, end, context=ctx)
            assert part.shape == (1, 1, (end - start) * hop)
            torch.testing.assert_close(part, whole[..., start * hop:end * hop],
                                       atol=ATOL, rtol=RTOL)
        # Without context the span's edges differ: the crop really uses the context.
        start, end = spans[0]
        bare = model.vocode_span(mel, start, end, context=0)
        assert (bare - whole[..., start * hop:end * hop]).abs().max() > 1e-4
    with pytest.raises(ValueError):
        model.vocode_span(mel, 5, 5)
    with pytest.raises(ValueError):
        model(mel[:, :40])
