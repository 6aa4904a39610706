"""The synthetic Foley world: determinism, timing, audible events, materials, fan, silence."""
from __future__ import annotations

import numpy as np
import pytest

from frieren.synth import (EVENT_KINDS, FAN, MATERIALS, LiveScene, Scene, SceneConfig, Synth,
                           impact_waveform, render_clip)

SR = 16000
SMALL = dict(width=64, height=48)


def _level(event, material: str) -> float:
    return MATERIALS[material].gain * event.strength ** 0.8


def _unmasked(events, k: int, factor: float = 3.0) -> bool:
    """True when impact k is expected to be ``factor`` x louder than what still sounds then."""
    e = events[k]
    residual, running = 0.0, set()
    for p in events[:k]:
        if p.kind == "impact":
            for mat in (p.material, p.other_material):
                if mat in MATERIALS:
                    m = MATERIALS[mat]
                    tau = max(m.decays_s + (m.click_decay_s,)) * 1.2
                    residual += _level(p, mat) * np.exp(-(e.sample - p.sample) / SR / tau)
        elif p.kind == "continuous_start":
            running.add((p.source, p.object_id))
        else:
            running.discard((p.source, p.object_id))
    residual += sum(FAN.gain * 1.6 if src == "fan" else 0.05 for src, _ in running)
    return _level(e, e.material) > factor * residual


def _busy_mask(clip) -> np.ndarray:
    """Samples where the ground truth says something sounds (impact tails, running sources)."""
    n = len(clip.audio)
    busy = np.zeros(n, bool)
    running = {}
    for e in clip.events:
        if e.kind == "impact":
            tail = max(MATERIALS[m].tail_s for m in (e.material, e.other_material) if m in MATERIALS)
            busy[e.sample:e.sample + int(tail * SR) + 2] = True
        elif e.kind == "continuous_start":
            running[(e.source, e.object_id)] = e.sample
        else:
            busy[running.pop((e.source, e.object_id)):e.sample + 2] = True
    for start in running.values():
        busy[start:] = True
    return busy


def _dominant_hz(x: np.ndarray, sr: int = SR, lo: float = 20.0) -> float:
    n = 1 << 16
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec[f < lo] = 0
    return float(f[spec.argmax()])


def test_deterministic_per_seed_and_independent_of_frame_size():
    cfg = SceneConfig(duration_s=2.0, **SMALL)
    a, b, c = render_clip(5, cfg), render_clip(5, cfg), render_clip(6, cfg)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert a.events == b.events
    assert not np.array_equal(a.audio, c.audio)
    big = render_clip(5, SceneConfig(duration_s=2.0, width=96, height=72))
    assert np.array_equal(a.audio, big.audio) and a.events == big.events   # render rng is separate


