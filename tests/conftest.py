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
