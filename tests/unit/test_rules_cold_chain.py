"""Cold-chain rules: per-rule unit tests and the cold-room scenario files end to end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.simulators.scenario import ColdRoomScenario, iter_samples, load_scenario
from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from stream.rules.cold_chain import (
    RULE_COMPRESSOR,
    RULE_DOOR_OPEN,
    RULE_FROZEN_REBOUND,
    RULE_HUMIDITY,
    RULE_PROBE_FAILURE,
    RULE_RATE_OF_RISE,
    RULE_TEMPERATURE_HIGH,
    RULE_TEMPERATURE_LOW,
    ColdChainParams,
    ColdChainState,
    default_params,
    step,
)
from stream.rules.record import from_json, to_json

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios" / "cold_room"
BASE = {"temperature": 3.0, "temperature_product": 3.0, "humidity": 80.0, "door_open": 0.0,
        "compressor_on": 1.0, "defrost_on": 0.0}


class Feed:
    def __init__(self, params: ColdChainParams | None = None) -> None:
        self.params = params or default_params("chilled")
        self.state = ColdChainState()
        self.out: list[AlertTransition] = []

    def __call__(self, samples: Iterable[tuple[float, Mapping[str, float]]]) -> list[
            AlertTransition]:
        new: list[AlertTransition] = []
        for sec, values in samples:
            r = step(self.state, self.params, "site-a", "cr-1", T0 + timedelta(seconds=sec),
                     values)
            self.state = r.state
            new.extend(r.transitions)
        self.out.extend(new)
        return new


def run(start: float, stop: float, dt: float = 10, **values: float) -> list[
        tuple[float, dict[str, float]]]:
    """Samples every dt seconds over [start, stop) with BASE overridden by ``values``;
    a float ``temperature`` may be given as ``temperature`` and a slope as ``slope``."""
    slope = values.pop("slope", 0.0)
    out = []
    n = int((stop - start) // dt)
    for i in range(n):
        sec = start + i * dt
        v = {**BASE, **values}
        v["temperature"] = v["temperature"] + slope * (i * dt)
        # keep the product probe alive (it changes a little) unless told otherwise
        if "temperature_product" not in values:
            v["temperature_product"] = 3.0 + (i % 7) * 0.01
        out.append((sec, v))
    return out


def kinds(trs: list[AlertTransition], rule: str) -> list[TransitionKind]:
    return [t.kind for t in trs if t.rule_id == rule]


# ------------------------------------------------------------------ temperature_low


def test_freeze_blip_does_not_fire_persistence_does_and_clears_after_hold() -> None:
    f = Feed()
    assert f(run(0, 300, temperature=-0.5)) == []  # 5 min below 0: blip
    assert f(run(300, 600, temperature=3.0)) == []
    trs = f(run(600, 1300, temperature=0.0))  # at 0 °C counts ("at or below")
    assert kinds(trs, RULE_TEMPERATURE_LOW) == [TransitionKind.FIRING]
    assert trs[0].started_at == T0 + timedelta(seconds=600)
    # inside the hysteresis band (0 < t <= 0.5) it does not clear
    assert f(run(1300, 1800, temperature=0.4)) == []
    trs = f(run(1800, 1900, temperature=2.0))
    assert trs == []  # 90 s of the 120 s hold
    trs = f(run(1900, 2000, temperature=2.0))
    assert kinds(trs, RULE_TEMPERATURE_LOW) == [TransitionKind.RESOLVED]
    assert [t.rule_id for t in f.out] == [RULE_TEMPERATURE_LOW] * 2


def test_frozen_variant_has_no_freeze_rule_but_rebound() -> None:
    p = default_params("frozen")
    assert p.temperature_low is None
    assert p.frozen_rebound is not None and p.frozen_rebound.severity is Severity.CRITICAL
    assert p.frozen_rebound.limit == -15.0


# ------------------------------------------------------------------ temperature_high / rebound


def frozen_base(**kw: float) -> dict[str, float]:
    return {"temperature": -20.0, "temperature_product": -20.0, "humidity": 70.0,
            "door_open": 0.0, "compressor_on": 1.0, "defrost_on": 0.0, **kw}


def test_frozen_rebound_fires_critical_after_duration_and_resolves() -> None:
    f = Feed(default_params("frozen", temperature_high=None, rate_of_rise=None,
                            probe_failure=None))
    seq = [(float(s), frozen_base(temperature=-20.0 + (s % 30) * 0.001)) for s in range(0, 600, 10)]
    seq += [(float(s), frozen_base(temperature=-14.0)) for s in range(600, 800, 10)]  # blip
    seq += [(float(s), frozen_base(temperature=-20.0)) for s in range(800, 1000, 10)]
    assert f(seq) == []
    seq = [(float(s), frozen_base(temperature=-14.0)) for s in range(1000, 1400, 10)]
    trs = f(seq)
    assert kinds(trs, RULE_FROZEN_REBOUND) == [TransitionKind.FIRING]
    assert trs[0].severity is Severity.CRITICAL
    trs = f([(float(s), frozen_base(temperature=-20.0)) for s in range(1400, 1800, 10)])
    assert kinds(trs, RULE_FROZEN_REBOUND) == [TransitionKind.RESOLVED]


def test_defrost_suppresses_temperature_high_and_rate_of_rise_plus_recovery() -> None:
    f = Feed()
    # Defrost 10 min: air climbs to 10 °C (fast), then 10 min recovery back to 3 °C.
    seq = run(0, 600, temperature=3.0)
    seq += run(600, 1200, temperature=3.0, slope=0.012, defrost_on=1.0, compressor_on=0.0)
    seq += [(sec + 1200, {**v, "temperature": 10.0 - 0.7 * i / 6})
            for i, (sec, v) in enumerate(run(0, 600, temperature=0.0))]
    seq += run(1800, 3000, temperature=3.0)
    assert f(seq) == []
    # The same air curve without the defrost flag fires both.
    g = Feed()
    seq2 = [(s, {**v, "defrost_on": 0.0}) for s, v in seq]
    g(seq2)
    assert {t.rule_id for t in g.out} >= {RULE_RATE_OF_RISE}


def test_defrost_does_not_clear_an_excursion_already_firing() -> None:
    f = Feed(default_params("chilled", rate_of_rise=None, compressor=None))
    trs = f(run(0, 900, temperature=9.0))
    assert kinds(trs, RULE_TEMPERATURE_HIGH) == [TransitionKind.FIRING]
    # defrost while the room is warm, air reads low: suppressed, so no RESOLVED yet
    assert f(run(900, 1500, temperature=2.0, defrost_on=1.0, compressor_on=0.0)) == []
    # recovery (900 s) still suppressed
    assert f(run(1500, 2300, temperature=2.0)) == []
    trs = f(run(2400, 2700, temperature=2.0))
    assert kinds(trs, RULE_TEMPERATURE_HIGH) == [TransitionKind.RESOLVED]


# ------------------------------------------------------------------ rate_of_rise


def test_rate_of_rise_needs_a_sustained_fast_rise() -> None:
    f = Feed(default_params("chilled", temperature_high=None, compressor=None))
    # 2 °C / 10 min: below the 3 °C threshold
    assert f(run(0, 1200, temperature=2.0, slope=2.0 / 600)) == []
    # 6 °C / 10 min for 10 min: fires once, then clears when flat again
    trs = f(run(1200, 1800, temperature=6.0, slope=6.0 / 600))
    assert kinds(trs, RULE_RATE_OF_RISE) == [TransitionKind.FIRING]
    trs = f(run(1800, 3000, temperature=12.0))
    assert kinds(trs, RULE_RATE_OF_RISE) == [TransitionKind.RESOLVED]


# ------------------------------------------------------------------ door


def test_door_open_blip_ignored_long_open_fires_from_opening() -> None:
    f = Feed()
    assert f(run(0, 90, door_open=1.0)) == []
    assert f(run(90, 300)) == []
    trs = f(run(300, 700, door_open=1.0))
    assert kinds(trs, RULE_DOOR_OPEN) == [TransitionKind.FIRING]
    assert trs[0].started_at == T0 + timedelta(seconds=300)
    assert trs[0].at == T0 + timedelta(seconds=600)
    trs = f(run(700, 800))
    assert kinds(trs, RULE_DOOR_OPEN) == [TransitionKind.RESOLVED]


def test_door_limit_is_overridable_per_site() -> None:
    from stream.rules.cold_chain import DoorParams

    f = Feed(default_params("chilled", door_open=DoorParams(limit_s=60)))
    trs = f(run(0, 90, door_open=1.0))
    assert kinds(trs, RULE_DOOR_OPEN) == [TransitionKind.FIRING]


# ------------------------------------------------------------------ humidity


def test_humidity_out_of_band_for_duration() -> None:
    f = Feed()
    assert f(run(0, 600, humidity=97.0)) == []  # 10 min: not yet
    assert f(run(600, 900, humidity=80.0)) == []
    trs = f(run(900, 2800, humidity=40.0))
    assert kinds(trs, RULE_HUMIDITY) == [TransitionKind.FIRING]
    assert f(run(2800, 3000, humidity=51.0)) == []  # inside hysteresis: still firing
    trs = f(run(3000, 3400, humidity=70.0))
    assert kinds(trs, RULE_HUMIDITY) == [TransitionKind.RESOLVED]


# ------------------------------------------------------------------ probe failure


def test_impossible_value_blip_ignored_persistent_fires_and_no_other_rule() -> None:
    f = Feed()
    assert f(run(0, 600)) == []
    assert f(run(600, 650, temperature=850.0)) == []  # 50 s: blip
    assert f(run(650, 900)) == []
    trs = f(run(900, 2000, temperature=850.0))
    assert [t.rule_id for t in trs] == [RULE_PROBE_FAILURE]  # not temperature_high
    assert trs[0].started_at == T0 + timedelta(seconds=900)
    trs = f(run(2000, 2200))
    assert kinds(trs, RULE_PROBE_FAILURE) == [TransitionKind.RESOLVED]


def test_short_circuit_value_is_not_a_freeze() -> None:
    f = Feed()
    trs = f(run(0, 1500, temperature=-99.9))
    assert [t.rule_id for t in trs] == [RULE_PROBE_FAILURE]


def test_stuck_probe_fires_only_while_others_change() -> None:
    f = Feed()
    # Everything flat (a quiet room, or a simulator at rest): not a stuck probe.
    flat = [(float(s), dict(BASE)) for s in range(0, 2400, 10)]
    assert f(flat) == []
    g = Feed()
    # Product probe exactly 3.0 while the air changes: stuck after 30 min.
    seq = [(float(s), {**BASE, "temperature": 3.0 + (s % 60) / 100}) for s in range(0, 2400, 10)]
    trs = g(seq)
    assert kinds(trs, RULE_PROBE_FAILURE) == [TransitionKind.FIRING]
    assert trs[0].started_at == T0
    assert trs[0].at > T0 + timedelta(seconds=1800)
    trs = g([(float(s), {**BASE, "temperature_product": 3.0 + (s % 20) / 100})
             for s in range(2400, 2600, 10)])
    assert kinds(trs, RULE_PROBE_FAILURE) == [TransitionKind.RESOLVED]


# ------------------------------------------------------------------ compressor


def test_compressor_off_cycle_is_normal_failure_fires() -> None:
    f = Feed(default_params("chilled", temperature_high=None, rate_of_rise=None))
    # a 10 min off-cycle rising 2 °C, then the compressor pulls it down: nothing
    seq = run(0, 600, temperature=2.0, slope=2.0 / 600, compressor_on=0.0)
    seq += run(600, 1200, temperature=4.0, slope=-2.0 / 600)
    assert f(seq) == []
    # off for 30 min, rising 1.5 °C / 10 min: fires once, clears when it runs again
    trs = f(run(1200, 3000, temperature=2.0, slope=1.5 / 600, compressor_on=0.0))
    assert kinds(trs, RULE_COMPRESSOR) == [TransitionKind.FIRING]
    trs = f(run(3000, 3300, temperature=6.0))
    assert kinds(trs, RULE_COMPRESSOR) == [TransitionKind.RESOLVED]


def test_compressor_off_during_defrost_is_not_a_fault() -> None:
    f = Feed(default_params("chilled", temperature_high=None, rate_of_rise=None))
    trs = f(run(0, 1800, temperature=2.0, slope=1.5 / 600, compressor_on=0.0, defrost_on=1.0))
    assert trs == []


# ------------------------------------------------------------------ ordering, determinism


def test_late_snapshot_is_counted_and_ignored_and_state_round_trips() -> None:
    f = Feed()
    f(run(0, 100))
    r = step(f.state, f.params, "site-a", "cr-1", T0 + timedelta(seconds=50), BASE)
    assert r.late and r.state.late_count == 1 and r.transitions == []
    again = from_json(to_json(f.state), ColdChainState)
    assert again == f.state


def test_transition_ids_are_deterministic() -> None:
    a, b = Feed(), Feed()
    seq = run(0, 700, door_open=1.0) + run(700, 800)
    assert [t.transition_id for t in a(seq)] == [t.transition_id for t in b(seq)]
    assert len({t.transition_id for t in a.out}) == 2


# ------------------------------------------------------------------ scenario files

# Which rules each scenario file must raise, each exactly once (and resolve once when the
# scenario recovers). Co-occurring rules are inherent to the fault:
# * compressor failure: the room warms with no cooling, so compressor_not_running (the
#   cause) is joined by temperature_high (air > 8 °C / > -18 °C for 10 min); the frozen
#   room also crosses the -15 °C rebound limit; the chilled room's onset coincides with a
#   door opening and rises 3.9 °C in 10 min, which is a genuine rate_of_rise.
# * door left open: door_open (the cause) and temperature_high; the freezer's open door
#   also gives rate_of_rise (about 7 °C / 10 min) and frozen_rebound.
# * probe open / stuck: probe_failure only (the 850.0 readings are kept out of every
#   temperature rule).
# Started-at bound: seconds after the fault onset (1800 s) the cause may be reported
# as starting; None: no check (a consequence).
EXPECTED: dict[str, dict[str, float | None]] = {
    "chilled-normal": {},
    "frozen-normal": {},
    "chilled-compressor-failure": {RULE_COMPRESSOR: 600, RULE_TEMPERATURE_HIGH: None,
                                   RULE_RATE_OF_RISE: None},
    "frozen-compressor-failure": {RULE_COMPRESSOR: 600, RULE_TEMPERATURE_HIGH: None,
                                  RULE_FROZEN_REBOUND: None},
    "chilled-door-left-open": {RULE_DOOR_OPEN: 0, RULE_TEMPERATURE_HIGH: None},
    "frozen-door-left-open": {RULE_DOOR_OPEN: 0, RULE_TEMPERATURE_HIGH: None,
                              RULE_RATE_OF_RISE: None, RULE_FROZEN_REBOUND: None},
    "chilled-probe-open": {RULE_PROBE_FAILURE: 0},
    "chilled-probe-stuck": {RULE_PROBE_FAILURE: 0},
}
FAULT_AT_S = 1800.0


def play(name: str) -> tuple[ColdRoomScenario, list[AlertTransition]]:
    sc = load_scenario(SCENARIOS / f"{name}.yaml")
    assert isinstance(sc, ColdRoomScenario)
    params = default_params(sc.spec.variant)
    state = ColdChainState()
    out: list[AlertTransition] = []
    for s in iter_samples(sc):
        r = step(state, params, "site-a", "cr-1", s.ts, {v.metric: v.value for v in s.values})
        state = r.state
        out.extend(r.transitions)
    return sc, out


def test_every_scenario_file_is_covered() -> None:
    assert {p.stem for p in SCENARIOS.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario(name: str) -> None:
    sc, out = play(name)
    expected = EXPECTED[name]
    firing = Counter(t.rule_id for t in out if t.kind is TransitionKind.FIRING)
    resolved = Counter(t.rule_id for t in out if t.kind is TransitionKind.RESOLVED)
    assert dict(firing) == dict.fromkeys(expected, 1), out
    # every fault scenario recovers before its end: each alert resolves once, after firing
    assert dict(resolved) == dict.fromkeys(expected, 1), out
    for rule, bound in expected.items():
        fire = next(t for t in out if t.rule_id == rule and t.kind is TransitionKind.FIRING)
        res = next(t for t in out if t.rule_id == rule and t.kind is TransitionKind.RESOLVED)
        assert fire.at < res.at
        assert fire.started_at == res.started_at
        if bound is not None:
            onset = sc.start + timedelta(seconds=FAULT_AT_S)
            assert onset - timedelta(seconds=60) <= fire.started_at <= onset + timedelta(
                seconds=bound), (rule, fire.started_at - sc.start)


def test_frozen_normal_defrost_stays_quiet_even_with_a_tight_rebound_limit() -> None:
    # The air probe reaches about -16.7 °C during defrost; without the defrost gate a
    # -17 °C limit would fire. With it, nothing.
    sc = load_scenario(SCENARIOS / "frozen-normal.yaml")
    p = default_params("frozen")
    assert p.frozen_rebound is not None
    p = replace(p, frozen_rebound=replace(p.frozen_rebound, limit=-17.0, duration_s=60))
    state, out = ColdChainState(), []
    for s in iter_samples(sc):
        r = step(state, p, "site-a", "cr-1", s.ts, {v.metric: v.value for v in s.values})
        state, out = r.state, out + r.transitions
    assert out == []
