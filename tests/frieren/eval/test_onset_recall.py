"""benchmarks/onset_recall.py: per-onset recall broken down by what made the sound."""
from __future__ import annotations

import json
from pathlib import Path

import frieren

from frieren.synth.config import Event

SR = 16000


def _event(t, kind="impact", source="floor", material="wood", strength=0.3):
    return Event(t, int(t * SR), kind, source, material, strength, 1.0, (0.5, 0.5))


def test_onsets_are_merged_as_eval_merges_them_and_described_by_their_opening_event(benchmark_module):
    mod = benchmark_module("onset_recall")
    events = [_event(1.0, strength=0.05), _event(1.02, source="object", material="glass"),   # one onset
              _event(1.2, kind="continuous_start", source="slide", material="metal"),
              _event(1.21, kind="continuous_stop", source="slide", material="metal"),         # not an onset
              _event(3.0, source="wall", strength=0.9)]
    d = mod.onset_descriptions(events, SR)
    assert [o["sample"] for o in d] == [SR, int(1.2 * SR), 3 * SR]
    assert [o["kind"] for o in d] == ["impact on floor", "start of slide", "impact on wall"]
    assert d[0]["strength"] == "strength 0.00-0.10" and d[1]["strength"] == "continuous"
    assert d[2]["strength"] == "strength 0.50-1.00"
    assert [o["crowding"] for o in d] == ["another onset within 250 ms"] * 2 + ["isolated"]
    assert [o["gap"] for o in d] == ["nearest other onset 150-250 ms"] * 2 + ["nearest other onset 250 ms or more"]
    assert mod.gap_label(50.0) == mod.gap_label(99.9) == "nearest other onset 50-100 ms"
    assert mod.gap_label(100.0) == "nearest other onset 100-150 ms" and mod.gap_label(None).endswith("or more")
    assert d[2]["kind_strength"] == "impact on wall, strength 0.50-1.00" and "place" not in d[1]
    assert d[0]["place"] == "impact further in"          # x = 0.5
    edge = mod.onset_descriptions([Event(1.0, SR, "impact", "wall", "wood", 0.3, 1.0, (1.0, 0.7))], SR)
    assert edge[0]["place"].startswith("impact within 10% of the left or right edge")
    by = mod.recall_by(d, [True, False, True])
    assert by["place"]["impact further in"] == {"events": 2, "recall": 1.0}
    assert by["crowding"]["isolated"] == {"events": 1, "recall": 1.0}
    assert by["crowding"]["another onset within 250 ms"] == {"events": 2, "recall": 0.5}
    assert by["material"]["metal"]["recall"] == 0.0


def test_ground_truth_audio_finds_its_onsets_and_the_shipped_bundle_is_scored(tmp_path, benchmark_module):
    mod = benchmark_module("onset_recall")
    out = tmp_path / "recall.json"
    shipped = str(Path(frieren.__file__).parent / "assets" / "default")
    assert mod.main([shipped, "--clips", "1", "--seconds", "3", "--vae-ceiling", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["ground truth"]["events"] == r[shipped]["events"] > 0
    assert r["ground truth"]["recall"] > 0.8          # the detector finds the world's own onsets
    assert 0.0 <= r[shipped]["recall"] <= 1.0 and 0.0 <= r["GT mel + VAE + vocoder"]["recall"] <= 1.0


def test_a_cavp_event_head_is_scored_as_an_onset_detector(tmp_path, benchmark_module):
    from frieren import train_cli

    run = tmp_path / "run"
    assert train_cli.main(["cavp", "--run-dir", str(run), "--synthetic", "2", "--synthetic-seed", "5",
                           "--clip-seconds", "3", "--threads", "1", "--no-progress", "--steps", "2",
                           "--batch-size", "2", "--window-stride", "4", "--cavp-event-weight", "1.0",
                           "--cavp-event-slots", "4"]) == 0
    mod = benchmark_module("onset_recall")
    out = tmp_path / "recall.json"
    shipped = str(Path(frieren.__file__).parent / "assets" / "default")     # 4 snapshots; this CAVP 1
    ck = str(run / "cavp" / "final.pt")
    assert mod.main([shipped, "--clips", "1", "--seconds", "3", "--cavp", ck, "--head-certainty", ck,
                     "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    head = r[f"event head of {ck}"]
    assert head["events"] == r["ground truth"]["events"] and 0.0 <= head["recall"] <= 1.0
    # Every onset falls in one of the head's quartiles, for every model scored.
    by_head = r[shipped]["by"]["head"]
    assert sum(c["events"] for c in by_head.values()) == r[shipped]["events"]
    assert len(r["head_quartile_edges"]) == 3


def test_head_peaks_take_the_largest_slot_within_tolerance_and_quartiles_split_evenly(benchmark_module):
    import numpy as np

    mod = benchmark_module("onset_recall")
    slot = 512                                          # 32 ms slots at 16 kHz: +-125 ms = +-3.9 slots
    series = np.zeros(40)
    series[10] = 5.0
    series[30] = 1.0
    peaks = mod.head_peaks(series, [10 * slot + 100, 14 * slot, 30 * slot, 20 * slot], slot, SR)
    assert peaks.tolist() == [5.0, 5.0, 1.0, 0.0]       # 14 slots is within reach of slot 10; 20 is not
    labels, edges = mod.quartile_labels(np.arange(8.0))
    assert edges == [1.75, 3.5, 5.25]
    assert labels.count("quartile 1 (lowest)") == 2 and labels.count("quartile 4 (highest)") == 2
    assert labels[0] == "quartile 1 (lowest)" and labels[-1] == "quartile 4 (highest)"
