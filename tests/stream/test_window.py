"""FrameWindow: audio-clock sampling, padding, hops, lookahead, newest-wins, memory."""
from fractions import Fraction

import numpy as np
import pytest

from frieren.config import WindowGeometry, get_preset
from stream.messages import Frame
from stream.window import MIN_DEFAULT_HOP_S, FrameWindow, default_hop_samples

# A fixed small geometry (the FrameWindow logic, not a preset, is under test): 16 frames of
# 2048 samples @ 16 kHz, so the default hop is one frame (128 ms).
SMALL = WindowGeometry(frames_per_window=16, latents_per_frame=4)
OFFICIAL = WindowGeometry()                  # 32 frames x 4096 samples
IMG = np.zeros((2, 2, 3), np.uint8)


def frame(pts, tb, capture_ns=None):
    return Frame(pts=pts, time_base=tb, rgb=IMG, capture_ns=pts if capture_ns is None else capture_ns)


def feed(fw, pts_list, tb, **kw):
    windows = []
    for p in pts_list:
        fw.push(frame(p, tb))
        windows += fw.due_windows(**kw)
    return windows


def nearest_earlier(times, tau):
    earlier = [t for t in times if t <= tau]
    return max(earlier) if earlier else min(times)


@pytest.mark.parametrize("geometry", [SMALL, OFFICIAL], ids=["small", "official"])
@pytest.mark.parametrize("tb,step,count", [
    (Fraction(1, 30), 1, 200),               # 30 fps
    (Fraction(1, 30000), 1001, 200),         # 29.97 fps
    (Fraction(1, 1000), 100, 60),            # 10 fps: slower than the visual rate
    (Fraction(1, 90000), 1500, 300),         # 60 fps, MPEG-TS clock
])
def test_frames_sampled_on_audio_clock(geometry, tb, step, count):
    fw = FrameWindow(geometry)
    pts = [i * step for i in range(count)]
    windows = feed(fw, pts, tb)
    sr, p = geometry.sample_rate, geometry.samples_per_frame
    times = {q: (q * tb * sr).__floor__() for q in pts}
    assert windows, "no window became due"
    for w in windows:
        assert isinstance(w.start_sample, int) and isinstance(w.emit_start, int)
        assert len(w.frames) == geometry.frames_per_window
        for j, f in enumerate(w.frames):
            tau = w.start_sample + j * p
            assert w.frame_sample_times[j] == tau
            assert times[f.pts] == nearest_earlier(list(times.values()), tau)
        # the window ends at a captured frame: its last instant is not after the newest frame seen
    assert [w.index for w in windows] == list(range(len(windows)))
    # every window whose last instant is covered by the captured frames was produced
    assert fw.num_due() == 0
    assert windows[-1].start_sample + (geometry.frames_per_window - 1) * p <= times[pts[-1]]


def test_startup_padding_repeats_first_frame():
    fw = FrameWindow(SMALL)  # hop = one frame period, lookahead 0
    tb = Fraction(1, 16000)  # one pts per sample: frames exactly on the audio grid
    P, N = SMALL.samples_per_frame, SMALL.frames_per_window
    windows = feed(fw, [1000 + k * P for k in range(N + 3)], tb)
    assert len(windows) == N + 3
    for k, w in enumerate(windows):
        assert w.num_padded == max(N - 1 - k, 0)
        pad = w.frames[:w.num_padded]
        assert all(f.pts == 1000 for f in pad)
        # the real part is frames 0..k in order, the newest last
        real = [f.pts for f in w.frames[w.num_padded:]]
        assert real == [1000 + i * P for i in range(max(0, k - N + 1), k + 1)]
        assert w.frames[-1].pts == 1000 + k * P
    assert fw.counters["padded_windows"] == N - 1


