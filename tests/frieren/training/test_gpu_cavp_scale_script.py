"""benchmarks/gpu_cavp_scale.sh runs end to end on the CPU (the wiring a lent GPU relies on).

The script gets one try on a rented device, so its logic is checked here: it renders the clip
cache once, shares it with the second variant, trains both CAVP variants side by side and
hands back each variant's checkpoint and loss log.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]


def test_script_trains_both_variants_and_returns_their_checkpoints(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    env = dict(os.environ, PYTHON=sys.executable, SKIP_INSTALL="1", DEVICE="cpu", CLIPS="2", WORKERS="2",
               BATCH="4", MAX_STEPS="3", THREADS="1", BUDGET_S="400", OUT=str(out), RUNS=str(runs),
               FLIP="0.5", SHIFT="2")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_cavp_scale.sh")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # One rendering, shared: the second variant's clips are the first one's.
    assert (runs / "material" / "cache" / "clips").resolve() == (runs / "base" / "cache" / "clips").resolve()
    for variant in ("base", "material"):
        final = torch.load(out / f"cavp_{variant}.pt", map_location="cpu", weights_only=False)
        assert final["result"]["steps"] == 3 and not final["stopped_early"]
        assert any(k.startswith("video.") for k in final["state"])
        records = [json.loads(line) for line in (out / f"cavp_{variant}_log.jsonl").read_text().splitlines()]
        assert records[-1]["step"] == 3
        assert (out / f"cavp_{variant}_ckpt.pt").is_file()      # with the optimiser: a later run resumes
    # The step-speed benchmark timed both memory layouts and the training used the faster one.
    speed = json.loads((out / "cavp_step_speed.json").read_text())
    rows = {r["layout"]: r["ms_per_step"] for r in speed["rows"]}
    assert set(rows) == {"default", "channels_last"} and all(ms > 0 for ms in rows.values())
    log = (out / "gpu_cavp_log.txt").read_text()
    assert f"memory layout: {min(rows, key=rows.get)}" in log
    assert "flip 0.5, shift 2 px" in log      # and the stages took --cavp-flip / --cavp-shift (rc 0 above)
    # Only the material variant trains the material head.
    material_log = (out / "cavp_material_log.jsonl").read_text()
    assert '"material"' in material_log and '"material"' not in (out / "cavp_base_log.jsonl").read_text()
