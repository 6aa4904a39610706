"""Real browser, second engine: headless Firefox ESR opens the page (``?autostart=1``) with
its built-in fake camera, in a fresh profile whose user.js grants media without prompts,
allows autoplay and turns off every call to Mozilla's services. The page reports (over the
data channel) the level its WebAudio AnalyserNode measures on the generated audio and how many
statistics updates it saw; the test reads those reports from GET /sessions, then terminates
Firefox and checks that the server closes the session.

Unlike headless Chromium, Firefox runs an AudioContext only with an audio output device, so
the test starts a private PulseAudio daemon with a null sink (Debian's pulseaudio)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from audio_server import private_pulse_server

from rtc_helpers import _deterministic_threads, worker  # noqa: F401  (fixtures)
from rtc_helpers import run, running_server, wait_for_page_audio

FIREFOX = "/usr/bin/firefox-esr"
PULSEAUDIO = shutil.which("pulseaudio") or "/usr/bin/pulseaudio"

pytestmark = pytest.mark.skipif(not os.path.exists(FIREFOX),
                                reason=f"{FIREFOX} not found: install Debian's firefox-esr to run the "
                                       "Firefox browser test")

PREFS = {
    # Media: fake camera, no permission prompt, autoplay allowed, WebRTC on this host.
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "permissions.default.camera": 1,
    "permissions.default.microphone": 1,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.peerconnection.ice.loopback": True,
    "media.gmp-manager.url": "",            # no OpenH264 download (VP8 is built in)
    "media.gmp-gmpopenh264.autoupdate": False,
    # No first-run pages, default-browser checks, updates or session restore.
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "startup.homepage_welcome_url": "",
    "startup.homepage_welcome_url.additional": "",
    "browser.aboutwelcome.enabled": False,
    "trailhead.firstrun.didSeeAboutWelcome": True,
    "browser.sessionstore.resume_from_crash": False,
    "toolkit.startup.max_resumed_crashes": -1,
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.update.disabledForTesting": True,
    "app.update.url": "",
    # No network traffic to Mozilla services.
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "browser.ping-centre.telemetry": False,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.trr.mode": 5,
    "network.prefetch-next": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "extensions.update.enabled": False,
    "extensions.update.autoUpdateDefault": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.search.update": False,
    "browser.search.geoip.url": "",
    "geo.provider.network.url": "",
    "services.settings.server": "http://127.0.0.1:9/",
    "services.sync.enabled": False,
    "identity.fxaccounts.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.feeds.snippets": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.default.sites": "",
    "browser.discovery.enabled": False,
    "browser.topsites.contile.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "browser.contentblocking.report.lockwise.enabled": False,
    "network.proxy.type": 0,
}


def write_profile(profile: Path) -> Path:
    profile.mkdir(parents=True, exist_ok=True)
    lines = [f"user_pref({json.dumps(k)}, {json.dumps(v)});" for k, v in PREFS.items()]
    (profile / "user.js").write_text("\n".join(lines) + "\n")
    return profile


@contextlib.contextmanager
def null_sink(tmp_path: Path):
    """A private PulseAudio daemon with one null sink; yields the PULSE_SERVER address.

    Firefox keeps an AudioContext "suspended" while it has no audio output device to
    drive its graph (a bare container has none); Chromium's headless mode fakes one."""
    assert os.path.exists(PULSEAUDIO), (f"{PULSEAUDIO} not found: Firefox needs an audio output "
                                        "device for WebAudio to run; install Debian's pulseaudio")
    with private_pulse_server() as (server, _log):
        yield server


def _tail(tmp_path: Path) -> str:
    path = tmp_path / "firefox.log"
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def test_firefox_gets_generated_audio_and_stats(worker, tmp_path):
    import aiohttp

    profile = write_profile(tmp_path / "profile")
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, MOZ_HEADLESS="1", HOME=str(home), MOZ_CRASHREPORTER_DISABLE="1",
               MOZ_CRASHREPORTER="0", XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"))
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)

    async def main(pulse_server: str):
        env["PULSE_SERVER"] = pulse_server
        async with running_server(worker, max_sessions=2, idle_timeout_s=5.0) as (server, base):
            cmd = [FIREFOX, "--headless", "--no-remote", "--new-instance", "--profile", str(profile),
                   f"{base}/?autostart=1"]
            log = open(tmp_path / "firefox.log", "wb")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            try:
                async with aiohttp.ClientSession() as http:
                    best, first_updates, listing = await wait_for_page_audio(
                        http, base, proc, lambda: _tail(tmp_path))
                    rep = best["last_report"]
                    print("page report:", json.dumps(rep), "\nserver stats:", json.dumps(best["stats"]))
                    assert "Firefox/" in rep.get("user_agent", ""), rep
                    assert rep["max_rms"] > 1e-3, f"the page measured no generated audio: {rep}"
                    assert rep["stats_updates"] >= first_updates + 4, f"statistics stopped updating: {rep}"
                    assert best["stats"]["chunks"] > 0 and best["stats"]["frames_pushed"] > 0, best["stats"]
                    assert rep.get("audio_context") == "running", rep
                    assert rep.get("first_audio_ms") is not None, rep
                    print("firefox, ms after page load:", {k: rep.get(k) for k in (
                        "track_ms", "connected_ms", "audio_running_ms", "first_audio_ms")})

                # Terminate Firefox: the server must close the session (a hang-up when the page
                # gets to say "bye" or the transport closes, else the idle timeout).
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
                t0 = time.monotonic()
                deadline = t0 + 12
                while server.peers and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert not server.peers, "the session outlived the browser"
                closed = server.closed[-1]
                print(f"session closed {time.monotonic() - t0:.1f} s after firefox exited: "
                      f"{closed['close_reason']}")
                assert closed["id"] == best["id"], closed
                assert closed["close_reason"] == "hang-up" or closed["close_reason"].startswith(
                    ("idle", "connection failed")), closed
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
                log.close()

    with null_sink(tmp_path) as pulse_server:
        run(main(pulse_server), 55)
    shutil.rmtree(profile, ignore_errors=True)
