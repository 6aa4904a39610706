"""torch.compile of the streaming generator (frieren.compile): same audio as eager, bad modes
refused, a failing compiler falls back to eager with one warning, the engine's warm-up compiles
every batch size for the sessions' span. Most tests use torch.compile's "eager" backend (dynamo's
tracing and guards, no C compiler); one runs the real inductor backend on one part."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from frieren.compile import (COMPILE_MODES, CompiledStages, GuardedCompiled, batch_bucket, batch_buckets,
                             check_compile_mode)
from frieren.config import VocoderConfig, get_preset
from frieren.stack import FrierenStack
from frieren.streaming import BatchAudio, StreamingGenerator, WindowJob


@pytest.fixture(scope="module")
def stack():
    torch.manual_seed(0)
    return FrierenStack(get_preset("tiny")).eval()


@pytest.fixture(scope="module")
def bigvgan_stack():
    """The tiny preset with a small BigVGAN (hop 256) instead of Griffin-Lim."""
    voc = VocoderConfig(upsample_rates=(4, 4, 4, 4), upsample_kernel_sizes=(8, 8, 8, 8), upsample_initial_channel=32,
                        resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),))
    torch.manual_seed(1)
    return FrierenStack(dataclasses.replace(get_preset("tiny"), vocoder=voc)).eval()


def _jobs(stack, n, seed=0, spans=None):
    g = stack.preset.geometry
    S = stack.preset.cavp.image_size
    C = stack.preset.estimator.in_channels
    gen = torch.Generator().manual_seed(seed)
    hop = g.samples_per_frame
    spans = spans or [(g.window_samples - hop - 256, hop + 256)]
    return [WindowJob(frames=torch.rand(g.frames_per_window, 3, S, S, generator=gen),
                      noise=torch.randn(C, g.latent_frames, generator=gen),
                      emit_start=spans[i % len(spans)][0], emit_length=spans[i % len(spans)][1]) for i in range(n)]


def _same_audio(a, b):
    assert len(a.audio) == len(b.audio)
    for x, y in zip(a.audio, b.audio):
        assert x.shape == y.shape and torch.equal(x, y), (x - y).abs().max()


# ---------------------------------------------------------------------- modes and buckets
def test_bad_mode_is_a_value_error_naming_the_choices(stack):
    with pytest.raises(ValueError, match="reduce-overhead"):
        StreamingGenerator(stack, compile="fast")
    with pytest.raises(ValueError, match="max-autotune"):
        check_compile_mode("O3")
    from stream.engine import Engine
    with pytest.raises(ValueError, match="unknown compile mode"):
        Engine(stack, compile="bogus")
    assert all(check_compile_mode(m) == m for m in COMPILE_MODES) and check_compile_mode(None) is None


def test_cli_choices_match_the_library():
    from stream.cli import COMPILE_MODES as CLI_MODES
    assert CLI_MODES == COMPILE_MODES


def test_batch_buckets():
    assert [batch_bucket(n) for n in (1, 2, 3, 4, 5, 31, 32, 33)] == [1, 2, 4, 4, 8, 32, 32, 64]
    assert batch_buckets(1) == (1,) and batch_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert batch_buckets(5) == (1, 2, 4, 8)


# ---------------------------------------------------------------------- compiled == eager
def test_compiled_output_equals_eager_and_shares_weights(stack):
    eager = StreamingGenerator(stack)
    comp = StreamingGenerator(stack, compile="reduce-overhead", compile_backend="eager")
    assert comp.stages.compiled_parts == ("cavp", "estimator", "vae_decode")   # Griffin-Lim stays eager
    # 3 windows (padded to 4), two emitted spans (two vocoder groups).
    g = stack.preset.geometry
    jobs = _jobs(stack, 3, spans=[(g.window_samples - 4096 - 256, 4096 + 256), (0, 1000)])
    ref = eager.run(jobs)
    for _ in range(2):
        _same_audio(comp.run(jobs), ref)
    assert comp.stages.failures == {}
    assert comp.stack is stack and comp.stages.stack is stack          # no copies of the model
    assert comp.padded_batch(3) == 4 and eager.padded_batch(3) == 3


def test_bigvgan_vocoder_is_compiled_too(bigvgan_stack):
    eager = StreamingGenerator(bigvgan_stack)
    comp = StreamingGenerator(bigvgan_stack, compile="default", compile_backend="eager")
    assert comp.stages.compiled_parts == ("cavp", "estimator", "vae_decode", "vocoder")
    jobs = _jobs(bigvgan_stack, 2, seed=1)
    _same_audio(comp.run(jobs), eager.run(jobs))
    assert comp.stages.failures == {}


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler for inductor")
def test_inductor_backend_matches_eager(stack):
    """The real default backend (inductor, C++ on CPU) on one part: ~12 s with a warm cache, ~40 s cold."""
    cs = CompiledStages(stack, "default", parts=("vae_decode",))
    g = stack.preset.geometry
    latent = torch.randn(1, stack.preset.estimator.in_channels, g.latent_frames,
                         generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        got, want = cs.decode(latent), stack.decode(latent)
    assert cs.compiled_parts == ("vae_decode",) and cs.failures == {}
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- fallback
def test_failing_compiler_falls_back_to_eager_with_one_warning(stack, monkeypatch, caplog):
    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
        return run
    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = StreamingGenerator(stack)
    comp = StreamingGenerator(stack, compile="default")
    jobs = _jobs(stack, 2, seed=3)
    with caplog.at_level(logging.WARNING, logger="frieren.compile"):
        _same_audio(comp.run(jobs), eager.run(jobs))
        _same_audio(comp.run(jobs), eager.run(jobs))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(r.getMessage().split(" failed for ")[1].split(" ")[0] for r in warnings) == \
        ["cavp", "estimator", "vae_decode"], [r.getMessage() for r in warnings]   # once per part, not per call
    assert all("eagerly" in r.getMessage() and "No working C++ compiler" in r.getMessage() for r in warnings)
    assert comp.stages.compiled_parts == () and set(comp.stages.failures) == {"cavp", "estimator", "vae_decode"}


def test_input_errors_propagate_and_keep_the_compiled_path():
    def bad(x):
        raise ValueError("bad shape")
    part = GuardedCompiled("estimator", eager=bad, compiled=bad, mode="default")
    with pytest.raises(ValueError, match="bad shape"):
        part(1)
    assert part.active and part.error is None
    ok = GuardedCompiled("vae_decode", eager=lambda x: x + 1, compiled=lambda x: torch.ones(1) * x, mode="default",
                         clone_outputs=True)
    assert torch.equal(ok(torch.tensor([2.0])), torch.tensor([2.0])) and ok.active


# ---------------------------------------------------------------------- engine warm-up
def test_warmup_compiles_every_batch_size_with_the_sessions_span(stack):
    from stream.engine import Engine, emit_span
    from stream.session import SessionConfig

    gen = StreamingGenerator(stack, compile="default", compile_backend="eager")
    seen = []

    def run(jobs):   # records instead of computing
        seen.append((len(jobs), jobs[0].emit_start, jobs[0].emit_length))
        return BatchAudio(audio=[torch.zeros(j.emit_length) for j in jobs])
    gen.run = run
    g = stack.preset.geometry
    cfg = SessionConfig(hop_samples=2 * g.samples_per_frame, crossfade_samples=256)
    engine = Engine(generator=gen, max_batch=3)
    engine.start(cfg)
    engine.stop()
    span = emit_span(g, cfg)
    assert span == (g.window_samples - 2 * g.samples_per_frame - 256, 2 * g.samples_per_frame + 256)
    assert sorted(set(seen)) == [(1, *span), (2, *span), (4, *span)]
    assert len(seen) == 3 * 3          # each size at least 3 times (compile, CUDA graph warm-up, record)


@pytest.mark.parametrize("lookahead, crossfade", [(0, 256), (1, 256), (0, 0)])
def test_emit_span_is_what_sessions_submit(stack, lookahead, crossfade):
    from stream.engine import Engine, emit_span
    from stream.messages import Frame
    from stream.session import SessionConfig
    from stream.sources.base import Source

    g = stack.preset.geometry
    S = stack.preset.cavp.image_size
    tb = Fraction(g.samples_per_frame, g.sample_rate)
    rgb = np.zeros((S, S, 3), np.uint8)
    frames = [Frame(pts=j, time_base=tb, rgb=rgb, capture_ns=time.monotonic_ns())
              for j in range(g.frames_per_window + 2)]

    class ListSource(Source):
        realtime = False

        def iter_frames(self, stop=None):
            yield from frames

    gen = StreamingGenerator(stack)
    seen = set()
    real_run = gen.run
    gen.run = lambda jobs: (seen.update((j.emit_start, j.emit_length) for j in jobs), real_run(jobs))[1]
    cfg = SessionConfig(hop_samples=g.samples_per_frame, lookahead_frames=lookahead, crossfade_samples=crossfade)
    engine = Engine(generator=gen, warmup=False)
    h = engine.add_session(ListSource("list"), [], cfg)
    assert h.done.wait(60)
    engine.stop()
    assert seen == {emit_span(g, cfg)}


def test_channels_last_frames_reuse_the_compiled_code(stack):
    """Camera frames arrive channels-last; compiled code is specialised on strides, so the
    generator makes inputs contiguous instead of compiling again on the first real tick."""
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    gen = StreamingGenerator(stack, compile="default", compile_backend=counter)
    jobs = _jobs(stack, 1, seed=4)
    ref = gen.run(jobs)
    assert counter.frame_count == 3                 # cavp, estimator, vae_decode
    cl = [dataclasses.replace(j, frames=j.frames.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)) for j in jobs]
    assert not cl[0].frames.is_contiguous()
    _same_audio(gen.run(cl), ref)
    assert counter.frame_count == 3
