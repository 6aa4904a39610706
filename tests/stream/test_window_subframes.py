"""FrameWindow with K snapshots per visual frame (``WindowGeometry.subframes``).

Snapshot k of visual frame j of a window starting at S is the nearest-earlier captured frame
at ``S + j * P + subframe_offsets[k]``; ``Window.frames`` is slot-major (N * K frames) and
``stack_rgb`` stacks each slot's snapshots on the channel axis (N, H, W, 3K).
"""
from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from frieren.config import WindowGeometry, get_preset, with_subframes
from stream.clock import samples_to_ns
from stream.messages import Frame
from stream.session import Session, SessionConfig
from test_engine import FrameListSource  # same-folder test module (pytest puts tests/stream on sys.path)
from stream.window import FrameWindow
from stream.worker import GenerationWorker

TINY = get_preset("tiny").geometry                  # 16 frames x 2048 samples, L = 512
OFFICIAL = WindowGeometry()                         # 32 frames x 4096 samples, L = 512
TB = Fraction(1, 16000)                             # pts in samples: frame time = pts exactly


def geom(base: WindowGeometry, k: int) -> WindowGeometry:
    return dataclasses.replace(base, subframes=k)


def frame(pts: int, rgb=None, capture_ns=None) -> Frame:
    rgb = np.full((2, 2, 3), pts % 251, np.uint8) if rgb is None else rgb
    return Frame(pts=int(pts), time_base=TB, rgb=rgb, capture_ns=pts if capture_ns is None else capture_ns)


def feed(fw: FrameWindow, times, **kw):
    windows = []
    for t in times:
        fw.push(frame(t))
        windows += fw.due_windows(**kw)
    return windows


def nearest_earlier(times, tau):
    """Index of the newest time <= tau; the first one when tau precedes them all (padding)."""
    return max(bisect.bisect_right(times, tau) - 1, 0)


def off_grid_times(fps: float, count: int, origin: int, grid: int, margin: int):
    """Frame times at ``fps`` on the 16 kHz clock, each non-first one nudged to lie at least
    ``margin`` samples from every sampling instant (``origin + m * grid``), so the
    nearest-earlier choice never hinges on a tie or a rounding."""
    times = [origin]
    for i in range(1, count):
        t = origin + round(i * 16000 / fps)
        r = (t - origin) % grid
        if r < margin:
            t += margin - r
        elif r > grid - margin:
            t -= r - (grid - margin)
        times.append(t)
    assert all(b - a > margin for a, b in zip(times, times[1:]))
    return times


# ---------------------------------------------------------------------- which frame each snapshot picks
def test_snapshots_hand_checked():
    g = geom(TINY, 4)                               # P = 2048, snapshots every 512 samples
    assert g.subframe_offsets == (-1536, -1024, -512, 0)
    fw = FrameWindow(g)                             # hop P, look-ahead 0: window k ends at k * P
    assert feed(fw, [0, 700, 1300]) and len(fw.due_windows()) == 0
    w1 = feed(fw, [2100])
    assert [w.index for w in w1] == [1]
    # the last visual frame of window 1 (instant 2048): snapshots at 512, 1024, 1536, 2048
    assert w1[0].snapshot_sample_times[-4:] == (512, 1024, 1536, 2048)
    assert [f.pts for f in w1[0].frames[-4:]] == [0, 700, 1300, 1300]
    assert [f.pts for f in w1[0].frames[-8:-4]] == [0, 0, 0, 0]       # instant 0: start-up padding
    assert w1[0].num_padded == 14
    w2 = feed(fw, [2600, 4000, 4200])
    assert [w.index for w in w2] == [2]
    assert [f.pts for f in w2[0].frames[-4:]] == [2100, 2600, 2600, 4000]   # 2560, 3072, 3584, 4096
    assert [f.pts for f in w2[0].frames[-8:-4]] == [0, 700, 1300, 1300]
    assert w2[0].num_padded == 13


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("fps", [30.0, 7.8])
@pytest.mark.parametrize("hop_frames,lookahead", [(1, 0), (1, 2), (2, 1)])
def test_snapshots_are_nearest_earlier(k, fps, hop_frames, lookahead):
    g = geom(TINY, k)
    P, N = g.samples_per_frame, g.frames_per_window
    fw = FrameWindow(g, hop_samples=hop_frames * P, lookahead_frames=lookahead)
    origin = 1000
    times = off_grid_times(fps, int(fps * 12), origin, fw.grid_step, margin=40)
    windows = feed(fw, times)
    assert len(windows) >= 12 * 16000 // (hop_frames * P) - N - lookahead - 2
    for w in windows:
        assert len(w.frames) == N * k and len(w.snapshot_sample_times) == N * k
        assert w.snapshot_sample_times[k - 1::k] == w.frame_sample_times
        for j in range(N):
            for s in range(k):
                tau = w.start_sample + j * P + g.subframe_offsets[s]
                assert w.snapshot_sample_times[j * k + s] == tau
                assert w.frames[j * k + s].pts == times[nearest_earlier(times, tau)], (w.index, j, s)
        assert w.num_padded == sum(t < origin for t in w.frame_sample_times)
    assert fw.counters["evicted"] == 0
    if fps < g.visual_fps:  # 7.8 fps: every captured frame fills about K consecutive snapshots
        late = windows[-1]
        runs = [len(list(grp)) for _, grp in itertools.groupby(f.pts for f in late.frames)]
        assert max(runs) <= k + 1 and np.mean(runs[1:-1]) > k - 1


