"""Elevator rules against the seeded simulator: every scenario file raises exactly its fault.

Each fault file holds one scripted fault from 300 s; feeding all its samples through
:func:`stream.rules.elevator.step` must give exactly one FIRING and one RESOLVED, for the
expected rule, with ``started_at`` at the fault start. No co-occurring alert is expected in
any file: the overlaps the simulator does produce are kept apart on purpose by the rules:

* overspeed: after the safety gear the empty car rests ~30 s outside the door zone; that is
  below the 45 s confirmation of ``stop_outside_door_zone``, so it stays quiet;
* overtravel top / bottom: the car rests outside the door zone, which ``stop_outside_door_zone``
  leaves to the more specific overtravel rule;
* trapped between floors: the car is occupied, so it is ``trapped_not_at_level`` and not
  ``stop_outside_door_zone`` (empty car only);
* door open fault: one passenger and the door closed most of the time, but each opening
  attempt breaks ``trapped_at_level``'s run, so only the door fault confirms;
* car moves with door open / door open while moving: the door's origin (left closed at a
  landing or while running) tells the two apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.simulators.scenario import ElevatorScenario, iter_samples, load_scenario
from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from stream.rules.elevator import ElevatorParams, ElevatorState, step

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios" / "elevator"

EXPECTED = {
    "alarm-button.yaml": ("elevator.emergency_call", Severity.MAJOR),
    "car-moves-with-door-open.yaml": ("elevator.car_moves_with_door_open", Severity.CRITICAL),
    "door-close-fault.yaml": ("elevator.door_close_fault", Severity.MAJOR),
    "door-open-fault.yaml": ("elevator.door_open_fault", Severity.MAJOR),
    "door-open-while-moving.yaml": ("elevator.door_open_while_running", Severity.MAJOR),
    "inspection-mode.yaml": ("elevator.inspection_mode", Severity.INFO),
    "maintenance-mode.yaml": ("elevator.maintenance_mode", Severity.INFO),
    "overspeed.yaml": ("elevator.overspeed", Severity.CRITICAL),
    "overtravel-bottom.yaml": ("elevator.overtravel_bottom", Severity.CRITICAL),
    "overtravel-top.yaml": ("elevator.overtravel_top", Severity.CRITICAL),
    "power-failure.yaml": ("elevator.power_failure", Severity.MAJOR),
    "safety-circuit-open.yaml": ("elevator.safety_circuit_open", Severity.MAJOR),
    "stop-outside-door-zone.yaml": ("elevator.stop_outside_door_zone", Severity.MAJOR),
    "trapped-at-level.yaml": ("elevator.trapped_at_level", Severity.CRITICAL),
    "trapped-between-floors.yaml": ("elevator.trapped_not_at_level", Severity.CRITICAL),
}

# The car moves ~0.6 s after the fault start before it leaves the door zone, so the first
# sample on which "outside the door zone with the door open" holds is 301 s.
START_SLACK_S = {"car-moves-with-door-open.yaml": 1.0}


def _run(sc: ElevatorScenario) -> list[AlertTransition]:
    spec = sc.spec
    params = ElevatorParams(rated_speed_mps=spec.rated_speed_mps,
                            top_landing_m=(spec.floors - 1) * spec.floor_height_m)
    state = ElevatorState()
    out: list[AlertTransition] = []
    for s in iter_samples(sc):
        state, trs = step(state, params, "site-a", "el-1", s.ts,
                          {v.metric: v.value for v in s.values})
        out.extend(trs)
    return out


def _load(name: str) -> ElevatorScenario:
    sc = load_scenario(SCENARIOS / name)
    assert isinstance(sc, ElevatorScenario)
    return sc


def test_every_fault_file_is_covered() -> None:
    files = {p.name for p in SCENARIOS.glob("*.yaml")} - {"normal.yaml"}
    assert files == set(EXPECTED)


def test_normal_day_raises_nothing() -> None:
    assert _run(_load("normal.yaml")) == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fault_file_raises_its_rule_once(name: str) -> None:
    sc = _load(name)
    (fault,) = sc.faults
    rule_id, severity = EXPECTED[name]
    out = _run(sc)
    assert [(t.kind, t.rule_id) for t in out] == [
        (TransitionKind.FIRING, rule_id), (TransitionKind.RESOLVED, rule_id)]
    firing, resolved = out
    t0 = sc.start.timestamp()
    started = firing.started_at.timestamp() - t0
    assert fault.at_s <= started <= fault.at_s + START_SLACK_S.get(name, 0.0)
    assert resolved.started_at == firing.started_at
    assert firing.severity is severity
    assert firing.fingerprint == resolved.fingerprint
    # confirmed within its timer, resolved only after the fault ends
    assert firing.at.timestamp() - t0 <= fault.at_s + 45
    assert resolved.at.timestamp() - t0 >= min(fault.end_s, sc.duration_s)
