"""PostgreSQL adapter of the alerts service (psycopg 3, async).

:func:`apply_transition` applies one transition in ONE transaction: the alert_events row
keyed by ``transition_id`` (a replay finds it and changes nothing), the alert insert or
update, and the clue events in ``clue_outbox`` (transactional outbox): ``created`` for a
new alert, ``resolved`` (same clue id) when that alert is resolved. The outbox holds at
most one row per clue and event (``UNIQUE (clue_id, event)``, ``UNIQUE (alert_id,
event)``).

Concurrent consumers of the same fingerprint are serialised by a transaction-scoped
advisory lock on the fingerprint; the unique indexes (``UNIQUE (fingerprint,
started_at)``, one open alert per fingerprint, ``transition_id`` primary key) stay the
last word: every insert is ``ON CONFLICT DO NOTHING`` and a conflict rolls back to "no
change".

The outbox is drained with ``FOR UPDATE SKIP LOCKED`` claims that take a short lease
(``next_attempt_at`` moved forward, ``attempts`` counted) and commit at once, so several
dispatchers share the work and no transaction stays open during an HTTP call; a
dispatcher that dies leaves its claims to be picked up again when the lease runs out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from alerts.lifecycle import Action, AlertRef, build_clue, build_resolution, decide
from ganzhi.contracts import AlertTransition, Clue, utcnow

AnyConn = AsyncConnection[Any]


@dataclass(frozen=True)
class ApplyResult:
    """``outcome``: opened, attached, resolved, duplicate (transition seen before) or
    ignored (nothing to change, ``reason`` says why)."""

    outcome: str
    alert_id: int | None
    reason: str
    clue_id: str | None = None


class _Conflict(Exception):
    """Raised inside the transaction to roll it back when a unique key says 'already done'."""


async def _alert_ref(conn: AnyConn, query: str, params: tuple[Any, ...]) -> AlertRef | None:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return AlertRef(id=row[0], started_at=row[1], open=row[2] == "open") if row else None


async def _insert_event(conn: AnyConn, t: AlertTransition, alert_id: int) -> bool:
    cur = await conn.execute(
        "INSERT INTO alert_events (transition_id, alert_id, kind, at, payload)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (transition_id) DO NOTHING"
        " RETURNING transition_id",
        (t.transition_id, alert_id, t.kind.value, t.at, Jsonb(t.model_dump(mode="json"))),
    )
    return await cur.fetchone() is not None


async def apply_transition(
    conn: AnyConn,
    t: AlertTransition,
    public_base_url: str,
    now: datetime | None = None,
) -> ApplyResult:
    """Apply ``t`` in one transaction on ``conn`` (an autocommit connection)."""
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (t.fingerprint,)
            )
            cur = await conn.execute(
                "SELECT 1 FROM alert_events WHERE transition_id = %s", (t.transition_id,)
            )
            if await cur.fetchone() is not None:
                return ApplyResult("duplicate", None, "transition_seen")
            same_start = await _alert_ref(
                conn,
                "SELECT id, started_at, status FROM alerts"
                " WHERE fingerprint = %s AND started_at = %s",
                (t.fingerprint, t.started_at),
            )
            open_alert = await _alert_ref(
                conn,
                "SELECT id, started_at, status FROM alerts"
                " WHERE fingerprint = %s AND status = 'open'",
                (t.fingerprint,),
            )
            decision = decide(t, same_start, open_alert)
            if decision.action is Action.OPEN:
                return await _open(conn, t, public_base_url, now or utcnow())
            if decision.alert_id is None:
                return ApplyResult("ignored", None, decision.reason)
            if not await _insert_event(conn, t, decision.alert_id):
                raise _Conflict
            if decision.action is Action.RESOLVE:
                await conn.execute(
                    "UPDATE alerts SET status = 'resolved', ended_at = %s, updated_at = now()"
                    " WHERE id = %s AND status = 'open'",
                    (t.at, decision.alert_id),
                )
                await _queue_resolution(conn, t, decision.alert_id, public_base_url,
                                        now or utcnow())
                return ApplyResult("resolved", decision.alert_id, decision.reason)
            if decision.action is Action.ATTACH:
                await conn.execute(
                    "UPDATE alerts SET updated_at = now() WHERE id = %s", (decision.alert_id,)
                )
                return ApplyResult("attached", decision.alert_id, decision.reason)
            return ApplyResult("ignored", decision.alert_id, decision.reason)
    except _Conflict:
        return ApplyResult("duplicate", None, "unique_conflict")


async def _open(
    conn: AnyConn, t: AlertTransition, public_base_url: str, now: datetime
) -> ApplyResult:
    cur = await conn.execute(
        "INSERT INTO alerts (fingerprint, rule_id, severity, site_id, device_id, status,"
        ' started_at, summary, "values")'
        " VALUES (%s, %s, %s, %s, %s, 'open', %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id",
        (
            t.fingerprint,
            t.rule_id,
            t.severity.value,
            t.site_id,
            t.device_id,
            t.started_at,
            t.summary,
            Jsonb(t.values),
        ),
    )
    row = await cur.fetchone()
    if row is None:
        raise _Conflict
    alert_id = int(row[0])
    if not await _insert_event(conn, t, alert_id):
        raise _Conflict
    clue = build_clue(t, alert_id, public_base_url, now)
    cur = await conn.execute(
        "INSERT INTO clue_outbox (clue_id, alert_id, payload) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id",
        (clue.clue_id, alert_id, Jsonb(clue.model_dump(mode="json"))),
    )
    if await cur.fetchone() is None:
        raise _Conflict
    return ApplyResult("opened", alert_id, "new", clue_id=clue.clue_id)


async def _queue_resolution(conn: AnyConn, t: AlertTransition, alert_id: int,
                            public_base_url: str, now: datetime) -> None:
    """The clue's ``resolved`` event, in the same transaction as the resolution."""
    cur = await conn.execute(
        "SELECT payload FROM clue_outbox WHERE alert_id = %s AND event = 'created'",
        (alert_id,))
    row = await cur.fetchone()
    if row is None:
        return  # no clue was raised for this alert: nothing to follow up
    opening = Clue.model_validate(row[0])
    clue = build_resolution(opening, t, public_base_url, now)
    await conn.execute(
        "INSERT INTO clue_outbox (clue_id, alert_id, event, payload) VALUES (%s, %s, 'resolved',"
        " %s) ON CONFLICT DO NOTHING",
        (clue.clue_id, alert_id, Jsonb(clue.model_dump(mode="json"))))


