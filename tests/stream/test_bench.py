"""Sync / seam metrics on known signals, and `frieren-stream bench` emitting every field."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from stream.eval_sync import assemble, detect_onsets, match, seam_ratio, sync_scores

SR = 16000


def _clicks(times_s, seconds=4.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1e-3, int(seconds * SR)).astype(np.float32)
    for t in times_s:
        i = int(t * SR)
        n = 1600
        x[i:i + n] += (0.8 * np.exp(-np.arange(n) / 200.0) * rng.normal(0, 1, n)).astype(np.float32)
    return x


def test_onsets_of_clean_clicks_match_exactly():
    times = [0.5, 1.1, 1.9, 2.6, 3.3]
    x = _clicks(times)
    det = detect_onsets(x, SR)
    assert len(det) == len(times)
    s = sync_scores(x, SR, [int(t * SR) for t in times])
    for tol in ("45ms", "125ms"):
        assert s[tol]["f1"] == 1.0 and abs(s[tol]["mean_offset_ms"]) < 15
    # Audio 60 ms late: still matched within 125 ms, mean offset ~ +60 ms, missed at 45 ms.
    late = sync_scores(x, SR, [int((t - 0.06) * SR) for t in times])
    assert late["125ms"]["f1"] == 1.0 and 45 < late["125ms"]["mean_offset_ms"] < 75
    assert late["45ms"]["f1"] == 0.0
    assert detect_onsets(np.zeros(SR, np.float32), SR).size == 0


def test_match_counts():
    r = match([100, 1000, 5000], [110, 3000, 5100], SR, 45.0)
    assert (r.matched, r.detected, r.events) == (2, 3, 3)
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(2 / 3)
    assert r.mean_offset_ms == pytest.approx(((100 - 110) + (5000 - 5100)) / 2 / SR * 1000)
    empty = match([], [1], SR, 45.0)
    assert empty.f1 == 0.0 and empty.mean_offset_ms is None


def test_seam_ratio_sees_clicks_at_boundaries():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.01, SR * 4).astype(np.float32)
    bounds = list(range(2048, len(x), 2048))
    assert 0.8 < seam_ratio(x, bounds) < 1.25
    y = x.copy()
    y[bounds] += 0.8   # a click at every boundary
    assert seam_ratio(y, bounds) > 1.5


def test_assemble_places_chunks_and_fills_gaps():
    class C:
        def __init__(self, s, n):
            self.start_sample, self.pcm = s, np.ones(n, np.float32)
    a, o = assemble([C(-5, 10), C(5, 5), C(20, 5)])
    assert o == -5 and len(a) == 30 and a[:15].all() and not a[15:25].any() and a[25:].all()
    a, o = assemble([C(-5, 10), C(5, 5)], origin=0)
    assert o == 0 and len(a) == 10 and a.all()


def test_bench_cli_emits_every_field(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "stream.cli", "bench", "--random-init", "--preset", "tiny",
                        "--duration", "3", "--hop-ms", "256", "--ramp-seconds", "2", "--settle-seconds", "0.5",
                        "--max-sessions", "2", "--json-out", str(out)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "meaningless" in r.stdout and "RTF per stage" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["random_weights"] is True and rep["hop_ms"] == 256
    # Timings are only comparable between reports of the same CPU: the report names it.
    assert rep["environment"]["torch_cpu_capability"] and rep["environment"]["cpu_count"] >= 1
    s = rep["single"]
    for k in ("cavp", "flow", "vae_decode", "vocoder", "total"):
        assert s["rtf"][k] > 0
    assert set(s["latency_ms"]) == {"p50", "p95", "max", "n"} and s["latency_ms"]["n"] > 0
    for key in ("sync_stream", "sync_offline", "sync_reference_audio"):
        for tol in ("45ms", "125ms"):
            assert {"precision", "recall", "f1", "mean_offset_ms", "matched", "events", "detected"} <= set(s[key][tol])
    for key in ("seam_ratio", "seam_ratio_offline_control", "drops_per_min", "underruns_per_min", "events"):
        assert key in s
    t = rep["throughput"]
    assert "max_realtime_sessions" in t and t["steps"] and t["steps"][0]["sessions"] == 1
