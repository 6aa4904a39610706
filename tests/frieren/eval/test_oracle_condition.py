"""benchmarks/oracle_condition.py: the flow model's ceiling with a ground-truth condition."""
from __future__ import annotations

import pytest
import torch


def test_oracle_rows_hold_onset_slots_loudness_and_the_material(benchmark_module):
    from frieren.training.objectives import AUX_BANDS

    mod = benchmark_module("oracle_condition")
    frames, m, slots, materials = 3, 8, 4, 5
    mel = torch.full((80, frames * m), -5.0)
    mel[:, 1 * m + 5:] = -1.0                        # a sound starts in frame 1, slot 2 (mel frame 5 of 8)
    material = torch.tensor([-1, 2, -1])
    rows = mod.oracle_rows(mel, material, frames, slots, materials)
    assert rows.shape == (frames, slots + AUX_BANDS + materials)
    onset = rows[:, :slots]
    assert onset[1].argmax() == 2 and onset[1, 2] > 0 and onset[0].abs().sum() == 0 and onset[2].abs().sum() == 0
    loud = rows[:, slots:slots + AUX_BANDS]
    assert (loud[2] > loud[0]).all()
    onehot = rows[:, slots + AUX_BANDS:]
    assert onehot.tolist() == [[0] * 5, [0, 0, 1, 0, 0], [0] * 5]


def test_scaler_standardises_and_pads_and_the_stand_in_pads_like_the_frames(benchmark_module):
    mod = benchmark_module("oracle_condition")
    torch.manual_seed(0)
    rows = [torch.randn(10, 6) * 3 + 1, torch.randn(7, 6) * 3 + 1]
    scaler = mod.OracleScaler(rows, 16)
    z = scaler(torch.cat(rows))
    assert z.shape == (17, 16) and z[:, 6:].abs().sum() == 0
    torch.testing.assert_close(z[:, :6].mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="feature width"):
        mod.OracleScaler(rows, 4)
    stand_in = mod.OracleFeatures()
    stand_in.current = z[:5]
    out = stand_in.extract(torch.zeros(8, 3, 4, 4))
    assert out.shape == (8, 16) and torch.equal(out[5:], z[4:5].expand(3, -1))
    assert torch.equal(stand_in.extract(torch.zeros(2, 3, 4, 4)), z[:2])


def test_a_run_dir_without_caches_is_refused_with_the_fix(tmp_path, benchmark_module):
    from frieren.config import get_preset

    mod = benchmark_module("oracle_condition")
    with pytest.raises(SystemExit, match="train_default.sh"):
        mod.load_run(tmp_path, get_preset("tiny"))


def test_head_rows_are_the_cavp_heads_on_its_features_and_a_headless_cavp_is_refused(benchmark_module):
    mod = benchmark_module("oracle_condition")
    torch.manual_seed(0)
    feats = torch.randn(6, 8)
    state = {"event_head.weight": torch.randn(3, 8), "event_head.bias": torch.randn(3),
             "material_head.weight": torch.randn(5, 8), "material_head.bias": torch.randn(5)}
    rows = mod.head_rows(feats, state)
    assert rows.shape == (6, 8)
    torch.testing.assert_close(rows[:, :3], feats @ state["event_head.weight"].T + state["event_head.bias"])
    torch.testing.assert_close(rows[:, 3:], feats @ state["material_head.weight"].T + state["material_head.bias"])
    with pytest.raises(SystemExit, match="--cavp-event-weight"):
        mod.head_rows(feats, {"video.x": torch.zeros(1)})
