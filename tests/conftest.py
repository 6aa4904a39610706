"""Shared fixtures: the golden reference folder and its JSON/safetensors files.

The folder comes from FRIEREN_REFERENCE_DIR (default ../shared/reference relative
to the repository root). Tests read every configuration from the JSON files there,
so the same tests run unchanged on another folder of the same layout.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    env = os.environ.get("FRIEREN_REFERENCE_DIR")
    return Path(env) if env else (REPO_ROOT / ".." / "shared" / "reference").resolve()


@pytest.fixture(scope="session")
def ref_dir() -> Path:
    path = reference_dir()
    if not path.is_dir():
        pytest.fail(f"reference folder {path} not found; set FRIEREN_REFERENCE_DIR")
    return path


def load_json(path: Path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)
    yield


def make_test_video(path: Path, seconds: float, fps: int = 30, width: int = 640, height: int = 360,
                    codec: str = "libx264", with_audio: bool = False) -> Path:
    """Write a real video file with PyAV: a moving bar over a gradient (fast to encode)."""
    import av
    import numpy as np
    from fractions import Fraction

    n = int(round(seconds * fps))
    base = np.zeros((height, width, 3), np.uint8)
    base[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    base[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast"}
        for i in range(n):
            img = base.copy()
            x = int((i / max(1, n - 1)) * (width - 20))
            img[:, x:x + 20] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="session")
def benchmark_module():
    """Loads a script of ``benchmarks/`` (not a package) as a module: ``benchmark_module("cavp_probe")``."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    return load


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
