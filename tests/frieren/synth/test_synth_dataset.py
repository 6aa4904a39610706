"""The synthetic dataset writer: real MP4 (H.264 + AAC), 16-bit WAV, events, manifest, resume."""
from __future__ import annotations

import json
import wave

import av
import pytest

from frieren.synth import Event, SceneConfig, write_dataset


def test_write_dataset_and_resume(tmp_path):
    cfg = SceneConfig(duration_s=1.0, fps=25, width=64, height=48)
    manifest_path = write_dataset(tmp_path, 2, seed0=10, config=cfg, split="val", progress=False)
    root = tmp_path / "val"
    manifest = json.loads(manifest_path.read_text())
    assert [c["name"] for c in manifest["clips"]] == ["clip_0000", "clip_0001"]
    assert manifest["config"]["fps"] == 25

    with av.open(str(root / "clip_0000.mp4")) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert video.average_rate == 25
        assert len(container.streams.audio) == 1
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.streams.audio[0].sample_rate == 16000
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 25 and frames[0].shape == (48, 64, 3)

    with wave.open(str(root / "clip_0000.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 16000)
    doc = json.loads((root / "clip_0000.events.json").read_text())
    assert doc["seed"] == 10 and doc["num_frames"] == 25
    events = [Event.from_dict(e) for e in doc["events"]]
    assert all(isinstance(e.position, tuple) for e in events)

    before = {p.name: p.stat().st_mtime_ns for p in root.glob("clip_*")}
    write_dataset(tmp_path, 3, seed0=10, config=cfg, split="val", progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in root.glob("clip_*")}
    assert all(after[k] == v for k, v in before.items())             # complete clips were skipped
    assert {"clip_0002.mp4", "clip_0002.wav", "clip_0002.events.json"} <= set(after)
    assert len(json.loads(manifest_path.read_text())["clips"]) == 3
    assert not list(root.glob("*.part"))

    with pytest.raises(ValueError, match="another config"):
        write_dataset(tmp_path, 1, seed0=10, config=SceneConfig(duration_s=2.0), split="val", progress=False)
