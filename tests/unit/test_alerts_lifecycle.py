"""Alert lifecycle decisions, clue building, backoff and delivery classification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from alerts.consumer import Rejected, parse_transition
from alerts.lifecycle import (
    Action,
    AlertRef,
    DeliveryOutcome,
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
    d = decide(transition(), ref(7, open=False), None)
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


def test_clue_is_deterministic_and_links_to_evidence() -> None:
    t = transition()
    now = datetime(2025, 1, 1, 8, 11, tzinfo=UTC)
    clue = build_clue(t, 42, "https://ganzhi.example/", now)
    again = build_clue(t, 42, "https://ganzhi.example/", now + timedelta(hours=1))
    assert clue.clue_id == again.clue_id == clue_id_for("fp-1", T0)
    # Same instant in another time zone: same id.
    assert clue_id_for("fp-1", T0.astimezone(timezone(timedelta(hours=8)))) == clue.clue_id
    assert clue_id_for("fp-2", T0) != clue.clue_id
    assert clue.links.alert == "https://ganzhi.example/api/v1/alerts/42"
    url = urlsplit(clue.links.readings)
    assert url.path == "/api/v1/devices/site-1/fridge-1/readings"
    query = parse_qs(url.query)
    assert query["from"] == ["2025-01-01T07:00:00Z"]
    assert query["to"] == ["2025-01-01T09:10:00Z"]
    assert Clue.model_validate_json(clue.model_dump_json()) == clue


@pytest.mark.parametrize(
    ("status", "attempts", "expected"),
    [
        (200, 1, DeliveryOutcome.DELIVERED),
        (204, 12, DeliveryOutcome.DELIVERED),
        (400, 1, DeliveryOutcome.DEAD),
        (401, 1, DeliveryOutcome.DEAD),
        (408, 1, DeliveryOutcome.RETRY),
        (429, 1, DeliveryOutcome.RETRY),
        (500, 1, DeliveryOutcome.RETRY),
        (503, 11, DeliveryOutcome.RETRY),
        (503, 12, DeliveryOutcome.DEAD),
        (None, 1, DeliveryOutcome.RETRY),
        (None, 12, DeliveryOutcome.DEAD),
    ],
)
def test_delivery_classification(
    status: int | None, attempts: int, expected: DeliveryOutcome
) -> None:
    assert classify_delivery(status, attempts, max_attempts=12) is expected


def test_parse_transition_rejects_with_a_reason() -> None:
    good = transition()
    assert parse_transition(good.model_dump_json().encode()) == good
    assert parse_transition(None) == Rejected("empty", "record has no value")
    bad_json = parse_transition(b"{not json")
    assert isinstance(bad_json, Rejected) and bad_json.reason == "invalid_json"
    bad_schema = parse_transition(b'{"kind": "firing"}')
    assert isinstance(bad_schema, Rejected) and bad_schema.reason == "invalid_schema"


def test_resolution_is_the_same_clue_with_the_clearing_evidence() -> None:
    from alerts.lifecycle import build_clue, build_resolution
    from ganzhi.contracts import AlertTransition, Severity, TransitionKind

    def tr(kind: TransitionKind, at_min: int, sha: str | None) -> AlertTransition:
        return AlertTransition(
            transition_id=f"t-{kind.value}", kind=kind, fingerprint="fp", rule_id="vision.no_mask",
            severity=Severity.MINOR, site_id="s", device_id="cam-1",
            started_at=datetime(2026, 1, 1, 8, tzinfo=UTC),
            at=datetime(2026, 1, 1, 8, at_min, tzinfo=UTC), summary="no mask",
            values={"snapshot_sha256": sha} if sha else {})

    base = "http://api.example"
    opening = build_clue(tr(TransitionKind.FIRING, 1, "a" * 64), 7, base,
                         datetime(2026, 1, 1, 8, 1, tzinfo=UTC))
    assert opening.event == "created"
    assert opening.links.evidence == f"{base}/api/v1/evidence/{'a' * 64}"
    res = build_resolution(opening, tr(TransitionKind.RESOLVED, 30, "b" * 64), base,
                           datetime(2026, 1, 1, 8, 31, tzinfo=UTC))
    assert (res.event, res.clue_id, res.alert_id) == ("resolved", opening.clue_id, 7)
    assert res.ended_at == datetime(2026, 1, 1, 8, 30, tzinfo=UTC)
    assert res.links.evidence == f"{base}/api/v1/evidence/{'b' * 64}"
    assert res.resolution == {"summary": "no mask", "values": {"snapshot_sha256": "b" * 64},
                              "transition_id": "t-resolved"}
    sensor = build_clue(tr(TransitionKind.FIRING, 1, None), 8, base,
                        datetime(2026, 1, 1, 8, 1, tzinfo=UTC))
    assert sensor.links.evidence is None


def test_resolution_of_a_sensor_alert_spans_the_whole_alert_without_evidence() -> None:
    from alerts.lifecycle import build_resolution

    opening = build_clue(transition(), 42, "https://ganzhi.example", T0 + timedelta(minutes=11))
    cleared = transition(TransitionKind.RESOLVED, at=T0 + timedelta(hours=3))
    now = T0 + timedelta(hours=3, seconds=2)
    res = build_resolution(opening, cleared, "https://ganzhi.example", now)
    # The same clue (its id is the one derived from the alert), a second event.
    assert res.clue_id == opening.clue_id == clue_id_for("fp-1", T0)
    assert (res.event, res.alert_id, res.created_at) == ("resolved", 42, now)
    assert (res.summary, res.values, res.started_at) == (opening.summary, opening.values, T0)
    assert res.ended_at == T0 + timedelta(hours=3)
    # Readings: an hour before the start to an hour after the end (the opening clue's
    # window stopped an hour after the firing transition).
    query = parse_qs(urlsplit(res.links.readings).query)
    assert (query["from"], query["to"]) == (["2025-01-01T07:00:00Z"], ["2025-01-01T12:00:00Z"])
    assert res.links.alert == opening.links.alert
    assert res.links.evidence is None and opening.links.evidence is None
    assert res.resolution == {"summary": cleared.summary, "values": {"max": 11.5},
                              "transition_id": cleared.transition_id}
    # A valid Clue, as the task system will parse it.
    assert Clue.model_validate_json(res.model_dump_json()) == res


def test_resolution_without_a_clearing_snapshot_has_no_evidence_link() -> None:
    from alerts.lifecycle import build_resolution

    firing = transition().model_copy(update={"values": {"snapshot_sha256": "a" * 64}})
    opening = build_clue(firing, 7, "http://api", T0)
    assert opening.links.evidence == f"http://api/api/v1/evidence/{'a' * 64}"
    # The evidence of a resolution is the clearing snapshot, never the opening one.
    cleared = transition(TransitionKind.RESOLVED).model_copy(update={"values": {}})
    assert build_resolution(opening, cleared, "http://api", T0).links.evidence is None
    odd = cleared.model_copy(update={"values": {"snapshot_sha256": None}})
    assert build_resolution(opening, odd, "http://api", T0).links.evidence is None
