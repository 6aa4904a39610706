"""`frieren eval`: metrics on known signals, the material classifier, and the table command end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frieren.eval.materials import MaterialClassifier, impact_features, impact_samples
from frieren.eval.metrics import LogMelStatsEmbedding, NoAudioBranchError, frechet_distance, log_mel, make_embedding, mel_l1
from frieren.eval.sync import sync_scores

SR = 16000


def _clicks(times, seconds=4.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1e-3, int(seconds * SR)).astype(np.float32)
    for t in times:
        a = int(t * SR)
        n = 1600
        x[a:a + n] += (0.8 * np.exp(-np.arange(n) / 200.0) * rng.normal(0, 1, n)).astype(np.float32)
    return x


@pytest.fixture(scope="module")
def frontend():
    from frieren.audio import MelFrontend
    from frieren.config import get_preset

    return MelFrontend(get_preset("tiny").mel).eval()


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, mean shifted by 1 in every dimension: FD ~ |dmu|^2 = 8.
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-6)
    # Scaled: N(0, I) vs N(0, 4I): FD = d * (1 + 4 - 2*2) = 8 (sampling error allowed).
    b = rng.normal(size=(4000, 8)) * 2.0
    assert frechet_distance(a, b) == pytest.approx(8.0, rel=0.1)
    with pytest.raises(ValueError):
        frechet_distance(a, a[:, :4])


def test_identical_audio_gives_zero_fd_zero_l1_and_f1_one(frontend):
    times = [0.5, 1.1, 1.9, 2.6, 3.3]
    x = _clicks(times)
    emb = LogMelStatsEmbedding(8)
    e = emb(log_mel(frontend, x))
    assert e.shape[1] == 160
    assert frechet_distance(e, e) == pytest.approx(0.0, abs=1e-6)
    assert mel_l1(frontend, x, x) == 0.0
    assert mel_l1(frontend, x, _clicks([0.5, 2.5])) > 0.05
    s = sync_scores(x, SR, [int(t * SR) for t in times])
    for key in ("45ms", "125ms"):
        assert s[key]["f1"] == 1.0
        assert abs(s[key]["mean_offset_ms"]) < 15.0
    late = sync_scores(x, SR, [int((t - 0.08) * SR) for t in times])
    assert late["45ms"]["f1"] == 0.0 and late["125ms"]["f1"] == 1.0
    assert late["125ms"]["mean_offset_ms"] == pytest.approx(80.0, abs=15.0)


def test_material_classifier_beats_chance_on_ground_truth(frontend):
    from frieren.synth import SceneConfig, render_clip

    scene = SceneConfig(duration_s=5.0)

    def data(seeds):
        xs, ys = [], []
        for seed in seeds:
            clip = render_clip(seed, scene)
            imp = impact_samples(clip.events, scene.materials)
            if imp:
                xs.append(impact_features(log_mel(frontend, clip.audio), [s for s, _ in imp], 256))
                ys += [m for _, m in imp]
        return np.concatenate(xs), ys

    x_train, y_train = data(range(960000, 960012))
    x_test, y_test = data(range(900000, 900006))
    assert len(y_test) >= 15
    clf = MaterialClassifier.fit(x_train, y_train, scene.materials)
    acc = clf.accuracy(x_test, y_test)
    confusion = clf.confusion(x_test, y_test)
    assert set(confusion) == set(scene.materials) and all(set(r) == set(scene.materials) for r in confusion.values())
    assert sum(map(sum, (r.values() for r in confusion.values()))) == len(y_test)
    assert sum(confusion[m][m] for m in scene.materials) == round(acc * len(y_test))
    _, counts = np.unique(y_test, return_counts=True)
    chance = counts.max() / len(y_test)
    print(f"material accuracy on held-out GT: {acc:.3f} (majority class {chance:.3f}, {len(y_test)} impacts)")
    assert acc > chance + 0.15


def test_impact_samples_drops_overlapping_and_weak_events():
    from frieren.synth import Event

    def ev(t, kind="impact", material="wood", strength=0.5):
        return Event(time_s=t, sample=int(t * SR), kind=kind, source="floor", material=material,
                     strength=strength, speed=1.0, position=(0.5, 0.9))

    events = [ev(0.5), ev(1.0), ev(1.02, material="glass"), ev(2.0, strength=0.01),
              ev(3.0, kind="continuous_start", material="metal"), ev(4.0, material="fan")]
    assert impact_samples(events, ("wood", "glass")) == [(int(0.5 * SR), "wood")]


def test_eval_command_writes_table_json_and_png(tmp_path):
    pytest.importorskip("matplotlib")
    from frieren.bundles import default_bundle_available
    from frieren.eval_cli import main

    if not default_bundle_available():
        pytest.skip("shipped default bundle missing")
    out = tmp_path / "eval"
    torch_threads = torch.get_num_threads()
    try:
        rc = main(["--teacher", "", "--reflow", "", "--distilled-steps", "1,2", "--clips", "2", "--seconds", "3",
                   "--classifier-clips", "4", "--fd", "logmel", "--out", str(out)])
    finally:
        torch.set_num_threads(torch_threads)
    assert rc == 0
    md = (out / "table.md").read_text()
    assert "| reflow+distill | 1 |" in md and "| reflow+distill | 2 |" in md and "ground truth" in md
    # The table names the training seeds the bundle's own provenance records.
    from frieren.bundles import DEFAULT_BUNDLE
    data = json.loads((DEFAULT_BUNDLE / "config.json").read_text())["provenance"]["data"]
    assert f"training used seeds {data['seed0']}–{data['seed0'] + data['clips'] - 1}" in md
    result = json.loads((out / "table.json").read_text())
    rows = {(r["model"], r["steps"]): r for r in result["rows"]}
    assert set(rows) >= {("ground truth", None), ("GT mel + vocoder", None), ("GT mel + VAE + vocoder", None),
                         ("reflow+distill", 1),
                         ("reflow+distill", 2)}
    gt = rows[("ground truth", None)]
    assert gt["fd_logmel"] == 0.0 and gt["mel_l1"] == 0.0 and gt["f1_125ms"] > 0.8
    # The VAE round trip can only lose what the vocoder alone keeps.
    assert rows[("GT mel + VAE + vocoder", None)]["mel_l1"] > rows[("GT mel + vocoder", None)]["mel_l1"]
    r1 = rows[("reflow+distill", 1)]
    for key in ("precision_45ms", "recall_45ms", "f1_45ms", "f1_125ms", "material_acc", "mel_l1"):
        assert 0.0 <= r1[key] <= 1.0 or key == "mel_l1", (key, r1[key])
    assert r1["fd_logmel"] > 0 and r1["mel_l1"] > 0 and r1["s_per_window"] > 0 and r1["nfe"] in (1, 2)
    assert sum(sum(r.values()) for r in r1["material_confusion"].values()) == r1["impacts"]
    png = (out / "metrics_vs_steps.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000


def test_eval_refuses_held_out_seeds_the_model_was_trained_on():
    from frieren.bundles import DEFAULT_BUNDLE, default_bundle_available
    from frieren.eval.table import check_held_out, describe_training
    from frieren.eval_cli import main

    trained = {"teacher": {"kind": "synthetic", "clips": 10, "seed0": 100}, "other": None}
    check_held_out(trained, range(110, 120), range(50110, 50120))          # disjoint: fine
    with pytest.raises(ValueError, match="held-out seed 105 .*'teacher'.*100..109.*--seed0"):
        check_held_out(trained, range(105, 115), range(50105, 50115))
    with pytest.raises(ValueError, match="material-classifier seed 100 "):
        check_held_out(trained, range(0, 4), range(100, 104))
    assert describe_training({"a": {"training_data": trained["teacher"]}, "b": {"training_data": None},
                              "c": {"training_data": {"kind": "folder", "clips": 7}}}) == \
        "training used seeds 100–109; unknown data (no provenance); 7 folder clips"
    flow = {"teacher": {"kind": "synthetic", "clips": 10, "seed0": 100,      # --flow-clips: 2 seed ranges
                        "flow": {"kind": "synthetic", "clips": 5, "seed0": 200}}}
    check_held_out(flow, range(110, 120), range(50110, 50120))
    with pytest.raises(ValueError, match="held-out seed 203 .*200..204"):
        check_held_out(flow, range(203, 206), range(50110, 50120))
    assert describe_training({"a": {"training_data": flow["teacher"]}}) == \
        "training used seeds 100–109 (CAVP, VAE) and 200–204 (flow stages)"
    if not default_bundle_available():
        pytest.skip("shipped default bundle missing")
    data = json.loads((DEFAULT_BUNDLE / "config.json").read_text())["provenance"]["data"]
    with pytest.raises(ValueError, match="trained on"):
        main(["--teacher", "", "--reflow", "", "--clips", "1", "--classifier-clips", "1", "--no-plot",
              "--seed0", str(data["seed0"]), "--out", "/nonexistent/never-written"])


def test_each_model_is_left_out_with_an_empty_name_or_none(tmp_path):
    """`--distilled ''` was taken as the bundle '.' ("not a bundle") while `--teacher ''` skipped;
    now '' and 'none' leave out any of the three models."""
    import argparse

    from frieren.eval_cli import _models, add_arguments

    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text("{}")
    ap = argparse.ArgumentParser()
    add_arguments(ap)

    def names(*argv):
        return [m.name for m in _models(ap.parse_args(list(argv)))]

    for skip in ("", "none", "None"):
        assert names("--teacher", str(bundle), "--reflow", skip, "--distilled", skip) == ["teacher"]
        assert names("--teacher", skip, "--reflow", str(bundle), "--distilled", str(bundle)) == \
            ["reflow", "reflow+distill"]
    assert names("--teacher", "", "--reflow", "") == ["reflow+distill"]     # the shipped model by default


def test_presence_truth_rows_score_the_generator_told_the_worlds_onsets(tmp_path):
    """--presence-truth: one more row per step count of a model with the presence channel (the shipped
    one has it), generated from a condition whose channel is the world's truth; the edit really reaches
    the generator (the audio differs from the head's)."""
    from frieren.bundles import default_bundle_available, load_model
    from frieren.eval.table import _truth_edit, render_clips
    from frieren.eval_cli import main
    from frieren.pipeline import GenerateOptions, OfflineGenerator

    if not default_bundle_available():
        pytest.skip("shipped default bundle missing")
    stack, _ = load_model(None)
    if not stack.preset.cavp.presence_channel:
        pytest.skip("the shipped model has no presence channel")
    clip, = render_clips([900000], 3.0, stack.preset)
    gen, opts = OfflineGenerator(stack), GenerateOptions(steps=1, seed=1, progress=False)
    seen = []

    def edit(cond):
        out = _truth_edit(clip, stack.preset)(cond)
        seen.append((cond.clone(), out))
        return out
    told = gen.generate_frames(clip.frames, len(clip.audio), opts, condition_edit=edit).audio
    head = gen.generate_frames(clip.frames, len(clip.audio), opts).audio
    (cond, out), = seen
    s = stack.preset.cavp.presence_slots
    assert torch.equal(out[:, :-s], cond[:, :-s]) and set(out[:, -s:].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out[:, -s:], cond[:, -s:]) and not np.array_equal(told, head)
    with pytest.raises(ValueError, match="condition_edit returned"):
        gen.generate_frames(clip.frames, len(clip.audio), opts, condition_edit=lambda c: c[:, 1:])

    out_dir = tmp_path / "eval"
    torch_threads = torch.get_num_threads()
    try:
        assert main(["--teacher", "", "--reflow", "", "--clips", "2", "--seconds", "3", "--classifier-clips", "4",
                     "--fd", "logmel", "--no-plot", "--no-vocoder-row", "--presence-truth", "--out", str(out_dir)]) == 0
    finally:
        torch.set_num_threads(torch_threads)
    rows = json.loads((out_dir / "table.json").read_text())["rows"]
    names = [r["model"] for r in rows]
    assert names[1:3] == ["reflow+distill", "reflow+distill, presence channel = the world's truth"]
    assert 0.0 <= rows[2]["f1_125ms"] <= 1.0 and rows[2]["steps"] == 1
    assert rows[-1]["model"].startswith("control: reflow+distill 1-step")


def test_the_cavp_fd_embedding_names_a_checkpoint_without_an_audio_branch(tmp_path):
    """A CAVP stage adopted with --cavp-from holds only the video branch: the cavp FD says so (and
    `frieren eval` skips that column with a warning instead of failing)."""
    from frieren.config import get_preset
    path = tmp_path / "final.pt"
    torch.save({"state": {"video.stem.weight": torch.zeros(1)}, "result": {}}, path)
    with pytest.raises(NoAudioBranchError, match=r"no CAVP audio branch.*--cavp-from.*--fd logmel"):
        make_embedding("cavp", get_preset("tiny"), str(path))
    with pytest.raises(ValueError, match="unknown embedding"):
        make_embedding("nope", get_preset("tiny"), None)
