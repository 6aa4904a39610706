"""`frieren-stream` end to end, as subprocesses (tiny random-init model)."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from conftest import REPO_ROOT, make_test_video

CLI = [sys.executable, "-m", "stream.cli"]
MODEL = ["--random-init", "--preset", "tiny"]


def _run(args, timeout=120, **kw):
    return subprocess.run(CLI + args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("v") / "clip.mp4", 2.0, 30, 160, 120)


def _wav_ok(path: Path):
    with wave.open(str(path)) as w:
        n, rate, width, ch = w.getnframes(), w.getframerate(), w.getsampwidth(), w.getnchannels()
    assert path.stat().st_size == 44 + n * width * ch, "WAV header does not match the data"
    return n, rate


@pytest.mark.parametrize("argv, needle", [
    (["--source", "bogus"], "unknown --source"),
    (["--source", "file"], "--source file needs"),
    (["--sink", "wav"], "--sink wav needs"),
    (["--source", "synthetic", "--mux", "x.mp4"], "--mux needs"),
    (["--lookahead-frames", "x"], "invalid int value"),
    (["bench", "--nope"], "unrecognized arguments"),
    (["--compile", "bogus"], "argument --compile: invalid choice: 'bogus'"),
    (["bench", "--compile", "O3"], "argument --compile: invalid choice: 'O3'"),
])
def test_bad_flags_one_line_exit_2(argv, needle, capsys):
    from stream.cli import main
    with pytest.raises(SystemExit) as exc:
        rc = main(argv)
        raise SystemExit(rc)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err


def test_bad_hop_and_missing_file_exit_2(tmp_path):
    r = _run(["--source", "synthetic", "--hop-ms", "3", *MODEL])
    assert r.returncode == 2, r.stderr
    err = [l for l in r.stderr.splitlines() if "error" in l]
    assert len(err) == 1 and "--hop-ms" in err[0]
    r = _run(["--source", "file", str(tmp_path / "missing.mp4"), "--sink", "wav", str(tmp_path / "o.wav"), *MODEL])
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_no_model_is_a_clear_error(capsys, monkeypatch, tmp_path):
    import frieren.bundles
    from stream.cli import main
    # Point the embedded default at an empty folder: the error path is tested whether or
    # not the real default model is installed.
    monkeypatch.setattr(frieren.bundles, "DEFAULT_BUNDLE", tmp_path / "no-default")
    prev = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        rc = main(["--source", "synthetic", "--sink", "zmq"])
    finally:
        signal.signal(signal.SIGINT, prev[0])
        signal.signal(signal.SIGTERM, prev[1])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--random-init" in err[0] and "--bundle" in err[0]


def test_file_to_wav_and_mux(video, tmp_path):
    out, mux = tmp_path / "out.wav", tmp_path / "out.mp4"
    r = _run(["--source", "file", str(video), "--as-fast-as-possible", "--sink", "wav", str(out),
              "--mux", str(mux), "--duration", "60", *MODEL])
    assert r.returncode == 0, r.stderr
    n, rate = _wav_ok(out)
    assert rate == 16000 and 1.7 < n / rate < 2.2
    assert "drops 0" in r.stderr
    import av
    with av.open(str(mux)) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}


def test_file_to_zmq_subscriber_process(video, tmp_path):
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    rec = tmp_path / "zmq.wav"
    sub = subprocess.Popen([sys.executable, str(REPO_ROOT / "clients" / "zmq" / "record_wav.py"), str(rec),
                            "--endpoint", endpoint, "--seconds", "0.5", "--timeout", "90"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = _run(["--source", "file", str(video), "--loop", "--sink", "zmq", "--zmq-endpoint", endpoint,
                  "--duration", "6", "--stream-id", "cam7", *MODEL])
        assert r.returncode == 0, r.stderr
        _, err = sub.communicate(timeout=60)
    finally:
        sub.kill()
    assert sub.returncode == 0, err
    assert "'cam7'" in err
    n, rate = _wav_ok(rec)
    assert rate == 16000 and n >= 8000


def test_sigint_leaves_valid_wav(tmp_path):
    out = tmp_path / "live.wav"
    p = subprocess.Popen(CLI + ["--source", "synthetic", "--sink", "wav", str(out), "--duration", "300", *MODEL],
                         cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end and not (out.exists() and out.stat().st_size > 44 + 2 * 16000):
            assert p.poll() is None, p.communicate()[1]
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0, err
    n, rate = _wav_ok(out)
    assert rate == 16000 and n >= 16000
