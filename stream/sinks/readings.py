"""Readings and one-minute and one-hour rollups into PostgreSQL, idempotently.

Idempotence is per message, not per reading. Each batch, in one transaction:

1. ``INSERT … ON CONFLICT DO NOTHING RETURNING`` the batch's message ids into
   ``stream_messages`` (keyed by msg_id and the message's earliest reading time): one
   conflict check per message (about ten readings) instead of one per reading. The ids
   returned are the messages never stored before; a replayed Kafka record and a
   redelivered MQTT message (same msg_id at another offset) are not among them.
2. Binary COPY of those messages' readings straight into ``readings`` (no staging table,
   no unique index on readings).
3. Rollups: the new readings aggregated here per (site, device, metric, minute) and per
   hour (:mod:`stream.sinks.rollups`) and merged into ``rollups_1m`` / ``rollups_1h``, one
   upsert row per touched bucket. The merge is order-independent, so late and
   out-of-order readings give the same rollups as in-order ones.

A crash before the commit stores nothing, message ids included; the batch comes again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import psycopg

from ganzhi.contracts import Telemetry
from stream.sinks.rollups import Agg, Key, aggregate


@dataclass(frozen=True)
class ReadingRow:
    time: datetime
    site_id: str
    device_id: str
    metric: str
    value: float
    unit: str
    msg_id: uuid.UUID


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int
    rollups: int


def rows_from_telemetry(msg: Telemetry) -> list[ReadingRow]:
    return [
        ReadingRow(r.ts or msg.ts, msg.site_id, msg.device_id, r.metric, r.value, r.unit,
                   msg.msg_id)
        for r in msg.readings
    ]


_MESSAGES = """
INSERT INTO stream_messages (msg_id, time)
SELECT * FROM unnest(%b::uuid[], %b::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING msg_id
"""
_COPY = (
    "COPY readings (time, site_id, device_id, metric, value, unit, msg_id)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["timestamptz", "text", "text", "text", "float8", "text", "uuid"]
# Merges a batch's aggregate into the stored one; the same arithmetic as rollups.merge.
_UPSERT = """
INSERT INTO {table} AS r
  (bucket, site_id, device_id, metric, count, min, max, mean, last, last_time)
SELECT * FROM unnest(%b::timestamptz[], %b::text[], %b::text[], %b::text[], %b::int[],
                     %b::float8[], %b::float8[], %b::float8[], %b::float8[],
                     %b::timestamptz[])
ON CONFLICT (site_id, device_id, metric, bucket) DO UPDATE SET
  count = r.count + EXCLUDED.count,
  min = least(r.min, EXCLUDED.min),
  max = greatest(r.max, EXCLUDED.max),
  mean = (r.mean * r.count + EXCLUDED.mean * EXCLUDED.count) / (r.count + EXCLUDED.count),
  last = CASE WHEN (EXCLUDED.last_time, EXCLUDED.last) > (r.last_time, r.last)
              THEN EXCLUDED.last ELSE r.last END,
  last_time = greatest(r.last_time, EXCLUDED.last_time),
  updated_at = now()
"""
_UPSERT_1M = _UPSERT.format(table="rollups_1m")
_UPSERT_1H = _UPSERT.format(table="rollups_1h")


def _upsert_params(aggs: dict[Key, Agg]) -> list[list[object]]:
    """Column arrays for ``_UPSERT``, in key order (one lock order for every writer)."""
    rows = [(k[3], k[0], k[1], k[2], a.count, a.min, a.max, a.sum / a.count, a.last,
             a.last_time) for k, a in sorted(aggs.items())]
    return [list(col) for col in zip(*rows, strict=True)]


def new_messages(rows: Sequence[ReadingRow]) -> tuple[list[ReadingRow], dict[uuid.UUID, datetime]]:
    """The batch's rows without in-batch repeats of (msg_id, metric, time) — two copies of
    one message in the same batch — and each message's key time (its earliest reading)."""
    seen: set[tuple[uuid.UUID, str, datetime]] = set()
    unique: list[ReadingRow] = []
    first: dict[uuid.UUID, datetime] = {}
    for r in rows:
        k = (r.msg_id, r.metric, r.time)
        if k in seen:
            continue
        seen.add(k)
        unique.append(r)
        t = first.get(r.msg_id)
        if t is None or r.time < t:
            first[r.msg_id] = r.time
    return unique, first


class ReadingsSink:
    """One async connection; reconnects on the next batch after a failure."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._days: set[date] = set()

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            await self._conn.execute("SET TIME ZONE 'UTC'")
        return self._conn

    async def _ensure_partitions(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], times: Iterable[datetime]
    ) -> None:
        days = {t.astimezone(UTC).date() for t in times} - self._days
        if not days:
            return
        # One call per day, not one range: a device with a wrong clock must not make
        # a partition for every day in between.
        for day in sorted(days):
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            await conn.execute("SELECT ganzhi_ensure_reading_partitions(%s, %s)", (start, start))
            self._days.add(day)

    async def write(self, rows: Sequence[ReadingRow]) -> WriteResult:
        if not rows:
            return WriteResult(0, 0, 0)
        try:
            conn = await self._connection()
            await self._ensure_partitions(conn, (r.time for r in rows))
            unique, first = new_messages(rows)
            ids = list(first)
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(_MESSAGES, (ids, [first[i] for i in ids]))
                fresh = {r[0] for r in await cur.fetchall()}
                stored = [r for r in unique if r.msg_id in fresh]
                rollups = 0
                if stored:
                    async with cur.copy(_COPY) as copy:
                        copy.set_types(_COPY_TYPES)
                        for r in stored:
                            await copy.write_row(
                                (r.time, r.site_id, r.device_id, r.metric, r.value, r.unit,
                                 r.msg_id))
                    minutes, hours = aggregate(
                        (r.site_id, r.device_id, r.metric, r.time, r.value) for r in stored)
                    await cur.execute(_UPSERT_1M, _upsert_params(minutes))
                    await cur.execute(_UPSERT_1H, _upsert_params(hours))
                    rollups = len(minutes)
            inserted = len(stored)
        except psycopg.Error as exc:
            self._days.clear()  # a partition may have been dropped by retention
            if isinstance(exc, psycopg.OperationalError):
                await self.close()
            raise
        return WriteResult(inserted, len(rows) - inserted, rollups)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
