"""Device events through the worker's path (batch processor, engine, state store, timer),
without Faust: alerts, bad input dead-lettered, unknown events counted, replays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from ganzhi.contracts import (
    DeviceClass,
    DeviceEvent,
    KafkaTopic,
    Reading,
    Severity,
    Telemetry,
    TransitionKind,
)
from ganzhi.settings import ColdChainRuleSettings
from stream.engine import EVENTS, RuleEngine, state_key
from stream.memory import MemoryAdapters
from stream.processor import BatchProcessor, Incoming
from stream.rules.model import Rules, RulesDoc, RulesError

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
FIRING, RESOLVED = TransitionKind.FIRING, TransitionKind.RESOLVED


class Harness(MemoryAdapters):
    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.now = T0
        self.rules = Rules(RulesDoc.model_validate(doc or {}), ColdChainRuleSettings())
        engine = RuleEngine(lambda: self.rules, lambda site, device: 0)
        self.proc = BatchProcessor(engine, self, self, self.send, dead_letter=self.dead_letter,
                                   clock=lambda: self.now)

    async def events(self, *msgs: DeviceEvent | bytes, received_s: float | None = None
                     ) -> None:
        rx = T0 + timedelta(seconds=received_s) if received_s is not None else None
        await self.proc.process_events([
            Incoming(0, m if isinstance(m, bytes) else m.model_dump_json().encode(), rx,
                     KafkaTopic.EVENT.value) for m in msgs])

    async def telemetry(self, second: float) -> None:
        t = Telemetry(msg_id=uuid.uuid4(), site_id="site-a", device_id="el-1",
                      ts=T0 + timedelta(seconds=second), device_class=DeviceClass.ELEVATOR,
                      readings=[Reading(metric="speed", value=0.0, unit="m/s")])
        await self.proc.process([Incoming(0, t.model_dump_json().encode(),
                                          T0 + timedelta(seconds=second))])

    def alerts(self) -> list[tuple[str, TransitionKind, float, float]]:
        return [(t.rule_id, t.kind, (t.started_at - T0).total_seconds(),
                 (t.at - T0).total_seconds())
                for t in self.transitions if t.rule_id != "device.incomplete_config" and (
                    not t.rule_id.startswith("elevator.") or
                    t.rule_id == "elevator.alarm_button")]


def event(name: str, second: float, severity: Severity = Severity.INFO,
          detail: dict[str, Any] | None = None, device: str = "el-1") -> DeviceEvent:
    return DeviceEvent(msg_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{device}/{name}/{second}"),
                       site_id="site-a", device_id=device, ts=T0 + timedelta(seconds=second),
                       event=name, severity=severity, detail=detail or {})


def counted(event_label: str, outcome: str) -> float:
    v = REGISTRY.get_sample_value("ganzhi_stream_events_total",
                                  {"event": event_label, "outcome": outcome})
    return v or 0.0


async def test_power_lost_and_restored() -> None:
    h = Harness()
    await h.events(event("power_lost", 10, Severity.CRITICAL))
    await h.events(event("power_restored", 70))
    assert h.alerts() == [("device.power_lost", FIRING, 10, 10),
                          ("device.power_lost", RESOLVED, 10, 70)]
    entry = h.states[state_key("site-a", "el-1", EVENTS)]
    assert entry.partition == 0  # written to the device's partition


async def test_alarm_button_resolves_on_telemetry_after_the_quiet_period() -> None:
    h = Harness({"elevator": {"devices": {"site-a/el-1": {"alarm_button_quiet_s": 60}}}})
    await h.events(event("alarm_button_pressed", 0, Severity.MAJOR),
                   event("alarm_button_pressed", 30, Severity.MAJOR))
    await h.telemetry(80)
    assert h.alerts() == [("elevator.alarm_button", FIRING, 0, 0)]
    await h.telemetry(95)
    assert h.alerts() == [("elevator.alarm_button", FIRING, 0, 0),
                          ("elevator.alarm_button", RESOLVED, 0, 90)]


async def test_alarm_button_resolves_on_the_timer_for_a_silent_device() -> None:
    h = Harness()  # quiet period 300 s by default
    await h.events(event("alarm_button_pressed", 0, Severity.MAJOR), received_s=1)
    since = T0 - timedelta(hours=1)
    h.now = T0 + timedelta(seconds=300)
    await h.proc.tick({0}, since)
    assert [t.kind for t in h.transitions] == [FIRING]
    await h.proc.tick({1}, since)  # not this worker's partition
    h.now = T0 + timedelta(seconds=302)
    await h.proc.tick({0}, T0 + timedelta(seconds=100))  # owned for less than the quiet
    assert [t.kind for t in h.transitions] == [FIRING]
    await h.proc.tick({0}, since)
    assert h.alerts() == [("elevator.alarm_button", FIRING, 0, 0),
                          ("elevator.alarm_button", RESOLVED, 0, 300)]


async def test_source_error_resolves_on_the_devices_next_telemetry() -> None:
    h = Harness()
    await h.events(event("source_error", 10, Severity.MINOR, {"reason": "modbus_timeout"}))
    await h.telemetry(5)  # sampled before the error
    await h.telemetry(40)
    assert h.alerts() == [("device.source_error", FIRING, 10, 10),
                          ("device.source_error", RESOLVED, 10, 40)]
    assert h.transitions[0].values["reason"] == "modbus_timeout"


async def test_unknown_events_are_counted_not_dead_lettered_nor_kept() -> None:
    h = Harness()
    before = counted("other", "unknown")
    await h.events(event("door_forced", 0, Severity.CRITICAL))
    assert h.transitions == [] and h.dead == []
    assert counted("other", "unknown") == before + 1
    assert h.states == {}


async def test_bad_input_is_dead_lettered_and_the_batch_goes_on() -> None:
    h = Harness()
    before = counted("power_lost", "fired")
    ahead = event("power_lost", 3600, device="el-2")
    await h.events(b"{not json", b'{"kind": "event"}', ahead,
                   event("power_lost", 0), received_s=0)
    assert [d.reason for d in h.dead] == ["invalid_json", "invalid_schema", "ts_in_future"]
    assert {d.stage for d in h.dead} == {"stream"}
    assert {d.source_topic for d in h.dead} == {KafkaTopic.EVENT.value}
    assert h.alerts() == [("device.power_lost", FIRING, 0, 0)]
    assert counted("power_lost", "fired") == before + 1


async def test_a_replayed_batch_repeats_the_same_ids_or_nothing() -> None:
    batch = [event("power_lost", 0), event("alarm_button_pressed", 5, Severity.MAJOR),
             event("source_error", 6, detail={"reason": "modbus_unreachable"}),
             event("power_restored", 20)]
    a, b = Harness(), Harness()
    await a.events(*batch)
    await b.events(*batch)
    assert [t.transition_id for t in a.transitions] == [t.transition_id for t in b.transitions]
    assert len(a.transitions) == 4
    sent = list(a.transitions)
    await a.events(*batch)  # again, after its state was saved
    assert a.transitions == sent


async def test_the_quiet_period_is_checked_in_the_rules_model() -> None:
    try:
        Rules(RulesDoc.model_validate({"elevator": {"defaults": {"alarm_button_quiet_s": 0}}}))
    except RulesError as exc:
        assert "alarm_button_quiet_s" in str(exc)
    else:
        raise AssertionError("a quiet period of 0 s was accepted")
    rules = Rules(RulesDoc.model_validate(
        {"elevator": {"sites": {"site-b": {"alarm_button_quiet_s": 45}}}}))
    assert rules.device_events("site-b", "el-9").alarm_quiet_s == 45
    assert rules.device_events("site-a", "el-9").alarm_quiet_s == 300


async def test_elevator_telemetry_with_the_button_held_extends_the_alarm() -> None:
    h = Harness({"elevator": {"defaults": {"alarm_button_quiet_s": 60}}})
    await h.events(event("alarm_button_pressed", 0, Severity.MAJOR))
    held = Telemetry(msg_id=uuid.uuid4(), site_id="site-a", device_id="el-1",
                     ts=T0 + timedelta(seconds=50), device_class=DeviceClass.ELEVATOR,
                     readings=[Reading(metric="alarm_button", value=1.0, unit="bool")])
    await h.proc.process([Incoming(0, held.model_dump_json().encode(),
                                   T0 + timedelta(seconds=50))])
    await h.telemetry(100)
    assert [k for _, k, _, _ in h.alerts()] == [FIRING]
    await h.telemetry(111)
    assert h.alerts()[-1] == ("elevator.alarm_button", RESOLVED, 0, 110)
