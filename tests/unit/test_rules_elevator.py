"""Elevator rules: timers, clear hold, suppression by modes, state round-trip."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from stream.rules.elevator import (
    DEFAULT_RULES,
    RULE_ORDER,
    ElevatorParams,
    ElevatorState,
    conditions,
    evaluate,
    open_alerts,
    step,
)
from stream.rules.record import from_json, to_json

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
P = ElevatorParams(rated_speed_mps=1.75, top_landing_m=33.0)

# stopped at level, door closed, empty, everything healthy
IDLE: dict[str, float] = {
    "floor": 1, "direction": 0, "speed": 0.0, "position_m": 0.0, "door_state": 0,
    "door_zone": 1, "at_level": 1, "occupancy": 0, "power": 1, "inspection_mode": 0,
    "maintenance_mode": 0, "safety_circuit_closed": 1, "alarm_button": 0,
}
TRAPPED = {**IDLE, "occupancy": 2}


class Feed:
    def __init__(self, params: ElevatorParams = P) -> None:
        self.params = params
        self.state = ElevatorState()
        self.out: list[AlertTransition] = []

    def at(self, sec: float, values: Mapping[str, float]) -> list[AlertTransition]:
        self.state, trs = step(self.state, self.params, "site-a", "el-1",
                               T0 + timedelta(seconds=sec), values)
        self.out.extend(trs)
        return trs

    def run(self, start: int, stop: int, values: Mapping[str, float]) -> list[AlertTransition]:
        new: list[AlertTransition] = []
        for sec in range(start, stop):
            new.extend(self.at(sec, values))
        return new


def kinds(trs: list[AlertTransition]) -> list[tuple[str, str]]:
    return [(t.kind.value, t.rule_id) for t in trs]


def test_idle_car_is_quiet() -> None:
    f = Feed()
    assert f.run(0, 300, IDLE) == []
    assert not any(evaluate(f.state, P).values())


def test_brief_blip_does_not_fire() -> None:
    f = Feed()
    f.run(0, 10, IDLE)
    f.run(10, 39, TRAPPED)  # 29 s < 30 s timer
    f.run(39, 100, IDLE)
    assert f.out == []


def test_interrupted_run_starts_over() -> None:
    f = Feed()
    f.run(0, 20, TRAPPED)
    f.at(20, {"door_state": 1})  # the door starts opening: the run breaks
    f.run(21, 50, TRAPPED)  # 29 s more, not 30
    assert f.out == []


def test_persistence_fires_once_with_start_of_condition() -> None:
    f = Feed()
    f.run(0, 10, IDLE)
    assert f.run(10, 39, TRAPPED) == []
    (fire,) = f.at(40, TRAPPED)
    assert fire.kind is TransitionKind.FIRING
    assert fire.rule_id == "elevator.trapped_at_level"
    assert fire.severity is Severity.CRITICAL
    assert fire.started_at == T0 + timedelta(seconds=10)
    assert fire.at == T0 + timedelta(seconds=40)
    assert f.run(41, 200, TRAPPED) == []  # no repeat
    assert open_alerts(f.state) == ["elevator.trapped_at_level"]


def test_clears_only_after_hold() -> None:
    f = Feed()
    f.run(0, 40, TRAPPED)
    assert kinds(f.out) == [("firing", "elevator.trapped_at_level")]
    f.run(40, 45, IDLE)
    f.run(45, 50, TRAPPED)  # back before the 10 s hold ended: still the same alert
    assert f.run(50, 59, IDLE) == []
    (res,) = f.at(60, IDLE)
    assert res.kind is TransitionKind.RESOLVED
    assert res.started_at == T0
    assert res.fingerprint == f.out[0].fingerprint
    assert res.transition_id != f.out[0].transition_id
    assert f.run(61, 100, IDLE) == []
    assert open_alerts(f.state) == []


def test_transition_ids_are_deterministic() -> None:
    a, b = Feed(), Feed()
    for f in (a, b):
        f.run(0, 40, TRAPPED)
        f.run(40, 60, IDLE)
    assert [t.transition_id for t in a.out] == [t.transition_id for t in b.out]
    assert len({t.transition_id for t in a.out}) == 2


def test_maintenance_suppresses_raising_and_is_recorded() -> None:
    f = Feed()
    maint = {**TRAPPED, "maintenance_mode": 1}
    f.run(0, 100, maint)
    assert kinds(f.out) == [("firing", "elevator.maintenance_mode")]
    assert f.out[0].severity is Severity.INFO
    # mode off: the trapped timer starts from the first unsuppressed sample
    f.run(100, 129, TRAPPED)
    assert kinds(f.out)[1:] == [("resolved", "elevator.maintenance_mode")]
    f.at(130, TRAPPED)
    assert kinds(f.out)[2:] == [("firing", "elevator.trapped_at_level")]
    assert f.out[2].started_at == T0 + timedelta(seconds=100)


def test_inspection_suppresses_too() -> None:
    f = Feed()
    f.run(0, 100, {**IDLE, "inspection_mode": 1, "power": 0, "alarm_button": 1})
    assert kinds(f.out) == [("firing", "elevator.inspection_mode")]


def test_mode_does_not_hide_an_open_alert() -> None:
    f = Feed()
    f.run(0, 40, TRAPPED)
    f.run(40, 60, {**TRAPPED, "maintenance_mode": 1})
    assert open_alerts(f.state) == ["elevator.maintenance_mode", "elevator.trapped_at_level"]
    f.run(60, 80, {**IDLE, "maintenance_mode": 1})
    assert kinds(f.out)[-1] == ("resolved", "elevator.trapped_at_level")


def test_short_timers_for_brief_faults() -> None:
    f = Feed()
    f.at(0, {**IDLE, "position_m": 20.0, "speed": 1.75, "direction": 1, "door_zone": 0,
             "at_level": 0})
    fast = {"speed": 2.2}
    f.at(1, fast)
    assert f.at(2, fast) == []
    (fire,) = f.at(3, fast)
    assert fire.rule_id == "elevator.overspeed"
    assert fire.started_at == T0 + timedelta(seconds=1)


def test_door_open_while_running_vs_car_moves_with_door_open() -> None:
    running = {**IDLE, "speed": 1.75, "direction": 1, "door_zone": 0, "at_level": 0,
               "position_m": 10.0}
    f = Feed()
    f.run(0, 5, running)
    f.run(5, 10, {**running, "door_state": 2})
    assert kinds(f.out) == [("firing", "elevator.door_open_while_running")]

    g = Feed()
    g.run(0, 5, {**IDLE, "door_state": 2})  # door opened at the landing
    g.run(5, 10, {**IDLE, "door_state": 2, "speed": 0.3, "direction": 1, "door_zone": 0,
                  "at_level": 0, "position_m": 1.0})
    assert kinds(g.out) == [("firing", "elevator.car_moves_with_door_open")]


def test_overtravel_needs_no_speed_and_suppresses_stop_outside_zone() -> None:
    f = Feed()
    f.run(0, 100, {**IDLE, "position_m": 33.5, "door_zone": 0, "at_level": 0})
    assert kinds(f.out) == [("firing", "elevator.overtravel_top")]


def test_unset_geometry_disables_overspeed_and_overtravel_top() -> None:
    f = Feed(ElevatorParams())
    f.run(0, 20, {**IDLE, "speed": 3.0, "direction": 1, "door_zone": 0, "at_level": 0,
                  "position_m": 40.0})
    assert f.out == []


def test_partial_samples_update_the_snapshot() -> None:
    f = Feed()
    f.at(0, IDLE)
    assert f.run(1, 21, {"power": 0}) == []  # 20 s timer
    (fire,) = f.at(21, {"floor": 1})
    assert fire.rule_id == "elevator.power_failure"
    assert fire.started_at == T0 + timedelta(seconds=1)


def test_late_sample_is_ignored() -> None:
    f = Feed()
    f.run(0, 10, IDLE)
    before = f.state
    assert f.at(5, TRAPPED) == []
    assert f.state.snapshot == before.snapshot
    assert f.state.late_count == 1


def test_overrides() -> None:
    p = P.with_rule("elevator.trapped_at_level", timer_s=5, severity=Severity.MAJOR)
    f = Feed(p)
    f.run(0, 6, TRAPPED)
    assert kinds(f.out) == [("firing", "elevator.trapped_at_level")]
    assert f.out[0].severity is Severity.MAJOR
    g = Feed(P.with_rule("elevator.trapped_at_level", enabled=False))
    g.run(0, 100, TRAPPED)
    assert g.out == []


def test_default_timers_follow_design() -> None:
    brief = {"elevator.overspeed", "elevator.overtravel_top", "elevator.overtravel_bottom",
             "elevator.door_open_while_running", "elevator.car_moves_with_door_open",
             "elevator.emergency_call", "elevator.inspection_mode",
             "elevator.maintenance_mode"}
    for rid, rp in DEFAULT_RULES.items():
        assert rid.startswith("elevator.")
        if rid not in brief:
            assert 20 <= rp.timer_s <= 45, rid


def test_state_json_round_trip_mid_run() -> None:
    f = Feed()
    f.run(0, 20, TRAPPED)
    f.state = from_json(to_json(f.state), ElevatorState)
    f.run(20, 40, TRAPPED)
    f.state = from_json(to_json(f.state), ElevatorState)
    f.run(40, 60, IDLE)
    assert kinds(f.out) == [("firing", "elevator.trapped_at_level"),
                            ("resolved", "elevator.trapped_at_level")]
    assert f.out[0].started_at == T0


# values around every threshold the predicates compare with (0.5 flags, door states,
# the overspeed and overtravel limits of P and of a geometry-less device)
_VALUES = st.sampled_from([0.0, 0.49, 0.5, 1.0, 2.0, 3.0, -1.0, 0.02, 0.021, 2.0125,
                           2.02, 33.2, 33.21, -0.2, -0.21, 1.5, 2.5, 0.999])


@settings(max_examples=600, deadline=None)
@given(snap=st.dictionaries(st.sampled_from([*IDLE, "other"]), _VALUES),
       origin=st.sampled_from([None, "running", "stopped"]), opening=st.booleans(),
       closing=st.booleans(), geometry=st.booleans())
def test_step_conditions_agree_with_the_predicates(
        snap: dict[str, float], origin: str | None, opening: bool, closing: bool,
        geometry: bool) -> None:
    """The step's all-at-once evaluation gives what each rule's predicate says."""
    params = P if geometry else ElevatorParams()
    state = ElevatorState(snapshot=snap, door_origin=origin, open_attempt=opening,
                          close_attempt=closing)
    got = dict(zip(RULE_ORDER, conditions(snap, params, origin, opening, closing),
                   strict=True))
    assert got == evaluate(state, params)


def test_disabled_rule_still_clears_once_firing() -> None:
    """A rule disabled while firing is not raised again but still resolves."""
    f = Feed()
    f.run(0, 40, TRAPPED)
    f.params = P.with_rule("elevator.trapped_at_level", enabled=False)
    f.run(40, 60, IDLE)
    f.run(60, 200, TRAPPED)
    assert kinds(f.out) == [("firing", "elevator.trapped_at_level"),
                            ("resolved", "elevator.trapped_at_level")]
