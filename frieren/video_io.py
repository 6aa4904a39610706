"""Reading videos (any container, frame rate and size) and writing muxed results.

Frames are sampled on the *audio clock* (DESIGN §3.1): model frame i is the video
frame showing the scene at ``i * frame_period`` seconds (the latest decoded frame
whose timestamp is not after that instant), so visual frame i and its audio cover
the same interval. Only the sampled frames are kept in memory.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


class VideoError(RuntimeError):
    """A video could not be read or written; the message names the file and the problem."""


@dataclass(frozen=True)
class SampledVideo:
    """Frames sampled at requested times. frames: (N, H, W, 3) uint8 RGB."""
    frames: np.ndarray
    times_s: np.ndarray
    duration_s: float
    fps: float
    width: int
    height: int


def _open(path: os.PathLike):
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except Exception as error:  # noqa: BLE001 - PyAV raises many types
        raise VideoError(f"{path}: cannot open as a video ({type(error).__name__}: {error}); "
                         "is the file complete and a common container (mp4, webm, mov, mkv)?") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: contains no video stream")
    return container


def video_duration(path: os.PathLike) -> float:
    """Duration of the video stream in seconds (last frame time + one frame duration)."""
    return sample_video(path, []).duration_s


def sample_video(path: os.PathLike, times_s: Sequence[float],
                 transform: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                 progress: Optional[Callable[[float], None]] = None) -> SampledVideo:
    """Decode ``path`` once and keep, for each time in ``times_s`` (ascending, seconds from
    the first frame), the latest frame shown at that time. ``transform`` maps each kept
    RGB frame (H, W, 3) uint8 to what is stored (e.g. the CAVP resize), so long or large
    videos never sit in memory at full size.

    Returns SampledVideo with frames stacked (len(times_s), ...) and the exact stream
    duration (last frame time + one frame duration).
    """
    times = np.asarray(list(times_s), dtype=np.float64)
    if times.size and np.any(np.diff(times) < 0):
        raise ValueError("times_s must be ascending")
    container = _open(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate) if stream.average_rate else 0.0
    out = [None] * len(times)
    next_idx = 0
    prev_rgb = None
    first_t = None
    last_t = None
    width = height = 0
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            if first_t is None:
                first_t = t
            t -= first_t  # times are relative to the first frame
            # Every requested time before this frame's time is shown by the previous frame.
            while next_idx < len(times) and times[next_idx] < t and prev_rgb is not None:
                out[next_idx] = prev_rgb
                next_idx += 1
            last_t = t
            if next_idx < len(times) or prev_rgb is None:
                rgb = frame.to_ndarray(format="rgb24")
                height, width = rgb.shape[:2]
                prev_rgb = transform(rgb) if transform is not None else rgb
                while next_idx < len(times) and times[next_idx] <= t:
                    out[next_idx] = prev_rgb
                    next_idx += 1
                if progress is not None:
                    progress(t)
            else:
                width, height = frame.width, frame.height
    except VideoError:
        raise
    except Exception as error:  # noqa: BLE001
        if last_t is None:
            raise VideoError(f"{path}: cannot decode video ({type(error).__name__}: {error}); "
                             "the file is corrupt or uses an unsupported codec.") from None
        log.warning("%s: decoding stopped at %.2f s (%s); using the frames read so far", path, last_t, error)
    finally:
        container.close()
    if last_t is None:
        raise VideoError(f"{path}: no decodable video frames; the file is corrupt or empty.")
    frame_dur = 1.0 / fps if fps > 0 else 0.0
    duration = last_t + frame_dur
    while next_idx < len(times):  # times past the last frame keep showing it
        out[next_idx] = prev_rgb
        next_idx += 1
    frames = np.stack(out) if out else np.zeros((0, height, width, 3), np.uint8)
    return SampledVideo(frames=frames, times_s=times, duration_s=duration, fps=fps, width=width, height=height)


def stack_snapshots(frames: np.ndarray, subframes: int) -> np.ndarray:
    """Snapshots (N * K, C, S, S), frame-major and oldest first -> visual frames (N, K * C, S, S)
    (``WindowGeometry.subframes``; a trailing incomplete frame is dropped). K = 1: unchanged."""
    if subframes == 1:
        return frames
    n = frames.shape[0] // subframes
    return np.ascontiguousarray(frames[:n * subframes].reshape(n, subframes * frames.shape[1], *frames.shape[2:]))


def write_wav(path: os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono/stereo WAV written atomically (temp file, then rename)."""
    import wave

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    data = (pcm * 32767.0).round().astype("<i2").tobytes()
    tmp = path.with_name(path.name + ".tmp")
    with wave.open(str(tmp), "wb") as wf:
        wf.setnchannels(channels)
        wf.setsampwidth(2)
        wf.setframerate(int(sample_rate))
        wf.writeframes(data)
    os.replace(tmp, path)


def mux_audio(video_path: os.PathLike, audio: np.ndarray, sample_rate: int, out_path: os.PathLike) -> None:
    """Write a copy of ``video_path`` whose audio track is ``audio`` (mono float32 at ``sample_rate``).

    The video packets are copied when the output container accepts them, else re-encoded
    to H.264. Audio is AAC. The result is written to a temp file and renamed.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.stem + ".tmp" + out_path.suffix)
    try:
        _mux(video_path, audio, sample_rate, tmp, copy_video=True)
    except Exception as error:  # noqa: BLE001
        log.info("stream copy into %s failed (%s); re-encoding the video to H.264", out_path.suffix, error)
        _mux(video_path, audio, sample_rate, tmp, copy_video=False)
    os.replace(tmp, out_path)


def _mux(video_path, audio, sample_rate, out_path, copy_video: bool) -> None:
    import av

    src = _open(video_path)
    try:
        vin = src.streams.video[0]
        with av.open(str(out_path), "w") as dst:
            if copy_video:
                vout = dst.add_stream_from_template(vin)
            else:
                rate = vin.average_rate or Fraction(25)
                vout = dst.add_stream("libx264", rate=rate)
                vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
            aout = dst.add_stream("aac", rate=int(sample_rate), layout="mono")
            if copy_video:
                for packet in src.demux(vin):
                    if packet.dts is None:
                        continue
                    packet.stream = vout
                    dst.mux(packet)
            else:
                for frame in src.decode(vin):
                    frame = frame.reformat(format="yuv420p")
                    frame.pts = None
                    for packet in vout.encode(frame):
                        dst.mux(packet)
                for packet in vout.encode():
                    dst.mux(packet)
            _encode_audio(dst, aout, audio, sample_rate)
    finally:
        src.close()


def _encode_audio(dst, aout, audio: np.ndarray, sample_rate: int, block: int = 1024) -> None:
    import av

    pcm = np.ascontiguousarray(np.clip(np.asarray(audio, np.float32).reshape(-1), -1, 1))
    for start in range(0, len(pcm), block):
        chunk = pcm[start:start + block].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate = int(sample_rate)
        frame.pts = start
        frame.time_base = Fraction(1, int(sample_rate))
        for packet in aout.encode(frame):
            dst.mux(packet)
    for packet in aout.encode():
        dst.mux(packet)
