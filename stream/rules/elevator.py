"""Elevator fault rules (GB/T 24476 family, GB/T 24475 remote alarm): pure event-time logic.

The rule keeps, per device, the latest value of every status metric (the *snapshot*: a
sample may carry only some metrics) plus three small door memories derived from the
sequence of door states:

* ``door_origin`` - whether the car was running or stopped when the door last left
  *closed* (tells "the door opened while running" from "the car left a landing with the
  door open");
* ``open_attempt`` - the door has been seen *opening* and has not reached *open* since
  (and the car has not moved);
* ``close_attempt`` - the door has been seen *closing* and has not reached *closed* since.

Each fault is a predicate over that snapshot. A fault is confirmed when its predicate
holds on every sample for ``timer_s`` of event time (``ts - started_at >= timer_s``; a
sample where it is false starts over), then ONE FIRING is emitted with ``started_at`` =
the first sample of the run. It is RESOLVED once after the predicate has been false on
every sample for ``clear_s`` (a true sample during the hold goes back to firing, silently).

Inspection or maintenance mode suppresses *raising*: while either flag is on no fault
starts or confirms (pending timers are dropped); a fault already FIRING stays open until
its own condition clears. Each mode is recorded as its own INFO transition
(``elevator.inspection_mode`` / ``elevator.maintenance_mode``), fired on the first sample
with the flag on and resolved on the first sample with it off.

Default timers (all overridable per rule in :class:`ElevatorParams`):

=============================== ======= ======= ======== ==========================================
rule id (``elevator.*``)        timer_s clear_s severity condition; reference
=============================== ======= ======= ======== ==========================================
``overtravel_top``              3       10      critical car above the top landing by more than
                                                         ``overtravel_margin_m`` (冲顶);
                                                         GB/T 24476 fault list, GB 7588 final limit
``overtravel_bottom``           3       10      critical car below the bottom landing by more than
                                                         the margin (蹲底); GB/T 24476
``overspeed``                   2       10      critical speed > ``overspeed_ratio`` (1.15) x rated
                                                         (governor tripping speed, GB 7588 9.9.1);
                                                         GB/T 24476
``door_open_while_running``     2       10      major    door not closed while the car runs, the
                                                         door having left *closed* while running
                                                         (运行中开门); GB/T 24476
``car_moves_with_door_open``    3       10      critical door not closed and car outside the door
                                                         zone, not the case above (开门走车 /
                                                         unintended car movement, GB 7588 9.11)
``stop_outside_door_zone``      45      10      major    empty car stopped outside the door zone,
                                                         door closed, not overtravel (门区外停梯);
                                                         GB/T 24476
``trapped_at_level``            30      10      critical car stopped at level, door closed,
                                                         occupied or alarm pressed (平层关人);
                                                         GB/T 24476
``trapped_not_at_level``        20      10      critical car stopped not at level, door closed,
                                                         occupied or alarm pressed (非平层关人);
                                                         GB/T 24476
``power_failure``               20      10      major    main power lost (停电); GB/T 24476
``safety_circuit_open``         20      10      major    safety circuit open (安全回路断路);
                                                         GB/T 24476
``door_open_fault``             30      10      major    car stopped, door tried to open and has not
                                                         opened (开门故障); GB/T 24476
``door_close_fault``            30      10      major    door tried to close and has not closed
                                                         (关门故障); GB/T 24476
``emergency_call``              5       10      major    alarm button held (用户报警); GB/T 24475
                                                         remote alarm, a short hold filters a touch
``inspection_mode``             0       0       info     inspection flag on (检修); suppresses
                                                         raising
``maintenance_mode``            0       0       info     maintenance flag on (维保); suppresses
                                                         raising
=============================== ======= ======= ======== ==========================================

The 20-45 s confirmation of DESIGN applies to the standing conditions; the faults that are
by nature brief or immediately dangerous (overtravel, overspeed, door open while running,
car moves with door open) use 2-3 s so that a one-second status feed still confirms them
on more than one sample. ``stop_outside_door_zone`` uses the long end (45 s): nobody is
inside and a car held outside the door zone after a safety-gear stop or a slow rescue
is not by itself urgent.

Geometry: ``overspeed`` needs ``rated_speed_mps`` and ``overtravel_top`` needs
``top_landing_m`` (``position_m`` of the top landing); while unset these rules are not
evaluated. ``position_m`` is measured from the lowest landing (``bottom_landing_m`` 0).

Event time: samples must come in time order per device; a sample at or before the last
one processed is late, counted in ``late_count`` and ignored (the status feed is a
snapshot stream, so an old snapshot cannot be folded in afterwards without replaying).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from stream.rules.excursion import from_us, to_us
from stream.rules.identity import fingerprint, transition_id
from stream.rules.record import Record, evolve

PREFIX = "elevator."

CLOSED, OPENING, OPEN, CLOSING = 0, 1, 2, 3

OVERTRAVEL_TOP = "elevator.overtravel_top"
OVERTRAVEL_BOTTOM = "elevator.overtravel_bottom"
OVERSPEED = "elevator.overspeed"
DOOR_OPEN_WHILE_RUNNING = "elevator.door_open_while_running"
CAR_MOVES_WITH_DOOR_OPEN = "elevator.car_moves_with_door_open"
STOP_OUTSIDE_DOOR_ZONE = "elevator.stop_outside_door_zone"
TRAPPED_AT_LEVEL = "elevator.trapped_at_level"
TRAPPED_NOT_AT_LEVEL = "elevator.trapped_not_at_level"
POWER_FAILURE = "elevator.power_failure"
SAFETY_CIRCUIT_OPEN = "elevator.safety_circuit_open"
DOOR_OPEN_FAULT = "elevator.door_open_fault"
DOOR_CLOSE_FAULT = "elevator.door_close_fault"
EMERGENCY_CALL = "elevator.emergency_call"
INSPECTION_MODE = "elevator.inspection_mode"
MAINTENANCE_MODE = "elevator.maintenance_mode"

MODE_RULES = (INSPECTION_MODE, MAINTENANCE_MODE)


@dataclass(frozen=True)
class RuleParams:
    timer_s: float
    clear_s: float
    severity: Severity
    enabled: bool = True


_C, _M, _I = Severity.CRITICAL, Severity.MAJOR, Severity.INFO

DEFAULT_RULES: Mapping[str, RuleParams] = {
    OVERTRAVEL_TOP: RuleParams(3, 10, _C),
    OVERTRAVEL_BOTTOM: RuleParams(3, 10, _C),
    OVERSPEED: RuleParams(2, 10, _C),
    DOOR_OPEN_WHILE_RUNNING: RuleParams(2, 10, _M),
    CAR_MOVES_WITH_DOOR_OPEN: RuleParams(3, 10, _C),
    STOP_OUTSIDE_DOOR_ZONE: RuleParams(45, 10, _M),
    TRAPPED_AT_LEVEL: RuleParams(30, 10, _C),
    TRAPPED_NOT_AT_LEVEL: RuleParams(20, 10, _C),
    POWER_FAILURE: RuleParams(20, 10, _M),
    SAFETY_CIRCUIT_OPEN: RuleParams(20, 10, _M),
    DOOR_OPEN_FAULT: RuleParams(30, 10, _M),
    DOOR_CLOSE_FAULT: RuleParams(30, 10, _M),
    EMERGENCY_CALL: RuleParams(5, 10, _M),
    INSPECTION_MODE: RuleParams(0, 0, _I),
    MAINTENANCE_MODE: RuleParams(0, 0, _I),
}


@dataclass(frozen=True)
class ElevatorParams:
    rules: Mapping[str, RuleParams] = field(default_factory=lambda: dict(DEFAULT_RULES))
    rated_speed_mps: float | None = None  # overspeed not evaluated while unset
    top_landing_m: float | None = None  # overtravel_top not evaluated while unset
    bottom_landing_m: float = 0.0
    overspeed_ratio: float = 1.15
    overtravel_margin_m: float = 0.2
    moving_speed_mps: float = 0.02  # above this (or direction != 0) the car is running

    def rule(self, rule_id: str) -> RuleParams:
        return self.rules.get(rule_id, DEFAULT_RULES[rule_id])

    def with_rule(self, rule_id: str, **changes: Any) -> ElevatorParams:
        """A copy with one rule's timer / clear hold / severity / enabled changed."""
        if rule_id not in DEFAULT_RULES:
            raise KeyError(f"unknown elevator rule {rule_id!r}")
        rules = dict(self.rules)
        rules[rule_id] = replace(self.rule(rule_id), **changes)
        return replace(self, rules=rules)