# --- outbox ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxItem:
    id: int
    clue_id: str
    alert_id: int
    body: bytes  # the stored clue JSON, the exact bytes signed and sent
    attempts: int  # including the attempt this claim is for
    created_at: datetime
    event: str = "created"


async def claim_due(conn: AnyConn, limit: int, lease_s: float) -> list[OutboxItem]:
    """Claim up to ``limit`` due pending clue events for one delivery attempt each.

    A ``resolved`` event is held (left pending, not claimed) until its clue's ``created``
    event was delivered: a task system must not hear of a clearing before the clue
    itself. If the created event is ``dead``, the resolved one stays held with it rather
    than dying without an attempt of its own; an operator who re-queues the dead created
    event (docs/operations.md) thereby releases the resolution, which then follows it.
    Held rows count in :func:`pending_count`; :func:`held_count` tells them apart."""
    async with conn.transaction():
        cur = await conn.execute(
            "WITH due AS ("
            "  SELECT o.id FROM clue_outbox o"
            "  WHERE o.status = 'pending' AND o.next_attempt_at <= now()"
            "  AND (o.event = 'created' OR EXISTS (SELECT 1 FROM clue_outbox c"
            "       WHERE c.clue_id = o.clue_id AND c.event = 'created'"
            "       AND c.status = 'delivered'))"
            "  ORDER BY o.next_attempt_at, o.id LIMIT %s FOR UPDATE OF o SKIP LOCKED)"
            " UPDATE clue_outbox o"
            " SET attempts = o.attempts + 1,"
            "     next_attempt_at = now() + make_interval(secs => %s)"
            " FROM due WHERE o.id = due.id"
            " RETURNING o.id, o.clue_id::text, o.alert_id, o.payload::text, o.attempts,"
            "           o.created_at, o.event",
            (limit, lease_s),
        )
        rows = await cur.fetchall()
    return [
        OutboxItem(
            id=r[0],
            clue_id=r[1],
            alert_id=r[2],
            body=r[3].encode(),
            attempts=r[4],
            created_at=r[5],
            event=r[6],
        )
        for r in sorted(rows, key=lambda r: int(r[0]))
    ]


async def mark_delivered(conn: AnyConn, item_id: int, status_code: int) -> None:
    await conn.execute(
        "UPDATE clue_outbox SET status = 'delivered', delivered_at = now(), last_status = %s,"
        " last_error = NULL WHERE id = %s AND status = 'pending'",
        (status_code, item_id),
    )


async def mark_retry(
    conn: AnyConn, item_id: int, delay_s: float, error: str, status_code: int | None
) -> None:
    await conn.execute(
        "UPDATE clue_outbox SET next_attempt_at = now() + make_interval(secs => %s),"
        " last_error = %s, last_status = %s WHERE id = %s AND status = 'pending'",
        (delay_s, error[:500], status_code, item_id),
    )


async def mark_dead(conn: AnyConn, item_id: int, error: str, status_code: int | None) -> None:
    await conn.execute(
        "UPDATE clue_outbox SET status = 'dead', last_error = %s, last_status = %s"
        " WHERE id = %s AND status = 'pending'",
        (error[:500], status_code, item_id),
    )


async def pending_count(conn: AnyConn) -> int:
    """Clue events not yet delivered nor dead, held ``resolved`` events included."""
    cur = await conn.execute("SELECT count(*) FROM clue_outbox WHERE status = 'pending'")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def held_count(conn: AnyConn) -> int:
    """Pending ``resolved`` events held behind a ``created`` event that is dead: they move
    only once an operator re-queues the created one."""
    cur = await conn.execute(
        "SELECT count(*) FROM clue_outbox o WHERE o.event = 'resolved'"
        " AND o.status = 'pending' AND EXISTS (SELECT 1 FROM clue_outbox c"
        " WHERE c.clue_id = o.clue_id AND c.event = 'created' AND c.status = 'dead')"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def clue_body(item: OutboxItem) -> dict[str, Any]:
    """The claimed clue as a dict (for logs and tests)."""
    result: dict[str, Any] = json.loads(item.body)
    return result
