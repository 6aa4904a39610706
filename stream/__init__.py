"""The real-time engine: sources, frame window, worker, crossfade, sinks, ZeroMQ, WebRTC.

Imports ``frieren`` first so its OpenMP wait-policy default applies before torch loads.
"""
import frieren as _frieren  # noqa: F401
