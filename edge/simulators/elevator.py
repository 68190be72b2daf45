"""An elevator car doing trips between floors with door cycles; scripted faults.

Pure and seeded. The day is planned up front as a timeline of segments (hold, door
cycle, motion with a trapezoidal speed profile); a sample is the timeline evaluated at
its time, so readings are exact and cheap. Random trips never run into a scripted fault:
each fault is preceded by a *lead-in* (e.g. passengers board) that ends exactly at its
``at_s``, so the faulty condition holds from ``at_s`` for ``for_s`` seconds, followed by
a *recovery* (rescue to the nearest landing, doors open).

Readings (metric, unit): ``floor`` (floor), ``direction`` (enum: -1 down, 0 stopped,
1 up), ``speed`` (m_per_s, magnitude), ``position_m`` (m above the lowest landing),
``door_state`` (enum: 0 closed, 1 opening, 2 open, 3 closing), ``door_zone``,
``at_level`` (bool), ``occupancy`` (persons), ``power``, ``inspection_mode``,
``maintenance_mode``, ``safety_circuit_closed``, ``alarm_button`` (bool, 0/1).

Faults (``type``; condition from ``at_s`` for ``for_s``):

* ``trapped_at_level`` — car at level, doors closed, ``passengers`` (2) inside, stopped.
* ``trapped_between_floors`` — stopped half-way between two landings (outside the door
  zone), doors closed, ``passengers`` (2) inside.
* ``stop_outside_door_zone`` — the same with an empty car (``passengers`` 0).
* ``door_open_while_moving`` — running at rated speed with the door open.
* ``car_moves_with_door_open`` — at ``at_s`` the door is open at a landing; the car
  creeps ~1 m away with the door open and stops there (UCM).
* ``overspeed`` — speed ``factor`` (1.25) × rated for ``for_s``; then the safety gear
  stops the car.
* ``overtravel_top`` / ``overtravel_bottom`` — the car comes to rest ``overtravel_m``
  (0.5 m) beyond the top / bottom landing at ``at_s``.
* ``power_failure`` — power 0, car stopped at level.
* ``safety_circuit_open`` — safety circuit open, car stopped at level.
* ``door_close_fault`` — the door keeps re-opening and never closes.
* ``door_open_fault`` — the door keeps trying to open and never opens.
* ``inspection_mode`` / ``maintenance_mode`` — the flag is on, no trips.
* ``alarm_button`` — the button held pressed; the car goes on as usual (may overlap).

Built-in edge events (as a real controller's map would configure): ``alarm_button`` 0→1
``alarm_button_pressed`` (major), ``power`` 1→0 ``power_lost`` (critical), 0→1
``power_restored`` (info).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.simulators.faults import FaultWindow
from edge.sources.base import MetricValue
from edge.sources.edges import EdgeEvent
from ganzhi.contracts import Severity

CLOSED, OPENING, OPEN, CLOSING = 0, 1, 2, 3

EVENTS = [
    EdgeEvent(metric="alarm_button", when="rising", event="alarm_button_pressed",
              severity=Severity.MAJOR),
    EdgeEvent(metric="power", when="falling", event="power_lost", severity=Severity.CRITICAL),
    EdgeEvent(metric="power", when="rising", event="power_restored", severity=Severity.INFO),
]


class ElevatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    floors: int = Field(default=12, ge=2, le=200)  # landings
    lowest_floor: int = 1  # number shown at the lowest landing (-2 for two basements)
    start_floor: int | None = None  # default: the lowest
    floor_height_m: float = Field(default=3.0, gt=0)
    rated_speed_mps: float = Field(default=1.75, gt=0)
    accel_mps2: float = Field(default=0.8, gt=0)
    rescue_speed_mps: float = Field(default=0.3, gt=0)
    door_opening_s: float = Field(default=2.0, gt=0)
    door_dwell_s: float = Field(default=4.0, gt=0)
    door_closing_s: float = Field(default=3.0, gt=0)
    door_zone_m: float = Field(default=0.2, gt=0)  # half-width of the door zone
    idle_mean_s: float = Field(default=25.0, gt=0)  # between trips, exponential
    passengers_max: int = Field(default=4, ge=1)  # per trip, uniform 1..max
    lobby_share: float = Field(default=0.5, ge=0, le=1)  # trips from the lowest landing


class _Fault(FaultWindow):
    passengers: int = Field(default=0, ge=0, le=30)


class TrappedAtLevel(_Fault):
    type: Literal["trapped_at_level"]
    passengers: int = Field(default=2, ge=1, le=30)


class TrappedBetweenFloors(_Fault):
    type: Literal["trapped_between_floors"]
    passengers: int = Field(default=2, ge=1, le=30)


class StopOutsideDoorZone(_Fault):
    type: Literal["stop_outside_door_zone"]


class DoorOpenWhileMoving(_Fault):
    type: Literal["door_open_while_moving"]


class CarMovesWithDoorOpen(_Fault):
    type: Literal["car_moves_with_door_open"]


class Overspeed(_Fault):
    type: Literal["overspeed"]
    factor: float = Field(default=1.25, gt=1.0, le=2.0)


class Overtravel(_Fault):
    type: Literal["overtravel_top", "overtravel_bottom"]
    overtravel_m: float = Field(default=0.5, gt=0, le=3.0)


class StoppedWithFlag(_Fault):
    """Car stopped at level with a flag forced: power, safety circuit, modes."""

    type: Literal["power_failure", "safety_circuit_open", "inspection_mode", "maintenance_mode"]


class DoorFault(_Fault):
    type: Literal["door_close_fault", "door_open_fault"]


class AlarmButton(FaultWindow):
    type: Literal["alarm_button"]


ElevatorFaultT = (TrappedAtLevel | TrappedBetweenFloors | StopOutsideDoorZone
                  | DoorOpenWhileMoving | CarMovesWithDoorOpen | Overspeed | Overtravel
                  | StoppedWithFlag | DoorFault | AlarmButton)
ElevatorFault = Annotated[ElevatorFaultT, Field(discriminator="type")]


class PlanError(ValueError):
    """The scripted faults cannot be laid out (overlap, too early, hoistway too short)."""


# --- timeline ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Kin:
    """Where the car is: position, signed speed, door, occupancy."""

    pos: float
    v: float = 0.0
    door: int = CLOSED
    occ: int = 0


class Segment:
    dur: float

    def at(self, tau: float) -> _Kin:
        raise NotImplementedError

    def end(self) -> _Kin:
        return self.at(self.dur)


@dataclass
class Hold(Segment):
    pos: float
    dur: float
    occ: int = 0
    door: int = CLOSED

    def at(self, tau: float) -> _Kin:
        return _Kin(self.pos, 0.0, self.door, self.occ)


@dataclass
class DoorPattern(Segment):
    """Stopped at ``pos``; the door goes through (duration, state) steps, repeated."""

    pos: float
    steps: list[tuple[float, int]]
    dur: float
    occ: int = 0
    occ_after: int | None = None  # occupancy changes half-way (people get in / out)
    repeat: bool = False

    def at(self, tau: float) -> _Kin:
        occ = self.occ if self.occ_after is None or tau < self.dur / 2 else self.occ_after
        cycle = sum(d for d, _ in self.steps)
        x = tau % cycle if self.repeat and cycle > 0 else tau
        for d, state in self.steps:
            if x < d:
                return _Kin(self.pos, 0.0, state, occ)
            x -= d
        return _Kin(self.pos, 0.0, self.steps[-1][1], occ)


@dataclass
class Motion(Segment):
    """A window [t0, t0 + dur) of a motion made of constant-acceleration phases."""

    pos0: float
    phases: list[tuple[float, float]]  # (duration, acceleration)
    t0: float = 0.0
    dur: float = -1.0
    occ: int = 0
    door: int = CLOSED
    _starts: list[tuple[float, float, float]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        t, p, v = 0.0, self.pos0, 0.0
        for d, a in self.phases:
            self._starts.append((t, p, v))
            t, p, v = t + d, p + v * d + 0.5 * a * d * d, v + a * d
        self._starts.append((t, p, v))
        if self.dur < 0:
            self.dur = t - self.t0

    @property
    def total(self) -> float:
        return self._starts[-1][0]

    def at(self, tau: float) -> _Kin:
        t = self.t0 + tau
        for (ts, p, v), (d, a) in zip(self._starts, self.phases, strict=False):
            if t < ts + d:
                x = t - ts
                vv = v + a * x
                return _Kin(p + v * x + 0.5 * a * x * x, 0.0 if abs(vv) < 1e-9 else vv,
                            self.door, self.occ)
        _, p, v = self._starts[-1]
        return _Kin(p, 0.0 if abs(v) < 1e-6 else v, self.door, self.occ)

    def rest(self, door: int | None = None) -> Motion:
        """The remainder of this motion after this window."""
        return Motion(self.pos0, self.phases, self.t0 + self.dur, -1.0, self.occ,
                      self.door if door is None else door)


def profile(dist: float, vmax: float, a: float) -> list[tuple[float, float]]:
    """Trapezoidal (or triangular) phases covering ``dist`` metres (signed), rest to rest."""
    d, s = abs(dist), (1.0 if dist >= 0 else -1.0)
    if d < 1e-9:
        return []
    if d >= vmax * vmax / a:
        ta = vmax / a
        return [(ta, s * a), ((d - vmax * vmax / a) / vmax, 0.0), (ta, -s * a)]
    ta = math.sqrt(d / a)
    return [(ta, s * a), (ta, -s * a)]


class _Plan:
    def __init__(self, spec: ElevatorSpec) -> None:
        self.spec = spec
        self.segs: list[Segment] = []
        self.starts: list[float] = []
        self.t = 0.0
        first = spec.lowest_floor if spec.start_floor is None else spec.start_floor
        self.pos = self.landing_pos(first)
        self.occ = 0

    # geometry
    def landing_pos(self, floor: int) -> float:
        return (floor - self.spec.lowest_floor) * self.spec.floor_height_m

    @property
    def top(self) -> float:
        return (self.spec.floors - 1) * self.spec.floor_height_m

    def nearest_landing(self, pos: float) -> float:
        h = self.spec.floor_height_m
        return min(max(round(pos / h), 0), self.spec.floors - 1) * h

    def door_cycle(self, pos: float, occ: int, occ_after: int) -> Segment:
        s = self.spec
        steps = [(s.door_opening_s, OPENING), (s.door_dwell_s, OPEN), (s.door_closing_s, CLOSING)]
        return DoorPattern(pos, steps, sum(d for d, _ in steps), occ, occ_after)

    def add(self, segs: Sequence[Segment]) -> None:
        for seg in segs:
            if seg.dur <= 0:
                continue
            self.segs.append(seg)
            self.starts.append(self.t)
            self.t += seg.dur
            k = seg.end()
            self.pos, self.occ = k.pos, k.occ

    def at(self, t: float) -> _Kin:
        if not self.segs:
            return _Kin(self.pos)
        i = max(0, bisect.bisect_right(self.starts, t) - 1)
        seg = self.segs[i]
        return seg.at(min(t - self.starts[i], seg.dur))


class _Builder:
    """Segments built from a starting position, tracking where they leave the car."""

    def __init__(self, plan: _Plan, pos: float, occ: int) -> None:
        self.p, self.pos, self.occ = plan, pos, occ
        self.segs: list[Segment] = []

    @property
    def dur(self) -> float:
        return sum(s.dur for s in self.segs)

    def _push(self, seg: Segment) -> Segment:
        self.segs.append(seg)
        k = seg.end()
        self.pos, self.occ = k.pos, k.occ
        return seg

    def move(self, to: float, slow: bool = False, door: int = CLOSED) -> None:
        s = self.p.spec
        phases = profile(to - self.pos, s.rescue_speed_mps if slow else s.rated_speed_mps,
                         s.accel_mps2)
        if phases:
            end_pos = to
            seg = Motion(self.pos, phases, occ=self.occ, door=door)
            self._push(seg)
            self.pos = end_pos  # exact, despite rounding in the phases

    def door_cycle(self, occ_after: int) -> None:
        self._push(self.p.door_cycle(self.pos, self.occ, occ_after))

    def hold(self, dur: float, door: int = CLOSED) -> None:
        if dur > 0:
            self._push(Hold(self.pos, dur, self.occ, door))

    def doors(self, steps: list[tuple[float, int]], dur: float, repeat: bool = False) -> None:
        self._push(DoorPattern(self.pos, steps, dur, self.occ, None, repeat))

    def push(self, seg: Segment) -> None:
        self._push(seg)


def _trip(plan: _Plan, rng: random.Random, pos: float) -> _Builder:
    s = plan.spec
    b = _Builder(plan, pos, 0)
    b.hold(rng.expovariate(1.0 / s.idle_mean_s))
    here = round(pos / s.floor_height_m)
    pickup = 0 if rng.random() < s.lobby_share else rng.randrange(s.floors)
    dest = rng.randrange(s.floors - 1)
    dest = dest + 1 if dest >= pickup else dest
    n = rng.randint(1, s.passengers_max)
    if pickup != here:
        b.move(plan.landing_pos(pickup + s.lowest_floor))
    b.door_cycle(n)
    b.move(plan.landing_pos(dest + s.lowest_floor))
    b.door_cycle(0)
    return b


_EXCLUSIVE_FLAG = {"power_failure": "power", "safety_circuit_open": "safety_circuit_closed",
                   "inspection_mode": "inspection_mode", "maintenance_mode": "maintenance_mode"}


def _scripted(plan: _Plan, f: ElevatorFaultT, pos: float, occ: int, body_s: float,
              ) -> tuple[_Builder, _Builder, _Builder]:
    """(lead-in, body, recovery) of one exclusive fault, starting at ``pos``."""
    s = plan.spec
    lead = _Builder(plan, pos, occ)
    h = s.floor_height_m
    p = f.passengers if isinstance(f, _Fault) else 0

    def board() -> None:
        if p > 0:
            lead.door_cycle(p)

    body = _Builder(plan, 0, 0)
    rec = _Builder(plan, 0, 0)

    def start_body() -> None:
        body.pos, body.occ = lead.pos, lead.occ

    def start_rec() -> None:
        rec.pos, rec.occ = body.pos, body.occ

    def rescue() -> None:
        rec.move(plan.nearest_landing(rec.pos), slow=True)
        if rec.occ > 0:
            rec.door_cycle(0)

    if isinstance(f, TrappedAtLevel):
        board()
        start_body()
        body.hold(body_s)
        start_rec()
        rec.door_cycle(0)
    elif isinstance(f, TrappedBetweenFloors | StopOutsideDoorZone):
        board()
        to = lead.pos + h if lead.pos + h <= plan.top + 1e-9 else lead.pos - h
        full = Motion(lead.pos, profile(to - lead.pos, s.rated_speed_mps, s.accel_mps2),
                      occ=lead.occ)
        lead.push(Motion(full.pos0, full.phases, 0.0, full.total / 2, full.occ))
        start_body()
        body.hold(body_s)
        start_rec()
        rescue()
    elif isinstance(f, DoorOpenWhileMoving | Overspeed):
        if lead.pos > plan.top / 2:  # run the whole hoistway, from the bottom
            lead.move(0.0)
        board()
        if isinstance(f, DoorOpenWhileMoving):
            full = Motion(lead.pos, profile(plan.top - lead.pos, s.rated_speed_mps,
                                            s.accel_mps2), occ=lead.occ)
            t_in = s.rated_speed_mps / s.accel_mps2 + 0.5
            if t_in + body_s > full.total - s.rated_speed_mps / s.accel_mps2:
                raise PlanError(f"{f.type} at {f.at_s}: for_s {body_s} too long for this "
                                "hoistway at rated speed")
            lead.push(Motion(full.pos0, full.phases, 0.0, t_in, full.occ))
            start_body()
            body.push(Motion(full.pos0, full.phases, t_in, body_s, full.occ, OPEN))
            start_rec()
            rec.push(Motion(full.pos0, full.phases, t_in + body_s, -1.0, full.occ))
            rec.pos = plan.top
            if rec.occ:
                rec.door_cycle(0)
        else:
            vo = s.rated_speed_mps * f.factor
            ramp = [(vo / s.accel_mps2, s.accel_mps2)]
            brake = 5.0
            phases = [*ramp, (body_s, 0.0), (vo / brake, -brake)]
            full = Motion(lead.pos, phases, occ=lead.occ)
            if full._starts[-1][1] > plan.top - s.door_zone_m:
                raise PlanError(f"overspeed at {f.at_s}: for_s {body_s} runs past the top "
                                "landing; shorten it")
            lead.push(Motion(full.pos0, phases, 0.0, ramp[0][0], full.occ))
            start_body()
            body.push(Motion(full.pos0, phases, ramp[0][0], body_s, full.occ))
            start_rec()
            rec.push(Motion(full.pos0, phases, ramp[0][0] + body_s, -1.0, full.occ))
            rec.hold(30.0)  # stopped by the safety gear, then rescued
            rescue()
    elif isinstance(f, CarMovesWithDoorOpen):
        if lead.pos > plan.top - 2 * h:
            lead.move(0.0)
        board()
        lead.doors([(s.door_opening_s, OPENING)], s.door_opening_s)
        start_body()
        creep = [(1.0, 0.5), (1.5, 0.0), (0.5, -1.0)]  # ~1.1 m up, door open
        m = Motion(body.pos, creep, occ=body.occ, door=OPEN)
        body.push(m)
        body.hold(max(0.0, body_s - m.dur), door=OPEN)
        start_rec()
        rec.doors([(s.door_closing_s, CLOSING)], s.door_closing_s)
        rec.move(plan.nearest_landing(rec.pos), slow=True)
        rec.door_cycle(0)
    elif isinstance(f, Overtravel):
        top = f.type == "overtravel_top"
        before = plan.top - h if top else h
        if abs(lead.pos - before) > 1e-9:
            lead.move(before)
        board()
        lead.move(plan.top + f.overtravel_m if top else -f.overtravel_m)
        start_body()
        body.hold(body_s)
        start_rec()
        rec.hold(10.0)
        rec.move(plan.top if top else 0.0, slow=True)
        if rec.occ:
            rec.door_cycle(0)
    elif isinstance(f, DoorFault):
        board()
        start_body()
        if f.type == "door_close_fault":
            steps = [(s.door_closing_s / 2, CLOSING), (1.0, OPENING), (2.0, OPEN)]
        else:
            steps = [(1.0, OPENING), (3.0, CLOSED)]
        body.doors(steps, body_s, repeat=True)
        start_rec()
        if f.type == "door_close_fault":
            rec.doors([(s.door_closing_s, CLOSING)], s.door_closing_s)
        if rec.occ:
            rec.door_cycle(0)
    else:  # stopped at level with a flag forced
        board()
        start_body()
        body.hold(body_s)
        start_rec()
        if rec.occ:
            rec.door_cycle(0)
    return lead, body, rec


@dataclass(frozen=True)
class ElevatorSample:
    ts: datetime
    offset_s: float
    floor: int
    direction: int
    speed_mps: float
    position_m: float
    door_state: int
    door_zone: bool
    at_level: bool
    occupancy: int
    power: bool
    inspection_mode: bool
    maintenance_mode: bool
    safety_circuit_closed: bool
    alarm_button: bool

    def values(self) -> list[MetricValue]:
        b = float
        return [
            MetricValue("floor", self.floor, "floor"),
            MetricValue("direction", self.direction, "enum"),
            MetricValue("speed", self.speed_mps, "m_per_s"),
            MetricValue("position_m", self.position_m, "m"),
            MetricValue("door_state", self.door_state, "enum"),
            MetricValue("door_zone", b(self.door_zone), "bool"),
            MetricValue("at_level", b(self.at_level), "bool"),
            MetricValue("occupancy", self.occupancy, "persons"),
            MetricValue("power", b(self.power), "bool"),
            MetricValue("inspection_mode", b(self.inspection_mode), "bool"),
            MetricValue("maintenance_mode", b(self.maintenance_mode), "bool"),
            MetricValue("safety_circuit_closed", b(self.safety_circuit_closed), "bool"),
            MetricValue("alarm_button", b(self.alarm_button), "bool"),
        ]


def plan_day(spec: ElevatorSpec, faults: Sequence[ElevatorFaultT], seed: int,
             duration_s: float) -> tuple[_Plan, list[tuple[float, float, ElevatorFaultT]]]:
    """Lay out trips and scripted faults; returns the plan and each fault's window."""
    plan = _Plan(spec)
    rng = random.Random(seed)
    margin = 3.0
    windows: list[tuple[float, float, ElevatorFaultT]] = []
    exclusive = sorted((f for f in faults if not isinstance(f, AlarmButton)),
                       key=lambda f: f.at_s)
    for f in exclusive:
        body_s = (min(f.end_s, duration_s) - f.at_s)
        if body_s <= 0:
            continue
        while True:  # random trips that end in time for this fault's lead-in
            trip = _trip(plan, rng, plan.pos)
            lead2, _, _ = _scripted(plan, f, trip.pos, trip.occ, body_s)
            if plan.t + trip.dur + lead2.dur + margin > f.at_s:
                break
            plan.add(trip.segs)
        lead, body, rec = _scripted(plan, f, plan.pos, plan.occ, body_s)
        gap = f.at_s - lead.dur - plan.t
        if gap < -1e-6:
            raise PlanError(f"{f.type} at {f.at_s}s: it needs {lead.dur:.0f}s of lead-in "
                            f"after the car is free at {plan.t:.0f}s; move it later or "
                            "apart from the fault before it")
        plan.add([Hold(plan.pos, gap, plan.occ)])
        plan.add(lead.segs)
        plan.t = f.at_s  # exact, whatever the float sums
        plan.add(body.segs)
        windows.append((f.at_s, f.at_s + body_s, f))
        plan.add(rec.segs)
    while plan.t < duration_s:
        plan.add(_trip(plan, rng, plan.pos).segs)
    windows += [(f.at_s, f.end_s, f) for f in faults if isinstance(f, AlarmButton)]
    return plan, windows