@pytest.mark.parametrize("k", [2, 4])
def test_startup_padding_counts_visual_frames(k):
    g = geom(TINY, k)
    P, N = g.samples_per_frame, g.frames_per_window
    fw = FrameWindow(g)
    windows = feed(fw, [1000 + i * P for i in range(N + 3)])
    assert len(windows) == N + 3
    for i, w in enumerate(windows):
        assert w.num_padded == max(N - 1 - i, 0)
        for tau, f in zip(w.snapshot_sample_times, w.frames):
            if tau < 1000:
                assert f.pts == 1000            # before the first frame: the first frame
            else:
                assert f.pts == 1000 + ((tau - 1000) // P) * P
        # the first real slot (instant = the first frame) still has its earlier snapshots padded
        if w.num_padded:
            slot = w.frames[w.num_padded * k:(w.num_padded + 1) * k]
            assert all(f.pts == 1000 for f in slot)
    assert fw.counters["padded_windows"] == N - 1


# ---------------------------------------------------------------------- memory vs a brute-force reference
class _OldPrune(FrameWindow):
    """The K = 1 pruning rule: keep only what the next window's first *frame instant* needs."""

    def _prune_before(self, instant):
        super()._prune_before(instant - self.geometry.subframe_offsets[0])


class _OldGrid(FrameWindow):
    """The K = 1 grid step gcd(H, P) when dropping frames on push."""

    def push(self, frame):
        step, self.grid_step = self.grid_step, math.gcd(self.hop_samples, self.geometry.samples_per_frame)
        try:
            return super().push(frame)
        finally:
            self.grid_step = step


def _random_stream(rng, count):
    """Frame times with 30-ish fps jitter, bursts, gaps, duplicates and out-of-order frames."""
    t, out = 5000, []
    for _ in range(count):
        r = rng.random()
        if r < 0.05:
            step = int(rng.integers(1, 60))                 # burst
        elif r < 0.08:
            step = int(rng.integers(4000, 20000))           # camera stall
        elif r < 0.10:
            step = 0                                        # duplicate pts (replaces)
        elif r < 0.12:
            step = -int(rng.integers(1, 400))               # out of order (dropped)
        else:
            step = int(rng.integers(150, 1400))
        t_new = t + step
        out.append(t_new)
        t = max(t, t_new)
    return out


def _check_against_reference(fw, times, rng, windows_needed=200):
    """Push ``times``, pulling windows in varied ways; every window must equal the brute-force
    nearest-earlier choice over *all* frames accepted so far. Returns (mismatches, windows, peak)."""
    g = fw.geometry
    ref_t, ref_f = [], []
    mismatches, n_windows, peak = 0, 0, 0
    for i, t in enumerate(times):
        f = frame(t, capture_ns=10**9 + i)
        if fw.push(f):
            if ref_t and ref_t[-1] == t:
                ref_f[-1] = f
            else:
                ref_t.append(t)
                ref_f.append(f)
        r = rng.random()
        if r < 0.6:
            ws = fw.due_windows()
        elif r < 0.8:
            ws = fw.due_windows(max_windows=1)
        else:
            ws = fw.due_windows(until_sample=t + int(rng.integers(0, 3 * g.samples_per_frame)))
        peak = max(peak, len(fw))
        assert len(fw) <= fw.capacity
        for w in ws:
            n_windows += 1
            want = [ref_f[nearest_earlier(ref_t, tau)] for tau in w.snapshot_sample_times]
            mismatches += sum(a is not b for a, b in zip(w.frames, want))
            assert w.num_padded == sum(tau < ref_t[0] for tau in w.frame_sample_times)
            i_ref = nearest_earlier(ref_t, w.emit_start)
            assert w.capture_ns == ref_f[i_ref].capture_ns + _signed_ns(w.emit_start - ref_t[i_ref])
    assert n_windows >= windows_needed
    return mismatches, n_windows, peak


def _signed_ns(samples, sr=16000):
    return samples_to_ns(samples, sr) if samples >= 0 else -samples_to_ns(-samples, sr)


CASES = [  # (base geometry, K, hop in latents, look-ahead frames)
    (TINY, 2, 1, 0), (TINY, 2, 3, 1), (TINY, 2, 4, 0), (TINY, 2, 8, 3),
    (TINY, 4, 1, 0), (TINY, 4, 4, 2), (TINY, 4, 12, 1), (TINY, 4, 64, 0),
    (TINY, 8, 4, 0),                                       # P/K = 256 < one latent
    (OFFICIAL, 2, 8, 0), (OFFICIAL, 2, 12, 1), (OFFICIAL, 4, 8, 4), (OFFICIAL, 4, 24, 0),
    (TINY, 1, 4, 0), (TINY, 1, 3, 2),                      # K = 1: the old rule, unchanged
]


@pytest.mark.parametrize("base,k,hop_latents,lookahead", CASES,
                         ids=[f"N{b.frames_per_window}-K{k}-hop{h}L-A{a}" for b, k, h, a in CASES])
def test_pruning_never_drops_a_needed_frame(base, k, hop_latents, lookahead):
    g = geom(base, k)
    hop = hop_latents * g.samples_per_latent
    fw = FrameWindow(g, hop_samples=hop, lookahead_frames=lookahead)
    assert fw.grid_step == math.gcd(hop, g.samples_per_frame // k)
    rng = np.random.default_rng(hop_latents * 100 + k * 10 + lookahead)
    mismatches, n, peak = _check_against_reference(fw, _random_stream(rng, 4000), rng, windows_needed=50)
    assert mismatches == 0
    assert fw.counters["evicted"] == 0 and fw.counters["pruned"] > 0
    # memory stays bounded by the grid instants one window can reach (plus slack)
    reach = g.window_samples - g.subframe_offsets[0]
    assert peak <= reach // fw.grid_step + 2 + 32


@pytest.mark.parametrize("old", ["grid", "prune"])
def test_reference_catches_the_single_snapshot_rules(old):
    """The brute-force check has teeth: the K = 1 grid step gcd(H, P), or pruning up to the
    next window's first frame instant, loses snapshots that K = 4 windows need."""
    g = geom(TINY, 4)
    fw = (_OldPrune if old == "prune" else _OldGrid)(g, hop_samples=g.samples_per_frame)
    rng = np.random.default_rng(7)
    mismatches, _, _ = _check_against_reference(fw, _random_stream(rng, 2000), rng, windows_needed=20)
    assert mismatches > 0


def test_default_capacity_scales_with_the_snapshot_reach():
    for k in (1, 2, 4):
        g = geom(TINY, k)
        fw = FrameWindow(g, hop_samples=g.samples_per_frame)
        assert fw.grid_step == g.samples_per_frame // k
        assert fw.capacity == (g.window_samples + (k - 1) * g.samples_per_frame // k) // fw.grid_step + 34


# ---------------------------------------------------------------------- stack_rgb and K = 1
@pytest.mark.parametrize("k", [2, 4])
def test_stack_rgb_shape_and_channel_order(k):
    g = geom(TINY, k)
    N = g.frames_per_window
    fw = FrameWindow(g)
    rng = np.random.default_rng(k)
    windows = []
    for i in range(40):
        t = 700 * i + 11
        fw.push(frame(t, rgb=rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)))
        windows += fw.due_windows()
    w = windows[-1]
    x = w.stack_rgb()
    assert x.shape == (N, 5, 6, 3 * k) and x.dtype == np.uint8 and x.flags["C_CONTIGUOUS"]
    for j in range(N):
        for s in range(k):
            np.testing.assert_array_equal(x[j, :, :, 3 * s:3 * s + 3], w.frames[j * k + s].rgb)
    # distinct snapshots inside one slot (frames every 700 samples, snapshots every P/K <= 1024)
    assert len({id(f) for f in w.frames[-k:]}) > 1


def test_k1_is_the_single_frame_rule():
    g = TINY
    assert g.subframes == 1 and g.subframe_offsets == (0,)
    hop = g.samples_per_latent
    fw = FrameWindow(g, hop_samples=hop)
    assert fw.grid_step == math.gcd(hop, g.samples_per_frame)
    assert fw.capacity == g.window_samples // fw.grid_step + 2 + 32
    times = off_grid_times(30.0, 200, 0, fw.grid_step, margin=20)
    windows = feed(fw, times)
    for w in windows:
        assert len(w.frames) == g.frames_per_window
        assert w.snapshot_sample_times == w.frame_sample_times
        assert [f.pts for f in w.frames] == [times[nearest_earlier(times, t)] for t in w.frame_sample_times]
    x = windows[-1].stack_rgb()
    assert x.shape == (g.frames_per_window, 2, 2, 3)
    np.testing.assert_array_equal(x, np.stack([f.rgb for f in windows[-1].frames]))


# ---------------------------------------------------------------------- session job and worker warm-up
class _FakeGen:
    def __init__(self, geometry, image_size=8, noise_channels=4):
        self.geometry = geometry
        self.image_size = image_size
        self.noise_channels = noise_channels
        self.jobs = []

    def run(self, jobs):
        from frieren.streaming import BatchAudio
        self.jobs += list(jobs)
        return BatchAudio(audio=[torch.zeros(j.emit_length) for j in jobs], stage_s={})


class _CaptureWorker:
    def __init__(self, generator):
        self.generator = generator
        self.submitted = []

    def submit(self, session, window, job):
        self.submitted.append((window, job))

    def forget(self, session_id):
        pass


def test_session_job_stacks_snapshots_on_channels():
    k = 4
    g = geom(TINY, k)
    S = 8
    worker = _CaptureWorker(_FakeGen(g, image_size=S))
    session = Session(worker, lambda c: None, SessionConfig(seed=1))
    rng = np.random.default_rng(0)
    for i in range(30):
        session.push_frame(Frame(pts=i, time_base=Fraction(1, 30), capture_ns=time.monotonic_ns(),
                                 rgb=rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8)))
    assert worker.submitted
    w, job = worker.submitted[-1]
    assert tuple(job.frames.shape) == (g.frames_per_window, 3 * k, S, S)
    assert job.frames.dtype == torch.float32
    for j in range(g.frames_per_window):
        for s in range(k):
            want = torch.from_numpy(w.frames[j * k + s].rgb).permute(2, 0, 1).float() / 255.0
            torch.testing.assert_close(job.frames[j, 3 * s:3 * s + 3], want, rtol=0, atol=1e-7)


def test_worker_warmup_uses_3k_channels():
    g = geom(TINY, 4)
    gen = _FakeGen(g, image_size=8)
    GenerationWorker(gen).warmup(repeats=1)
    assert gen.jobs and tuple(gen.jobs[0].frames.shape) == (g.frames_per_window, 12, 8, 8)


# ---------------------------------------------------------------------- end to end (tiny, random weights)
def test_engine_end_to_end_with_four_snapshots():
    from frieren.stack import FrierenStack
    from stream.engine import CollectSink, Engine

    preset = with_subframes(get_preset("tiny"), 4)
    torch.manual_seed(0)
    stack = FrierenStack(preset).eval()
    g, S = preset.geometry, preset.cavp.image_size
    rng = np.random.default_rng(1)
    frames = [Frame(pts=i, time_base=Fraction(1, 30), capture_ns=time.monotonic_ns(),
                    rgb=rng.integers(0, 256, size=(S + 16, S + 16, 3), dtype=np.uint8))  # resized by the session
              for i in range(60)]                                                      # 2 s at 30 fps
    engine = Engine(stack, warmup=True)            # the warm-up runs (N, 12, S, S) windows too
    col = CollectSink()
    h = engine.add_session(FrameListSource(frames), [col], SessionConfig(seed=3))
    assert h.done.wait(120)
    engine.stop()
    assert h.error is None
    assert engine.worker.errors == 0
    hop = g.samples_per_frame
    assert len(col.chunks) >= 60 * 16000 // 30 // hop - 1
    starts = [c.start_sample for c in col.chunks]
    ends = [c.end_sample for c in col.chunks]
    assert starts[0] == 0 and starts[1:] == ends[:-1]
    assert all(np.isfinite(c.pcm).all() for c in col.chunks)


def test_streaming_equals_offline_with_four_snapshots():
    """One whole-window hop (K = 4): the stream's (N, 12, S, S) window is the offline/training
    layout (snapshot instants ``snapshot_instants_s``, clamped to 0, frame-major), so the
    audio matches OfflineGenerator on the same snapshots."""
    from frieren.pipeline import GenerateOptions, OfflineGenerator
    from frieren.stack import FrierenStack
    from stream.engine import CollectSink, Engine

    k = 4
    preset = with_subframes(get_preset("tiny"), k)
    torch.manual_seed(0)
    stack = FrierenStack(preset).eval()
    g, S = preset.geometry, preset.cavp.image_size
    step = g.samples_per_frame // k                 # one captured frame per snapshot instant
    count = (g.frames_per_window - 1) * k + 1       # up to the window's last instant
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, size=(count, S, S, 3), dtype=np.uint8)
    tb = Fraction(step, g.sample_rate)
    frames = [Frame(pts=m, time_base=tb, rgb=rgb[m], capture_ns=time.monotonic_ns()) for m in range(count)]
    seed = 5
    layouts, features = [], stack.features
    # The offline layout in memory too: a channels-last window gave other float rounding on an
    # AVX2 CPU, which Griffin-Lim amplified past this test's tolerance.
    stack.features = lambda x: (layouts.append(x.is_contiguous()), features(x))[1]
    engine = Engine(stack, warmup=False)
    col = CollectSink()
    h = engine.add_session(FrameListSource(frames), [col],
                           SessionConfig(hop_samples=g.window_samples, crossfade_samples=0, seed=seed))
    assert h.done.wait(60)
    engine.stop()
    assert len(col.chunks) == 1 and col.chunks[0].start_sample == 0
    assert col.chunks[0].num_samples == g.window_samples
    assert layouts == [True]

    idx = np.rint(g.snapshot_instants_s(g.frames_per_window) * g.sample_rate / step).astype(int)  # (N, K)
    x = torch.from_numpy(rgb[idx.reshape(-1)]).permute(0, 3, 1, 2).float().div(255.0)          # (N*K, 3, S, S)
    x = x.reshape(g.frames_per_window, 3 * k, S, S)                                            # frame-major
    off = OfflineGenerator(stack).generate_frames(x, g.window_samples, GenerateOptions(seed=seed, progress=False))
    np.testing.assert_allclose(np.clip(col.chunks[0].pcm, -1, 1), off.audio, atol=1e-5, rtol=0)
