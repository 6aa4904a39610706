"""benchmarks/inference_knobs.py: `frieren eval` with one change at inference."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import frieren
from frieren.models.cavp import CAVPVideoEncoder
from frieren.noise import NoiseTape


def test_views_parse_and_transform_frames_as_the_training_augmentation_does(benchmark_module):
    mod = benchmark_module("inference_knobs")
    assert mod.parse_views("0,0,0;1,-2,3") == [(0, 0, 0), (1, -2, 3)]
    with pytest.raises(ValueError, match="F,DY,DX"):
        mod.parse_views("1,2")
    frames = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    assert torch.equal(mod.view_of(frames, 1, 0, 0), frames.flip(-1))
    down = mod.view_of(frames, 0, 1, 0)  # moved down one row, the top row repeated
    assert torch.equal(down[..., 0, :], frames[..., 0, :]) and torch.equal(down[..., 1:, :], frames[..., :-1, :])


def test_knobs_apply_inside_the_block_only(benchmark_module):
    mod = benchmark_module("inference_knobs")
    tape = NoiseTape(3, 4)
    plain = tape.window(5, 7).clone()
    with mod.scaled_noise(1.5):
        assert torch.allclose(NoiseTape(3, 4).window(5, 7), 1.5 * plain)
    assert torch.equal(NoiseTape(3, 4).window(5, 7), plain)
    original = CAVPVideoEncoder.extract
    with mod.averaged_views([(0, 0, 0), (1, 0, 0)]):
        assert CAVPVideoEncoder.extract is not original
    assert CAVPVideoEncoder.extract is original


def test_eval_runs_with_every_knob_on_the_shipped_bundle(tmp_path, benchmark_module):
    mod = benchmark_module("inference_knobs")
    shipped = Path(frieren.__file__).parent / "assets" / "default"
    out = tmp_path / "knobs"
    code = mod.main(["--noise-scale", "1.2", "--views", "0,0,0;1,0,0", "--cfg-scale", "3.5", "--",
                     "--teacher", "", "--reflow", "", "--distilled", str(shipped), "--clips", "1",
                     "--classifier-clips", "2", "--seconds", "3", "--fd", "logmel", "--no-plot",
                     "--no-vocoder-row", "--threads", "1", "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "table.json").read_text())["rows"]
    distilled = [r for r in rows if r["model"] == "reflow+distill"]
    assert len(distilled) == 1 and distilled[0]["cfg_scale"] == 3.5
    bundle = Path(str(out) + "_bundle")
    assert (bundle / "model.safetensors").resolve() == (shipped / "model.safetensors").resolve()
    assert NoiseTape.window.__name__ == "window" and CAVPVideoEncoder.extract.__name__ == "extract"  # restored


def test_cfg_scale_needs_the_bundle_and_out_arguments(benchmark_module):
    mod = benchmark_module("inference_knobs")
    with pytest.raises(SystemExit):
        mod.main(["--cfg-scale", "3", "--", "--clips", "1"])