@pytest.mark.parametrize("fps,duration", [(30, 2.0), (25, 1.5), (30, 1.01)])
def test_lengths_and_frame_times(fps, duration):
    cfg = SceneConfig(fps=fps, duration_s=duration, **SMALL)
    clip = render_clip(1, cfg)
    n = int(np.ceil(duration * fps - 1e-9))
    assert clip.frames.shape == (n, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (int(round(duration * SR)),) and clip.audio.dtype == np.float32
    np.testing.assert_allclose(clip.frame_times, np.arange(n) / fps)
    assert np.all(np.abs(clip.audio) <= 1.0)


def test_events_well_formed():
    clip = render_clip(2, SceneConfig(duration_s=6.0, fan_probability=1.0, **SMALL))
    times = [e.time_s for e in clip.events]
    assert times == sorted(times) and len(clip.events) > 5
    opened = set()
    for e in clip.events:
        assert e.kind in EVENT_KINDS
        assert e.sample == int(round(e.time_s * SR))
        assert 0.0 <= e.strength <= 1.0
        assert -0.1 <= e.position[0] <= 1.1 and -0.5 <= e.position[1] <= 1.0
        key = (e.source, e.object_id)
        if e.kind == "continuous_start":
            assert key not in opened
            opened.add(key)
        elif e.kind == "continuous_stop":
            assert key in opened
            opened.remove(key)
    kinds = {(e.kind, e.source) for e in clip.events}
    assert ("impact", "floor") in kinds and ("continuous_start", "fan") in kinds


def test_impact_onsets_at_event_samples():
    """Every impact that is not masked by louder earlier sounds starts at its event sample:
    energy in the 1 ms after the sample dwarfs the energy that ends 1 ms before it."""
    checked = 0
    for seed in range(4):
        clip = render_clip(seed, SceneConfig(duration_s=8.0, **SMALL))
        x = clip.audio.astype(np.float64)
        events = list(clip.events)
        for k, e in enumerate(events):
            if e.kind != "impact" or not _unmasked(events, k) or not 96 <= e.sample <= len(x) - 32:
                continue
            before = np.mean(x[e.sample - 16 - 64:e.sample - 16] ** 2)
            after = np.mean(x[e.sample:e.sample + 16] ** 2)
            assert after > 10 * before, (seed, e, after, before)
            checked += 1
    assert checked >= 20


def test_materials_sound_different():
    centroid, dominant = {}, {}
    n = 1 << 16
    f = np.fft.rfftfreq(n, 1.0 / SR)
    for name, m in MATERIALS.items():
        w = impact_waveform(m, 1.0, m.ref_radius_m, SR, np.random.default_rng(0))
        spec = np.abs(np.fft.rfft(w, n)) ** 2
        centroid[name] = float((spec * f).sum() / spec.sum())
        dominant[name] = float(f[spec.argmax()])
    assert centroid["rubber"] < centroid["wood"] < centroid["metal"] < centroid["glass"]
    doms = sorted(dominant.values())
    assert all(b > 1.2 * a for a, b in zip(doms, doms[1:])), dominant
    # metal rings longest, rubber is the shortest thud
    assert max(MATERIALS, key=lambda k: MATERIALS[k].tail_s) == "metal"
    assert min(MATERIALS, key=lambda k: MATERIALS[k].tail_s) == "rubber"


def test_loudness_follows_impact_strength():
    m = MATERIALS["wood"]
    rms = [np.sqrt(np.mean(impact_waveform(m, s, m.ref_radius_m, SR, np.random.default_rng(1)) ** 2))
           for s in (0.1, 0.3, 0.6, 1.0)]
    assert all(b > a * 1.3 for a, b in zip(rms, rms[1:])), rms


def test_fan_hum_follows_speed():
    cfg = SceneConfig(audio_noise=0.0, **SMALL)
    for rev_s in (1.2, 2.0, 3.4):
        synth = Synth(cfg, np.random.default_rng(0))
        controls = [(p, {("fan", 0): ("fan", rev_s)}) for p in range(0, SR + 1, 200)]
        audio = synth.render(0, SR, controls)
        assert abs(_dominant_hz(audio[4000:]) - FAN.hz_per_rev * rev_s) < 2.0
    # in a scene: the hum tracks the speed the frames show, window by window
    cfg = SceneConfig(duration_s=8.0, max_objects=0, fan_probability=1.0, silence_probability=0.0,
                      audio_noise=0.0, **SMALL)
    clip = render_clip(3, cfg)
    hop = cfg.fps // 3
    compared = 0
    for i in range(0, len(clip.fan_speed) - hop, hop):
        speeds = clip.fan_speed[i:i + hop]
        if speeds.min() < 0.8 or np.ptp(speeds) > 0.05:
            continue
        seg = clip.audio[cfg.frame_start_sample(i):cfg.frame_start_sample(i + hop)]
        assert abs(_dominant_hz(seg) / (FAN.hz_per_rev * speeds.mean()) - 1) < 0.05
        compared += 1
    assert compared >= 3


def test_fan_blades_turn_at_the_hummed_speed():
    cfg = SceneConfig(duration_s=6.0, max_objects=0, fan_probability=1.0, silence_probability=0.0,
                      shake=0.0, image_noise=0.0, width=160, height=120)
    scene = Scene(3, cfg)
    fan = scene.world.fan
    cx, cy = scene.renderer.to_pixel(fan.x, fan.y)
    r = fan.radius * scene.renderer.scale
    yy, xx = np.mgrid[0:cfg.height, 0:cfg.width]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 < (0.9 * r) ** 2
    angles, speeds = [], []
    for _ in range(cfg.num_frames):
        step = scene.advance()
        rgb = step.rgb.astype(int)
        marked = inside & (rgb[..., 0] > rgb[..., 2] + 60) & (rgb[..., 0] > 90)
        assert marked.sum() > 3
        angles.append(np.arctan2(yy[marked].mean() - cy, xx[marked].mean() - cx))
        speeds.append(step.fan_speed)
    seen = np.abs(np.diff(np.unwrap(angles))) * cfg.fps / (2 * np.pi)   # rev/s seen on screen
    true = np.asarray(speeds[:-1])
    moving = true > 1.0
    assert moving.sum() > 20
    assert np.median(np.abs(seen[moving] - true[moving]) / true[moving]) < 0.1


def test_silence_is_at_the_noise_floor():
    cfg = SceneConfig(duration_s=10.0, silence_probability=1.0, **SMALL)
    quiet_seconds = 0.0
    for seed in range(3):
        clip = render_clip(seed, cfg)
        quiet = ~_busy_mask(clip)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            if b - a < SR // 4:
                continue
            rms = np.sqrt(np.mean(clip.audio[a:b].astype(np.float64) ** 2))
            assert rms < 1.1 * cfg.audio_noise, (seed, a / SR, b / SR, rms)
            quiet_seconds += (b - a) / SR
    assert quiet_seconds > 3.0


def test_live_scene_matches_clip_and_stays_bounded():
    cfg = SceneConfig(max_objects=3, spawn_rate_hz=6.0, silence_probability=0.0, duration_s=100 / 30,
                      **SMALL)
    live = LiveScene(4, cfg)
    frames, audio, events, counts = [], [], [], []
    for _, (idx, rgb, chunk, new) in zip(range(100), live):
        frames.append(rgb)
        audio.append(chunk)
        events.extend(new)
        counts.append(live.num_objects)
        assert len(live.scene.synth._pending) < 3 * SR
    assert max(counts) == 3 and idx == 99
    clip = render_clip(4, cfg)
    assert np.array_equal(np.stack(frames), clip.frames)
    assert np.array_equal(np.concatenate(audio)[:len(clip.audio)], clip.audio)
    assert tuple(e for e in events if e.sample < len(clip.audio)) == clip.events
