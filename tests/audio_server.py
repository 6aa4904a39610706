"""A private PulseAudio server with a null sink, so PortAudio has a real output device
on machines without a sound card (CI, containers; root is fine).

Not a conftest: test modules import the fixture, ``from audio_server import null_audio_device``.

PortAudio (Debian's 19.6) has no PulseAudio host API, so playback goes PortAudio -> ALSA ->
the ALSA ``pulse`` plugin (libasound2-plugins) -> this server, found through
``PULSE_SERVER``. The server runs on its own socket in a temporary folder and never touches
a user's session server. Needs the Debian packages ``pulseaudio``, ``pulseaudio-utils``
(``pactl``/``parec``) and ``libasound2-plugins`` (scripts/setup.sh installs them); without
them the fixture skips.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest

SINK = "frieren_null"
RATE = 48000
ALSA_PULSE_CONF = Path("/usr/share/alsa/alsa.conf.d/50-pulseaudio.conf")


@dataclass
class NullAudioDevice:
    server: str          # PULSE_SERVER value, e.g. "unix:/tmp/pa-xyz/native"
    device: str          # sounddevice device name (substring) for the ALSA pulse plugin
    sink: str            # PulseAudio null sink name
    monitor: str         # its monitor source (what was played on the sink)
    rate: int            # the null sink's sample rate
    log_path: Path

    def env(self) -> Dict[str, str]:
        return {**os.environ, "PULSE_SERVER": self.server}

    def record(self, path: Path, rate: int = RATE, channels: int = 1) -> subprocess.Popen:
        """Start recording the sink's monitor as raw float32le to ``path``; stop it with
        ``proc.terminate()``. Returns the parec process."""
        fh = open(path, "wb")
        try:
            return subprocess.Popen(["parec", "-d", self.monitor, "--raw", "--format=float32le",
                                     f"--rate={rate}", f"--channels={channels}", "--latency-msec=20"],
                                    stdout=fh, stderr=subprocess.DEVNULL, env=self.env())
        finally:
            fh.close()  # the child holds its own descriptor


def _missing_tools() -> Optional[str]:
    for tool in ("pulseaudio", "pactl", "parec"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install pulseaudio pulseaudio-utils libasound2-plugins)"
    if not ALSA_PULSE_CONF.exists():
        return "ALSA pulse plugin not installed (apt-get install libasound2-plugins)"
    return None


def _server_up(server: str) -> bool:
    try:
        return subprocess.run(["pactl", "--server", server, "info"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _reinit_portaudio() -> None:
    """PortAudio lists devices once, at initialisation (sounddevice's import): re-scan so the
    pulse device appears (or disappears) even when sounddevice was imported earlier."""
    try:
        import sounddevice as sd
    except (ImportError, OSError):
        return
    sd._terminate()
    sd._initialize()


@contextlib.contextmanager
def private_pulse_server(rate: int = RATE) -> Iterator[Tuple[str, Path]]:
    """Start a PulseAudio daemon with one null sink on a private socket; yields
    (PULSE_SERVER address, log path). It never touches a user's session server and is
    stopped (and its folder removed) on exit. Fails with the log if it does not start."""
    # a short folder: unix socket paths are limited to ~107 bytes
    home = Path(tempfile.mkdtemp(prefix="frieren-pa-"))
    socket = home / "native"
    server = f"unix:{socket}"
    log_path = home / "pulseaudio.log"
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home), "XDG_CONFIG_HOME": str(home),
           "PULSE_RUNTIME_PATH": str(home)}
    env.pop("PULSE_SERVER", None)
    env.pop("DISPLAY", None)
    cmd = ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
           "--disable-shm=yes", "--log-target=stderr", "--log-level=warning",
           f"--load=module-null-sink sink_name={SINK} rate={rate} channels=2",
           f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket}"]
    if os.geteuid() == 0:
        cmd.insert(1, "--system=false")  # as root it only warns "not intended to be run as root"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                cwd=home, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while not (socket.exists() and _server_up(server)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pulseaudio did not start (rc={proc.poll()}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        yield server, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def null_audio_device():
    why = _missing_tools()
    if why:
        pytest.skip(why)
    old_server = os.environ.get("PULSE_SERVER")
    with private_pulse_server() as (server, log_path):
        try:
            os.environ["PULSE_SERVER"] = server  # read by the ALSA pulse plugin inside PortAudio
            _reinit_portaudio()
            yield NullAudioDevice(server=server, device="pulse", sink=SINK, monitor=f"{SINK}.monitor",
                                  rate=RATE, log_path=log_path)
        finally:
            if old_server is None:
                os.environ.pop("PULSE_SERVER", None)
            else:
                os.environ["PULSE_SERVER"] = old_server
            _reinit_portaudio()
