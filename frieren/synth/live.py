"""Endless synthetic source: the same scene as ``render_clip``, one camera frame at a time.

Memory stays bounded: at most ``config.max_objects`` bodies (the oldest resting one is
removed to make room), impact tails are trimmed as they are emitted, and events are handed
out, never stored. ``config.duration_s`` is ignored here.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Optional, Tuple

import numpy as np

from .config import Event, SceneConfig
from .scene import Scene


@dataclass(frozen=True)
class LiveFrame:
    """One frame period. rgb ``(H, W, 3)`` uint8 at ``pts * time_base`` seconds;
    audio ``(n,)`` float32 covering samples ``[start_sample, start_sample + n)``;
    events: the ground-truth events inside this period. Unpacks as
    ``frame_index, rgb, audio, events``."""

    frame_index: int
    rgb: np.ndarray
    audio: np.ndarray
    events: Tuple[Event, ...]
    start_sample: int
    sample_rate: int
    time_base: Fraction          # seconds per pts unit (1 / fps); pts == frame_index
    fan_speed: float

    @property
    def pts(self) -> int:
        return self.frame_index

    def __iter__(self) -> Iterator:
        return iter((self.frame_index, self.rgb, self.audio, self.events))


class LiveScene:
    """Iterator over ``LiveFrame`` for ever. ``reset()`` restarts the same seed from frame 0."""

    def __init__(self, seed: int, config: Optional[SceneConfig] = None) -> None:
        self.seed = seed
        self.config = config or SceneConfig()
        self.scene = Scene(seed, self.config)

    def reset(self) -> None:
        self.scene = Scene(self.seed, self.config)

    @property
    def num_objects(self) -> int:
        return len(self.scene.world.bodies)

    def __iter__(self) -> "LiveScene":
        return self

    def __next__(self) -> LiveFrame:
        step = self.scene.advance()
        return LiveFrame(step.frame_index, step.rgb, step.audio, step.events, step.start_sample,
                         self.config.sample_rate, Fraction(1, self.config.fps), step.fan_speed)
