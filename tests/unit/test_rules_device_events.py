"""Device events into alerts (stream.rules.device_events): pure logic."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from stream.rules import device_events as de
from stream.rules import identity
from stream.rules.device_events import DeviceEventsState, EventParams, Outcome
from stream.rules.record import from_json, to_json

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
P = EventParams(alarm_quiet_s=300)
FIRING, RESOLVED = TransitionKind.FIRING, TransitionKind.RESOLVED


def at(sec: float) -> datetime:
    return T0 + timedelta(seconds=sec)


class Device:
    """Feeds one device's messages, keeping state (JSON round-tripped, like the table)."""

    def __init__(self, params: EventParams = P) -> None:
        self.state = DeviceEventsState()
        self.params = params
        self.out: list[AlertTransition] = []
        self.outcomes: list[Outcome] = []

    def _keep(self, r: de.EventResult) -> de.EventResult:
        self.state = from_json(to_json(r.state), DeviceEventsState)
        self.out.extend(r.transitions)
        self.outcomes.append(r.outcome)
        return r

    def event(self, name: str, sec: float, severity: Severity = Severity.INFO,
              detail: Mapping[str, Any] | None = None, rx: float | None = None
              ) -> de.EventResult:
        return self._keep(de.on_event(self.state, self.params, "site-a", "el-1", name,
                                      severity, detail or {}, at(sec),
                                      at(rx if rx is not None else sec)))

    def telemetry(self, sec: float) -> de.EventResult:
        return self._keep(de.on_telemetry(self.state, self.params, "site-a", "el-1", at(sec)))

    def tick(self, now: float) -> de.EventResult:
        return self._keep(de.tick(self.state, self.params, "site-a", "el-1", at(now)))


def kinds(out: list[AlertTransition]) -> list[tuple[str, TransitionKind, datetime, datetime]]:
    return [(t.rule_id, t.kind, t.started_at, t.at) for t in out]


# --------------------------------------------------------------------------- alarm button


def test_alarm_press_fires_at_least_major_and_presses_extend() -> None:
    d = Device()
    d.event("alarm_button_pressed", 0, Severity.MINOR)
    d.event("alarm_button_pressed", 60, Severity.MAJOR)
    d.event("alarm_button_pressed", 200, Severity.MAJOR)
    assert kinds(d.out) == [("elevator.alarm_button", FIRING, at(0), at(0))]
    assert d.out[0].severity is Severity.MAJOR
    assert d.out[0].fingerprint == identity.fingerprint("elevator.alarm_button", "site-a",
                                                        "el-1")
    assert d.outcomes == [Outcome.FIRED, Outcome.EXTENDED, Outcome.EXTENDED]


def test_alarm_keeps_a_critical_severity() -> None:
    d = Device()
    d.event("alarm_button_pressed", 0, Severity.CRITICAL)
    assert d.out[0].severity is Severity.CRITICAL


def test_alarm_resolves_on_the_next_message_after_the_quiet_period() -> None:
    d = Device()
    d.event("alarm_button_pressed", 0, Severity.MAJOR)
    d.event("alarm_button_pressed", 100, Severity.MAJOR)
    d.telemetry(399)  # 299 s after the last press: still open
    assert [t.kind for t in d.out] == [FIRING]
    d.telemetry(450)
    assert kinds(d.out) == [
        ("elevator.alarm_button", FIRING, at(0), at(0)),
        ("elevator.alarm_button", RESOLVED, at(0), at(400)),  # last press + quiet
    ]
    assert d.out[1].values["presses"] == 2


def test_alarm_resolves_on_the_timer_with_the_same_transition() -> None:
    by_timer, by_message = Device(), Device()
    for d in (by_timer, by_message):
        d.event("alarm_button_pressed", 0, Severity.MAJOR, rx=2)
    assert by_timer.tick(301).transitions == []  # 299 s since it was received
    by_timer.tick(302)
    by_message.event("power_restored", 900)  # any later message of the device
    assert [t.transition_id for t in by_timer.out] == \
        [t.transition_id for t in by_message.out]
    assert by_timer.out[1].at == at(300)


def test_alarm_press_after_the_quiet_period_is_a_new_episode() -> None:
    d = Device()
    d.event("alarm_button_pressed", 0, Severity.MAJOR)
    d.event("alarm_button_pressed", 500, Severity.MAJOR)  # nothing heard in between
    assert kinds(d.out) == [
        ("elevator.alarm_button", FIRING, at(0), at(0)),
        ("elevator.alarm_button", RESOLVED, at(0), at(300)),
        ("elevator.alarm_button", FIRING, at(500), at(500)),
    ]
    assert len({t.transition_id for t in d.out}) == 3


def test_alarm_replays_change_nothing() -> None:
    d = Device()
    d.event("alarm_button_pressed", 0, Severity.MAJOR)
    d.event("alarm_button_pressed", 100, Severity.MAJOR)
    d.telemetry(500)
    before = list(d.out)
    # The whole input again, from the saved state (a batch replayed after its state was
    # written): nothing new.
    d.event("alarm_button_pressed", 0, Severity.MAJOR)
    d.event("alarm_button_pressed", 100, Severity.MAJOR)
    d.telemetry(500)
    assert d.out == before
    assert d.outcomes[-3:-1] == [Outcome.STALE, Outcome.STALE]


def test_same_input_same_state_same_ids() -> None:
    def run() -> list[str]:
        d = Device()
        d.event("alarm_button_pressed", 0, Severity.MAJOR)
        d.event("power_lost", 10)
        d.event("source_error", 20, detail={"reason": "modbus_timeout"})
        d.telemetry(30)
        d.event("power_restored", 40)
        d.tick(10_000)
        return [t.transition_id for t in d.out]

    first = run()
    assert len(first) == 6 and first == run()


