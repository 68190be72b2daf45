"""Incident policy and routing: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from alerts.policy import (
    Candidate,
    EscalationClock,
    Hold,
    Member,
    Notify,
    Silence,
    choose_incident,
    escalation_due,
    inhibitor,
    notify_decision,
    placement,
    primary,
    settings_check,
    severity_of,
)
from alerts.routing import receivers_from, routes
from ganzhi.contracts import Severity
from ganzhi.settings import (
    AlertsSettings,
    EscalationStep,
    FamilySettings,
    InsecureSettingError,
    Settings,
)

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
S = AlertsSettings()
MIN = timedelta(minutes=1)


def m(alert_id: int, rule: str, severity: Severity = Severity.MAJOR, *, at: int = 0,
      device: str = "d1", status: str = "open") -> Member:
    return Member(alert_id, rule, severity, "s1", device, T0 + at * MIN,
                  "open" if status == "open" else "resolved")


@pytest.mark.parametrize(("rule", "family", "key", "joins"), [
    ("cold_chain.temperature_high", "cold_chain", "cold_chain:s1/d1", False),
    ("cold_chain.rate_of_rise", "cold_chain", "cold_chain:s1/d1", False),
    ("elevator.emergency_call", "elevator_entrapment", "elevator_entrapment:s1/d1", False),
    ("elevator.alarm_button", "elevator_entrapment", "elevator_entrapment:s1/d1", False),
    ("elevator.overspeed", "elevator.overspeed", "elevator.overspeed:s1/d1", False),
    ("device.offline", "device_health", "device_health:s1/d1", True),
])
def test_default_correlation(rule: str, family: str, key: str, joins: bool) -> None:
    p = placement(rule, "s1", "d1", S.families)
    assert (p.family, p.group_key, p.joins_open) == (family, key, joins)


def test_site_scoped_family() -> None:
    fams = [FamilySettings(name="kitchen", rules=["vision.*"], scope="site")]
    assert placement("vision.no_mask", "s1", "cam-2", fams).group_key == "kitchen:s1"


def test_choose_incident() -> None:
    group_open = Candidate(3, "open")
    recent = Candidate(2, "resolved", T0 - 5 * MIN)
    old = Candidate(1, "resolved", T0 - 60 * MIN)
    device = Candidate(9, "open")
    kw = {"reopen_window_s": 600.0}
    assert choose_incident(T0, joins_open=False, device_open=None, group_open=group_open,
                           group_last=group_open, **kw) == ("join", 3)
    assert choose_incident(T0, joins_open=False, device_open=None, group_open=None,
                           group_last=recent, **kw) == ("reopen", 2)
    assert choose_incident(T0, joins_open=False, device_open=None, group_open=None,
                           group_last=old, **kw) == ("new", None)
    assert choose_incident(T0, joins_open=True, device_open=device, group_open=None,
                           group_last=None, **kw) == ("join", 9)
    assert choose_incident(T0, joins_open=True, device_open=None, group_open=None,
                           group_last=None, **kw) == ("new", None)


def test_primary_is_open_then_most_severe_then_earliest() -> None:
    a = m(1, "cold_chain.temperature_high", Severity.MAJOR, at=0)
    b = m(2, "cold_chain.rate_of_rise", Severity.CRITICAL, at=3)
    c = m(3, "cold_chain.door_open", Severity.CRITICAL, at=5)
    assert primary([a, b, c]).alert_id == 2
    done = m(2, "cold_chain.rate_of_rise", Severity.CRITICAL, at=3, status="resolved")
    assert primary([a, done]).alert_id == 1
    assert severity_of([a, done]) is Severity.CRITICAL
    assert severity_of([a], raised=Severity.CRITICAL) is Severity.CRITICAL
    with pytest.raises(ValueError):
        primary([])


def test_inhibition() -> None:
    overspeed = m(1, "elevator.overspeed")
    assert inhibitor(overspeed, {"elevator.maintenance_mode"}, S.inhibitions) == (
        "elevator.maintenance_mode")
    assert inhibitor(overspeed, {"device.offline"}, S.inhibitions) == "device.offline"
    assert inhibitor(overspeed, {"cold_chain.door_open"}, S.inhibitions) is None
    # a source never inhibits itself; maintenance does not inhibit a cold room
    assert inhibitor(m(2, "device.offline"), {"device.offline"}, S.inhibitions) is None
    assert inhibitor(m(3, "cold_chain.temperature_high"), {"elevator.maintenance_mode"},
                     S.inhibitions) is None


def test_notify_decision_reasons() -> None:
    fault = m(1, "elevator.door_open_fault")
    mode = m(2, "elevator.maintenance_mode", Severity.INFO)
    assert notify_decision([mode], {"d1": {"elevator.maintenance_mode"}}, [], S.inhibitions,
                           T0) == Hold("info")
    assert notify_decision([mode, fault], {"d1": {"elevator.maintenance_mode",
                                                  "elevator.door_open_fault"}},
                           [], S.inhibitions, T0) == Hold("inhibited:elevator.maintenance_mode")
    silence = Silence(7, {"rule_id": "elevator.*"}, T0 - MIN, T0 + 10 * MIN)
    assert notify_decision([fault], {}, [silence], S.inhibitions, T0) == Hold("silenced:7")
    assert isinstance(notify_decision([fault], {}, [silence], S.inhibitions, T0 + 10 * MIN),
                      Notify)  # the silence ended
    other = Silence(8, {"site_id": "s2"}, T0 - MIN, T0 + MIN)
    assert isinstance(notify_decision([fault], {}, [other], S.inhibitions, T0), Notify)
    assert notify_decision([m(1, "x", status="resolved")], {}, [], S.inhibitions,
                           T0) == Hold("resolved")


def test_silence_matchers_glob_every_field() -> None:
    s = Silence(1, {"site_id": "sz-*", "severity": "major", "device_id": "lift-?"},
                T0, T0 + MIN)
    hit = Member(1, "elevator.overspeed", Severity.MAJOR, "sz-ft-1", "lift-1", T0)
    assert s.matches(hit)
    assert not s.matches(Member(1, "elevator.overspeed", Severity.CRITICAL, "sz-ft-1",
                                "lift-1", T0))
    assert not s.matches(Member(1, "elevator.overspeed", Severity.MAJOR, "gz-1", "lift-1", T0))
    assert not s.active(T0 + MIN) and s.active(T0)


def test_escalation_due() -> None:
    policy = {"critical": EscalationStep(after_s=600), "major": EscalationStep(
        after_s=1800, raise_to="critical")}
    clock = EscalationClock(Severity.CRITICAL, T0, None, (), False, True)
    assert escalation_due(clock, policy, T0 + 9 * MIN) is None
    assert escalation_due(clock, policy, T0 + 10 * MIN) == policy["critical"]
    acked = EscalationClock(Severity.CRITICAL, T0, None, (), True, True)
    assert escalation_due(acked, policy, T0 + 60 * MIN) is None
    done = EscalationClock(Severity.CRITICAL, T0, T0 + 10 * MIN, ("critical",), False, True)
    assert escalation_due(done, policy, T0 + 600 * MIN) is None
    raised = EscalationClock(Severity.CRITICAL, T0, T0 + 30 * MIN, ("major",), False, True)
    assert escalation_due(raised, policy, T0 + 39 * MIN) is None  # from the last step
    assert escalation_due(raised, policy, T0 + 40 * MIN) == policy["critical"]
    held = EscalationClock(Severity.CRITICAL, None, None, (), False, True)
    assert escalation_due(held, policy, T0 + 600 * MIN) is None
    minor = EscalationClock(Severity.MINOR, T0, None, (), False, True)
    assert escalation_due(minor, policy, T0 + 600 * MIN) is None


def settings(**alerts: object) -> Settings:
    return Settings(webhook={"url": "http://t/clues", "secret": SecretStr("t" * 40)},
                    alerts=alerts)


def test_routing_filters() -> None:
    s = settings(receivers=[
        {"name": "ft", "url": "http://ft", "secret": "f" * 40, "sites": ["sz-ft-*"]},
        {"name": "lifts", "url": "http://l", "secret": "l" * 40, "rules": ["elevator.*"],
         "min_severity": "critical"},
        {"name": "duty", "url": "http://d", "secret": "d" * 40, "escalation_only": True}])
    receivers = receivers_from(s)
    assert routes(receivers, "sz-ft-3", "cold_chain.humidity", Severity.MINOR) == [
        "task-system", "ft"]
    assert routes(receivers, "gz-1", "elevator.overspeed", Severity.CRITICAL) == [
        "task-system", "lifts"]
    assert routes(receivers, "gz-1", "elevator.overspeed", Severity.MAJOR) == ["task-system"]
    assert "d" * 40 not in repr(receivers)


def test_receiver_settings_are_checked() -> None:
    with pytest.raises(InsecureSettingError, match="RECEIVERS"):
        receivers_from(settings(receivers=[{"name": "x", "url": "http://x",
                                            "secret": "short"}]))
    with pytest.raises(InsecureSettingError, match="unique"):
        receivers_from(settings(receivers=[{"name": "task-system", "url": "http://x",
                                            "secret": "x" * 40}]))
    problems = settings_check(AlertsSettings(escalation={
        "critical": EscalationStep(after_s=60, receivers=["nobody"]),
        "urgent": EscalationStep(after_s=60)}), ["task-system"])
    assert problems == ["escalation.critical: unknown receiver 'nobody'",
                        "escalation: unknown severity 'urgent'"]
