"""Readings and one-minute and one-hour rollups into PostgreSQL, idempotently.

Each batch: ensure the daily partitions exist, COPY (binary) into a temporary staging
table, ``INSERT ... ON CONFLICT DO NOTHING`` into ``readings`` (the fastest idempotent
path measured), then recompute from ``readings`` every (device, metric, minute) the batch
touched, and from those minutes every (device, metric, hour). Because rollups are
recomputed from stored rows, a replayed or late batch gives the same numbers as the
first delivery. All of it is one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import psycopg

from ganzhi.contracts import Telemetry


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


_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS readings_stage (
  time timestamptz, site_id text, device_id text, metric text,
  value double precision, unit text, msg_id uuid
) ON COMMIT DELETE ROWS
"""
_COPY = (
    "COPY readings_stage (time, site_id, device_id, metric, value, unit, msg_id)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["timestamptz", "text", "text", "text", "float8", "text", "uuid"]
_INSERT = """
INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id)
SELECT time, site_id, device_id, metric, value, unit, msg_id FROM readings_stage
ON CONFLICT DO NOTHING
"""
_ROLLUP = """
WITH touched AS (
  SELECT DISTINCT site_id, device_id, metric, date_trunc('minute', time) AS bucket
  FROM readings_stage
)
INSERT INTO rollups_1m AS r
  (bucket, site_id, device_id, metric, count, min, max, mean, last, last_time)
SELECT t.bucket, t.site_id, t.device_id, t.metric, count(*), min(x.value), max(x.value),
       avg(x.value), (array_agg(x.value ORDER BY x.time DESC, x.msg_id DESC))[1], max(x.time)
FROM touched t
JOIN readings x ON x.site_id = t.site_id AND x.device_id = t.device_id
  AND x.metric = t.metric AND x.time >= t.bucket AND x.time < t.bucket + interval '1 minute'
GROUP BY t.site_id, t.device_id, t.metric, t.bucket
ON CONFLICT (site_id, device_id, metric, bucket) DO UPDATE SET
  count = EXCLUDED.count, min = EXCLUDED.min, max = EXCLUDED.max, mean = EXCLUDED.mean,
  last = EXCLUDED.last, last_time = EXCLUDED.last_time, updated_at = now()
"""

_ROLLUP_1H = """
WITH touched AS (
  SELECT DISTINCT site_id, device_id, metric, date_trunc('hour', time) AS bucket
  FROM readings_stage
)
INSERT INTO rollups_1h AS r
  (bucket, site_id, device_id, metric, count, min, max, mean, last, last_time)
SELECT t.bucket, t.site_id, t.device_id, t.metric, sum(m.count), min(m.min), max(m.max),
       sum(m.mean * m.count) / sum(m.count),
       (array_agg(m.last ORDER BY m.last_time DESC))[1], max(m.last_time)
FROM touched t
JOIN rollups_1m m ON m.site_id = t.site_id AND m.device_id = t.device_id
  AND m.metric = t.metric AND m.bucket >= t.bucket AND m.bucket < t.bucket + interval '1 hour'
GROUP BY t.site_id, t.device_id, t.metric, t.bucket
ON CONFLICT (site_id, device_id, metric, bucket) DO UPDATE SET
  count = EXCLUDED.count, min = EXCLUDED.min, max = EXCLUDED.max, mean = EXCLUDED.mean,
  last = EXCLUDED.last, last_time = EXCLUDED.last_time, updated_at = now()
"""


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
            await self._conn.execute(_STAGE)
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
            async with conn.transaction(), conn.cursor() as cur:
                async with cur.copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for r in rows:
                        await copy.write_row(
                            (r.time, r.site_id, r.device_id, r.metric, r.value, r.unit,
                             r.msg_id))
                await cur.execute(_INSERT)
                inserted = max(cur.rowcount, 0)
                rollups = 0
                if inserted:
                    await cur.execute(_ROLLUP)
                    rollups = max(cur.rowcount, 0)
                    await cur.execute(_ROLLUP_1H)
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