def test_a_late_press_after_the_episode_was_closed_by_the_timer_opens_a_new_one() -> None:
    d = Device()
    d.event("alarm_button_pressed", 0, Severity.MAJOR, rx=0)
    d.tick(400)  # resolved at 300 (processing time said quiet)
    d.event("alarm_button_pressed", 200, Severity.MAJOR, rx=401)  # was stuck somewhere
    assert [t.kind for t in d.out] == [FIRING, RESOLVED, FIRING]
    assert d.out[2].started_at == at(200)


# --------------------------------------------------------------------------- power


def test_power_lost_fires_critical_and_power_restored_resolves() -> None:
    d = Device()
    d.event("power_lost", 10, Severity.CRITICAL)
    d.event("power_lost", 20, Severity.CRITICAL)  # a second report: same episode
    d.event("power_restored", 130)
    assert kinds(d.out) == [
        ("device.power_lost", FIRING, at(10), at(10)),
        ("device.power_lost", RESOLVED, at(10), at(130)),
    ]
    assert {t.severity for t in d.out} == {Severity.CRITICAL}
    assert d.outcomes == [Outcome.FIRED, Outcome.EXTENDED, Outcome.RESOLVED]


def test_power_severity_is_critical_whatever_the_event_says() -> None:
    d = Device()
    d.event("power_lost", 10, Severity.INFO)
    assert d.out[0].severity is Severity.CRITICAL


def test_power_restored_with_nothing_open_and_stale_losses_are_ignored() -> None:
    d = Device()
    d.event("power_restored", 100)
    d.event("power_lost", 50)  # reordered behind its own restore: over already
    assert d.out == [] and d.outcomes == [Outcome.STALE, Outcome.STALE]
    d.event("power_lost", 150)
    d.event("power_restored", 120)  # older than the episode: not its end
    assert [t.kind for t in d.out] == [FIRING]


def test_power_replay_after_resolution_does_not_reopen() -> None:
    d = Device()
    d.event("power_lost", 10)
    d.event("power_restored", 20)
    d.event("power_lost", 10)
    d.event("power_restored", 20)
    assert [t.kind for t in d.out] == [FIRING, RESOLVED]


# --------------------------------------------------------------------------- source errors


def test_source_error_is_minor_one_per_device_and_resolves_on_recovery() -> None:
    d = Device()
    d.event("source_error", 0, Severity.MINOR,
            {"reason": "modbus_timeout", "detail": "no answer in 1.0 s"})
    d.event("source_error", 30, Severity.MINOR, {"reason": "modbus_unreachable"})
    d.event("source_recovered", 90, detail={"after": "modbus_unreachable"})
    assert kinds(d.out) == [
        ("device.source_error", FIRING, at(0), at(0)),
        ("device.source_error", RESOLVED, at(0), at(90)),
    ]
    fire, res = d.out
    assert fire.severity is Severity.MINOR
    assert fire.values == {"event": "source_error", "reason": "modbus_timeout",
                           "detail": "no answer in 1.0 s"}
    assert res.values["reason"] == "modbus_unreachable" and res.values["events"] == 2
    assert fire.fingerprint == identity.fingerprint("device.source_error", "site-a", "el-1")


def test_source_error_resolves_on_telemetry_sampled_after_it() -> None:
    d = Device()
    d.telemetry(0)  # no state yet: nothing
    d.event("source_error", 10, detail={"reason": "modbus_timeout"})
    d.telemetry(5)  # sampled before the error (read late): not a recovery
    assert [t.kind for t in d.out] == [FIRING]
    d.telemetry(40)
    assert kinds(d.out)[-1] == ("device.source_error", RESOLVED, at(10), at(40))
    assert d.out[-1].values["event"] == "telemetry"
    d.event("source_recovered", 41)  # the edge's own recovery, after: nothing more
    assert len(d.out) == 2


def test_a_long_reason_is_cut_and_odd_details_are_left_out() -> None:
    d = Device()
    d.event("source_error", 0, detail={"reason": "x" * 500, "detail": {"nested": 1}})
    assert d.out[0].values == {"event": "source_error", "reason": "x" * 64}


# --------------------------------------------------------------------------- others


def test_unknown_events_raise_nothing_and_keep_no_state() -> None:
    d = Device()
    r = d.event("door_forced", 0, Severity.CRITICAL)
    assert r.transitions == [] and r.outcome is Outcome.UNKNOWN
    assert r.state == DeviceEventsState()


def test_every_rule_id_and_open_rules() -> None:
    d = Device()
    d.event("alarm_button_pressed", 0, Severity.MAJOR)
    d.event("power_lost", 0)
    d.event("source_error", 0)
    assert sorted(de.open_rules(d.state)) == sorted(de.RULE_IDS) == [
        "device.power_lost", "device.source_error", "elevator.alarm_button"]


def test_a_button_held_keeps_the_alarm_going() -> None:
    d = Device()
    d.event("alarm_button_pressed", 0, Severity.MAJOR, rx=0)
    d._keep(de.on_telemetry(d.state, d.params, "site-a", "el-1", at(250), at(250), at(250)))
    d.telemetry(400)  # past 0 + 300, not past 250 + 300
    assert d.tick(540).transitions == []  # 290 s since the hold was received
    assert [t.kind for t in d.out] == [FIRING]
    d.telemetry(560)
    assert kinds(d.out)[-1] == ("elevator.alarm_button", RESOLVED, at(0), at(550))
    assert d.out[-1].values["presses"] == 1
