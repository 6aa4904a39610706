"""Request checks of the WebRTC service: JSON bodies, offers and the access token.

Every failure is an :class:`ApiError` carrying the HTTP status and one message that
says what was wrong and what to do (DESIGN §5.10); the server answers it as JSON.
"""
from __future__ import annotations

import hmac
import json
from typing import Any, Optional, Tuple

MAX_SDP_CHARS = 60_000


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def validate_offer(payload: Any) -> Tuple[str, str]:
    """Check the shape of an ``/offer`` body before aiortc sees it. Raises ApiError(400)."""
    if not isinstance(payload, dict):
        raise ApiError(400, "body must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}")
    sdp, typ = payload.get("sdp"), payload.get("type")
    if typ != "offer":
        raise ApiError(400, f"\"type\" must be \"offer\", got {typ!r:.40}")
    if not isinstance(sdp, str) or not sdp.strip():
        raise ApiError(400, "\"sdp\" must be a non-empty string")
    if len(sdp) > MAX_SDP_CHARS:
        raise ApiError(400, f"\"sdp\" is longer than {MAX_SDP_CHARS} characters")
    if any((ord(c) < 32 and c not in "\r\n\t") or ord(c) > 126 for c in sdp):
        raise ApiError(400, "\"sdp\" contains characters outside printable ASCII")
    lines = [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]
    if not lines or lines[0] != "v=0":
        raise ApiError(400, "\"sdp\" must start with \"v=0\"")
    bad = next((ln for ln in lines if len(ln) < 2 or ln[1] != "=" or not ln[0].isalpha()), None)
    if bad is not None:
        raise ApiError(400, f"malformed SDP line: {bad[:60]!r}")
    kinds = [ln[2:].split(" ", 1)[0] for ln in lines if ln.startswith("m=")]
    if "video" not in kinds:
        raise ApiError(400, "the offer has no video m-line: add the camera track before createOffer()")
    if "audio" not in kinds:
        raise ApiError(400, "the offer has no audio m-line: add a recvonly audio transceiver "
                            "(pc.addTransceiver('audio', {direction: 'recvonly'}))")
    return sdp, typ


def check_token(request, token: Optional[str]) -> None:
    """Raise ApiError(401/403) unless ``request`` carries ``token`` (no-op when token is None).

    Accepted as ``Authorization: Bearer T``, ``X-Frieren-Token: T`` or ``?token=T``.
    """
    if token is None:
        return
    given = request.headers.get("X-Frieren-Token") or request.query.get("token")
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth[7:].strip()
    if not given:
        raise ApiError(401, "access token required: open the URL the server printed at start "
                            "(…/?token=…) or send 'Authorization: Bearer TOKEN'")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(403, "wrong access token")


async def read_json(request, limit: int) -> Any:
    """The request body parsed as JSON, read at most ``limit`` bytes far. Raises ApiError(400/413)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"request body too large ({request.content_length} bytes > {limit})")
    body = bytearray()
    async for chunk in request.content.iter_chunked(16384):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body too large (> {limit} bytes)")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ApiError(400, f"body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "body is not valid JSON: nested too deeply") from None
