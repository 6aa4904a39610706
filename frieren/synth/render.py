"""Draw the world: RGB uint8 frames ``(H, W, 3)`` with per-scene background, lighting,
camera shake and sensor noise. Drawing uses its own random generator, so the frame size
and look never change the physics or the audio of a seed.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import cv2
import numpy as np

from .config import SceneConfig
from .physics import Body, Fan, World

_SHIFT = 4                    # cv2 fixed-point bits: sub-pixel positions
_ONE = 1 << _SHIFT


class Renderer:
    def __init__(self, config: SceneConfig, rng: np.random.Generator, fan: Optional[Fan] = None) -> None:
        self.config = config
        self.rng = rng
        self.w, self.h = config.width, config.height
        self.scale = self.w / config.world_width_m                 # pixels per metre
        self.floor_row = self.h * (1.0 - config.floor_fraction)
        self.fan = fan
        self.background = self._background()
        # lighting: base gain, tint, slow drift, horizontal light gradient
        gain = rng.uniform(0.65, 1.15)
        tint = rng.uniform(0.85, 1.15, 3)
        slope = rng.uniform(-0.3, 0.3)
        ramp = 1.0 + slope * (np.arange(self.w, dtype=np.float32) / self.w - 0.5)
        self.light = (gain * ramp[None, :, None] * tint[None, None, :]).astype(np.float32)
        self.drift = (rng.uniform(0.0, 0.1), rng.uniform(3.0, 10.0), rng.uniform(0, 2 * math.pi))
        # camera shake: amplitude in pixels and two sinusoids per axis
        self.shake_px = rng.uniform(0.0, config.shake) * self.w
        self.shake_f = rng.uniform(0.7, 6.0, (2, 2))
        self.shake_p = rng.uniform(0.0, 2 * math.pi, (2, 2))
        self.noise_sigma = rng.uniform(0.0, config.image_noise) * 255.0

    # -- geometry ----------------------------------------------------------------------
    def to_pixel(self, x: float, y: float) -> Tuple[float, float]:
        return x * self.scale, self.floor_row - y * self.scale

    def _fix(self, pts: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(pts) * _ONE).astype(np.int32)

    # -- static layers -----------------------------------------------------------------
    def _background(self) -> np.ndarray:
        rng, w, h = self.rng, self.w, self.h
        img = np.empty((h, w, 3), np.float32)
        top, bottom = rng.uniform(50, 210, 3), rng.uniform(40, 190, 3)
        fr = int(round(self.floor_row))
        a = np.linspace(0.0, 1.0, max(fr, 1), dtype=np.float32)[:, None, None]
        img[:fr] = top * (1 - a) + bottom * a
        floor = rng.uniform(60, 170, 3) * np.array([1.0, 0.85, 0.7]) ** rng.integers(0, 2)
        img[fr:] = floor
        img = img.astype(np.uint8)
        style = int(rng.integers(0, 4))
        line = tuple(int(c) for c in np.clip(bottom * rng.uniform(0.7, 0.9), 0, 255))
        step = max(4, int(w / rng.uniform(6, 16)))
        if style == 1:                                   # vertical stripes
            for x in range(0, w, step):
                cv2.rectangle(img, (x, 0), (x + step // 3, fr - 1), line, -1)
        elif style == 2:                                 # tiles
            for x in range(0, w, step):
                cv2.line(img, (x, 0), (x, fr - 1), line, 1)
            for y in range(0, fr, step):
                cv2.line(img, (0, y), (w - 1, y), line, 1)
        elif style == 3:                                 # bricks
            bh = max(3, step // 2)
            for row, y in enumerate(range(0, fr, bh)):
                cv2.line(img, (0, y), (w - 1, y), line, 1)
                for x in range((row % 2) * step // 2, w, step):
                    cv2.line(img, (x, y), (x, min(y + bh, fr - 1)), line, 1)
        dark = tuple(int(c * 0.75) for c in floor)
        for k in range(1, 4):                            # floor boards
            y = fr + k * (h - fr) // 4
            cv2.line(img, (0, y), (w - 1, y), dark, 1)
        cv2.line(img, (0, fr), (w - 1, fr), tuple(int(c * 0.5) for c in floor), 1)
        if self.fan is not None:
            cx, cy = self.to_pixel(self.fan.x, self.fan.y)
            r = self.fan.radius * self.scale
            c = self._fix([cx, cy])
            cv2.circle(img, tuple(c), int(r * 1.15 * _ONE), (70, 70, 75), -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(img, tuple(c), int(r * 1.05 * _ONE), (30, 30, 35), -1, cv2.LINE_AA, _SHIFT)
        return img

    # -- per frame ---------------------------------------------------------------------
    def render(self, world: World, frame_index: int) -> np.ndarray:
        """State at frame ``frame_index`` -> RGB uint8 ``(H, W, 3)``."""
        img = self.background.copy()
        for b in world.bodies:
            self._shadow(img, b)
        if self.fan is not None:
            self._draw_fan(img, self.fan)
        for b in world.bodies:
            self._draw_body(img, b)
        t = frame_index / self.config.fps
        amp, period, phase = self.drift
        light = self.light * (1.0 + amp * math.sin(2 * math.pi * t / period + phase))
        out = img.astype(np.float32) * light
        if self.shake_px > 0.05:
            d = self.shake_px * (0.6 * np.sin(2 * np.pi * self.shake_f[:, 0] * t + self.shake_p[:, 0])
                                 + 0.4 * np.sin(2 * np.pi * self.shake_f[:, 1] * t + self.shake_p[:, 1]))
            m = np.float32([[1, 0, d[0]], [0, 1, d[1]]])
            out = cv2.warpAffine(out, m, (self.w, self.h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
        if self.noise_sigma > 0:
            out += self.noise_sigma * self.rng.standard_normal(out.shape, dtype=np.float32)
        return np.clip(out, 0, 255).astype(np.uint8)

    def _shadow(self, img: np.ndarray, b: Body) -> None:
        cx, _ = self.to_pixel(b.x, 0.0)
        r = b.radius * self.scale
        height = max(b.y - b.radius, 0.0) * self.scale
        k = 1.0 / (1.0 + height / (3 * r))
        axes = self._fix([r * (0.6 + 0.4 * k), r * 0.2 * k + 0.5])
        cv2.ellipse(img, tuple(self._fix([cx, self.floor_row])), tuple(int(v) for v in axes), 0, 0, 360,
                    (20, 20, 20), -1, cv2.LINE_AA, _SHIFT)

    def _poly(self, cx: float, cy: float, r: float, n: int, angle: float) -> np.ndarray:
        # image y points down, so a positive world rotation turns clockwise on screen
        a = -angle + np.arange(n) * 2 * np.pi / n - np.pi / 2 + (np.pi / n if n % 2 == 0 else 0.0)
        return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)

    def _draw_body(self, img: np.ndarray, b: Body) -> None:
        m = b.material
        cx, cy = self.to_pixel(b.x, b.y)
        r = b.radius * self.scale
        col = m.color
        dark = tuple(int(c * 0.55) for c in col)
        ca, sa = math.cos(-b.angle), math.sin(-b.angle)
        rot = lambda u, v: (cx + u * ca - v * sa, cy + u * sa + v * ca)  # noqa: E731
        c = tuple(self._fix([cx, cy]))
        if m.shape == "square":
            pts = self._poly(cx, cy, r * 1.15, 4, b.angle)
            cv2.fillPoly(img, [self._fix(pts)], col, cv2.LINE_AA, _SHIFT)
            h = r * 0.8
            for v in (-0.5 * h, 0.0, 0.5 * h):           # wood grain
                p, q = rot(-h, v + 0.15 * h), rot(h, v - 0.1 * h)
                cv2.line(img, tuple(self._fix(p)), tuple(self._fix(q)), dark, 1, cv2.LINE_AA, _SHIFT)
        elif m.shape == "circle":
            cv2.circle(img, c, int(r * _ONE), dark, -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(img, c, int(r * 0.85 * _ONE), col, -1, cv2.LINE_AA, _SHIFT)
            spot = self._fix([cx - 0.35 * r, cy - 0.35 * r])
            cv2.circle(img, tuple(spot), int(max(r * 0.25, 1.0) * _ONE), (250, 250, 255), -1, cv2.LINE_AA, _SHIFT)
            mark = self._fix(rot(0.6 * r, 0.0))
            cv2.circle(img, tuple(mark), int(max(r * 0.12, 0.7) * _ONE), dark, -1, cv2.LINE_AA, _SHIFT)
        elif m.shape == "triangle":
            pts = self._poly(cx, cy, r * 1.25, 3, b.angle)
            x0, y0 = np.floor(pts.min(0)).astype(int)
            x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.w), min(y1, self.h)
            if x1 > x0 and y1 > y0:
                roi = img[y0:y1, x0:x1]
                over = roi.copy()
                cv2.fillPoly(over, [self._fix(pts - [x0, y0])], col, cv2.LINE_AA, _SHIFT)
                img[y0:y1, x0:x1] = (0.4 * roi + 0.6 * over).astype(np.uint8)
            cv2.polylines(img, [self._fix(pts)], True, (225, 250, 255), 1, cv2.LINE_AA, _SHIFT)
        elif m.shape == "ball":
            cv2.circle(img, c, int(r * _ONE), col, -1, cv2.LINE_AA, _SHIFT)
            p, q = rot(-r * 0.95, 0.0), rot(r * 0.95, 0.0)
            cv2.line(img, tuple(self._fix(p)), tuple(self._fix(q)), dark, max(1, int(r / 4)), cv2.LINE_AA, _SHIFT)
        else:                                            # hexagon, glazed ceramic
            pts = self._poly(cx, cy, r * 1.08, 6, b.angle)
            cv2.fillPoly(img, [self._fix(pts)], col, cv2.LINE_AA, _SHIFT)
            cv2.circle(img, c, int(r * 0.55 * _ONE), (40, 70, 170), max(1, int(r / 6)), cv2.LINE_AA, _SHIFT)
            cv2.circle(img, tuple(self._fix(pts[0])), int(max(r * 0.15, 0.7) * _ONE), (40, 70, 170), -1,
                       cv2.LINE_AA, _SHIFT)

    def _draw_fan(self, img: np.ndarray, fan: Fan) -> None:
        from .materials import FAN
        cx, cy = self.to_pixel(fan.x, fan.y)
        r = fan.radius * self.scale
        for k in range(FAN.blades):
            a = -fan.angle + 2 * math.pi * k / FAN.blades
            ang = a + np.array([-0.35, -0.2, 0.2, 0.35])
            rad = r * np.array([0.2, 0.95, 0.95, 0.2])
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
            colour = (235, 150, 40) if k == 0 else (200, 200, 205)   # one marked blade: no aliasing
            cv2.fillPoly(img, [self._fix(pts)], colour, cv2.LINE_AA, _SHIFT)
        cv2.circle(img, tuple(self._fix([cx, cy])), int(r * 0.22 * _ONE), (60, 60, 60), -1, cv2.LINE_AA, _SHIFT)