class Phase(StrEnum):
    NORMAL = "normal"
    PENDING = "pending"  # condition true, not yet for timer_s
    FIRING = "firing"
    CLEARING = "clearing"  # firing, condition false since `since`


class RuleState(Record, frozen=True):
    phase: Phase = Phase.NORMAL
    started_at: int | None = None  # first sample of the current run (us)
    fired_at: int | None = None
    since: int | None = None  # start of the clear hold


class ElevatorState(Record, frozen=True):
    """Everything kept per device; JSON round-trippable (a Faust table value)."""

    last_ts: int | None = None
    snapshot: dict[str, float] = msgspec.field(default_factory=dict)
    door_origin: str | None = None  # "running" / "stopped" when the door last left closed
    open_attempt: bool = False
    close_attempt: bool = False
    rules: dict[str, RuleState] = msgspec.field(default_factory=dict)
    late_count: int = 0


_RS0 = RuleState()


# --- predicates over the snapshot ---------------------------------------------------------


@dataclass(frozen=True)
class _View:
    s: Mapping[str, float]
    p: ElevatorParams
    door_origin: str | None
    open_attempt: bool
    close_attempt: bool

    def has(self, *names: str) -> bool:
        return all(n in self.s for n in names)

    def flag(self, name: str) -> bool:
        return self.s.get(name, 0.0) >= 0.5

    @property
    def moving(self) -> bool:
        return (abs(self.s.get("direction", 0.0)) >= 0.5
                or self.s.get("speed", 0.0) > self.p.moving_speed_mps)

    @property
    def stopped(self) -> bool:
        return self.has("speed") and not self.moving

    @property
    def door(self) -> int | None:
        d = self.s.get("door_state")
        return None if d is None else round(d)

    @property
    def door_closed(self) -> bool:
        return self.door == CLOSED

    @property
    def door_not_closed(self) -> bool:
        return self.door is not None and self.door != CLOSED

    @property
    def someone_inside(self) -> bool:
        return self.s.get("occupancy", 0.0) >= 1 or self.flag("alarm_button")

    @property
    def over_top(self) -> bool:
        top = self.p.top_landing_m
        return (top is not None and "position_m" in self.s
                and self.s["position_m"] > top + self.p.overtravel_margin_m)

    @property
    def under_bottom(self) -> bool:
        return ("position_m" in self.s
                and self.s["position_m"] < self.p.bottom_landing_m - self.p.overtravel_margin_m)

    @property
    def outside_zone(self) -> bool:
        return self.has("door_zone") and not self.flag("door_zone")


