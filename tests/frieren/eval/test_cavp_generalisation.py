"""benchmarks/cavp_generalisation.py: a CAVP stage's objective on training vs held-out clips."""
from __future__ import annotations

import json
import math

import pytest

from frieren import train_cli



def test_train_and_held_out_losses_of_a_trained_stage(tmp_path, benchmark_module):
    run = tmp_path / "run"
    assert train_cli.main(["cavp", "--run-dir", str(run), "--synthetic", "2", "--synthetic-seed", "5",
                           "--clip-seconds", "3", "--threads", "1", "--no-progress", "--steps", "2",
                           "--batch-size", "2", "--window-stride", "4", "--cavp-event-weight", "1.0",
                           "--cavp-event-slots", "4", "--cavp-event-flux-bands", "20"]) == 0
    mod = benchmark_module("cavp_generalisation")
    out = tmp_path / "gap.json"
    common = ["--run-dir", str(run), "--clips", "2", "--seconds", "3", "--stride", "4", "--batch-size", "2",
              "--json", str(out)]
    assert mod.main([str(run / "cavp" / "final.pt"), *common]) == 0
    (r,) = json.loads(out.read_text())
    for split in ("train", "held-out"):
        assert {"loss", "semantic", "temporal", "event"} <= r[split].keys()
        assert all(math.isfinite(v) for v in r[split].values())
    assert r["train"] != r["held-out"]      # different clips, same windows and batch order
    # the resumable ckpt.pt of the finished stage holds the same weights, so the same numbers
    assert mod.main([str(run / "cavp" / "ckpt.pt"), *common]) == 0
    assert json.loads(out.read_text())[0]["held-out"] == r["held-out"]
    # a bundle keeps only the video branch: named, not misread
    with pytest.raises(SystemExit, match="bundle"):
        mod.main([str(tmp_path), *common])
    # an event head of another shape is named, not silently misread
    with pytest.raises(SystemExit, match="event head"):
        mod.main([str(run / "cavp" / "final.pt"), *common, "--event-slots", "1"])


def test_a_shallower_cavp_is_measured_at_its_own_depth(tmp_path, benchmark_module):
    run = tmp_path / "run"
    assert train_cli.main(["cavp", "--run-dir", str(run), "--synthetic", "2", "--synthetic-seed", "5",
                           "--clip-seconds", "3", "--threads", "1", "--no-progress", "--steps", "1",
                           "--batch-size", "2", "--window-stride", "4", "--cavp-event-weight", "1.0",
                           "--cavp-event-slots", "4", "--cavp-event-flux-bands", "20", "--cavp-depth", "14"]) == 0
    mod = benchmark_module("cavp_generalisation")
    out = tmp_path / "gap.json"
    assert mod.main([str(run / "cavp" / "final.pt"), "--run-dir", str(run), "--clips", "2", "--seconds", "3",
                     "--stride", "4", "--batch-size", "2", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert all(math.isfinite(v) for split in ("train", "held-out") for v in r[split].values())