def simulate(spec: ElevatorSpec, start: datetime, interval_s: float, seed: int,
             faults: Sequence[ElevatorFaultT] = (), duration_s: float = 3600.0,
             ) -> Iterator[ElevatorSample]:
    """Samples every ``interval_s`` from ``start`` for ``duration_s``."""
    plan, windows = plan_day(spec, faults, seed, duration_s)
    h = spec.floor_height_m
    i = 0
    while (t := i * interval_s) < duration_s:
        k = plan.at(t)
        flags = {"power": True, "safety_circuit_closed": True, "inspection_mode": False,
                 "maintenance_mode": False, "alarm_button": False}
        for a, b, f in windows:
            if a <= t < b:
                if isinstance(f, AlarmButton):
                    flags["alarm_button"] = True
                elif f.type in _EXCLUSIVE_FLAG:
                    name = _EXCLUSIVE_FLAG[f.type]
                    flags[name] = not flags[name]
        idx = round(k.pos / h)
        off = abs(k.pos - idx * h)
        inside = 0 <= idx < spec.floors
        speed = abs(k.v)
        yield ElevatorSample(
            ts=start + timedelta(seconds=t), offset_s=t,
            floor=spec.lowest_floor + min(max(idx, 0), spec.floors - 1),
            direction=0 if speed < 0.005 else (1 if k.v > 0 else -1),
            speed_mps=round(speed, 2), position_m=round(k.pos, 3), door_state=k.door,
            door_zone=inside and off <= spec.door_zone_m,
            at_level=inside and off <= 0.01 and speed < 0.005,
            occupancy=k.occ, **flags,
        )
        i += 1
