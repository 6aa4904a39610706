"""benchmarks/onset_targets.py: the onset training targets at impacts of each strength."""
from __future__ import annotations

import json


def test_impacts_stand_out_in_both_targets(tmp_path, benchmark_module):
    out = tmp_path / "targets.json"
    assert benchmark_module("onset_targets").main(["--clips", "2", "--weights", "4", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    slots, weights = r["onset_slot_target"], r["cfm_latent_weight"]["4.0"]
    impacts = [v for v in slots["impacts_by_strength"].values() if v["impacts"]]
    assert impacts and all(v["median"] > slots["all_slots_median"] for v in impacts)
    heavy = [v for v in weights["impacts_by_strength"].values() if v["impacts"]]
    assert heavy and all(v["median"] > weights["all_latents_median"] for v in heavy)
