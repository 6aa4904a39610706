"""`frieren train default --side-by-side`: VAE and CAVP trained at the same time (CAVP in a
spawned process) give the weights of the sequential recipe."""
from __future__ import annotations

import torch

from frieren import train_cli


def _default_args(run_dir, bundle, *extra):
    args = ["default", "--run-dir", str(run_dir), "--out", str(bundle), "--synthetic", "2",
            "--synthetic-seed", "7", "--clip-seconds", "3", "--threads", "1", "--no-progress",
            "--window-stride", "4", "--vae-steps", "3", "--cavp-steps", "3", "--cfm-steps", "2",
            "--reflow-steps", "1", "--distill-steps", "1", "--reflow-pairs", "2", "--teacher-steps", "2",
            "--cavp-event-weight", "1.0", "--cavp-event-slots", "4"]
    for s in ("vae", "cavp", "cfm", "reflow", "distill"):
        args += [f"--{s}-batch-size", "2"]
    return args + list(extra)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state"]


def test_side_by_side_gives_the_sequential_weights(tmp_path):
    seq, par = tmp_path / "seq", tmp_path / "par"
    assert train_cli.main(_default_args(seq, tmp_path / "b_seq")) == 0
    assert train_cli.main(_default_args(par, tmp_path / "b_par", "--side-by-side")) == 0
    for stage in ("vae", "cavp", "distill"):
        a, b = _state(seq / stage / "final.pt"), _state(par / stage / "final.pt")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{stage}: {k} differs"
    # a rerun finds both stages finished and trains nothing
    assert train_cli.main(_default_args(par, tmp_path / "b_par", "--side-by-side")) == 0
    assert (par / "cavp" / "log.jsonl").read_text().count("\n") == (seq / "cavp" / "log.jsonl").read_text().count("\n")