def _overspeed(v: _View) -> bool:
    rated = v.p.rated_speed_mps
    return rated is not None and v.s.get("speed", 0.0) > rated * v.p.overspeed_ratio


def _door_open_running(v: _View) -> bool:
    return v.door_not_closed and v.moving and v.door_origin == "running"


def _car_moves_door_open(v: _View) -> bool:
    return v.door_not_closed and v.outside_zone and not _door_open_running(v)


def _stop_outside_zone(v: _View) -> bool:
    return (v.stopped and v.outside_zone and v.door_closed and not v.someone_inside
            and not v.over_top and not v.under_bottom)


def _trapped_at_level(v: _View) -> bool:
    return v.stopped and v.flag("at_level") and v.door_closed and v.someone_inside


def _trapped_not_at_level(v: _View) -> bool:
    return (v.stopped and v.has("at_level") and not v.flag("at_level") and v.door_closed
            and v.someone_inside)


def _power_failure(v: _View) -> bool:
    return v.has("power") and not v.flag("power")


def _safety_open(v: _View) -> bool:
    return v.has("safety_circuit_closed") and not v.flag("safety_circuit_closed")


PREDICATES: Mapping[str, Callable[[_View], bool]] = {
    OVERTRAVEL_TOP: lambda v: v.over_top,
    OVERTRAVEL_BOTTOM: lambda v: v.under_bottom,
    OVERSPEED: _overspeed,
    DOOR_OPEN_WHILE_RUNNING: _door_open_running,
    CAR_MOVES_WITH_DOOR_OPEN: _car_moves_door_open,
    STOP_OUTSIDE_DOOR_ZONE: _stop_outside_zone,
    TRAPPED_AT_LEVEL: _trapped_at_level,
    TRAPPED_NOT_AT_LEVEL: _trapped_not_at_level,
    POWER_FAILURE: _power_failure,
    SAFETY_CIRCUIT_OPEN: _safety_open,
    DOOR_OPEN_FAULT: lambda v: v.open_attempt and v.stopped,
    DOOR_CLOSE_FAULT: lambda v: v.close_attempt and v.door_not_closed,
    EMERGENCY_CALL: lambda v: v.flag("alarm_button"),
    INSPECTION_MODE: lambda v: v.flag("inspection_mode"),
    MAINTENANCE_MODE: lambda v: v.flag("maintenance_mode"),
}

