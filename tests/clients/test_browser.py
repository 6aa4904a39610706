"""Real browser: headless Chromium opens the page with a fake camera playing a clip of the
synthetic world, connects, and reports (over the data channel) the level its WebAudio
AnalyserNode measures on the generated audio and how many statistics updates it saw.
The test reads those reports from GET /sessions, then presses Stop through the DevTools
protocol and checks the session closes as a hang-up."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtc_helpers import _deterministic_threads, worker  # noqa: F401  (fixtures)
from rtc_helpers import run, running_server, wait_for_page_audio, synth_frames

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} not found: install Debian's chromium to run the browser test")


def write_y4m(path: Path, frames: np.ndarray, fps: int = 30) -> Path:
    """frames (T, H, W, 3) uint8 RGB -> YUV4MPEG2 4:2:0 (what Chromium's fake camera reads)."""
    t, h, w, _ = frames.shape
    assert h % 2 == 0 and w % 2 == 0, f"y4m 4:2:0 needs even sizes, got {w}x{h}"
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            fh.write(b"FRAME\n")
            fh.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def _tail(tmp_path: Path) -> str:
    path = tmp_path / "chromium.log"
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


async def _devtools_eval(port_file: Path, expression: str, timeout: float = 10.0):
    """Evaluate ``expression`` in the page through the DevTools protocol (websocket)."""
    import aiohttp

    deadline = time.monotonic() + timeout
    while not port_file.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            await ws.send_json({"id": 1, "method": "Runtime.evaluate",
                                "params": {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}})
            while True:
                msg = await asyncio.wait_for(ws.receive_json(), timeout)
                if msg.get("id") == 1:
                    return msg.get("result", {}).get("result", {}).get("value")


def test_browser_gets_generated_audio_and_stats(worker, tmp_path):
    import aiohttp

    clip = write_y4m(tmp_path / "clip.y4m", synth_frames(7, seconds=4.0))
    profile = tmp_path / "profile"

    async def main():
        async with running_server(worker, max_sessions=2, idle_timeout_s=5.0) as (server, base):
            cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--use-fake-ui-for-media-stream",
                   "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip}",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--no-first-run", f"--user-data-dir={profile}", "--autoplay-policy=no-user-gesture-required",
                   "--remote-debugging-port=0", "--disable-gpu",
                   f"{base}/?autostart=1"]
            log = open(tmp_path / "chromium.log", "wb")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                async with aiohttp.ClientSession() as http:
                    best, first_updates, listing = await wait_for_page_audio(
                        http, base, proc, lambda: _tail(tmp_path))
                    rep = best["last_report"]
                    print("page report:", json.dumps(rep), "\nserver stats:", json.dumps(best["stats"]))
                    assert rep["max_rms"] > 1e-3, f"the page measured no generated audio: {rep}"
                    assert rep["stats_updates"] >= first_updates + 4, f"statistics stopped updating: {rep}"
                    assert best["stats"]["chunks"] > 0 and best["stats"]["frames_pushed"] > 0, best["stats"]
                    assert rep.get("audio_context") == "running", rep

                    # The page shows the server-measured glass-to-ear latency, RTF, drops, underruns.
                    # The latency exists once the server has played audio, and the page may still hold
                    # an earlier stats message (sent every 0.25 s) than the report above: poll, bounded.
                    deadline = time.monotonic() + 10
                    while True:
                        shown = json.loads(await _devtools_eval(
                            profile / "DevToolsActivePort", "JSON.stringify(Object.fromEntries(["
                            "'s-server-latency', 's-rtf', 's-dropped', 's-underruns', 's-target'].map("
                            "(id) => [id, document.getElementById(id).textContent])))"))
                        if re.fullmatch(r"\d+ ms / \d+ ms", shown["s-server-latency"]) or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.5)
                    print("page shows:", shown)
                    assert re.fullmatch(r"\d+ ms / \d+ ms", shown["s-server-latency"]), shown
                    assert re.fullmatch(r"\d+\.\d\d", shown["s-rtf"]), shown
                    assert shown["s-dropped"].isdigit() and shown["s-underruns"].isdigit(), shown
                    assert shown["s-target"].endswith(")") and "ms" in shown["s-target"], shown

                    # The Stop button: the page says "bye" and the server closes the session.
                    await _devtools_eval(profile / "DevToolsActivePort", "window.frierenClient.stop()")
                    deadline = time.monotonic() + 10
                    while server.peers and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                    assert not server.peers
                    assert server.closed[-1]["close_reason"] == "hang-up", server.closed[-1]
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(5)
                log.close()

    run(main(), 58)
    shutil.rmtree(profile, ignore_errors=True)
