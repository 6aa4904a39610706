"""Two CPU processes under torchrun (Gloo): the VAE stage trains and only rank 0 writes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_errors(stderr: str) -> str:
    """The ranks' own tracebacks first (torchrun's summary after them hides which rank failed)."""
    ranked = [ln for ln in stderr.splitlines() if ln.startswith("[rank")]
    ranked.sort(key=lambda ln: ln.split("]")[0])
    return "\n".join(ranked)[-4000:] + "\n---\n" + stderr[-1500:]


def test_torchrun_two_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun not installed next to the interpreter")
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "frieren.train_cli", "vae",
           "--run-dir", str(tmp_path / "run"), "--synthetic", "2", "--clip-seconds", "2.5", "--threads", "1",
           "--steps", "4", "--batch-size", "4", "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, _rank_errors(proc.stderr)
    vae = tmp_path / "run" / "vae"
    lines = (vae / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [4]  # rank 0 logs once per logged step
    assert (vae / "final.pt").is_file() and (vae / "scale.json").is_file()
