"""Typed configuration and the ground-truth event record of the synthetic Foley world.

Coordinates: the physical world is measured in metres, ``world_width_m`` wide, with the
floor at ``y = 0`` and ``y`` pointing up. Its size never depends on the render size, so the
same seed gives the same physics, events and audio at any ``width x height``.
Times are derived from integer counters (frame index, physics tick, sample index); the
float ``time_s`` of an event is for convenience, ``sample`` is the exact timestamp.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Tuple

EVENT_KINDS = ("impact", "continuous_start", "continuous_stop")


@dataclass(frozen=True)
class SceneConfig:
    """Everything that shapes a synthetic scene. Frozen; build once at an entry point."""

    width: int = 160
    height: int = 120
    fps: int = 30
    sample_rate: int = 16000
    duration_s: float = 8.0
    max_objects: int = 6                      # 0 disables rigid bodies (fan-only scenes)
    materials: Tuple[str, ...] = ("wood", "metal", "glass", "rubber", "ceramic")
    silence_probability: float = 0.35         # chance that a quiet segment follows an active one
    fan_probability: float = 0.5              # chance that a scene has a visible fan
    spawn_rate_hz: float = 1.2                # mean object drops per second while active
    shake: float = 0.01                       # max camera shake, fraction of the width
    image_noise: float = 0.02                 # max sensor noise std, fraction of full scale
    audio_noise: float = 0.001                # audio sensor noise std (the silence floor)
    world_width_m: float = 4.0
    floor_fraction: float = 0.15              # share of the image height showing the floor
    physics_substeps: int = 8                 # physics ticks per camera frame

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ValueError(f"SceneConfig: frame size {self.width}x{self.height} is too small (min 16x16)")
        if not isinstance(self.fps, int) or self.fps <= 0:
            raise ValueError(f"SceneConfig: fps must be a positive int, got {self.fps!r}")
        if self.sample_rate <= 0 or self.duration_s <= 0:
            raise ValueError("SceneConfig: sample_rate and duration_s must be positive")
        if self.max_objects < 0:
            raise ValueError("SceneConfig: max_objects must be >= 0")
        if self.max_objects > 0 and not self.materials:
            raise ValueError("SceneConfig: materials is empty but max_objects > 0")
        for p in ("silence_probability", "fan_probability"):
            if not 0.0 <= getattr(self, p) <= 1.0:
                raise ValueError(f"SceneConfig: {p} must lie in [0, 1]")
        if self.physics_substeps < 1:
            raise ValueError("SceneConfig: physics_substeps must be >= 1")
        object.__setattr__(self, "materials", tuple(self.materials))

    # -- derived timing (integer arithmetic, no accumulated floats) -------------------
    @property
    def num_frames(self) -> int:
        """Frames of a clip: frame i is at i / fps for every i / fps < duration_s."""
        return max(1, -(-Fraction(self.duration_s).limit_denominator(10**6) * self.fps // 1))

    @property
    def num_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    def frame_start_sample(self, frame_index: int) -> int:
        """First audio sample of frame ``frame_index``'s period ``[i/fps, (i+1)/fps)``."""
        return (frame_index * self.sample_rate) // self.fps

    @property
    def world_height_m(self) -> float:
        """Visible height above the floor, in metres."""
        return self.world_width_m * self.height * (1.0 - self.floor_fraction) / self.width

    @property
    def tick_rate(self) -> int:
        return self.fps * self.physics_substeps

    def to_dict(self) -> dict:
        from dataclasses import asdict
        d = asdict(self)
        d["materials"] = list(self.materials)
        return d


@dataclass(frozen=True)
class Event:
    """One ground-truth sound event.

    kind: 'impact' | 'continuous_start' | 'continuous_stop'.
    source: 'floor' | 'wall' | 'object' (impacts: what was hit), 'slide' | 'fan' (continuous).
    material: the sounding material ('fan' for the fan).
    strength: 0..1 loudness scale (impacts: from the relative normal speed).
    speed: relative normal speed in m/s (impacts) or the tracked speed (continuous).
    position: (x, y) in normalised image coordinates, x right, y down, before camera shake.
    """

    time_s: float
    sample: int
    kind: str
    source: str
    material: str
    strength: float
    speed: float
    position: Tuple[float, float]
    object_id: int = -1
    other_material: Optional[str] = None

    def to_dict(self) -> dict:
        return {
            "time_s": self.time_s, "sample": self.sample, "kind": self.kind, "source": self.source,
            "material": self.material, "strength": self.strength, "speed": self.speed,
            "position": list(self.position), "object_id": self.object_id,
            "other_material": self.other_material,
        }

    @staticmethod
    def from_dict(d: dict) -> "Event":
        return Event(**{**d, "position": tuple(d["position"])})
