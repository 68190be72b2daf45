"""Applying transitions against real PostgreSQL: one alert and one clue, whatever replays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from alerts.lifecycle import clue_id_for
from alerts.outbox import claim_due, figures, mark_dead, mark_delivered, mark_retry
from alerts.repository import apply_transition
from ganzhi.contracts import AlertTransition, Clue, Severity, TransitionKind

from alerting import policy

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
BASE = "http://ganzhi.test"
POLICY = policy()
R = "task-system"


def transition(
    kind: TransitionKind, started_at: datetime = T0, at: datetime | None = None
) -> AlertTransition:
    at = at or started_at + timedelta(minutes=10)
    return AlertTransition(
        transition_id=f"fp-1:{kind.value}:{started_at.isoformat()}:{at.isoformat()}",
        kind=kind,
        fingerprint="fp-1",
        rule_id="cold_chain.chilled",
        severity=Severity.MAJOR,
        site_id="site-1",
        device_id="fridge-1",
        started_at=started_at,
        at=at,
        summary="too warm",
        values={"max": 11.5},
    )


@pytest.fixture
async def conns(pg_dsn: str) -> AsyncIterator[tuple[AsyncConnection[Any], AsyncConnection[Any]]]:
    a = await AsyncConnection.connect(pg_dsn, autocommit=True)
    b = await AsyncConnection.connect(pg_dsn, autocommit=True)
    yield a, b
    await a.close()
    await b.close()


def counts(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM alerts), (SELECT count(*) FROM clue_outbox),"
            " (SELECT count(*) FROM alert_events)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def pending(conn: AsyncConnection[Any]) -> int:
    return sum(f.pending for f in await figures(conn))


async def test_firing_twice_and_concurrently_makes_one_alert_and_one_clue(
    pg_dsn: str, conns: tuple[AsyncConnection[Any], AsyncConnection[Any]]
) -> None:
    a, b = conns
    firing = transition(TransitionKind.FIRING)
    first = await apply_transition(a, firing, POLICY)
    assert first.outcome == "opened" and first.alert_id is not None
    clue_id = clue_id_for("fp-1", T0)
    again = await apply_transition(a, firing, POLICY)
    assert again.outcome == "duplicate"
    assert counts(pg_dsn) == (1, 1, 1)

    # A different firing transition (same start), from two connections at once.
    later = transition(TransitionKind.FIRING, at=T0 + timedelta(minutes=20))
    results = await asyncio.gather(
        apply_transition(a, later, POLICY), apply_transition(b, later, POLICY)
    )
    assert sorted(r.outcome for r in results) == ["duplicate", "ignored"]
    assert counts(pg_dsn) == (1, 1, 2)

    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT payload::text FROM clue_outbox").fetchone()
    assert row is not None
    clue = Clue.model_validate_json(row[0])
    assert clue.alert_id == first.alert_id and clue.clue_id == clue_id
    assert clue.links.alert == f"{BASE}/api/v1/alerts/{first.alert_id}"


async def test_concurrent_new_firing_opens_exactly_once(
    pg_dsn: str, conns: tuple[AsyncConnection[Any], AsyncConnection[Any]]
) -> None:
    a, b = conns
    firing = transition(TransitionKind.FIRING)
    results = await asyncio.gather(
        apply_transition(a, firing, POLICY), apply_transition(b, firing, POLICY)
    )
    assert sorted(r.outcome for r in results) == ["duplicate", "opened"]
    assert counts(pg_dsn) == (1, 1, 1)


async def test_resolve_then_a_later_firing_opens_a_second_alert(
    pg_dsn: str, conns: tuple[AsyncConnection[Any], AsyncConnection[Any]]
) -> None:
    conn, _ = conns
    opened = await apply_transition(conn, transition(TransitionKind.FIRING), POLICY)
    resolve = transition(TransitionKind.RESOLVED, at=T0 + timedelta(minutes=30))
    resolved = await apply_transition(conn, resolve, POLICY)
    assert (resolved.outcome, resolved.alert_id) == ("resolved", opened.alert_id)
    assert (await apply_transition(conn, resolve, POLICY)).outcome == "duplicate"

    with psycopg.connect(pg_dsn) as c:
        row = c.execute("SELECT status, ended_at FROM alerts").fetchone()
        events = c.execute("SELECT event, clue_id::text, payload::text FROM clue_outbox"
                           " ORDER BY id").fetchall()
    assert row == ("resolved", T0 + timedelta(minutes=30))
    # The clue's second event, same clue id, queued with the resolution (once).
    assert [(e, cid) for e, cid, _ in events] == [("created", clue_id_for("fp-1", T0)),
                                                  ("resolved", clue_id_for("fp-1", T0))]
    resolution = Clue.model_validate_json(events[1][2])
    assert resolution.event == "resolved" and resolution.ended_at == T0 + timedelta(minutes=30)
    assert resolution.resolution is not None
    assert resolution.resolution["transition_id"] == resolve.transition_id

    # A replay of the first firing after the resolve changes nothing.
    assert (await apply_transition(conn, transition(TransitionKind.FIRING), POLICY)).outcome == (
        "duplicate"
    )
    second_start = T0 + timedelta(hours=2)
    second = await apply_transition(conn, transition(TransitionKind.FIRING, second_start), POLICY)
    assert second.outcome == "opened" and second.alert_id != opened.alert_id
    assert second.incident_id != opened.incident_id
    assert counts(pg_dsn) == (2, 3, 3)  # outbox: created + resolved, created

    # Firing again while the second is open attaches to it, no third alert or clue.
    third = await apply_transition(
        conn, transition(TransitionKind.FIRING, T0 + timedelta(hours=3)), POLICY
    )
    assert (third.outcome, third.alert_id) == ("attached", second.alert_id)
    assert counts(pg_dsn)[:2] == (2, 3)


async def test_resolved_without_alert_is_ignored(
    pg_dsn: str, conns: tuple[AsyncConnection[Any], AsyncConnection[Any]]
) -> None:
    result = await apply_transition(conns[0], transition(TransitionKind.RESOLVED), POLICY)
    assert (result.outcome, result.reason) == ("ignored", "no_open_alert")
    assert counts(pg_dsn) == (0, 0, 0)


async def test_outbox_claims_are_exclusive_and_states_stick(
    pg_dsn: str, conns: tuple[AsyncConnection[Any], AsyncConnection[Any]]
) -> None:
    a, b = conns
    for hours in range(3):
        t = transition(TransitionKind.FIRING, T0 + timedelta(hours=hours))
        await apply_transition(a, t, POLICY)
        await apply_transition(a, transition(TransitionKind.RESOLVED, t.started_at), POLICY)
    assert await pending(a) == 6  # each clue: created, resolved

    first, second = await asyncio.gather(claim_due(a, R, 2, 60), claim_due(b, R, 2, 60))
    ids = [i.id for i in first + second]
    assert len(ids) == len(set(ids)) == 3
    assert all(i.attempts == 1 and i.event == "created" for i in first + second)
    assert await claim_due(a, R, 10, 60) == []  # created ones leased, resolved ones held

    one, two, three = sorted(first + second, key=lambda i: i.id)
    assert Clue.model_validate_json(one.body).clue_id == one.clue_id
    await mark_delivered(a, one, 200, 0.01)
    await mark_dead(a, two, "HTTP 400: bad", 400, 0.01)
    await mark_retry(a, three, 0.0, "HTTP 503", 503, 0.01)
    assert await pending(a) == 4
    # Due now: the retried created event, and the resolved event of the delivered clue.
    due = await claim_due(b, R, 10, 60)
    assert sorted((i.clue_id, i.event) for i in due) == sorted(
        [(three.clue_id, "created"), (one.clue_id, "resolved")])
    assert next(i for i in due if i.event == "created").attempts == 2
    await mark_retry(a, one, 0.0, "late", 500, 0.01)  # a delivered clue stays delivered
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute("SELECT status, last_status FROM clue_outbox WHERE event = 'created'"
                         " ORDER BY id").fetchall()
    assert rows == [("delivered", 200), ("dead", 400), ("pending", 503)]