def test_emitted_spans_are_contiguous_and_start_at_newest_frame():
    fw = FrameWindow(SMALL)
    tb = Fraction(1, 16000)
    P = SMALL.samples_per_frame
    windows = feed(fw, [k * P for k in range(40)], tb)
    for k, w in enumerate(windows):
        assert w.emit_start == k * P and w.emit_samples == P
        assert w.emit_end == SMALL.window_samples + w.start_sample  # newest hop = window end
        assert w.emit_start == fw.frame_sample(w.frames[-1])       # starts at the newest frame
        assert w.emit_mel_span == (SMALL.mel_frames - P // SMALL.hop_length, SMALL.mel_frames)
        assert w.capture_ns == w.frames[-1].capture_ns


@pytest.mark.parametrize("lookahead", [1, 2, 3])
def test_lookahead_shifts_emitted_span_back(lookahead):
    tb = Fraction(1, 16000)
    P, W = SMALL.samples_per_frame, SMALL.window_samples
    base = feed(FrameWindow(SMALL), [k * P for k in range(30)], tb)
    fw = FrameWindow(SMALL, lookahead_frames=lookahead)
    ahead = feed(fw, [k * P for k in range(30)], tb)
    # same emitted timeline (contiguous from the first frame), fewer windows due yet
    assert [w.emit_start for w in ahead] == [k * P for k in range(len(ahead))]
    assert len(ahead) == len(base) - lookahead
    for w in ahead:
        assert w.emit_offset == W - P - lookahead * P
        assert w.emit_end == w.end_sample - lookahead * P
        # the model has seen `lookahead` frames after the emitted span's own frame
        assert fw.frame_sample(w.frames[-1]) == w.emit_start + lookahead * P
        hop_mels = P // SMALL.hop_length
        assert w.emit_mel_span == (SMALL.mel_frames - (lookahead + 1) * hop_mels, SMALL.mel_frames - lookahead * hop_mels)
    # the emitted audio for a given instant comes `lookahead` frames later than without look-ahead
    for k, w in enumerate(ahead):
        assert w.frames[-1].pts == base[k + lookahead].frames[-1].pts


def test_hop_of_one_latent_and_latent_indices():
    L, P = SMALL.samples_per_latent, SMALL.samples_per_frame
    fw = FrameWindow(SMALL, hop_samples=L)
    tb = Fraction(1, 30)
    windows = feed(fw, list(range(120)), tb)
    assert len(windows) > 20
    for a, b in zip(windows, windows[1:]):
        assert b.emit_start - a.emit_start == L
        assert b.start_sample - a.start_sample == L
        assert b.latent_start - a.latent_start == 1
        # a given absolute sample maps to the same latent index in both windows
        s = b.start_sample
        assert a.latent_start + (s - a.start_sample) // L == b.latent_start + (s - b.start_sample) // L
    assert windows[0].latent_start == 0
    assert windows[0].emit_latent_span == (SMALL.latent_frames - 1, SMALL.latent_frames)


def test_hop_equal_window_tiles_exactly():
    W = SMALL.window_samples
    fw = FrameWindow(SMALL, hop_samples=W)
    windows = feed(fw, list(range(0, 30 * 10)), Fraction(1, 30))  # 10 s
    assert len(windows) >= 4
    for k, w in enumerate(windows):
        assert w.start_sample == w.emit_start == k * W and w.emit_samples == W
        assert w.num_padded == 0 and w.emit_mel_span == (0, SMALL.mel_frames)


def test_hop_validation_messages():
    L = SMALL.samples_per_latent
    with pytest.raises(ValueError, match=r"multiple of one latent frame \(samples_per_latent=512"):
        FrameWindow(SMALL, hop_samples=L + 1)
    with pytest.raises(ValueError, match="positive multiple"):
        FrameWindow(SMALL, hop_samples=0)
    with pytest.raises(ValueError, match="exceeds the window"):
        FrameWindow(SMALL, hop_samples=SMALL.window_samples + L)
    with pytest.raises(ValueError, match="lookahead_frames=16"):
        FrameWindow(SMALL, lookahead_frames=16)
    with pytest.raises(ValueError, match=">= 0"):
        FrameWindow(SMALL, lookahead_frames=-1)
    FrameWindow(SMALL, hop_samples=3 * L)  # multiples that do not divide a frame are fine
    FrameWindow(SMALL, lookahead_frames=15)


def test_newest_wins_skips_and_counts():
    P = SMALL.samples_per_frame
    fw = FrameWindow(SMALL)
    tb = Fraction(1, 16000)
    fw.push(frame(0, tb))
    assert len(fw.due_windows()) == 1
    fw.push(frame(10 * P, tb))  # a burst/gap: windows 1..10 are due at once
    assert fw.num_due() == 10
    got = fw.due_windows(max_windows=2)
    assert [w.index for w in got] == [9, 10]
    assert fw.counters["skipped_windows"] == 8
    assert got[-1].emit_start == 10 * P  # still on the same grid; the gap is visible in emit_start


def test_clock_driven_windows_hold_last_frame():
    P = SMALL.samples_per_frame
    fw = FrameWindow(SMALL)
    tb = Fraction(1, 16000)
    fw.push(frame(0, tb))
    fw.push(frame(P, tb))
    assert len(fw.due_windows()) == 2
    assert fw.due_windows() == []
    later = fw.due_windows(until_sample=5 * P)  # camera stalled, the audio clock moves on
    assert [w.emit_start for w in later] == [2 * P, 3 * P, 4 * P, 5 * P]
    assert all(w.frames[-1].pts == P for w in later)
    assert fw.next_window(until_sample=5 * P) is None


def test_out_of_order_and_duplicate_frames():
    fw = FrameWindow(SMALL)
    tb = Fraction(1, 30)
    assert fw.push(frame(5, tb))
    assert not fw.push(frame(4, tb))
    assert fw.push(frame(5, tb, capture_ns=99))
    assert fw.counters["out_of_order"] == 1 and fw.counters["replaced"] == 1
    assert fw.due_windows()[0].frames[-1].capture_ns == 99


def test_memory_stays_bounded():
    fw = FrameWindow(OFFICIAL, hop_samples=OFFICIAL.samples_per_latent)
    tb = Fraction(1, 60)
    n_windows = 0
    peak = 0
    for i in range(3000):  # 50 s at 60 fps
        fw.push(frame(i, tb))
        n_windows += len(fw.due_windows())
        peak = max(peak, len(fw))
    assert n_windows > 1000
    assert peak <= OFFICIAL.window_samples // OFFICIAL.samples_per_latent + 4
    assert fw.counters["evicted"] == 0


def test_capture_ns_extrapolates_to_emit_start():
    # hop of one latent (P = 4 L): a frame at t makes the hops up to t + P due (its own
    # frame period, A = 0), and each hop's capture_ns is the frame's plus the sample offset.
    L, P = SMALL.samples_per_latent, SMALL.samples_per_frame
    fw = FrameWindow(SMALL, hop_samples=L)
    tb = Fraction(1, 16000)
    fw.push(Frame(pts=0, time_base=tb, rgb=IMG, capture_ns=5_000_000_000))
    ws = fw.due_windows()
    assert [w.emit_start for w in ws] == [0, L, 2 * L, 3 * L]
    assert [w.capture_ns for w in ws] == [5_000_000_000 + k * L * 10**9 // 16000 for k in range(4)]
    fw.push(Frame(pts=P + L, time_base=tb, rgb=IMG, capture_ns=6_000_000_000))
    ws = fw.due_windows()
    assert [w.emit_start for w in ws] == [4 * L, 5 * L, 6 * L, 7 * L, 8 * L]
    # 4L = P lies before the new frame (at 5L): extrapolated from the frame at 0
    assert ws[0].capture_ns == 5_000_000_000 + P * 10**9 // 16000
    assert ws[1].capture_ns == 6_000_000_000
    assert ws[2].capture_ns == 6_000_000_000 + L * 10**9 // 16000
    # the slot of the newest frame: sampled at instant emit_start + L - P
    assert ws[-1].frames[-1].capture_ns == 6_000_000_000 and ws[0].frames[-1].capture_ns == 5_000_000_000


def test_reset_restarts_grid():
    fw = FrameWindow(SMALL)
    feed(fw, range(10), Fraction(1, 30))
    fw.reset()
    assert len(fw) == 0 and fw.num_due() == 0
    w = feed(fw, [1000], Fraction(1, 30))
    assert w[0].emit_start == 1000 * 16000 // 30 and w[0].index == 0


@pytest.mark.parametrize("name", ["tiny", "frieren-16k", "frieren-16k-1step"])
def test_default_hop_is_whole_frames_of_at_least_128_ms(name):
    g = get_preset(name).geometry
    hop = default_hop_samples(g)
    assert hop % g.samples_per_frame == 0 and hop <= g.window_samples
    assert hop >= MIN_DEFAULT_HOP_S * g.sample_rate or hop == g.window_samples
    # the fewest whole frames: one frame less would be shorter than the minimum
    assert hop == g.samples_per_frame or (hop - g.samples_per_frame) < MIN_DEFAULT_HOP_S * g.sample_rate
    assert FrameWindow(g).hop_samples == hop


def test_default_hop_of_short_frames_spans_several():
    g = WindowGeometry(frames_per_window=64, latents_per_frame=1)   # 32 ms frames
    assert default_hop_samples(g) == 4 * g.samples_per_frame
