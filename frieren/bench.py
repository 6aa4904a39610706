"""Per-stage timing of one model window (``frieren bench``).

Times are medians over ``repeats`` calls after one warm-up call; on CUDA each call is
synchronised. These are benchmarks (numbers to read and compare as ratios within one
run), never pass/fail tests.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch


@dataclass(frozen=True)
class StageReport:
    preset: str
    device: str
    threads: int
    window_s: float
    stages_s: Dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        keys = ("cavp", "cond_encoder", "estimator_step_cfg", "vae_decode", "vocoder_window")
        return sum(self.stages_s[k] for k in keys if k in self.stages_s)

    def as_dict(self) -> dict:
        return {"preset": self.preset, "device": self.device, "threads": self.threads,
                "window_s": self.window_s, "stages_s": self.stages_s, "total_one_step_s": self.total_s,
                "rtf_one_step": self.total_s / self.window_s}

    def as_text(self) -> str:
        lines = [f"preset {self.preset} on {self.device} ({self.threads} threads), window {self.window_s:.3f} s"]
        for name, sec in self.stages_s.items():
            lines.append(f"  {name:<24} {sec * 1000:10.2f} ms")
        lines.append(f"  {'total (1 step, CFG)':<24} {self.total_s * 1000:10.2f} ms   RTF {self.total_s / self.window_s:.3f}")
        return "\n".join(lines)


def _time(fn: Callable[[], object], repeats: int, cuda: bool) -> float:
    def once() -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


@torch.inference_mode()
def run_stage_benchmark(bundle: Optional[str] = None, *, preset: Optional[str] = None, random_init: bool = False,
                        device: str = "cpu", repeats: int = 5, threads: Optional[int] = None) -> StageReport:
    from frieren.bundles import load_model

    if threads:
        torch.set_num_threads(threads)
    stack, _ = load_model(bundle, preset=preset, random_init=random_init, device=device)
    p = stack.preset
    g = p.geometry
    cuda = torch.device(device).type == "cuda"
    S = p.cavp.image_size
    frames = torch.rand(1, g.frames_per_window, 3, S, S, device=device)
    x = torch.randn(1, p.estimator.in_channels, g.latent_frames, device=device)
    feats = stack.features(frames)
    cond = stack.encode_condition(feats)
    null = stack.null_condition(g.frames_per_window)
    t = torch.zeros(1, dtype=torch.long, device=device)
    x2, t2, c2 = torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, cond])
    mel = stack.decode(x)
    mel_per_frame = g.latents_per_frame * g.mel_per_latent
    T = mel.shape[-1]
    stages = {
        "cavp": _time(lambda: stack.features(frames), repeats, cuda),
        "cond_encoder": _time(lambda: stack.encode_condition(feats), repeats, cuda),
        "estimator_step": _time(lambda: stack.estimator(x, t, context=cond), repeats, cuda),
        "estimator_step_cfg": _time(lambda: stack.estimator(x2, t2, context=c2), repeats, cuda),
        "vae_decode": _time(lambda: stack.decode(x), repeats, cuda),
        "vocoder_window": _time(lambda: stack.vocode(mel), repeats, cuda),
        "vocoder_hop": _time(lambda: stack.vocode_span(mel, T - mel_per_frame, T), repeats, cuda),
    }
    return StageReport(preset=p.name, device=str(device), threads=torch.get_num_threads(),
                       window_s=g.window_samples / g.sample_rate, stages_s=stages)
