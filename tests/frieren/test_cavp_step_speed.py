"""benchmarks/cavp_step_speed.py: one row per depth, layout and input form, each a real timed step."""
from __future__ import annotations

import json


def test_each_depth_is_timed_with_its_own_network(tmp_path, benchmark_module):
    out = tmp_path / "speed.json"
    mod = benchmark_module("cavp_step_speed")
    assert mod.main(["--batch", "2", "--frames", "4", "--steps", "1", "--warmup", "1", "--rounds", "1",
                     "--layouts", "default", "--inputs", "uint8", "--depths", "50,14", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["depth"], r["layout"], r["input"]) for r in rows] == [(50, "default", "uint8"), (14, "default", "uint8")]
    assert rows[0]["video_params"] > rows[1]["video_params"] > 0
    assert all(r["ms_per_step"] > 0 and len(r["rounds_ms"]) == 1 for r in rows)
    assert rows[0]["speedup_vs_first"] == 1.0 and "cpu" in result["environment"]
