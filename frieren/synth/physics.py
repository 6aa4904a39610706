"""2-D rigid-circle physics: gravity, floor, walls, body-body collisions, and a fan.

``World.step()`` advances one physics tick (``1 / (fps * physics_substeps)`` s) and returns
the sound events of that tick. Impacts are emitted when the relative normal speed exceeds
``IMPACT_THRESHOLD``; their time is the estimated moment of contact inside the tick
(penetration depth / approach speed), so event times are finer than the tick.
Continuous sources (sliding/rolling bodies, the fan) report start/stop events and a
per-tick speed through ``continuous_state()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .config import Event, SceneConfig
from .materials import FAN, Material

GRAVITY = 9.81
IMPACT_THRESHOLD = 0.5        # m/s relative normal speed for an audible impact
BOUNCE_THRESHOLD = 0.35       # below this, contacts are inelastic (no micro-bounces)
STRENGTH_FULL_SPEED = 7.5     # m/s at which an impact reaches strength 1
SLIDE_START = 0.3             # m/s tangential speed on the floor that starts friction noise
SLIDE_STOP = 0.12
AIRBORNE_STOP_TICKS = 12      # a sliding body airborne this long stops its friction track
FAN_ACCEL = 2.5               # rev/s^2


@dataclass
class Body:
    id: int
    material: Material
    x: float
    y: float
    vx: float
    vy: float
    radius: float
    angle: float = 0.0
    omega: float = 0.0
    on_floor: bool = False
    sliding: bool = False
    airborne_ticks: int = 0
    rest_ticks: int = 0

    @property
    def mass(self) -> float:
        return self.material.density * math.pi * self.radius ** 2


@dataclass
class Fan:
    x: float                  # metres, centre on the back wall
    y: float
    radius: float
    speed: float = 0.0        # rev/s, what the renderer shows and the synth hums
    target: float = 0.0
    angle: float = 0.0        # radians
    running: bool = False


def impact_strength(speed: float) -> float:
    return float(min(1.0, max(0.0, speed / STRENGTH_FULL_SPEED)))


class World:
    """Physics state. Owns bodies and the optional fan; spawning is decided by the caller."""

    def __init__(self, config: SceneConfig, fan: Optional[Fan] = None) -> None:
        self.config = config
        self.width = config.world_width_m
        self.height = config.world_height_m
        self.dt = 1.0 / config.tick_rate
        self.tick = 0
        self.bodies: List[Body] = []
        self.fan = fan
        self._next_id = 0

    # -- bookkeeping -------------------------------------------------------------------
    @property
    def time_s(self) -> float:
        return self.tick / self.config.tick_rate

    def add_body(self, material: Material, x: float, y: float, vx: float, vy: float,
                 radius: float, angle: float = 0.0, omega: float = 0.0) -> Body:
        body = Body(self._next_id, material, x, y, vx, vy, radius, angle, omega)
        self._next_id += 1
        self.bodies.append(body)
        return body

    def remove_body(self, body: Body) -> List[Event]:
        """Remove a body silently; closes its friction track if one is open."""
        events = []
        if body.sliding:
            events.append(self._continuous(body, "continuous_stop", self.time_s, 0.0))
        self.bodies.remove(body)
        return events

    def to_image(self, x: float, y: float) -> Tuple[float, float]:
        """World metres -> normalised image coordinates (x right, y down)."""
        floor_v = 1.0 - self.config.floor_fraction
        return (x / self.width, floor_v - y / self.width * (self.config.width / self.config.height))

    def _event(self, t: float, kind: str, source: str, material: str, strength: float,
               speed: float, x: float, y: float, object_id: int = -1,
               other: Optional[str] = None) -> Event:
        return Event(time_s=t, sample=int(round(t * self.config.sample_rate)), kind=kind,
                     source=source, material=material, strength=strength, speed=speed,
                     position=self.to_image(x, y), object_id=object_id, other_material=other)

    def _continuous(self, b: Body, kind: str, t: float, speed: float) -> Event:
        return self._event(t, kind, "slide", b.material.name, impact_strength(speed), speed,
                           b.x, b.y - b.radius, b.id)

    # -- dynamics ----------------------------------------------------------------------
    def step(self) -> List[Event]:
        """Advance one tick; return this tick's events sorted by time."""
        t0 = self.time_s
        self.tick += 1
        t1 = self.time_s
        dt = self.dt
        events: List[Event] = []
        for b in self.bodies:
            b.vy -= GRAVITY * dt
            b.x += b.vx * dt
            b.y += b.vy * dt
            b.angle += b.omega * dt
        for _ in range(2):
            self._collide_pairs(events, t0, t1)
        for b in self.bodies:
            self._collide_bounds(b, events, t0, t1)
            self._friction(b, events, t1)
            still = b.vx * b.vx + b.vy * b.vy < 0.1 ** 2
            b.rest_ticks = b.rest_ticks + 1 if still else 0
        if self.fan is not None:
            self._step_fan(events, t1)
        events.sort(key=lambda e: e.time_s)
        return events

    def _contact_time(self, t0: float, t1: float, penetration: float, approach: float) -> float:
        back = penetration / max(approach, 1e-9)
        return min(t1, max(t0, t1 - back))

    def _collide_bounds(self, b: Body, events: List[Event], t0: float, t1: float) -> None:
        m = b.material
        touching = False
        if b.y - b.radius <= 0.0:
            pen, vn = b.radius - b.y, -b.vy
            b.y = b.radius
            touching = True
            if vn > 0:
                if vn > IMPACT_THRESHOLD:
                    t = self._contact_time(t0, t1, pen, vn)
                    events.append(self._event(t, "impact", "floor", m.name, impact_strength(vn), vn,
                                              b.x, 0.0, b.id))
                b.vy = m.restitution * vn if vn > BOUNCE_THRESHOLD else 0.0
        for wall_x, sign in ((0.0, -1.0), (self.width, 1.0)):
            edge = b.x + sign * b.radius
            if (edge - wall_x) * sign >= 0.0:
                pen, vn = abs(edge - wall_x), sign * b.vx
                b.x = wall_x - sign * b.radius
                if vn > 0:
                    if vn > IMPACT_THRESHOLD:
                        t = self._contact_time(t0, t1, pen, vn)
                        events.append(self._event(t, "impact", "wall", m.name, impact_strength(vn), vn,
                                                  wall_x, b.y, b.id))
                    b.vx = -sign * (m.restitution * vn if vn > BOUNCE_THRESHOLD else 0.0)
        b.on_floor = touching and abs(b.vy) < 1e-6

    def _collide_pairs(self, events: List[Event], t0: float, t1: float) -> None:
        bodies = self.bodies
        for i in range(len(bodies)):
            a = bodies[i]
            for j in range(i + 1, len(bodies)):
                c = bodies[j]
                dx, dy = c.x - a.x, c.y - a.y
                rr = a.radius + c.radius
                d2 = dx * dx + dy * dy
                if d2 >= rr * rr:
                    continue
                d = math.sqrt(d2) or 1e-9
                nx, ny = dx / d, dy / d
                pen = rr - d
                ima, imc = 1.0 / a.mass, 1.0 / c.mass
                # positional correction, split by inverse mass
                a.x -= nx * pen * ima / (ima + imc)
                a.y -= ny * pen * ima / (ima + imc)
                c.x += nx * pen * imc / (ima + imc)
                c.y += ny * pen * imc / (ima + imc)
                vn = (a.vx - c.vx) * nx + (a.vy - c.vy) * ny   # approach speed
                if vn <= 0:
                    continue
                e = min(a.material.restitution, c.material.restitution) if vn > BOUNCE_THRESHOLD else 0.0
                j_imp = (1.0 + e) * vn / (ima + imc)
                a.vx -= j_imp * ima * nx
                a.vy -= j_imp * ima * ny
                c.vx += j_imp * imc * nx
                c.vy += j_imp * imc * ny
                # contact friction damps the tangential relative motion
                tx, ty = -ny, nx
                vt = (a.vx - c.vx) * tx + (a.vy - c.vy) * ty
                damp = 0.1 * vt / (ima + imc)
                a.vx -= damp * ima * tx
                a.vy -= damp * ima * ty
                c.vx += damp * imc * tx
                c.vy += damp * imc * ty
                if vn > IMPACT_THRESHOLD:
                    t = self._contact_time(t0, t1, pen, vn)
                    px, py = a.x + nx * a.radius, a.y + ny * a.radius
                    loud, quiet = (a, c) if a.material.gain >= c.material.gain else (c, a)
                    events.append(self._event(t, "impact", "object", loud.material.name,
                                              impact_strength(vn), vn, px, py, loud.id,
                                              other=quiet.material.name))

    def _friction(self, b: Body, events: List[Event], t: float) -> None:
        m = b.material
        if b.on_floor:
            b.airborne_ticks = 0
            decel = m.rolling_resistance if m.rolls else m.friction * GRAVITY
            b.vx -= math.copysign(min(abs(b.vx), decel * self.dt), b.vx)
            if m.rolls:
                b.omega = -b.vx / b.radius
            else:
                b.omega *= 0.8
                # settle flat: squares/triangles/hexagons snap towards a face-down angle
                sym = 2.0 * math.pi / {"square": 4, "triangle": 3, "hexagon": 6}.get(m.shape, 4)
                b.angle += 0.2 * (round(b.angle / sym) * sym - b.angle)
            speed = abs(b.vx)
            if not b.sliding and speed > SLIDE_START:
                b.sliding = True
                events.append(self._continuous(b, "continuous_start", t, speed))
            elif b.sliding and speed < SLIDE_STOP:
                b.sliding = False
                events.append(self._continuous(b, "continuous_stop", t, speed))
        else:
            b.airborne_ticks += 1
            b.omega *= 0.999
            if b.sliding and b.airborne_ticks >= AIRBORNE_STOP_TICKS:
                b.sliding = False
                events.append(self._continuous(b, "continuous_stop", t, abs(b.vx)))

    def _step_fan(self, events: List[Event], t: float) -> None:
        f = self.fan
        delta = f.target - f.speed
        f.speed += math.copysign(min(abs(delta), FAN_ACCEL * self.dt), delta)
        f.speed = min(max(f.speed, 0.0), FAN.max_rev_s)
        f.angle = (f.angle + 2.0 * math.pi * f.speed * self.dt) % (2.0 * math.pi)
        if not f.running and f.speed > 0.0:
            f.running = True
            events.append(self._event(t - self.dt, "continuous_start", "fan", "fan", f.speed / FAN.max_rev_s,
                                      f.speed, f.x, f.y))
        elif f.running and f.speed <= 0.0:
            f.running = False
            events.append(self._event(t, "continuous_stop", "fan", "fan", 0.0, 0.0, f.x, f.y))

    def continuous_state(self) -> Dict[Tuple[str, int], Tuple[str, float]]:
        """Speed of every running continuous source now: {(source, id): (material, speed)}.

        Slide speeds are m/s along the floor; the fan's is rev/s (key ('fan', 0)).
        """
        state = {("slide", b.id): (b.material.name, abs(b.vx)) for b in self.bodies if b.sliding}
        if self.fan is not None and self.fan.running:
            state[("fan", 0)] = ("fan", self.fan.speed)
        return state

    def resting(self, min_ticks: int = 1) -> List[Body]:
        return [b for b in self.bodies if not b.sliding and b.rest_ticks >= min_ticks]
