"""Scenario files: loading errors, determinism, and each scripted fault in the data."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.simulators.scenario import (
    ColdRoomScenario,
    ElevatorScenario,
    ScenarioError,
    ScenarioSample,
    iter_samples,
    load_scenario,
    parse_scenario,
)

ROOT = Path(__file__).resolve().parents[2]
SC = ROOT / "scenarios"


def _series(path: Path, seed: int | None = None) -> list[dict[str, float]]:
    return [{v.metric: v.value for v in s.values}
            for s in iter_samples(load_scenario(path), seed=seed)]


def _samples(path: Path) -> list[ScenarioSample]:
    return list(iter_samples(load_scenario(path)))


BASE = {"kind": "cold_room", "start": "2026-01-05T08:00:00+08:00", "interval_s": 10,
        "duration_s": 600}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**BASE, "kind": "boiler"}, "kind"),
        ({**BASE, "start": "2026-01-05T08:00:00"}, "start: Input should have timezone"),
        ({**BASE, "interval_s": 0}, "interval_s"),
        ({**BASE, "spec": {"setpoint": 3}}, "spec.setpoint: Extra inputs"),
        ({**BASE, "faults": [{"type": "overspeed", "at_s": 1}]}, "faults.0"),
        ({**BASE, "faults": [{"type": "compressor_failure", "at_s": 900}]},
         "not before duration_s"),
        ({**BASE, "faults": [{"type": "probe_failure", "at_s": 1, "mode": "melted"}]},
         "faults.0.probe_failure.mode"),
        ({**BASE, "kind": "elevator", "interval_s": 1,
          "faults": [{"type": "trapped_at_level", "at_s": 2, "for_s": 10}]}, "lead-in"),
        ({**BASE, "kind": "elevator", "interval_s": 1,
          "faults": [{"type": "overspeed", "at_s": 200, "for_s": 60}]}, "shorten"),
        ("just text", "a mapping"),
    ],
)
def test_invalid_scenarios_are_refused_with_the_place(data: object, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(data, "x.yaml")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [cold_room\n")
    with pytest.raises(ScenarioError, match=r"bad\.yaml: not valid YAML"):
        load_scenario(bad)


def test_every_shipped_scenario_loads_and_has_the_stated_length() -> None:
    files = sorted(SC.rglob("*.yaml"))
    assert len(files) >= 20
    for f in files:
        sc = load_scenario(f)
        assert isinstance(sc, ColdRoomScenario | ElevatorScenario)
        n = sum(1 for _ in iter_samples(sc))
        assert n == round(sc.duration_s / sc.interval_s), f


@pytest.mark.parametrize("path", ["cold_room/chilled-normal.yaml", "elevator/normal.yaml"])
def test_same_seed_same_readings_other_seed_other_readings(path: str) -> None:
    assert _series(SC / path) == _series(SC / path)
    assert _series(SC / path) != _series(SC / path, seed=99)


def test_fault_day_equals_normal_day_until_the_fault() -> None:
    normal = _series(SC / "cold_room/chilled-normal.yaml")
    failing = _series(SC / "cold_room/chilled-compressor-failure.yaml")
    assert normal[:180] == failing[:180]  # 1800 s / 10 s
    assert normal[200:] != failing[200:]


# --- cold room ----------------------------------------------------------------------


def _col(rows: list[dict[str, float]], metric: str) -> list[float]:
    return [r[metric] for r in rows]


@pytest.mark.parametrize("variant", ["chilled", "frozen"])
def test_normal_day_holds_temperature(variant: str) -> None:
    rows = _series(SC / f"cold_room/{variant}-normal.yaml")
    air, product = _col(rows, "temperature"), _col(rows, "temperature_product")
    if variant == "chilled":
        assert min(air) > 0 and max(air) < 8 and min(product) > 2 and max(product) < 5
    else:
        assert max(air) < -15 and max(product) < -18  # air rises in the defrost only
    assert 0 < sum(_col(rows, "compressor_on")) < len(rows)  # it cycles
    assert sum(_col(rows, "defrost_on")) > 0
    assert sum(_col(rows, "door_open")) > 0
    assert all(40 <= h <= 100 for h in _col(rows, "humidity"))


def test_chilled_compressor_failure_crosses_8c_and_recovers() -> None:
    rows = _series(SC / "cold_room/chilled-compressor-failure.yaml")
    air, comp = _col(rows, "temperature"), _col(rows, "compressor_on")
    assert sum(comp[180:420]) == 0  # 1800 s .. 4200 s: cannot run
    crossed = next(i for i, t in enumerate(air) if t > 8.0)
    assert 180 < crossed < 360  # within half an hour of the failure
    assert air[-1] < 5.0


def test_frozen_compressor_failure_crosses_minus_18_then_minus_15() -> None:
    air = _col(_series(SC / "cold_room/frozen-compressor-failure.yaml"), "temperature")
    over18 = next(i for i, t in enumerate(air) if t > -18.0)
    over15 = next(i for i, t in enumerate(air) if t > -15.0)
    assert 180 <= over18 < over15 < 420
    assert air[-1] < -18.0


def test_door_left_open_warms_while_the_compressor_runs() -> None:
    rows = _series(SC / "cold_room/chilled-door-left-open.yaml")
    assert all(_col(rows, "door_open")[180:480])
    assert max(_col(rows, "temperature")[180:480]) > 8.0
    assert sum(_col(rows, "compressor_on")[180:480]) > 200


def test_probe_open_reads_850_and_stuck_holds() -> None:
    air = _col(_series(SC / "cold_room/chilled-probe-open.yaml"), "temperature")
    assert all(t == 850.0 for t in air[180:300]) and air[179] < 10 and air[300] < 10
    prod = _col(_series(SC / "cold_room/chilled-probe-stuck.yaml"), "temperature_product")
    assert len(set(prod[180:420])) == 1 and len(set(prod[420:])) > 1


# --- elevator -----------------------------------------------------------------------


def _window(path: str, a: int, b: int) -> list[dict[str, float]]:
    return _series(SC / f"elevator/{path}.yaml")[a:b]


def test_normal_elevator_trips_and_door_cycles() -> None:
    rows = _series(SC / "elevator/normal.yaml")
    assert len({r["floor"] for r in rows}) >= 5
    assert {r["door_state"] for r in rows} == {0, 1, 2, 3}
    assert max(r["speed"] for r in rows) == pytest.approx(1.75, abs=0.01)
    assert max(r["occupancy"] for r in rows) > 0
    for r in rows:  # never moves with the door open; doors open only at level
        assert not (r["speed"] > 0 and r["door_state"] != 0)
        assert r["door_state"] == 0 or r["at_level"] == 1
        assert r["power"] == r["safety_circuit_closed"] == 1
        assert r["alarm_button"] == r["inspection_mode"] == r["maintenance_mode"] == 0


def test_trapped_at_level() -> None:
    for r in _window("trapped-at-level", 300, 360):
        assert (r["speed"], r["door_state"], r["at_level"], r["door_zone"]) == (0, 0, 1, 1)
        assert r["occupancy"] == 2
    after = _window("trapped-at-level", 360, 380)
    assert any(r["door_state"] == 2 for r in after) and after[-1]["occupancy"] == 0


@pytest.mark.parametrize(("name", "occ"), [("trapped-between-floors", 2),
                                           ("stop-outside-door-zone", 0)])
def test_stopped_outside_the_door_zone(name: str, occ: int) -> None:
    for r in _window(name, 300, 360):
        assert (r["speed"], r["door_state"], r["door_zone"], r["at_level"]) == (0, 0, 0, 0)
        assert r["occupancy"] == occ


def test_door_open_while_moving() -> None:
    rows = _window("door-open-while-moving", 300, 305)
    assert all(r["door_state"] == 2 and r["speed"] > 1.0 for r in rows)
    assert _window("door-open-while-moving", 305, 306)[0]["door_state"] == 0


def test_car_moves_with_door_open() -> None:
    rows = _window("car-moves-with-door-open", 299, 360)
    assert rows[0]["at_level"] == 1 and rows[1]["door_state"] == 2
    assert any(r["speed"] > 0 for r in rows[1:4])
    assert all(r["door_state"] == 2 for r in rows[1:])
    assert all(r["door_zone"] == 0 and r["speed"] == 0 for r in rows[5:])


def test_overspeed() -> None:
    rows = _window("overspeed", 300, 304)
    assert all(r["speed"] >= 1.25 * 1.75 - 0.01 for r in rows)
    assert _window("overspeed", 306, 320)[-1]["speed"] == 0


@pytest.mark.parametrize(("name", "beyond"), [("overtravel-top", 33.5),
                                              ("overtravel-bottom", -0.5)])
def test_overtravel(name: str, beyond: float) -> None:
    for r in _window(name, 300, 360):
        assert r["position_m"] == pytest.approx(beyond)
        assert (r["speed"], r["door_zone"], r["at_level"]) == (0, 0, 0)
    assert r["floor"] == (12 if beyond > 0 else 1)


@pytest.mark.parametrize(("name", "metric"), [
    ("power-failure", "power"), ("safety-circuit-open", "safety_circuit_closed")])
def test_flag_faults_at_level(name: str, metric: str) -> None:
    rows = _series(SC / f"elevator/{name}.yaml")
    assert [i for i, r in enumerate(rows) if r[metric] == 0] == list(range(300, 360))
    assert all(r["speed"] == 0 and r["at_level"] == 1 for r in rows[300:360])


@pytest.mark.parametrize("mode", ["inspection_mode", "maintenance_mode"])
def test_mode_periods(mode: str) -> None:
    rows = _series(SC / f"elevator/{mode.replace('_', '-')}.yaml")
    assert [i for i, r in enumerate(rows) if r[mode] == 1] == list(range(300, 420))


def test_door_faults() -> None:
    close = _window("door-close-fault", 300, 360)
    assert all(r["door_state"] != 0 for r in close) and {2, 3} <= {r["door_state"] for r in close}
    opening = _window("door-open-fault", 300, 360)
    assert all(r["door_state"] in (0, 1) for r in opening)
    assert all(r["occupancy"] == 1 and r["at_level"] == 1 for r in opening)


def test_alarm_button_and_power_events() -> None:
    alarm = _samples(SC / "elevator/alarm-button.yaml")
    assert [(s.offset_s, e.event) for s in alarm for e in s.events] == [
        (300.0, "alarm_button_pressed")]
    assert all(s.values[-1].value == 1 for s in alarm[300:310])  # alarm_button is last
    power = _samples(SC / "elevator/power-failure.yaml")
    assert [(s.offset_s, e.event, e.severity.value) for s in power for e in s.events] == [
        (300.0, "power_lost", "critical"), (360.0, "power_restored", "info")]
