"""The clue outbox in PostgreSQL: claims, delivery results, the delivery log, operators'
drop and re-queue, and the figures the metrics show.

One row per receiver and clue event. Rows are claimed with ``FOR UPDATE SKIP LOCKED``
and a short lease (``next_attempt_at`` moved forward, ``attempts`` counted) that
commits at once, so several dispatchers share the work, no transaction stays open
during an HTTP call, and a dispatcher that dies leaves its claims to be taken again when
the lease runs out. Per receiver and clue, an event is only claimed once every earlier
one (lower ``seq``) was delivered or dropped: a receiver never hears of a resolution
before the clue itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

AnyConn = AsyncConnection[Any]


@dataclass(frozen=True)
class OutboxItem:
    id: int
    receiver: str
    clue_id: str
    key: str  # Idempotency-Key
    event: str
    seq: int
    body: bytes  # the stored clue JSON, the exact bytes signed and sent
    attempts: int  # including the attempt this claim is for
    created_at: datetime
    incident_id: int | None = None

    def clue(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


_BLOCKED = (
    "EXISTS (SELECT 1 FROM clue_outbox e WHERE e.receiver = o.receiver"
    " AND e.clue_id = o.clue_id AND e.seq < o.seq AND e.status IN ('pending', 'dead'))")


async def claim_due(conn: AnyConn, receiver: str, limit: int, lease_s: float
                    ) -> list[OutboxItem]:
    """Claim up to ``limit`` due events of ``receiver``, each for one attempt."""
    async with conn.transaction():
        cur = await conn.execute(
            "WITH due AS ("
            "  SELECT o.id FROM clue_outbox o"
            "  WHERE o.receiver = %s AND o.status = 'pending' AND o.next_attempt_at <= now()"
            f"  AND NOT {_BLOCKED}"
            "  ORDER BY o.next_attempt_at, o.id LIMIT %s FOR UPDATE OF o SKIP LOCKED)"
            " UPDATE clue_outbox o"
            " SET attempts = o.attempts + 1,"
            "     next_attempt_at = now() + make_interval(secs => %s)"
            " FROM due WHERE o.id = due.id"
            " RETURNING o.id, o.receiver, o.clue_id::text, o.idempotency_key, o.event, o.seq,"
            "           o.payload::text, o.attempts, o.created_at, o.incident_id",
            (receiver, limit, lease_s))
        rows = await cur.fetchall()
    return [OutboxItem(r[0], r[1], r[2], r[3], r[4], r[5], r[6].encode(), r[7], r[8], r[9])
            for r in sorted(rows, key=lambda r: int(r[0]))]


async def _log(conn: AnyConn, item: OutboxItem, outcome: str, status: int | None,
               latency_s: float, error: str | None) -> None:
    await conn.execute(
        "INSERT INTO clue_deliveries (outbox_id, receiver, attempt, status_code, outcome,"
        " latency_ms, error) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (item.id, item.receiver, item.attempts, status, outcome, latency_s * 1000.0,
         error[:500] if error else None))


async def mark_delivered(conn: AnyConn, item: OutboxItem, status: int, latency_s: float
                         ) -> None:
    async with conn.transaction():
        await conn.execute(
            "UPDATE clue_outbox SET status = 'delivered', delivered_at = now(),"
            " last_status = %s, last_error = NULL WHERE id = %s AND status = 'pending'",
            (status, item.id))
        await _log(conn, item, "delivered", status, latency_s, None)


async def mark_retry(conn: AnyConn, item: OutboxItem, delay_s: float, error: str,
                     status: int | None, latency_s: float) -> None:
    async with conn.transaction():
        await conn.execute(
            "UPDATE clue_outbox SET next_attempt_at = now() + make_interval(secs => %s),"
            " last_error = %s, last_status = %s WHERE id = %s AND status = 'pending'",
            (delay_s, error[:500], status, item.id))
        await _log(conn, item, "retry", status, latency_s, error)


async def mark_dead(conn: AnyConn, item: OutboxItem, error: str, status: int | None,
                    latency_s: float) -> None:
    async with conn.transaction():
        await conn.execute(
            "UPDATE clue_outbox SET status = 'dead', last_error = %s, last_status = %s"
            " WHERE id = %s AND status = 'pending'", (error[:500], status, item.id))
        await _log(conn, item, "dead", status, latency_s, error)


@dataclass(frozen=True)
class ReceiverFigures:
    receiver: str
    pending: int
    held: int  # pending behind a dead earlier event of their clue
    dead: int
    oldest_pending_s: float


async def figures(conn: AnyConn) -> list[ReceiverFigures]:
    """Per receiver: pending, held, dead, and the age of the oldest pending event."""
    cur = await conn.execute(
        "SELECT o.receiver,"
        " count(*) FILTER (WHERE o.status = 'pending'),"
        " count(*) FILTER (WHERE o.status = 'pending' AND " + _BLOCKED.replace(
            "('pending', 'dead')", "('dead')") + "),"
        " count(*) FILTER (WHERE o.status = 'dead'),"
        " COALESCE(EXTRACT(EPOCH FROM now() - min(o.created_at)"
        "   FILTER (WHERE o.status = 'pending')), 0)"
        " FROM clue_outbox o WHERE o.status IN ('pending', 'dead') GROUP BY o.receiver")
    return [ReceiverFigures(r[0], r[1], r[2], r[3], float(r[4])) for r in await cur.fetchall()]


async def drop(conn: AnyConn, receiver: str, actor: str, *, ids: list[int] | None = None,
               before: datetime | None = None) -> int:
    """An operator gives up on clue events of ``receiver`` (pending or dead): they are
    ``dropped``, never sent, and no longer hold the events after them. ``ids`` and
    ``before`` (created before) narrow it; neither: all of the receiver's. Returns how
    many."""
    cur = await conn.execute(
        "UPDATE clue_outbox SET status = 'dropped', dropped_by = %s,"
        " last_error = COALESCE(last_error, '') || ' [dropped by ' || %s || ']'"
        " WHERE receiver = %s AND status IN ('pending', 'dead')"
        " AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[]))"
        " AND (%s::timestamptz IS NULL OR created_at < %s::timestamptz)",
        (actor, actor, receiver, ids, ids, before, before))
    return cur.rowcount


async def requeue(conn: AnyConn, receiver: str, actor: str, *, ids: list[int] | None = None
                  ) -> int:
    """Dead events of ``receiver`` (refused with a 4xx) go back to pending, due now."""
    cur = await conn.execute(
        "UPDATE clue_outbox SET status = 'pending', next_attempt_at = now(),"
        " last_error = COALESCE(last_error, '') || ' [re-queued by ' || %s || ']'"
        " WHERE receiver = %s AND status = 'dead'"
        " AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[]))",
        (actor, receiver, ids, ids))
    return cur.rowcount