_SUMMARY = {
    OVERTRAVEL_TOP: "car above the top landing (冲顶)",
    OVERTRAVEL_BOTTOM: "car below the bottom landing (蹲底)",
    OVERSPEED: "car overspeed (超速)",
    DOOR_OPEN_WHILE_RUNNING: "door open while running (运行中开门)",
    CAR_MOVES_WITH_DOOR_OPEN: "car moved away from the landing with the door open (开门走车)",
    STOP_OUTSIDE_DOOR_ZONE: "car stopped outside the door zone (门区外停梯)",
    TRAPPED_AT_LEVEL: "passengers trapped at level (平层关人)",
    TRAPPED_NOT_AT_LEVEL: "passengers trapped not at level (非平层关人)",
    POWER_FAILURE: "power failure (停电)",
    SAFETY_CIRCUIT_OPEN: "safety circuit open (安全回路断路)",
    DOOR_OPEN_FAULT: "door cannot open (开门故障)",
    DOOR_CLOSE_FAULT: "door cannot close (关门故障)",
    EMERGENCY_CALL: "alarm button pressed (用户报警)",
    INSPECTION_MODE: "inspection mode (检修)",
    MAINTENANCE_MODE: "maintenance mode (维保)",
}


def evaluate(state: ElevatorState, params: ElevatorParams) -> dict[str, bool]:
    """Every rule's predicate on the state's snapshot (the raw conditions, no timers)."""
    v = _View(state.snapshot, params, state.door_origin, state.open_attempt,
              state.close_attempt)
    return {rid: bool(pred(v)) for rid, pred in PREDICATES.items()}


# --- the same, as the step runs it ---------------------------------------------------------
#
# The predicates above are the rules as written; the step evaluates them all at once with
# plain local variables (:func:`conditions`), several times faster than through
# ``_View``'s properties (issue 13's batch path). tests/unit/test_rules_elevator.py checks
# that both agree on random snapshots.

RULE_ORDER: tuple[str, ...] = tuple(PREDICATES)


