"""The shipped model: a fresh install with no bundle argument generates audio for a
synthetic mp4, and the generated onsets follow that clip's events."""
from __future__ import annotations

import json
import subprocess
import sys
import wave

import numpy as np
import pytest

from frieren.bundles import DEFAULT_BUNDLE, default_bundle_available

HELD_OUT_SEED = 990_000  # far from the training seeds (the recipe renders 1000 up)


def _read_wav(path):
    with wave.open(str(path)) as wf:
        sr = wf.getframerate()
        pcm = np.frombuffer(wf.readframes(wf.getnframes()), "<i2").astype(np.float32) / 32767
    return pcm, sr


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from frieren.synth import SceneConfig, write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, num_clips=2, seed0=HELD_OUT_SEED, config=SceneConfig(duration_s=8.0), split="test",
                  progress=False)
    return sorted((root / "test").glob("clip_*.mp4"))


def test_default_model_is_shipped_within_budget():
    assert default_bundle_available(), f"embedded default model missing at {DEFAULT_BUNDLE}"
    total = sum(p.stat().st_size for p in DEFAULT_BUNDLE.iterdir())
    assert total <= 25 * 1024 * 1024


def test_generate_without_bundle_follows_the_clip(clips, tmp_path):
    from stream.eval_sync import sync_scores

    scores = []
    for clip in clips:
        out = tmp_path / (clip.stem + ".wav")
        proc = subprocess.run([sys.executable, "-m", "frieren.cli", "generate", str(clip), "--out", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        pcm, sr = _read_wav(out)
        assert abs(len(pcm) / sr - 8.0) <= 256 / sr
        assert np.sqrt(np.mean(pcm ** 2)) > 1e-3  # not silent
        scores.append(pcm)
    events = [[e["sample"] for e in json.loads(c.with_suffix(".events.json").read_text())["events"]
               if e["kind"] == "impact"] for c in clips]
    own = [sync_scores(pcm, sr, ev)["125ms"]["f1"] for pcm, ev in zip(scores, events)]
    swapped = [sync_scores(pcm, sr, ev)["125ms"]["f1"] for pcm, ev in zip(scores, events[::-1])]
    # The generated onsets must match the clip's own events better than another clip's.
    print(f"onset F1 ±125 ms: own events {own}, swapped events {swapped}")
    assert np.mean(own) > np.mean(swapped), (own, swapped)
