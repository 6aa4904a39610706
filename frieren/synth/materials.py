"""The material table: how each material looks, moves and sounds.

Sound is modal synthesis: a material has a base frequency, partial ratios, amplitudes and
decay times (seconds to fall by 1/e); smaller objects sound higher. A short noise burst
shaped around ``click_hz`` marks the strike. Rubber is mostly a low-pass thud.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

# Decay to -60 dB takes ln(1000) ~ 6.91 time constants.
_DECAY_60DB = math.log(1000.0)
# Bigger objects ring longer, at most by this factor (see Material.decay_scale).
MAX_DECAY_SCALE = 1.2


@dataclass(frozen=True)
class Material:
    name: str
    # look
    color: Tuple[int, int, int]            # RGB
    shape: str                             # 'square' | 'circle' | 'triangle' | 'ball' | 'hexagon'
    texture: str                           # 'grain' | 'shiny' | 'clear' | 'matte' | 'glazed'
    # physics
    density: float                         # kg / m^2 (2-D)
    restitution: float
    friction: float                        # sliding friction coefficient (rolling: rolling_resistance)
    rolling_resistance: float              # m/s^2 deceleration when rolling (balls only)
    radius_m: Tuple[float, float]          # spawn radius range
    # impact sound
    base_hz: float                         # fundamental at the reference radius
    ratios: Tuple[float, ...]
    amps: Tuple[float, ...]
    decays_s: Tuple[float, ...]
    click_hz: float                        # centre of the strike noise burst
    click_gain: float
    click_decay_s: float
    gain: float
    # friction (slide / roll) sound
    slide_hz: float
    slide_bandwidth: float                 # relative bandwidth of the friction noise
    slide_gain: float
    ref_radius_m: float = 0.22

    def __post_init__(self) -> None:
        if not (len(self.ratios) == len(self.amps) == len(self.decays_s)):
            raise ValueError(f"Material {self.name}: ratios, amps and decays_s differ in length")

    @property
    def rolls(self) -> bool:
        return self.shape in ("ball", "circle")

    def pitch_scale(self, radius_m: float) -> float:
        """Frequency multiplier for an object of this radius (smaller sounds higher)."""
        return float(min(1.35, max(0.75, math.sqrt(self.ref_radius_m / radius_m))))

    def decay_scale(self, radius_m: float) -> float:
        return float(min(MAX_DECAY_SCALE, max(0.8, math.sqrt(radius_m / self.ref_radius_m))))

    @property
    def tail_s(self) -> float:
        """Longest time an impact of this material is audible (to -60 dB), in seconds."""
        longest = max(max(self.decays_s), self.click_decay_s) * MAX_DECAY_SCALE
        return _DECAY_60DB * longest


MATERIALS: Dict[str, Material] = {
    m.name: m
    for m in (
        Material(
            name="wood", color=(140, 90, 45), shape="square", texture="grain",
            density=0.6, restitution=0.45, friction=0.45, rolling_resistance=0.0,
            radius_m=(0.16, 0.3),
            base_hz=380.0, ratios=(1.0, 2.15, 3.6, 5.1), amps=(1.0, 0.55, 0.3, 0.15),
            decays_s=(0.055, 0.04, 0.03, 0.02),
            click_hz=700.0, click_gain=0.6, click_decay_s=0.004, gain=0.55,
            slide_hz=500.0, slide_bandwidth=0.8, slide_gain=0.05,
        ),
        Material(
            name="metal", color=(165, 168, 178), shape="circle", texture="shiny",
            density=2.5, restitution=0.35, friction=0.3, rolling_resistance=0.8,
            radius_m=(0.14, 0.28),
            base_hz=1150.0, ratios=(1.0, 1.59, 2.14, 2.65, 3.16), amps=(1.0, 0.7, 0.5, 0.35, 0.25),
            decays_s=(0.32, 0.26, 0.2, 0.15, 0.12),
            click_hz=3000.0, click_gain=0.4, click_decay_s=0.002, gain=0.45,
            slide_hz=2500.0, slide_bandwidth=0.6, slide_gain=0.04,
        ),
        Material(
            name="glass", color=(120, 215, 230), shape="triangle", texture="clear",
            density=1.2, restitution=0.5, friction=0.2, rolling_resistance=0.0,
            radius_m=(0.14, 0.26),
            base_hz=2700.0, ratios=(1.0, 1.47, 2.09, 2.5), amps=(1.0, 0.6, 0.4, 0.25),
            decays_s=(0.16, 0.13, 0.1, 0.08),
            click_hz=4500.0, click_gain=0.4, click_decay_s=0.0015, gain=0.4,
            slide_hz=3800.0, slide_bandwidth=0.5, slide_gain=0.03,
        ),
        Material(
            name="rubber", color=(200, 40, 40), shape="ball", texture="matte",
            density=0.9, restitution=0.75, friction=0.8, rolling_resistance=1.2,
            radius_m=(0.14, 0.26),
            base_hz=110.0, ratios=(1.0, 1.5), amps=(1.0, 0.4),
            decays_s=(0.03, 0.02),
            click_hz=250.0, click_gain=0.5, click_decay_s=0.012, gain=0.5,
            slide_hz=160.0, slide_bandwidth=1.0, slide_gain=0.05,
        ),
        Material(
            name="ceramic", color=(236, 230, 212), shape="hexagon", texture="glazed",
            density=1.6, restitution=0.3, friction=0.35, rolling_resistance=0.0,
            radius_m=(0.14, 0.26),
            base_hz=1600.0, ratios=(1.0, 1.83, 2.9), amps=(1.0, 0.5, 0.3),
            decays_s=(0.09, 0.07, 0.05),
            click_hz=2400.0, click_gain=0.5, click_decay_s=0.002, gain=0.4,
            slide_hz=1600.0, slide_bandwidth=0.6, slide_gain=0.04,
        ),
    )
}


def get_material(name: str) -> Material:
    """Look a material up by name; fails loudly listing the known names."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise KeyError(f"unknown material {name!r}; known: {sorted(MATERIALS)}") from None


@dataclass(frozen=True)
class FanSound:
    """The fan: its hum follows the visible rotation speed (blade-pass harmonics)."""

    blades: int = 3
    hz_per_rev: float = 50.0               # hum fundamental per revolution per second
    harmonic_amps: Tuple[float, ...] = (1.0, 0.35, 0.18, 0.08)
    gain: float = 0.12
    max_rev_s: float = 4.0                 # keeps the blades readable at 25-30 fps
    noise_gain: float = 0.012
    noise_hz: float = 900.0


FAN = FanSound()