def conditions(s: Mapping[str, float], p: ElevatorParams, origin: str | None,
               opening: bool, closing: bool) -> tuple[bool, ...]:
    """Every predicate of :data:`PREDICATES` on ``s``, in :data:`RULE_ORDER`."""
    get = s.get
    moving = abs(get("direction", 0.0)) >= 0.5 or get("speed", 0.0) > p.moving_speed_mps
    stopped = "speed" in s and not moving
    d = get("door_state")
    door = None if d is None else round(d)
    door_closed = door == CLOSED
    door_not_closed = door is not None and door != CLOSED
    alarm = get("alarm_button", 0.0) >= 0.5
    inside = get("occupancy", 0.0) >= 1 or alarm
    pos = get("position_m")
    top = p.top_landing_m
    over_top = top is not None and pos is not None and pos > top + p.overtravel_margin_m
    under_bottom = pos is not None and pos < p.bottom_landing_m - p.overtravel_margin_m
    outside_zone = "door_zone" in s and not get("door_zone", 0.0) >= 0.5
    rated = p.rated_speed_mps
    running_open = door_not_closed and moving and origin == "running"
    at_level = get("at_level")
    return (
        over_top,
        under_bottom,
        rated is not None and get("speed", 0.0) > rated * p.overspeed_ratio,
        running_open,
        door_not_closed and outside_zone and not running_open,
        (stopped and outside_zone and door_closed and not inside and not over_top
         and not under_bottom),
        stopped and at_level is not None and at_level >= 0.5 and door_closed and inside,
        stopped and at_level is not None and not at_level >= 0.5 and door_closed and inside,
        "power" in s and not get("power", 0.0) >= 0.5,
        "safety_circuit_closed" in s and not get("safety_circuit_closed", 0.0) >= 0.5,
        opening and stopped,
        closing and door_not_closed,
        alarm,
        get("inspection_mode", 0.0) >= 0.5,
        get("maintenance_mode", 0.0) >= 0.5,
    )


_MODE_INDEX = tuple(RULE_ORDER.index(r) for r in MODE_RULES)
# Per parameters object (each device's is kept by the rules model): each rule's
# parameters in RULE_ORDER, and whether it is a mode rule. Holding the parameters object
# keeps its id from being reused while its plan is here.
_PLANS: dict[int, tuple[ElevatorParams, tuple[tuple[str, RuleParams, bool], ...]]] = {}
_PLANS_MAX = 100_000


def _plan(params: ElevatorParams) -> tuple[tuple[str, RuleParams, bool], ...]:
    held = _PLANS.get(id(params))
    if held is not None and held[0] is params:
        return held[1]
    plan = tuple((rid, params.rule(rid), rid in MODE_RULES) for rid in RULE_ORDER)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[id(params)] = (params, plan)
    return plan


# --- transitions ---------------------------------------------------------------------------



def _transition(kind: TransitionKind, rule_id: str, rp: RuleParams, site_id: str,
                device_id: str, started_at: int, at: int, snapshot: Mapping[str, float],
                ) -> AlertTransition:
    fp = fingerprint(rule_id, site_id, device_id)
    start = from_us(started_at)
    tid = transition_id(fp, kind, start)
    held = (at - started_at) / 1_000_000
    what = _SUMMARY[rule_id]
    summary = (f"{what} for {held:.0f} s" if kind is TransitionKind.FIRING
               else f"{what} cleared after {held:.0f} s")
    return AlertTransition(
        transition_id=tid, kind=kind, fingerprint=fp, rule_id=rule_id, severity=rp.severity,
        site_id=site_id, device_id=device_id, started_at=start, at=from_us(at),
        summary=summary,
        values={"timer_s": rp.timer_s, "clear_s": rp.clear_s, "status": dict(snapshot)},
    )


def _advance(rs: RuleState, cond: bool, may_raise: bool, t: int, rp: RuleParams,
             ) -> tuple[RuleState, TransitionKind | None]:
    timer = round(rp.timer_s * 1_000_000)
    clear = round(rp.clear_s * 1_000_000)
    if rs.phase is Phase.NORMAL or rs.phase is Phase.PENDING:
        if not (cond and may_raise):
            return _RS0, None
        start = rs.started_at if rs.phase is Phase.PENDING and rs.started_at is not None else t
        if t - start >= timer:
            return RuleState(phase=Phase.FIRING, started_at=start, fired_at=t), \
                TransitionKind.FIRING
        return RuleState(phase=Phase.PENDING, started_at=start), None
    if cond:
        return evolve(rs, phase=Phase.FIRING, since=None), None
    since = rs.since if rs.phase is Phase.CLEARING and rs.since is not None else t
    if t - since >= clear:
        return _RS0, TransitionKind.RESOLVED
    return evolve(rs, phase=Phase.CLEARING, since=since), None


