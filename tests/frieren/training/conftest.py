"""Shared helpers of the training tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def tiny_recipe_args():
    """``tiny_recipe_args(run_dir, bundle, *extra)``: the argv of a `frieren train default` run small enough
    for a test (2 synthetic clips of 3 s, a few steps per stage, batch 2), ``extra`` appended."""
    def build(run_dir, bundle, *extra):
        args = ["default", "--run-dir", str(run_dir), "--out", str(bundle), "--synthetic", "2",
                "--synthetic-seed", "7", "--clip-seconds", "3", "--threads", "1", "--no-progress",
                "--window-stride", "4", "--vae-steps", "3", "--cavp-steps", "3", "--cfm-steps", "2",
                "--reflow-steps", "1", "--distill-steps", "1", "--reflow-pairs", "2", "--teacher-steps", "2",
                "--cavp-event-weight", "1.0", "--cavp-event-slots", "4"]
        for s in ("vae", "cavp", "cfm", "reflow", "distill"):
            args += [f"--{s}-batch-size", "2"]
        return args + list(extra)
    return build
