"""Audio sinks: each owns a bounded queue and a thread; :class:`Fanout` feeds them all.

``ZmqSink`` and ``WavSink`` need only core dependencies; ``SpeakerSink`` imports
sounddevice when started (extra ``speaker``).
"""
from .base import Fanout, Sink
from .speaker import JitterBuffer, SpeakerSink
from .wav import WavSink
from .zmq import DEFAULT_ENDPOINT, ZmqSink

__all__ = ["Sink", "Fanout", "ZmqSink", "WavSink", "SpeakerSink", "JitterBuffer", "DEFAULT_ENDPOINT"]