def _door_memory(state: ElevatorState, snap: Mapping[str, float], params: ElevatorParams,
                 ) -> tuple[str | None, bool, bool]:
    origin, opening, closing = state.door_origin, state.open_attempt, state.close_attempt
    d = snap.get("door_state")
    if d is None:
        return origin, opening, closing
    door = round(d)
    get = snap.get
    moving = (abs(get("direction", 0.0)) >= 0.5
              or get("speed", 0.0) > params.moving_speed_mps)  # (_View.moving)
    if door == CLOSED:
        origin = None
    elif origin is None:
        origin = "running" if moving else "stopped"
    if door == OPENING:
        opening = True
    if door == OPEN or moving:
        opening = False
    if door == CLOSING:
        closing = True
    if door == CLOSED:
        closing = False
    return origin, opening, closing


def step(
    state: ElevatorState, params: ElevatorParams, site_id: str, device_id: str,
    ts: datetime, values: Mapping[str, float],
) -> tuple[ElevatorState, list[AlertTransition]]:
    """Feed one status sample (any subset of metrics); returns the new state and the
    transitions to send. Late samples (at or before the last one) are counted and ignored."""
    return step_us(state, params, site_id, device_id, to_us(ts), values)


def step_us(
    state: ElevatorState, params: ElevatorParams, site_id: str, device_id: str,
    t: int, values: Mapping[str, float],
) -> tuple[ElevatorState, list[AlertTransition]]:
    """:func:`step` with the event time in microseconds since the epoch."""
    if state.last_ts is not None and t <= state.last_ts:
        return evolve(state, late_count=state.late_count + 1), []
    snap = {**state.snapshot, **{k: float(x) for k, x in values.items()}}
    origin, opening, closing = _door_memory(state, snap, params)
    conds = conditions(snap, params, origin, opening, closing)
    suppressed = conds[_MODE_INDEX[0]] or conds[_MODE_INDEX[1]]
    rules: dict[str, RuleState] = {}
    out: list[AlertTransition] = []
    held = state.rules
    for (rid, rp, mode), cond in zip(_plan(params), conds, strict=True):
        rs = held.get(rid)
        if rs is None:  # normal: only a raised condition can change it
            if not (cond and rp.enabled and (mode or not suppressed)):
                continue
            rs = _RS0
        elif not rp.enabled and rs.phase not in (Phase.FIRING, Phase.CLEARING):
            continue
        may_raise = rp.enabled and (mode or not suppressed)
        started = rs.started_at
        rs, kind = _advance(rs, cond, may_raise, t, rp)
        if kind is TransitionKind.FIRING:
            assert rs.started_at is not None
            out.append(_transition(kind, rid, rp, site_id, device_id, rs.started_at, t, snap))
        elif kind is TransitionKind.RESOLVED:
            assert started is not None
            out.append(_transition(kind, rid, rp, site_id, device_id, started, t, snap))
        if rs.phase is not Phase.NORMAL:
            rules[rid] = rs
    return ElevatorState(
        last_ts=t, snapshot=snap, door_origin=origin, open_attempt=opening,
        close_attempt=closing, rules=rules, late_count=state.late_count), out


def open_alerts(state: ElevatorState) -> list[str]:
    """Rule ids whose FIRING has been sent and not resolved yet."""
    return sorted(r for r, s in state.rules.items() if s.phase in (Phase.FIRING, Phase.CLEARING))


def open_fingerprints(state: ElevatorState, site_id: str, device_id: str) -> set[str]:
    return {fingerprint(r, site_id, device_id) for r in open_alerts(state)}
