"""Audio of the synthetic world: modal impacts plus continuous sources, rendered chunk by chunk.

``Synth`` is a streaming renderer with explicit state: impacts are added as they happen
(their waveform starts exactly at ``event.sample``) into a pending buffer, and
``render(start, stop, controls)`` emits the samples ``[start, stop)`` with the continuous
sources (fan hum, friction noise) driven by speed control points. Chunks must be rendered
contiguously; rendering a clip in one call or frame by frame gives the same samples.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from .config import Event, SceneConfig
from .materials import FAN, MATERIALS, Material, get_material

log = logging.getLogger(__name__)

LOOP_LEN = 1 << 15            # friction / airflow noise loops (periodic, so seamless)
END_FADE_S = 0.005
SLIDE_FLOOR = 0.1             # m/s below which friction is silent
SLIDE_FULL = 2.5              # m/s at which friction reaches full loudness

ControlKey = Tuple[str, int]


def band_noise(n: int, centre_hz: float, rel_bw: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Periodic noise of ``n`` samples with a log-Gaussian band around ``centre_hz``; RMS 1."""
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    logf = np.log2(np.maximum(freqs, 1.0) / centre_hz)
    mag = np.exp(-0.5 * (logf / max(rel_bw, 1e-3)) ** 2)
    mag[0] = 0.0
    spec = mag * np.exp(1j * rng.uniform(0.0, 2.0 * np.pi, freqs.shape))
    x = np.fft.irfft(spec, n)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def impact_waveform(material: Material, strength: float, radius_m: float, sr: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Mono float32 waveform of one impact; sample 0 is the moment of contact.

    Length is ``material.tail_s`` (the -60 dB point) with a short fade at the end.
    Loudness grows with ``strength`` (0..1); pitch rises as ``radius_m`` shrinks.
    """
    n = max(1, int(math.ceil(material.tail_s * sr)))
    t = np.arange(n, dtype=np.float64) / sr
    f0 = material.base_hz * material.pitch_scale(radius_m) * (1.0 + rng.uniform(-0.03, 0.03))
    ds = material.decay_scale(radius_m)
    out = np.zeros(n, dtype=np.float64)
    for ratio, amp, decay in zip(material.ratios, material.amps, material.decays_s):
        f = f0 * ratio * (1.0 + rng.uniform(-0.01, 0.01))
        if f >= 0.45 * sr:
            continue
        out += amp * np.exp(-t / (decay * ds)) * np.sin(2.0 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    out /= sum(material.amps)
    m = min(n, max(64, int(material.click_decay_s * 10 * sr)))
    click = band_noise(1 << int(math.ceil(math.log2(m))), material.click_hz, 0.7, sr, rng)[:m]
    out[:m] += material.click_gain * click * np.exp(-t[:m] / material.click_decay_s)
    out *= material.gain * float(np.clip(strength, 0.0, 1.0)) ** 0.8
    fade = min(n, int(END_FADE_S * sr))
    if fade > 1:
        out[-fade:] *= np.linspace(1.0, 0.0, fade)
    return out.astype(np.float32)


def soft_limit(x: np.ndarray, knee: float = 0.8) -> np.ndarray:
    """Identity below ``knee``, smooth saturation towards 1 above it (stateless)."""
    a = np.abs(x)
    over = a > knee
    if not over.any():
        return x
    y = x.copy()
    head = 1.0 - knee
    y[over] = np.sign(x[over]) * (knee + head * np.tanh((a[over] - knee) / head))
    return y


class Synth:
    """Streaming audio renderer. State: the next sample, pending impact tails, oscillator phases."""

    def __init__(self, config: SceneConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.sr = config.sample_rate
        self.rng = rng
        self.pos = 0                                   # next sample to emit
        self._pending = np.zeros(0, dtype=np.float32)  # audio from self.pos onwards
        self._loops = {name: band_noise(LOOP_LEN, m.slide_hz, m.slide_bandwidth, self.sr, rng)
                       for name, m in MATERIALS.items()}
        self._fan_loop = band_noise(LOOP_LEN, FAN.noise_hz, 1.2, self.sr, rng)
        self._phase: Dict[ControlKey, float] = {}
        self._last: Dict[ControlKey, Tuple[str, float]] = {}
        self._last_pos: Optional[float] = None

    def reset(self) -> None:
        """Back to sample 0 with nothing pending (the generator continues, it is not reseeded)."""
        self.__init__(self.config, self.rng)

    def add_impact(self, event: Event, radius_m: Optional[float] = None) -> None:
        """Schedule the sound of an impact event (and of the other body, if any)."""
        if event.kind != "impact":
            return
        mat = get_material(event.material)
        wave = impact_waveform(mat, event.strength, radius_m or mat.ref_radius_m, self.sr, self.rng)
        if event.other_material in MATERIALS:
            other = get_material(event.other_material)
            w2 = impact_waveform(other, event.strength * 0.7, other.ref_radius_m, self.sr, self.rng)
            wave = _mix(wave, w2)
        self.add_wave(event.sample, wave)

    def add_wave(self, start_sample: int, wave: np.ndarray) -> None:
        offset = start_sample - self.pos
        if offset < 0:
            log.debug("impact %d samples late; dropping its head", -offset)
            wave, offset = wave[-offset:], 0
        end = offset + len(wave)
        if end > len(self._pending):
            self._pending = np.concatenate([self._pending, np.zeros(end - len(self._pending), np.float32)])
        self._pending[offset:end] += wave

    def render(self, start: int, stop: int,
               controls: List[Tuple[float, Dict[ControlKey, Tuple[str, float]]]]) -> np.ndarray:
        """Emit samples ``[start, stop)`` as float32 ``(stop - start,)``.

        controls: ``(sample_position, continuous_state)`` points in time order, where the
        state maps ``(source, id)`` to ``(material, speed)`` (see ``World.continuous_state``);
        speeds are linearly interpolated between points and a missing key means speed 0.
        """
        assert start == self.pos, f"Synth.render: expected chunk to start at {self.pos}, got {start}"
        n = stop - start
        assert n >= 0, f"Synth.render: empty range [{start}, {stop})"
        out = np.zeros(n, dtype=np.float64)
        k = min(n, len(self._pending))
        out[:k] = self._pending[:k]
        self._pending = self._pending[k:]
        if controls:
            self._continuous(out, start, controls)
        out = soft_limit(out)
        if self.config.audio_noise > 0:
            out += self.rng.normal(0.0, self.config.audio_noise, n)
        self.pos = stop
        return out.astype(np.float32)

    def _continuous(self, out: np.ndarray, start: int, controls) -> None:
        n = len(out)
        positions = np.array([p for p, _ in controls], dtype=np.float64)
        keys = set(self._last)
        for _, state in controls:
            keys.update(state)
        first = self._last_pos if self._last_pos is not None else positions[0]
        xs = np.concatenate([[first], positions])
        samples = np.arange(start, start + n, dtype=np.float64)
        for key in sorted(keys):
            material, v0 = self._last.get(key, (None, 0.0))
            vals = [v0]
            for _, state in controls:
                if key in state:
                    material, v = state[key]
                else:
                    v = 0.0
                vals.append(v)
            speed = np.interp(samples, xs, np.asarray(vals))
            if key[0] == "fan":
                out += self._fan(key, speed, start)
            else:
                out += self._slide(key, material, speed, start)
            if vals[-1] > 0.0:
                self._last[key] = (material, vals[-1])
            else:
                self._last.pop(key, None)
                self._phase.pop(key, None)
        self._last_pos = float(positions[-1])

    def _fan(self, key: ControlKey, rev_s: np.ndarray, start: int) -> np.ndarray:
        freq = FAN.hz_per_rev * rev_s
        phase = self._phase.get(key, 0.0) + 2.0 * np.pi * np.cumsum(freq) / self.sr
        self._phase[key] = float(phase[-1] % (2.0 * np.pi))
        level = np.clip(rev_s / FAN.max_rev_s, 0.0, 1.0)
        hum = np.zeros_like(phase)
        for h, amp in enumerate(FAN.harmonic_amps, start=1):
            hum += amp * np.sin(h * phase) * (h * freq < 0.45 * self.sr)
        idx = np.arange(start, start + len(rev_s)) % LOOP_LEN
        return FAN.gain * level ** 1.5 * hum + FAN.noise_gain * level ** 2 * self._fan_loop[idx]

    def _slide(self, key: ControlKey, material: str, speed: np.ndarray, start: int) -> np.ndarray:
        m = get_material(material)
        level = np.clip((speed - SLIDE_FLOOR) / (SLIDE_FULL - SLIDE_FLOOR), 0.0, 1.0)
        idx = (np.arange(start, start + len(speed)) + key[1] * 7919) % LOOP_LEN
        return m.slide_gain * level * self._loops[material][idx]


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(b) > len(a):
        a, b = b, a
    a = a.copy()
    a[: len(b)] += b
    return a
