"""A user's folder of mp4 files with audio -> a few training steps of every stage -> a bundle
that the offline generator runs."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from frieren.config import get_preset
from frieren.training.data import audio_clock_indices, csv_source, folder_source

torch.set_num_threads(1)
SR = 16000


def _write_mp4(path: Path, seconds: float, fps: int = 12, size=(48, 32), seed: int = 0) -> None:
    """A bouncing square that clicks when it hits a wall: H.264 video + AAC audio via PyAV."""
    import av

    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    w, h = size
    audio = (0.002 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
    x, vx = 5.0, 3.0
    with av.open(str(path), mode="w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.time_base = Fraction(1, fps)
        ast = out.add_stream("aac", rate=SR)
        ast.layout = "mono"
        for i in range(n):
            x += vx
            if x < 0 or x > w - 8:
                vx, x = -vx, min(max(x, 0), w - 8)
                s = int(i / fps * SR)
                k = np.arange(min(800, len(audio) - s))
                audio[s:s + len(k)] += 0.5 * np.sin(2 * np.pi * 1200 * k / SR) * np.exp(-k / 150)
            img = np.zeros((h, w, 3), np.uint8)
            img[12:20, int(x):int(x) + 8] = (255, 200, 40)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        for a in range(0, len(audio), 1024):
            af = av.AudioFrame.from_ndarray(audio[None, a:a + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = SR, a, Fraction(1, SR)
            out.mux(ast.encode(af))
        out.mux(vs.encode(None))
        out.mux(ast.encode(None))


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    _write_mp4(folder / "abc_000000.mp4", 3.0, seed=0)
    _write_mp4(folder / "xyz_000010.mp4", 1.5, seed=1)  # shorter than one window: padded
    return folder


def test_audio_clock_indices():
    # 30 fps source, 128 ms model frames: latest source frame not after i * 0.128 s
    assert audio_clock_indices(4, 0.128, 30.0, 100).tolist() == [0, 3, 7, 11]
    assert audio_clock_indices(3, 1.0, 1.0, 2).tolist() == [0, 1, 1]


def test_csv_manifest_selects_files(video_folder, tmp_path):
    csv = tmp_path / "vggsound.csv"
    csv.write_text("abc,0,dog barking,train\nxyz,10,cat,test\nmissing,5,x,train\n")
    preset = get_preset("tiny")
    items = csv_source(video_folder, csv, preset, split="train")
    assert [i.key for i in items] == ["abc_000000"]
    assert [i.key for i in folder_source(video_folder, preset)] == ["abc_000000", "xyz_000010"]
    frames, audio = items[0].load()
    assert frames.dtype == np.uint8 and frames.shape[1:] == (3, 64, 64)
    assert abs(len(audio) - 3 * SR) < SR // 10


def test_user_folder_end_to_end(video_folder, tmp_path):
    from frieren import train_cli
    from frieren.checkpoints import load_bundle
    from frieren.pipeline import GenerateOptions, OfflineGenerator

    run_dir, bundle = tmp_path / "run", tmp_path / "bundle"
    args = ["default", "--run-dir", str(run_dir), "--data-dir", str(video_folder), "--out", str(bundle),
            "--threads", "1", "--no-progress", "--window-stride", "4",
            "--vae-steps", "3", "--cavp-steps", "2", "--cfm-steps", "3", "--reflow-steps", "2",
            "--distill-steps", "2", "--reflow-pairs", "3", "--teacher-steps", "2"]
    for s in ("vae", "cavp", "cfm", "reflow", "distill"):
        args += [f"--{s}-batch-size", "2"]
    assert train_cli.main(args) == 0

    cfg = json.loads((bundle / "config.json").read_text())
    prov = cfg["provenance"]
    assert prov["data"]["kind"] == "folder" and prov["stages"]["distill"]["steps"] == 2
    assert cfg["preset"]["scale_factor"] == pytest.approx(prov["stages"]["latent_scale"]["scale_factor"])
    for s in ("vae", "cavp", "cfm", "reflow", "distill"):
        assert (run_dir / s / "log.jsonl").is_file()

    stack, info = load_bundle(bundle)
    res = OfflineGenerator(stack).generate_video(video_folder / "abc_000000.mp4", GenerateOptions(progress=False))
    assert res.audio.shape[0] == pytest.approx(3 * SR, abs=SR // 10)
    assert np.isfinite(res.audio).all()

    # a second run finds every stage finished and only rewrites the bundle
    assert train_cli.main(args) == 0
    assert json.loads((run_dir / "cfm" / "log.jsonl").read_text().splitlines()[-1])["step"] == 3

    # the material head needs the synthetic world's labels: a user folder gets a clear refusal
    with pytest.raises(SystemExit, match="material labels"):
        train_cli.main(["cavp", "--run-dir", str(tmp_path / "run_material"), "--data-dir", str(video_folder),
                        "--threads", "1", "--no-progress", "--steps", "1", "--batch-size", "2",
                        "--cavp-material-weight", "1.0"])
    with pytest.raises(SystemExit, match="material labels"):
        train_cli.main(["cavp", "--run-dir", str(tmp_path / "run_presence"), "--data-dir", str(video_folder),
                        "--threads", "1", "--no-progress", "--steps", "1", "--batch-size", "2",
                        "--cavp-presence-weight", "1.0"])


def test_user_folder_with_stacked_snapshots(video_folder, tmp_path):
    """--subframes 2: each visual frame stacks two snapshots on the channel axis, from the clip
    cache through training to the bundle and offline generation; the newest snapshot of each
    frame is the frame the published one-snapshot layout takes."""
    from frieren import train_cli
    from frieren.checkpoints import load_bundle
    from frieren.config import with_subframes
    from frieren.pipeline import GenerateOptions, OfflineGenerator

    preset = with_subframes(get_preset("tiny"), 2)
    frames2, _ = folder_source(video_folder, preset)[0].load()
    frames1, _ = folder_source(video_folder, get_preset("tiny"))[0].load()
    assert frames2.shape == (frames1.shape[0], 6, 64, 64)
    np.testing.assert_array_equal(frames2[:, 3:], frames1)
    np.testing.assert_array_equal(frames2[0, :3], frames1[0])          # before the first frame: repeated
    assert not np.array_equal(frames2[1:, :3], frames2[1:, 3:])        # 64 ms earlier: the square moved

    run_dir, bundle = tmp_path / "run", tmp_path / "bundle"
    args = ["default", "--run-dir", str(run_dir), "--data-dir", str(video_folder), "--out", str(bundle),
            "--subframes", "2", "--threads", "1", "--no-progress", "--window-stride", "4",
            "--vae-steps", "2", "--cavp-steps", "2", "--cfm-steps", "2", "--reflow-steps", "1",
            "--distill-steps", "1", "--reflow-pairs", "2", "--teacher-steps", "2"]
    for s in ("vae", "cavp", "cfm", "reflow", "distill"):
        args += [f"--{s}-batch-size", "2"]
    assert train_cli.main(args) == 0
    assert json.loads((run_dir / "cache" / "source.json").read_text())["subframes"] == 2

    stack, info = load_bundle(bundle)
    assert stack.preset.geometry.subframes == 2 and stack.preset.cavp.subframes == 2
    assert tuple(stack.cavp.video_encoder.conv1.conv.weight.shape[:2]) == (8, 6)
    gen = OfflineGenerator(stack)
    assert gen.read_video(video_folder / "abc_000000.mp4").frames.shape[1:] == (6, 64, 64)
    res = gen.generate_video(video_folder / "abc_000000.mp4", GenerateOptions(progress=False))
    assert res.audio.shape[0] == pytest.approx(3 * SR, abs=SR // 10)
    assert np.isfinite(res.audio).all()

    # the same run dir with another snapshot count would mix caches: refused, naming the fix
    with pytest.raises(SystemExit, match="holds 2 snapshot.*pass --subframes 2"):
        train_cli.main([a if a != "2" or args[i - 1] != "--subframes" else "1" for i, a in enumerate(args)])
    with pytest.raises(SystemExit, match="another data source.*use another --run-dir"):
        train_cli.main([str(tmp_path) if a == str(video_folder) else a for a in args])
