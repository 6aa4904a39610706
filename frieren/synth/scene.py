"""A scene: the director (what happens when), the world, the renderer and the synth, advanced
one camera frame at a time. ``render_clip`` and ``LiveScene`` both drive ``Scene.advance``,
so offline clips and the endless live source share one code path.

Frame ``i`` shows the state at ``i / fps``; its audio covers samples
``[i * sr // fps, (i + 1) * sr // fps)`` and its events are those in that period.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .config import Event, SceneConfig
from .materials import FAN, get_material
from .physics import Fan, World
from .render import Renderer
from .sound import Synth

log = logging.getLogger(__name__)

ACTIVE_S = (2.0, 5.0)         # active segment length range
QUIET_S = (1.5, 4.0)          # quiet segment length range (no spawns, fan off)
REST_BEFORE_REMOVAL_S = 3.0   # a body must lie still this long before it may be removed


class Director:
    """Decides spawns and fan targets over time; draws its schedule lazily (endless-safe)."""

    def __init__(self, config: SceneConfig, world: World, rng: np.random.Generator) -> None:
        self.config, self.world, self.rng = config, world, rng
        self.materials = [get_material(m) for m in config.materials]
        quiet_first = rng.random() < config.silence_probability
        self.active = not quiet_first
        self.segment_end = rng.uniform(0.5, 2.0) if quiet_first else rng.uniform(*ACTIVE_S)
        self.next_spawn = rng.uniform(0.05, 0.6)
        self.fan_change = 0.0
        if self.active:
            self._start_fan_segment(0.0)

    def _start_fan_segment(self, now: float) -> None:
        if self.world.fan is None:
            return
        fan = self.world.fan
        fan.target = self.rng.uniform(1.0, FAN.max_rev_s) if self.rng.random() < 0.75 else 0.0
        self.fan_change = now + self.rng.uniform(1.0, 3.0)

    def update(self) -> List[Event]:
        """Called before every physics tick; returns events caused by removals."""
        now = self.world.time_s
        events: List[Event] = []
        if now >= self.segment_end:
            if self.active and self.rng.random() < self.config.silence_probability:
                self.active = False
                self.segment_end = now + self.rng.uniform(*QUIET_S)
                if self.world.fan is not None:
                    self.world.fan.target = 0.0
            else:
                self.active = True
                self.segment_end = now + self.rng.uniform(*ACTIVE_S)
                self.next_spawn = max(self.next_spawn, now + self.rng.uniform(0.05, 0.5))
                self._start_fan_segment(now)
        if not self.active:
            return events
        if self.world.fan is not None and now >= self.fan_change:
            self._start_fan_segment(now)
        if self.config.max_objects > 0 and now >= self.next_spawn:
            events += self._spawn()
            self.next_spawn = now + self.rng.exponential(1.0 / self.config.spawn_rate_hz)
        return events

    def _spawn(self) -> List[Event]:
        world, rng = self.world, self.rng
        events: List[Event] = []
        if len(world.bodies) >= self.config.max_objects:
            still = world.resting(int(REST_BEFORE_REMOVAL_S * self.config.tick_rate))
            if not still:
                return events
            events += world.remove_body(min(still, key=lambda b: b.id))   # the oldest resting body
        mat = self.materials[int(rng.integers(len(self.materials)))]
        radius = rng.uniform(*mat.radius_m)
        top = world.height - radius
        for _ in range(5):
            x = rng.uniform(radius, world.width - radius)
            y = top - rng.uniform(0.0, 0.35) * world.height
            if all((b.x - x) ** 2 + (b.y - y) ** 2 > (b.radius + radius) ** 2 for b in world.bodies):
                break
        else:
            return events
        vx = rng.normal(0.0, 0.8)
        if rng.random() < 0.3:                                  # thrown sideways: slides and rolls
            vx = rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 4.0)
        world.add_body(mat, x, y, vx, rng.uniform(-1.5, 0.5), radius,
                       angle=rng.uniform(0, 2 * np.pi), omega=rng.normal(0.0, 3.0))
        return events


@dataclass(frozen=True)
class SceneStep:
    """One camera frame of a scene: rgb ``(H, W, 3)`` uint8, audio ``(stop - start,)`` float32."""

    frame_index: int
    start_sample: int
    rgb: np.ndarray
    audio: np.ndarray
    events: Tuple[Event, ...]
    fan_speed: float             # rev/s shown in this frame (0 without a fan)


class Scene:
    """World + director + renderer + synth for one seed; ``advance()`` yields the next frame."""

    def __init__(self, seed: int, config: SceneConfig) -> None:
        self.seed, self.config = seed, config
        r_dir, r_syn, r_ren = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        fan = None
        if r_dir.random() < config.fan_probability:
            w, h = config.world_width_m, config.world_height_m
            radius = min(0.35, 0.2 * h)
            fan = Fan(x=r_dir.uniform(radius + 0.3, w - radius - 0.3),
                      y=r_dir.uniform(0.6, 0.8) * h, radius=radius)
        self.world = World(config, fan)
        self.director = Director(config, self.world, r_dir)
        self.synth = Synth(config, r_syn)
        self.renderer = Renderer(config, r_ren, fan)
        self.frame_index = 0

    def advance(self) -> SceneStep:
        cfg, world = self.config, self.world
        i = self.frame_index
        rgb = self.renderer.render(world, i)
        fan_speed = world.fan.speed if world.fan is not None else 0.0
        start, stop = cfg.frame_start_sample(i), cfg.frame_start_sample(i + 1)
        events: List[Event] = []
        controls = []
        for _ in range(cfg.physics_substeps):
            events += self.director.update()
            tick_events = world.step()
            radii = {b.id: b.radius for b in world.bodies}
            for e in tick_events:
                if e.kind == "impact":
                    self.synth.add_impact(e, radii.get(e.object_id))
            events += tick_events
            controls.append((world.time_s * cfg.sample_rate, world.continuous_state()))
        audio = self.synth.render(start, stop, controls)
        self.frame_index += 1
        return SceneStep(i, start, rgb, audio, tuple(events), fan_speed)


@dataclass(frozen=True)
class Clip:
    """A rendered clip. frames ``(N, H, W, 3)`` uint8, frame i at ``frame_times[i] = i / fps``;
    audio ``(num_samples,)`` float32 mono at ``sample_rate``; events in time order;
    fan_speed ``(N,)`` rev/s per frame (zeros without a fan)."""

    seed: int
    config: SceneConfig
    frames: np.ndarray
    frame_times: np.ndarray
    audio: np.ndarray
    events: Tuple[Event, ...]
    fan_speed: np.ndarray
    has_fan: bool

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def fps(self) -> int:
        return self.config.fps


def render_clip(seed: int, config: Optional[SceneConfig] = None) -> Clip:
    """Render ``config.duration_s`` seconds of the scene for ``seed`` (deterministic)."""
    config = config or SceneConfig()
    scene = Scene(seed, config)
    n_frames, n_samples = config.num_frames, config.num_samples
    frames = np.empty((n_frames, config.height, config.width, 3), np.uint8)
    audio = np.empty(max(n_samples, config.frame_start_sample(n_frames)), np.float32)
    fan_speed = np.zeros(n_frames, np.float32)
    events: List[Event] = []
    for i in range(n_frames):
        step = scene.advance()
        frames[i] = step.rgb
        audio[step.start_sample:step.start_sample + len(step.audio)] = step.audio
        fan_speed[i] = step.fan_speed
        events.extend(e for e in step.events if e.sample < n_samples)
    times = np.arange(n_frames, dtype=np.float64) / config.fps
    assert frames.shape == (n_frames, config.height, config.width, 3), f"frames {frames.shape}"
    return Clip(seed, config, frames, times, audio[:n_samples].copy(), tuple(events), fan_speed,
                scene.world.fan is not None)
