"""Mel front end, resampling and audio loading against the golden reference (06_mel_frontend).

Every configuration value is read from the reference JSON, so the tests run unchanged
on another reference folder of the same layout.
"""
from __future__ import annotations

import re
import wave

import numpy as np
import pytest
import torch

from frieren.audio import MelFrontend, load_audio, resample, to_mono
from frieren.config import MelConfig

from conftest import load_json, load_tensors

ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def mel_dir(ref_dir):
    return ref_dir / "06_mel_frontend"


@pytest.fixture(scope="module")
def hparams(mel_dir):
    return load_json(mel_dir / "config.json")["hparams"]


@pytest.fixture(scope="module")
def io(mel_dir):
    return load_tensors(mel_dir / "io.safetensors")


@pytest.fixture(scope="module")
def frontend(hparams):
    return MelFrontend(MelConfig.from_reference_hparams(hparams)).eval()


def _close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")


def test_config_from_hparams(hparams, frontend):
    cfg = frontend.cfg
    assert (cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels, cfg.fmin, cfg.fmax) == (
        hparams["audio_sample_rate"], hparams["fft_size"], hparams["win_size"], hparams["hop_size"],
        hparams["audio_num_mel_bins"], hparams["fmin"], hparams["fmax"])


def test_buffers(frontend, io):
    _close(frontend.mel_basis, io["mel_basis"], "mel_basis")
    _close(frontend.hann_window, io["hann_window"], "hann_window")
    # librosa-exact filterbank: far tighter than the test tolerance
    assert (frontend.mel_basis - io["mel_basis"]).abs().max().item() <= 1e-6 * io["mel_basis"].abs().max().item()
    assert len(frontend.state_dict()) == 0, "front-end buffers must be non-persistent"


def test_mel_and_magnitude(frontend, io, hparams):
    wav = io["wav"]
    with torch.no_grad():
        mel = frontend(wav)
        mag = frontend.linear_magnitude(wav)
    _close(mag, io["linear_magnitude"], "linear_magnitude")
    _close(mel, io["mel"], "mel")
    assert frontend.frames_for_samples(wav.shape[-1]) == io["mel"].shape[-1]
    saved = mel[0][:, : hparams["batch_max_length"]]
    _close(saved, io["mel_saved"], "mel_saved")


def test_batch_and_frame_count(frontend, io):
    wav = io["wav"]
    two = torch.cat([wav, wav.flip(-1)], dim=0)
    with torch.no_grad():
        mel = frontend(two)
    _close(mel[:1], io["mel"], "mel (batched row 0)")
    cfg = frontend.cfg
    for n in (cfg.n_fft, cfg.n_fft + 1, 10 * cfg.hop_length, 10 * cfg.hop_length + 7):
        with torch.no_grad():
            out = frontend(torch.zeros(1, n))
        assert out.shape == (1, cfg.n_mels, frontend.frames_for_samples(n)), (n, tuple(out.shape))
        # digital silence maps to log10(clamp_min)
        torch.testing.assert_close(out, torch.full_like(out, float(np.log10(cfg.clamp_min))))


def _rate(key: str) -> int:
    m = re.search(r"_(\d+)$", key)
    assert m, f"no sample rate in tensor name {key!r}"
    return int(m.group(1))


def _resample_keys(io):
    keys = [k for k in io if k.startswith("resample.")]
    stereo = next(k for k in keys if "stereo" in k)
    mono = next(k for k in keys if "mono" in k)
    out = next(k for k in keys if k.startswith("resample.out"))
    return stereo, mono, out


def test_resample_chain(io):
    stereo_k, mono_k, out_k = _resample_keys(io)
    mono = to_mono(io[stereo_k])
    _close(mono, io[mono_k], mono_k)
    out = resample(mono, _rate(mono_k), _rate(out_k))
    _close(out, io[out_k], out_k)
    assert to_mono(io[mono_k]) is io[mono_k]
    assert resample(io[mono_k], _rate(mono_k), _rate(mono_k)) is io[mono_k]


def test_load_audio_wav(tmp_path, io):
    stereo_k, mono_k, out_k = _resample_keys(io)
    sr, target = _rate(stereo_k), _rate(out_k)
    pcm = np.clip(np.round(io[stereo_k].numpy() * 32767.0), -32768, 32767).astype("<i2")  # (C, N)
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(pcm.shape[0])
        fh.setsampwidth(2)
        fh.setframerate(sr)
        fh.writeframes(pcm.T.tobytes())
    wav = load_audio(path, target)
    expected = resample(to_mono(torch.from_numpy(pcm.astype(np.float32) / 32768.0)), sr, target)
    assert wav.dtype == torch.float32
    _close(wav, expected, "load_audio")
    # and it is close to the float reference chain (int16 quantisation only)
    torch.testing.assert_close(wav, io[out_k], atol=1e-3, rtol=0)


def test_load_audio_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_audio(tmp_path / "missing.wav", 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match="bad.wav"):
        load_audio(bad, 16000)


def test_shape_errors(frontend):
    with pytest.raises(AssertionError, match=r"\(B, N\)"):
        frontend(torch.zeros(1, 1, 4096))
    with pytest.raises(AssertionError, match="too short"):
        frontend(torch.zeros(1, frontend.pad))
