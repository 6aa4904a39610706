"""Official-layout checkpoints convert to a bundle and generate; bad files fail clearly;
`frieren generate` returns audio of exactly the video's duration and muxes it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_tensors, make_test_video
from official_files import reduced_preset, write_official_files


def _frieren(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "frieren.cli", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"frieren {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _wav_seconds(path: Path) -> float:
    import wave

    with wave.open(str(path)) as wf:
        return wf.getnframes() / wf.getframerate()


@pytest.fixture(scope="module")
def official(ref_dir, tmp_path_factory):
    return write_official_files(ref_dir, tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="module")
def bundle(official, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "reduced"
    _frieren("convert", "--preset", str(official["preset"]), "--frieren-ckpt", str(official["frieren"]),
             "--cavp-ckpt", str(official["cavp"]), "--vocoder-dir", str(official["vocoder"]), "--out", str(out))
    return out


def test_converted_bundle_holds_the_reference_weights(bundle, ref_dir):
    from frieren.checkpoints import load_bundle

    stack, info = load_bundle(bundle, verify_sha256=True)
    est = load_tensors(ref_dir / "01_vf_estimator" / "weights_reduced.safetensors")
    for k, v in est.items():
        torch.testing.assert_close(stack.estimator.state_dict()[k], v, rtol=0, atol=0)
    voc = load_tensors(ref_dir / "05_bigvgan" / "weights_reduced.safetensors")
    for k, v in voc.items():
        torch.testing.assert_close(stack.vocoder.state_dict()[k], v, rtol=0, atol=0)
    assert set(info.provenance["converted_from"]) == {"frieren", "cavp", "vocoder"}
    assert info.preset == reduced_preset(ref_dir)


def test_converted_bundle_reproduces_reference_sampler(bundle, ref_dir):
    """The bundle's modules give the golden conditions, 1-step CFG result and decoded mel."""
    from frieren.checkpoints import load_bundle

    stack, _ = load_bundle(bundle)
    io = load_tensors(ref_dir / "04_cfm_sampler" / "io_reduced.safetensors")
    from frieren.flow.sampling import sample

    with torch.no_grad():
        torch.testing.assert_close(stack.encode_condition(io["feats"]), io["cond"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(stack.null_condition(io["feats"].shape[1]), io["uncond_cond"], rtol=1e-5, atol=1e-5)
        out = sample(stack.estimator, io["cond"], io["uncond_cond"], io["x0_noise"], steps=1, cfg_scale=4.5).final
        decoded = stack.decode(io["cfg_25step.final"])
    torch.testing.assert_close(out, io["cfg_1step.final"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(decoded, io["cfg_25step.decoded_mel"], rtol=1e-5, atol=1e-5)


def test_generate_with_converted_bundle_and_mux(bundle, tmp_path):
    import av

    video = make_test_video(tmp_path / "clip.mp4", seconds=3.0, fps=30, width=320, height=180)
    wav, muxed = tmp_path / "clip.wav", tmp_path / "clip_foley.mp4"
    _frieren("generate", str(video), "--out", str(wav), "--bundle", str(bundle), "--steps", "1", "--mux", str(muxed))
    assert abs(_wav_seconds(wav) - 3.0) <= 256 / 16000
    with av.open(str(muxed)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        rate = c.streams.audio[0].rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])])
    assert audio.size > 0.9 * 3.0 * rate


@pytest.mark.parametrize("seconds", [20.0, 3.0, 47.0])
def test_generate_matches_video_duration(tmp_path, seconds):
    video = make_test_video(tmp_path / "v.mp4", seconds=seconds, fps=30, width=640, height=360)
    wav = tmp_path / "v.wav"
    _frieren("generate", str(video), "--out", str(wav), "--preset", "tiny", "--random-init")
    assert abs(_wav_seconds(wav) - seconds) <= 256 / 16000


def test_truncated_checkpoint_is_a_clear_error(official, tmp_path):
    data = Path(official["frieren"]).read_bytes()
    broken = tmp_path / "truncated.ckpt"
    broken.write_bytes(data[: len(data) // 2])
    proc = _frieren("convert", "--preset", str(official["preset"]), "--frieren-ckpt", str(broken),
                    "--cavp-ckpt", str(official["cavp"]), "--out", str(tmp_path / "b"), check=False)
    assert proc.returncode == 2
    assert "truncated.ckpt" in proc.stderr and "Traceback" not in proc.stderr


def test_renamed_key_is_a_clear_error(official, tmp_path):
    sd = torch.load(official["frieren"], weights_only=True)["state_dict"]
    key = "model.diffusion_model.x_proj.weight"
    sd["model.diffusion_model.x_projection.weight"] = sd.pop(key)
    renamed = tmp_path / "renamed.ckpt"
    torch.save({"state_dict": sd}, renamed)
    proc = _frieren("convert", "--preset", str(official["preset"]), "--frieren-ckpt", str(renamed),
                    "--cavp-ckpt", str(official["cavp"]), "--out", str(tmp_path / "b"), check=False)
    assert proc.returncode == 2
    assert "x_proj.weight" in proc.stderr and "x_projection.weight" in proc.stderr
    assert "renamed.ckpt" in proc.stderr


def test_corrupt_video_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    proc = _frieren("generate", str(bad), "--out", str(tmp_path / "o.wav"), "--preset", "tiny", "--random-init",
                    check=False)
    assert proc.returncode == 2
    assert "bad.mp4" in proc.stderr and "Traceback" not in proc.stderr
    assert len([l for l in proc.stderr.strip().splitlines() if "error" in l]) == 1
    assert not (tmp_path / "o.wav").exists()


def test_info_reports_preset_geometry_and_parameters(bundle):
    import json

    proc = _frieren("info", str(bundle), "--json")
    data = json.loads(proc.stdout)
    from frieren.checkpoints import load_bundle

    stack, info = load_bundle(bundle)
    assert data["preset"] == info.preset.name
    assert data["geometry"]["window_samples"] == info.preset.geometry.window_samples
    assert data["parameters"]["total"] == sum(p.numel() for p in stack.parameters())
    assert data["vocoder"] == "bigvgan"
    text = _frieren("info", str(bundle)).stdout
    assert info.preset.name in text and "estimator" in text


def test_folder_mode_skips_bad_files_and_writes_the_rest(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    make_test_video(folder / "a.mp4", seconds=2.0, fps=25, width=160, height=120)
    make_test_video(folder / "b.mkv", seconds=1.0, fps=24, width=128, height=96)
    (folder / "broken.webm").write_bytes(b"not a video")
    out = tmp_path / "wavs"
    proc = _frieren("generate", str(folder), "--out", str(out), "--preset", "tiny", "--random-init", check=False)
    assert proc.returncode == 1  # one file failed, the others were written
    assert "broken.webm" in proc.stderr
    assert abs(_wav_seconds(out / "a.wav") - 2.0) <= 256 / 16000
    assert abs(_wav_seconds(out / "b.wav") - 1.0) <= 256 / 16000


@pytest.mark.parametrize("codec,ext,fps", [("libvpx-vp9", "webm", 24), ("mpeg4", "mov", 25), ("libx264", "mkv", 60)])
def test_common_containers_generate_and_mux(tmp_path, codec, ext, fps):
    import av

    video = make_test_video(tmp_path / f"v.{ext}", seconds=2.0, fps=fps, width=200, height=112, codec=codec)
    wav, muxed = tmp_path / "v.wav", tmp_path / "v_foley.mp4"
    _frieren("generate", str(video), "--out", str(wav), "--preset", "tiny", "--random-init", "--mux", str(muxed))
    assert abs(_wav_seconds(wav) - 2.0) <= 256 / 16000
    with av.open(str(muxed)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
