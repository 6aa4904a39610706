"""Typed settings of ``frieren-stream serve`` (parsed from the command line only in
:mod:`stream.serve_cli`; everything else takes a :class:`ServerConfig`)."""
from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from .jitter import JitterConfig
from .session import SessionConfig

DEFAULT_STATIC_DIR = Path(__file__).resolve().parents[1] / "clients" / "web"


@dataclass(frozen=True)
class IceServer:
    urls: str
    username: Optional[str] = None
    credential: Optional[str] = None

    def as_dict(self) -> Dict[str, str]:
        d = {"urls": self.urls}
        if self.username is not None:
            d["username"] = self.username
        if self.credential is not None:
            d["credential"] = self.credential
        return d


@dataclass(frozen=True)
class ServerConfig:
    """host/port: where to listen. token: required on the API when not None.
    idle_timeout_s: a peer that sends no video for this long (counted from its offer) is closed.
    jitter: the audio track's playout policy, "adaptive" (delay follows the measured arrival
    delays) or "fixed" (``prebuffer_ms`` collected before playing); see :mod:`stream.jitter`.
    """
    host: str = "127.0.0.1"
    port: int = 8080
    token: Optional[str] = None
    max_sessions: int = 4
    idle_timeout_s: float = 20.0
    ice_servers: Tuple[IceServer, ...] = ()
    max_body_bytes: int = 64 * 1024
    stats_interval_s: float = 0.5
    jitter: str = "adaptive"
    prebuffer_ms: float = 200.0
    max_buffer_ms: float = 600.0
    static_dir: Path = DEFAULT_STATIC_DIR
    zmq_endpoint: Optional[str] = None
    session: SessionConfig = field(default_factory=SessionConfig)

    def __post_init__(self) -> None:
        self.jitter_config()   # fail loudly on an unknown mode

    def jitter_config(self) -> JitterConfig:
        return JitterConfig(mode=self.jitter, prebuffer_ms=self.prebuffer_ms,
                            max_buffer_ms=self.max_buffer_ms)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: Optional[str], no_token: bool) -> Optional[str]:
    """The token the server will require: given, generated for non-loopback hosts, or None."""
    if no_token:
        return None
    if token:
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(18)
