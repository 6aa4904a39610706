"""benchmarks/gpu_cavp_scale.sh runs end to end on the CPU (the wiring a lent GPU relies on).

The script gets one try on a rented device, so its logic is checked here: it renders the clip
cache once, shares it with the second variant, trains both CAVP variants side by side and
hands back each variant's checkpoint and loss log. ``recipe_d26`` is the shipped recipe's CAVP
flags at depth 26; ``base`` the v4 recipe's, without the material head; ``recipe_presence`` the
recipe with the presence head of docs/eval/experiments/cavp_presence_head/.
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
               FLIP="0.5", SHIFT="2", VARIANTS="base recipe_d26 recipe_presence", SUBFRAMES="2")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_cavp_scale.sh")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # One rendering, shared: the second variant's clips are the first one's.
    assert (runs / "recipe_d26" / "cache" / "clips").resolve() == (runs / "base" / "cache" / "clips").resolve()
    for variant in ("base", "recipe_d26", "recipe_presence"):
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
    # Only the recipe variant trains the material head and weighs the onset slots; it has two
    # blocks per stage, base the preset's depth 50; both take 2 snapshots per frame (6 channels).
    recipe_log = (out / "cavp_recipe_d26_log.jsonl").read_text()
    assert '"material"' in recipe_log and '"material"' not in (out / "cavp_base_log.jsonl").read_text()
    assert '"event_onset"' in recipe_log and '"event_onset"' not in (out / "cavp_base_log.jsonl").read_text()
    for variant, blocks in (("base", (3, 4, 6, 3)), ("recipe_d26", (2, 2, 2, 2))):
        state = torch.load(out / f"cavp_{variant}.pt", map_location="cpu", weights_only=False)["state"]
        assert tuple(len({k.split(".")[3] for k in state if k.startswith(f"video.video_encoder.layer{i}.")})
                     for i in range(1, 5)) == blocks
        assert state["video.video_encoder.conv1.conv.weight"].shape[1] == 6
    presence = torch.load(out / "cavp_recipe_presence.pt", map_location="cpu", weights_only=False)["state"]
    assert "presence_head.weight" in presence and '"presence"' in (out / "cavp_recipe_presence_log.jsonl").read_text()
    assert '"presence"' not in recipe_log


def test_a_typo_in_the_variants_is_refused_before_anything_runs(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, SKIP_INSTALL="1", DEVICE="cpu", OUT=str(tmp_path / "out"),
               RUNS=str(tmp_path / "runs"), VARIANTS="recipe recipe_d62")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_cavp_scale.sh")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown variant 'recipe_d62'" in proc.stderr
    assert not (tmp_path / "runs").exists()
