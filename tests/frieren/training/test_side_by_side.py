"""`frieren train default --side-by-side`: VAE and CAVP trained at the same time (CAVP in a
spawned process) give the weights of the sequential recipe."""
from __future__ import annotations

import pytest
import torch

from frieren import train_cli


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state"]


def test_side_by_side_gives_the_sequential_weights(tmp_path, tiny_recipe_args):
    seq, par = tmp_path / "seq", tmp_path / "par"
    assert train_cli.main(tiny_recipe_args(seq, tmp_path / "b_seq")) == 0
    assert train_cli.main(tiny_recipe_args(par, tmp_path / "b_par", "--side-by-side")) == 0
    for stage in ("vae", "cavp", "distill"):
        a, b = _state(seq / stage / "final.pt"), _state(par / stage / "final.pt")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{stage}: {k} differs"
    # a rerun finds both stages finished and trains nothing
    assert train_cli.main(tiny_recipe_args(par, tmp_path / "b_par", "--side-by-side")) == 0
    assert (par / "cavp" / "log.jsonl").read_text().count("\n") == (seq / "cavp" / "log.jsonl").read_text().count("\n")


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's exit is reaped by whoever
    adopted it, which in a container may be slow to do so)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_the_cavp_process_stops_when_the_training_process_is_killed(tmp_path, tiny_recipe_args):
    """SIGKILL gives the parent no chance to stop its child: the child notices and exits."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    args = tiny_recipe_args(tmp_path / "run", tmp_path / "bundle", "--side-by-side",
                         "--vae-steps", "100000", "--cavp-steps", "100000")
    proc = subprocess.Popen([sys.executable, "-m", "frieren.train_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    child = None
    try:
        for line in proc.stdout:
            m = re.search(r"CAVP stage runs side by side in process (\d+)", line)
            if m:
                child = int(m.group(1))
                break
        assert child is not None, "the side-by-side CAVP process never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not _running(child):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the CAVP process {child} outlived the killed training process")
    finally:
        if proc.poll() is None:
            proc.kill()
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_channels_last_cavp_runs_the_whole_recipe_into_a_loadable_bundle(tmp_path, tiny_recipe_args):
    """--cavp-channels-last: the CAVP trains in another memory layout; the stages after it and
    the bundle (contiguous weights on disk) take it as they take the default layout."""
    import json

    from frieren.checkpoints import load_bundle

    bundle = tmp_path / "bundle"
    assert train_cli.main(tiny_recipe_args(tmp_path / "run", bundle, "--cavp-channels-last")) == 0
    trained = _state(tmp_path / "run" / "cavp" / "final.pt")
    conv = trained["video.video_encoder.conv1.conv.weight"]
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()
    stack, _ = load_bundle(bundle)
    shipped = stack.cavp.state_dict()
    for k, v in shipped.items():
        assert torch.equal(v, trained["video." + k]), k
    assert json.loads((bundle / "config.json").read_text())["provenance"]["args"]["cavp_channels_last"] is True


def test_onset_weights_and_network_sizes_run_the_whole_recipe(tmp_path, tiny_recipe_args):
    """--cavp-onset-weight/--cavp-onset-log (the shipped recipe's), the flow stages' onset weights,
    --estimator-hidden/--estimator-depth and --cavp-depth reach their stages and the bundle, which loads."""
    from frieren.checkpoints import load_bundle

    import json
    import math

    bundle = tmp_path / "bundle"
    assert train_cli.main(tiny_recipe_args(tmp_path / "run", bundle, "--cavp-onset-weight", "2", "--cavp-onset-log",
                                        "--cfm-onset-weight", "4", "--reflow-onset-weight", "4",
                                        "--distill-onset-weight", "8", "--estimator-hidden", "32",
                                        "--estimator-depth", "1", "--cavp-depth", "14")) == 0
    logs = {s: [json.loads(x) for x in (tmp_path / "run" / s / "log.jsonl").read_text().splitlines()]
            for s in ("cavp", "cfm", "reflow", "distill")}
    assert "event_onset" in logs["cavp"][-1]
    assert all(math.isfinite(logs[s][-1]["loss"]) for s in ("cfm", "reflow", "distill"))
    # Weighted, the distillation loss is no longer its plain MSE.
    assert logs["distill"][-1]["loss"] != logs["distill"][-1]["mse"]
    args = json.loads((bundle / "config.json").read_text())["provenance"]["args"]
    assert (args["cavp_onset_weight"], args["cavp_onset_log"], args["cfm_onset_weight"]) == (2.0, True, 4.0)
    assert (args["reflow_onset_weight"], args["distill_onset_weight"]) == (4.0, 8.0)
    stack, info = load_bundle(str(bundle))
    assert (info.preset.estimator.hidden_size, info.preset.estimator.depth) == (32, 1)
    assert len(stack.estimator.blocks) == 1
    assert info.preset.cavp.depth == 14 and len(stack.cavp.video_encoder.layer3) == 1
    # The run dir remembers the estimator size: `bundle` of another stage needs no flags,
    # and another size in the same run dir is refused.
    data = ["--run-dir", str(tmp_path / "run"), "--synthetic", "2", "--synthetic-seed", "7", "--clip-seconds", "3",
            "--window-stride", "4", "--threads", "1", "--no-progress"]
    assert train_cli.main(["bundle", *data, "--stage", "cfm", "--out", str(tmp_path / "cfm")]) == 0
    cfm_info = load_bundle(str(tmp_path / "cfm"))[1]
    assert (cfm_info.preset.estimator.hidden_size, cfm_info.preset.cavp.depth) == (32, 14)
    with pytest.raises(SystemExit, match="another --run-dir"):
        train_cli.main(["bundle", *data, "--stage", "cfm", "--out", str(tmp_path / "x"), "--estimator-hidden", "64"])
    with pytest.raises(SystemExit, match="another --run-dir"):
        train_cli.main(["bundle", *data, "--stage", "cfm", "--out", str(tmp_path / "x"), "--cavp-depth", "26"])


def test_the_presence_detector_trains_beside_the_flow_stages_with_the_sequential_weights(tmp_path, tiny_recipe_args,
                                                                                        caplog):
    """--side-by-side with a presence detector and truth channels: the detector trains in a second
    process while the flow stages run (they cache the CAVP's features alone and read the world's truth
    in the channels); detector, threshold, flow stages and bundle are those of the sequential run. The
    detector's own clips (--presence-detector-clips) are rendered while the CAVP trains."""
    import json
    import logging

    from frieren.checkpoints import load_bundle

    detector = ("--presence-channel", "--presence-slots", "4", "--presence-detector-steps", "2",
                "--presence-channel-train", "truth", "--presence-validation-clips", "1", "--presence-detector-clips", "1")
    seq, par = tmp_path / "seq", tmp_path / "par"
    assert train_cli.main(tiny_recipe_args(seq, tmp_path / "b_seq", *detector)) == 0
    with caplog.at_level(logging.INFO, logger="frieren.train"):
        assert train_cli.main(tiny_recipe_args(par, tmp_path / "b_par", "--side-by-side", *detector)) == 0
    assert "presence detector runs side by side" in caplog.text
    assert "presence detector's 1 own clips and their onsets made" in caplog.text
    for d in (seq, par):   # the seeds right after the run's two clips (7, 8), with the world's onsets
        assert json.loads((d / "cache_detector" / "source.json").read_text())["seed0"] == 9
        assert len(json.loads((d / "cache_detector" / "onsets.json").read_text())["onsets"]) == 1
    for stage in ("cfm", "reflow", "distill"):
        a, b = _state(seq / stage / "final.pt"), _state(par / stage / "final.pt")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{stage}: {k} differs"
    kept = [torch.load(d / "cavp" / "presence_detector.pt", weights_only=True) for d in (seq, par)]
    assert kept[0]["info"]["detector_clips"] == kept[1]["info"]["detector_clips"] == 1
    for k in kept[0]["net"]:
        assert torch.equal(kept[0]["net"][k], kept[1]["net"][k]), f"detector: {k} differs"
    thresholds = [json.loads((d / "cavp" / "presence_threshold.json").read_text()) for d in (seq, par)]
    assert thresholds[0] == thresholds[1]
    a, b = load_bundle(tmp_path / "b_seq")[0].state_dict(), load_bundle(tmp_path / "b_par")[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the flow stages' cache holds the CAVP's features alone: it does not depend on the detector
    cached = torch.load(next((par / "cache" / "latents").glob("*.pt")), weights_only=True)["feats"]
    assert cached.shape[1] == load_bundle(tmp_path / "b_par")[1].preset.cavp.embed_dim


def test_stop_after_the_cavp_then_resuming_gives_the_one_go_weights(tmp_path, tiny_recipe_args, caplog):
    """--stop-after vae+cavp (to run the later stages in another process, for example with other CPU
    kernels, as scripts/train_default.sh did for v12r): it stops with the VAE and CAVP trained and nothing after them; the same
    command without it goes on and writes the bundle of a run made in one go."""
    import logging

    from frieren.checkpoints import load_bundle

    one, two = tmp_path / "one", tmp_path / "two"
    assert train_cli.main(tiny_recipe_args(one, tmp_path / "b_one")) == 0
    with caplog.at_level(logging.INFO, logger="frieren.train"):
        assert train_cli.main(tiny_recipe_args(two, tmp_path / "b_two", "--stop-after", "vae+cavp")) == 0
    assert "stopped after vae+cavp" in caplog.text
    assert (two / "vae" / "final.pt").is_file() and (two / "cavp" / "final.pt").is_file()
    assert not (two / "cfm").exists() and not (tmp_path / "b_two").exists()
    assert train_cli.main(tiny_recipe_args(two, tmp_path / "b_two")) == 0
    a, b = load_bundle(tmp_path / "b_one")[0].state_dict(), load_bundle(tmp_path / "b_two")[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the bundle records the vector kernels its later stages ran with
    kernels = load_bundle(tmp_path / "b_two")[1].provenance["cpu_kernels"]
    assert kernels["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
