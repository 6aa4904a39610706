"""FileSource on real containers made with PyAV; WebcamSource retry logic with a fake camera."""
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from stream.queues import Closed
from stream.sources import FileSource, SourceError, WebcamSource


def make_video(path, seconds=2.0, fps=30, width=320, height=240, codec="libx264"):
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(round(seconds * fps))):
            img = np.zeros((height, width, 3), np.uint8)
            img[:, :, 0] = (i * 4) % 256
            img[: height // 2, : width // 2, 1] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("vid") / "clip.mp4")


def test_file_source_reads_all_frames(mp4):
    src = FileSource(mp4, realtime=False)
    assert (src.width, src.height) == (320, 240) and src.average_rate == 30
    frames = list(src.iter_frames())
    assert len(frames) == 60
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert all(isinstance(f.pts, int) and isinstance(f.time_base, Fraction) for f in frames)
    assert frames[-1].time - frames[0].time == Fraction(59, 30)
    assert frames[0].rgb.shape == (240, 320, 3) and frames[0].rgb.dtype == np.uint8
    assert abs(int(frames[10].rgb[200, 300, 0]) - 40) < 8  # the red ramp survived the codec
    assert frames[0].source_id == "clip.mp4"


def test_file_source_realtime_pacing(tmp_path):
    path = make_video(tmp_path / "short.mp4", seconds=0.5, fps=30)
    frames = list(FileSource(path, realtime=True).iter_frames())
    assert len(frames) == 15
    # frames are never released before their presentation time (later is allowed: slow machine)
    t0, p0 = frames[0].capture_ns, frames[0].time
    for f in frames[1:]:
        assert f.capture_ns - t0 >= int((f.time - p0) * 10**9) - 1_000_000


def test_file_source_loop_keeps_pts_increasing(tmp_path):
    path = make_video(tmp_path / "loop.mkv", seconds=0.4, fps=25, width=64, height=48, codec="mpeg4")
    src = FileSource(path, realtime=False, loop=True, size=(32, 24))
    frames = []
    for f in src.iter_frames():
        frames.append(f)
        if len(frames) == 35:
            break
    secs = [f.time for f in frames]
    steps = {b - a for a, b in zip(secs, secs[1:])}
    assert steps == {Fraction(1, 25)}  # seamless across the loop points, no jump back
    assert src.loops_completed == 3
    assert frames[0].rgb.shape == (24, 32, 3)


def test_threaded_mode_and_stop(mp4):
    src = FileSource(mp4, realtime=False, queue_size=100).start()
    got = []
    while True:
        try:
            got.append(src.get(timeout=10))
        except Closed:
            break
    assert len(got) == 60 and src.error is None
    slow = FileSource(mp4, realtime=True).start()
    slow.get(timeout=10)
    slow.stop()
    assert not slow.running


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 1000, "truncated"])
def test_unreadable_file_names_the_path(tmp_path, mp4, content):
    bad = tmp_path / "bad_video.mp4"
    bad.write_bytes(mp4.read_bytes()[: len(mp4.read_bytes()) // 2] if content == "truncated" else content)
    with pytest.raises(SourceError, match="bad_video.mp4"):
        FileSource(bad)


def test_missing_file_and_audio_only_file(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FileSource(tmp_path / "nope.mp4")
    wav = tmp_path / "audio_only.wav"
    import wave
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)
    with pytest.raises(SourceError, match="no video stream"):
        FileSource(wav)


class FakeCamera:
    """Scripted cv2.VideoCapture stand-in. script: list of 'open-fail' | int (frames, then a read failure)."""

    def __init__(self, script):
        self.script = list(script)
        self.opened = []

    def __call__(self, device):
        step = self.script.pop(0) if self.script else 10**9
        cam = self

        class Cap:
            def __init__(self):
                self.left = 0 if step == "open-fail" else step

            def isOpened(self):
                return step != "open-fail"

            def set(self, prop, value):
                return True

            def read(self):
                if self.left <= 0:
                    return False, None
                self.left -= 1
                return True, np.full((8, 8, 3), (10, 20, 30), np.uint8)  # BGR

            def release(self):
                pass

        self.opened.append(step)
        return Cap()


def test_webcam_survives_disconnects_and_resumes():
    fake = FakeCamera(["open-fail", 3, "open-fail", "open-fail", 4])
    src = WebcamSource(0, capture_factory=fake, backoff_initial=0.001, backoff_max=0.004, size=(4, 4))
    stop = threading.Event()
    frames = []
    for f in src.iter_frames(stop):
        frames.append(f)
        if len(frames) == 10:
            stop.set()
    assert len(frames) == 10
    assert src.open_failures == 3 and src.disconnects == 2 and src.opens == 3
    pts = [f.pts for f in frames]
    assert pts[0] == 0 and all(b > a for a, b in zip(pts, pts[1:]))
    assert frames[0].time_base == Fraction(1, 10**9)
    assert frames[0].rgb.shape == (4, 4, 3) and tuple(frames[0].rgb[0, 0]) == (30, 20, 10)  # RGB


def test_webcam_missing_device_retries_until_stopped():
    src = WebcamSource("/dev/video_does_not_exist", backoff_initial=0.01, backoff_max=0.02).start()
    deadline = time.monotonic() + 20
    while src.open_failures < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    src.stop()
    assert not src.running and src.error is None and src.frames_produced == 0
