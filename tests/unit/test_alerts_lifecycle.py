"""Alert lifecycle decisions, clue building, backoff and delivery classification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from alerts.consumer import Rejected, parse_transition
from alerts.lifecycle import (
    Action,
    AlertRef,
    AlertRow,
    DeliveryOutcome,
    IncidentView,
    build_clue,
    classify_delivery,
    clue_id_for,
    decide,
)
from ganzhi.contracts import AlertTransition, Clue, Severity, TransitionKind

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


def transition(
    kind: TransitionKind = TransitionKind.FIRING,
    started_at: datetime = T0,
    at: datetime | None = None,
) -> AlertTransition:
    return AlertTransition(
        transition_id=f"fp-1:{kind.value}:{(at or started_at).isoformat()}",
        kind=kind,
        fingerprint="fp-1",
        rule_id="cold_chain.chilled",
        severity=Severity.MAJOR,
        site_id="site-1",
        device_id="fridge-1",
        started_at=started_at,
        at=at or started_at + timedelta(minutes=10),
        summary="temperature above 8 °C for 10 min",
        values={"max": 11.5},
    )


def ref(id: int, started_at: datetime = T0, open: bool = True) -> AlertRef:
    return AlertRef(id=id, started_at=started_at, open=open)


def test_firing_opens_a_new_alert() -> None:
    assert decide(transition(), None, None).action is Action.OPEN


def test_firing_replayed_is_a_noop() -> None:
    d = decide(transition(), ref(7), ref(7))
    assert (d.action, d.alert_id) == (Action.NOOP, 7)
    # (a replay with the same transition id never gets here: alert_events has it)


def test_firing_again_from_the_same_start_after_a_retraction_refires() -> None:
    d = decide(transition(), ref(7, open=False), None)
    assert (d.action, d.alert_id) == (Action.REFIRE, 7)
    d = decide(transition(), ref(7, open=False), ref(8, started_at=T0 + timedelta(hours=1)))
    assert (d.action, d.alert_id) == (Action.NOOP, 7)


def test_firing_while_another_is_open_attaches() -> None:
    d = decide(transition(started_at=T0 + timedelta(hours=1)), None, ref(7))
    assert (d.action, d.alert_id) == (Action.ATTACH, 7)


def test_resolved_closes_the_open_alert() -> None:
    d = decide(transition(TransitionKind.RESOLVED), ref(7), ref(7))
    assert (d.action, d.alert_id) == (Action.RESOLVE, 7)


def test_resolved_without_open_alert_is_a_noop() -> None:
    assert decide(transition(TransitionKind.RESOLVED), None, None).action is Action.NOOP
    assert decide(transition(TransitionKind.RESOLVED), ref(7, open=False), None).alert_id == 7


def test_resolved_older_than_the_open_alert_is_a_noop() -> None:
    late = transition(TransitionKind.RESOLVED, started_at=T0, at=T0 + timedelta(minutes=5))
    d = decide(late, None, ref(9, started_at=T0 + timedelta(hours=1)))
    assert (d.action, d.reason) == (Action.NOOP, "older_than_open_alert")


def row(id: int, rule_id: str, severity: Severity, start: datetime, *,
        ended: datetime | None = None, values: dict[str, object] | None = None) -> AlertRow:
    return AlertRow(id, f"fp-{id}", rule_id, severity, "site-1", "fridge-1",
                    "resolved" if ended else "open", start, ended, f"{rule_id} summary",
                    dict(values or {}))


def test_clue_is_the_incident_with_its_primary_alert_and_links() -> None:
    high = row(41, "cold_chain.temperature_high", Severity.MAJOR, T0, values={"max": 11.5})
    rise = row(42, "cold_chain.rate_of_rise", Severity.CRITICAL, T0 + timedelta(minutes=3))
    incident = IncidentView(7, clue_id_for("fp-41", T0), Severity.CRITICAL, 0, (high, rise))
    now = T0 + timedelta(minutes=11)
    clue = build_clue(incident, "updated", 1, "https://ganzhi.example/", now)
    # the most severe alert is the primary; the clue id stays the incident's
    assert (clue.alert_id, clue.rule_id, clue.severity) == (42, "cold_chain.rate_of_rise",
                                                            Severity.CRITICAL)
    assert (clue.clue_id, clue.event, clue.seq, clue.incident_id) == (
        incident.clue_id, "updated", 1, 7)
    assert clue.started_at == T0  # the incident's start, the earliest alert's
    assert [m.alert_id for m in clue.members] == [41, 42]
    assert clue.links.alert == "https://ganzhi.example/api/v1/alerts/42"
    assert clue.links.incident == "https://ganzhi.example/api/v1/incidents/7"
    query = parse_qs(urlsplit(clue.links.readings).query)
    assert (query["from"], query["to"]) == (["2025-01-01T07:00:00Z"], ["2025-01-01T09:11:00Z"])
    assert clue.ended_at is None
    assert Clue.model_validate_json(clue.model_dump_json()) == clue
    # Same instant in another time zone: same id.
    assert clue_id_for("fp-41", T0.astimezone(timezone(timedelta(hours=8)))) == clue.clue_id


def test_resolution_carries_the_clearing_evidence_and_spans_the_incident() -> None:
    cam = row(5, "vision.no_mask", Severity.MINOR, T0, ended=T0 + timedelta(hours=2),
              values={"snapshot_sha256": "a" * 64})
    incident = IncidentView(3, clue_id_for("fp-5", T0), Severity.MINOR, 0, (cam,))
    base = "http://api.example"
    opening = build_clue(incident, "created", 0, base, T0)
    assert opening.links.evidence == f"{base}/api/v1/evidence/{'a' * 64}"
    resolution = {"summary": "rectified", "values": {"snapshot_sha256": "b" * 64},
                  "transition_id": "t-resolved", "by": "system"}
    res = build_clue(incident, "resolved", 2, base, T0 + timedelta(hours=2, seconds=5),
                     resolution)
    assert res.links.evidence == f"{base}/api/v1/evidence/{'b' * 64}"
    assert res.ended_at == T0 + timedelta(hours=2) and res.resolution == resolution
    query = parse_qs(urlsplit(res.links.readings).query)
    assert (query["from"], query["to"]) == (["2025-01-01T07:00:00Z"], ["2025-01-01T11:00:00Z"])
    # a resolution without a clearing snapshot links no evidence (never the opening one)
    by_hand = build_clue(incident, "resolved", 2, base, T0, {"by": "li", "reason": "x"})
    assert by_hand.links.evidence is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, DeliveryOutcome.DELIVERED),
        (204, DeliveryOutcome.DELIVERED),
        (400, DeliveryOutcome.DEAD),
        (409, DeliveryOutcome.DEAD),
        (422, DeliveryOutcome.DEAD),
        (401, DeliveryOutcome.RETRY),  # the receiver's key mix-up, not the clue's fault
        (403, DeliveryOutcome.RETRY),
        (404, DeliveryOutcome.RETRY),
        (408, DeliveryOutcome.RETRY),
        (429, DeliveryOutcome.RETRY),
        (500, DeliveryOutcome.RETRY),
        (503, DeliveryOutcome.RETRY),
        (302, DeliveryOutcome.RETRY),
        (None, DeliveryOutcome.RETRY),
    ],
)
def test_delivery_classification_has_no_attempt_limit(
    status: int | None, expected: DeliveryOutcome
) -> None:
    assert classify_delivery(status) is expected


def test_parse_transition_rejects_with_a_reason() -> None:
    good = transition()
    assert parse_transition(good.model_dump_json().encode()) == good
    assert parse_transition(None) == Rejected("empty", "record has no value")
    bad_json = parse_transition(b"{not json")
    assert isinstance(bad_json, Rejected) and bad_json.reason == "invalid_json"
    bad_schema = parse_transition(b'{"kind": "firing"}')
    assert isinstance(bad_schema, Rejected) and bad_schema.reason == "invalid_schema"
