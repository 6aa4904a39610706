"""Bad requests get 4xx JSON errors and the server keeps serving; token and session limits."""
from __future__ import annotations

import argparse
import asyncio
import time

import pytest

from rtc_helpers import _deterministic_threads, worker  # noqa: F401  (fixtures)
from rtc_helpers import Peer, run, running_server, synth_frames

GOOD_SHAPE = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" \
             "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


async def _post(http, url, **kw):
    async with http.post(url, **kw) as r:
        assert r.content_type == "application/json", (r.status, await r.text())
        return r.status, await r.json()


def test_bad_requests_get_json_errors(worker):
    import aiohttp

    async def main():
        async with running_server(worker, max_body_bytes=16 * 1024) as (server, base):
            async with aiohttp.ClientSession() as http:
                url = f"{base}/offer"
                cases = [
                    (dict(data=b"{not json"), 400, "not valid JSON"),
                    (dict(data=b"\xff\xfe"), 400, "not valid JSON"),
                    (dict(json=[1, 2]), 400, "JSON object"),
                    (dict(json={"type": "answer", "sdp": GOOD_SHAPE}), 400, "\"offer\""),
                    (dict(json={"type": "offer", "sdp": 5}), 400, "non-empty string"),
                    (dict(json={"type": "offer", "sdp": "hello"}), 400, "v=0"),
                    (dict(json={"type": "offer", "sdp": "v=0\r\nnot an sdp line\r\n"}), 400, "malformed"),
                    (dict(json={"type": "offer", "sdp": GOOD_SHAPE.replace("m=video", "m=text")}), 400,
                     "no video"),
                    (dict(json={"type": "offer", "sdp": GOOD_SHAPE.replace("m=audio", "m=text")}), 400,
                     "no audio"),
                    # well-formed lines, but not an offer aiortc can answer (no ICE/DTLS attributes)
                    (dict(json={"type": "offer", "sdp": GOOD_SHAPE}), 400, "SDP rejected"),
                    (dict(json={"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 5000}), 413, "too large"),
                ]
                for kw, status, text in cases:
                    got, body = await _post(http, url, **kw)
                    assert got == status and text in body["error"], (kw, got, body)
                # a body without Content-Length (chunked) is still bounded
                async def gen():
                    for _ in range(64):
                        yield b"x" * 1024
                got, body = await _post(http, url, data=gen())
                assert got == 413, body
                async with http.get(f"{base}/nope") as r:
                    assert r.status == 404 and "error" in await r.json()
                async with http.get(f"{base}/offer") as r:
                    assert r.status == 405
                # still serving, nothing leaked
                async with http.get(f"{base}/health") as r:
                    assert (await r.json())["ok"] is True
                assert not server.peers
                async with http.get(f"{base}/") as r:
                    assert r.status == 200 and "client.js" in await r.text()

    run(main(), 40)


def test_token_required_off_loopback(worker):
    import aiohttp
    from stream.server import resolve_token

    assert resolve_token("127.0.0.1", None, False) is None
    assert resolve_token("localhost", None, False) is None
    assert resolve_token("::1", None, False) is None
    assert resolve_token("0.0.0.0", None, True) is None          # --no-token-i-know-this-is-unsafe
    assert resolve_token("0.0.0.0", "given", False) == "given"
    generated = resolve_token("0.0.0.0", None, False)
    assert generated and len(generated) >= 16
    assert resolve_token("192.168.1.5", None, False) != generated

    async def main():
        # bound to every interface (reached through 127.0.0.1), as `serve --host 0.0.0.0` would
        async with running_server(worker, bind="0.0.0.0", host="0.0.0.0", token=generated) as (server, base):
            async with aiohttp.ClientSession() as http:
                for path in ("/sessions", "/config"):
                    async with http.get(base + path) as r:
                        assert r.status == 401, path
                got, body = await _post(http, f"{base}/offer", json={"type": "offer", "sdp": GOOD_SHAPE})
                assert got == 401 and "token" in body["error"]
                got, body = await _post(http, f"{base}/offer", json={"type": "offer", "sdp": GOOD_SHAPE},
                                        headers={"Authorization": "Bearer wrong"})
                assert got == 403, body
                # the right token passes the check (and the offer is then judged on its SDP)
                got, body = await _post(http, f"{base}/offer?token={generated}",
                                        json={"type": "offer", "sdp": GOOD_SHAPE})
                assert got == 400 and "SDP" in body["error"], body
                async with http.get(f"{base}/sessions", headers={"Authorization": f"Bearer {generated}"}) as r:
                    assert r.status == 200
                async with http.get(f"{base}/") as r:      # the page itself is public
                    assert r.status == 200

    run(main(), 30)


def test_serve_parser_defaults():
    from stream.server import add_serve_parser, config_from_args, run_serve

    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--random-init"])
    assert args.func is run_serve
    cfg = config_from_args(args)
    assert cfg.host == "127.0.0.1" and cfg.token is None and cfg.ice_servers == ()
    assert cfg.jitter_config().mode == "adaptive"
    cfg = config_from_args(parser.parse_args(["serve", "--jitter", "fixed", "--prebuffer-ms", "120"]))
    assert cfg.jitter_config().mode == "fixed" and cfg.jitter_config().prebuffer_ms == 120
    cfg = config_from_args(parser.parse_args(["serve", "--host", "0.0.0.0", "--stun", "stun:example.org:3478"]))
    assert cfg.token and cfg.ice_servers[0].urls == "stun:example.org:3478"
    cfg = config_from_args(parser.parse_args(["serve", "--host", "0.0.0.0", "--no-token-i-know-this-is-unsafe"]))
    assert cfg.token is None
    with pytest.raises(ValueError, match="turn-username"):
        config_from_args(parser.parse_args(["serve", "--turn", "turn:example.org"]))


def test_serve_leaves_a_core_to_the_webrtc_codecs(monkeypatch):
    """On the CPU the model gets one core fewer than the machine has (at least one): the event
    loop decodes the peers' video and encodes their audio on the same cores."""
    import os

    import torch
    from stream.server import add_serve_parser, build_worker
    from stream.serve_cli import default_worker_threads

    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["serve"]).threads is None
    assert parser.parse_args(["serve", "--threads", "3"]).threads == 3
    for cores, want in ((1, 1), (2, 1), (16, 15)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert default_worker_threads("cpu") == want
    assert default_worker_threads("cuda") is None and default_worker_threads("cuda:1") is None
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        build_worker(preset="tiny", random_init=True, threads=0)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    torch.set_num_threads(1)
    build_worker(preset="tiny", random_init=True, max_batch=1).stop()
    assert torch.get_num_threads() == 2


def test_max_sessions_refused_with_503(worker):
    import aiohttp

    async def main():
        async with running_server(worker, max_sessions=1) as (server, base):
            async with aiohttp.ClientSession() as http:
                first, second = Peer(synth_frames(1)), Peer(synth_frames(2))
                status, body = await first.connect(http, base)
                assert status == 200, body
                status, body = await second.connect(http, base)
                assert status == 503 and "full" in body["error"], body
                # a bad request meanwhile does not disturb the running session
                got, _ = await _post(http, f"{base}/offer", data=b"{")
                assert got == 400
                got, body = await _post(http, f"{base}/offer", data=b"[" * 50000)
                assert got == 400, body
                # nor do junk data-channel messages
                for _ in range(100):
                    if first.channel.readyState == "open":
                        break
                    await asyncio.sleep(0.05)
                for junk in ("not json", "[1]", '{"type": "nope"}', "x" * 20000):
                    first.channel.send(junk)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and (first.pcm().size == 0 or
                                                       abs(first.pcm()).max() < 1e-3):
                    await asyncio.sleep(0.25)
                assert abs(first.pcm()).max() > 1e-3, "the running session stopped producing audio"
                async with http.get(f"{base}/sessions") as r:
                    listing = await r.json()
                assert listing["refused"] == 1 and len(listing["sessions"]) == 1
                assert listing["sessions"][0]["bad_messages"] == 4
                await first.close()
                await second.close()
                deadline = time.monotonic() + 10
                while server.peers and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert not server.peers
                # the freed slot can be used again
                third = Peer(synth_frames(3))
                status, body = await third.connect(http, base)
                assert status == 200, body
                await third.close()

    run(main(), 50)


def test_idle_session_is_closed(worker):
    import aiohttp

    async def main():
        async with running_server(worker, idle_timeout_s=1.0) as (server, base):
            async with aiohttp.ClientSession() as http:
                peer = Peer(synth_frames(4))
                status, body = await peer.connect(http, base)
                assert status == 200
                await asyncio.sleep(1.0)
                # stop sending video but keep the connection: the server must time the session out
                for sender in peer.pc.getSenders():
                    if sender.track is not None and sender.track.kind == "video":
                        sender.track.stop()
                deadline = time.monotonic() + 10
                while server.peers and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert not server.peers
                assert server.closed[-1]["close_reason"].startswith("idle")
                await peer.close()

    run(main(), 30)


def test_shutdown_closes_sessions(worker):
    import aiohttp

    async def main():
        peer = Peer(synth_frames(5))
        async with running_server(worker) as (server, base):
            async with aiohttp.ClientSession() as http:
                status, _ = await peer.connect(http, base)
                assert status == 200
                await asyncio.sleep(0.5)
        assert not server.peers and server.closed[-1]["close_reason"] == "server shutdown"
        await peer.close()

    run(main(), 30)
