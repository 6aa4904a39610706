"""Frame sources: iterate ``iter_frames()`` directly, or ``start()`` a thread that fills
``source.frames`` (a drop_oldest BoundedQueue). See :mod:`stream.sources.base`."""
from .base import Source, SourceError
from .file import FileSource
from .webcam import WebcamSource

__all__ = ["Source", "SourceError", "FileSource", "WebcamSource"]
