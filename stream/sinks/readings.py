"""Readings and one-minute and one-hour rollups into PostgreSQL, idempotently.

Idempotence is per message, not per reading. Each batch, in one transaction:

1. The batch's message ids into ``stream_messages`` (keyed by msg_id and the message's
   earliest reading time): one conflict check per message (about ten readings) instead
   of one per reading. First by a binary COPY, which its unique key refuses if any id is
   there already; then (the transaction has done nothing else yet) the batch goes again
   with ``INSERT … ON CONFLICT DO NOTHING RETURNING``, whose ids are the messages never
   stored before: a replayed Kafka record and a redelivered MQTT message (same msg_id at
   another offset) are not among them.
2. Binary COPY of those messages' readings straight into ``readings`` (no staging table,
   no unique index on readings).
3. The new readings aggregated here per (site, device, metric, minute)
   (:mod:`stream.sinks.rollups`) and appended to ``rollup_deltas`` by a binary COPY: no
   index, no conflict check, no update in place.

A crash before the commit stores nothing, message ids and deltas included; the batch
comes again. A crash after it leaves the deltas for the next compaction.

Compaction (:meth:`ReadingsSink.compact`) moves pending deltas into ``rollups_1m`` and
``rollups_1h`` in one transaction (``DELETE … RETURNING``, then one upsert per minute and
per hour bucket), one compaction at a time across workers (``pg_advisory_xact_lock``).
A write starts one in the background, on a connection of its own, once ``compact_every_s``
has passed since the last one or the sink has written ``compact_rows`` delta rows since
(under load the deltas stay few, and the compaction runs on the other core while the next
batches are written). Those compactions move the deltas of *settled* minutes only: minutes
that ended at least ``settle_s`` ago by the clock. At real time a series' open minute then
stays in the deltas until it ends and its rollup row is written once, instead of once per
compaction while the minute is open (and its hour row once a minute instead of at every
compaction). :meth:`ReadingsSink.close` moves every
pending delta. So that the open minutes' deltas do not pile up (a reader's live view
scans them all), a compaction also *collapses* them, deleting them and putting back one
delta per bucket, once the sink has ``collapse_rows`` pending and at least twice as many
as there are buckets (series heard several times a minute).

The merge is order-independent (counts and sums add, min/max, last by greatest
``(time, value)``), so late and out-of-order readings and any interleaving of batches and
compactions give the rollups a ``GROUP BY`` over ``readings`` gives. Readers use
``rollups_1m_live`` / ``rollups_1h_live`` (migration 0015): rollups merged with the deltas
not yet compacted.

On the TimescaleDB flavour (``ganzhi.db.timescaledb``) the rollups are continuous
aggregates over ``readings``: the sink stores message ids and readings only.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple, cast

import psycopg

from ganzhi.contracts.telemetry_decoder import TelemetryLike
from ganzhi.observability import get_logger
from stream import metrics
from stream.sinks.rollups import Key, aggregate_minutes

log = get_logger(__name__)


class ReadingRow(NamedTuple):
    """One reading as stored (a tuple: made for every reading on the batch path)."""

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


def rows_from_telemetry(msg: TelemetryLike) -> list[ReadingRow]:
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
_COPY_MESSAGES = "COPY stream_messages (msg_id, time) FROM STDIN (FORMAT BINARY)"
_MESSAGE_TYPES = ["uuid", "timestamptz"]
_COPY = (
    "COPY readings (time, site_id, device_id, metric, value, unit, msg_id)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["timestamptz", "text", "text", "text", "float8", "text", "uuid"]
_COPY_DELTAS = (
    "COPY rollup_deltas (bucket, site_id, device_id, metric, count, sum, min, max, last,"
    " last_time) FROM STDIN (FORMAT BINARY)"
)
_DELTA_TYPES = ["timestamptz", "text", "text", "text", "int4", "float8", "float8", "float8",
                "float8", "timestamptz"]

# One compaction at a time across workers (the key spells "roll").
COMPACT_LOCK = 0x726F6C6C
# The connections' application_name (pg_stat_activity tells the two apart).
SINK_APP = "ganzhi-stream-sink"
COMPACTION_APP = "ganzhi-stream-compaction"
# The pending deltas merged into both rollup tables with the arithmetic of rollups.merge:
# counts and sums add (the stored mean weighted by its count), min/max, and last by the
# greatest (last_time, last) — compared as a float8 pair (epoch seconds, value), exact to
# the microsecond. Nothing else writes the rollups and compactions run one at a time (the
# lock), so the rows need no particular order (no deadlock to avoid; the sort cost more).
_MERGE = """
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
# Moves the deltas of buckets up to %(upto)s (NULL: all) into the rollups; with
# %(collapse)s, also deletes the later (open) ones and puts them back one per bucket.
_COMPACT = f"""
WITH moved AS (
  DELETE FROM rollup_deltas
  WHERE %(collapse)s OR %(upto)s::timestamptz IS NULL OR bucket <= %(upto)s
  RETURNING bucket, site_id, device_id, metric, count, sum, min, max, last, last_time
), g AS (
  SELECT bucket, site_id, device_id, metric, sum(count)::integer AS count, sum(sum) AS sum,
         min(min) AS min, max(max) AS max,
         max(ARRAY[date_part('epoch', last_time), last]) AS tl,
         max(last_time) AS last_time
  FROM moved
  GROUP BY bucket, site_id, device_id, metric
), back AS (
  INSERT INTO rollup_deltas (bucket, site_id, device_id, metric, count, sum, min, max,
                             last, last_time)
  SELECT bucket, site_id, device_id, metric, count, sum, min, max, tl[2], last_time
  FROM g WHERE bucket > %(upto)s
  RETURNING 1
), m AS (
  SELECT * FROM g WHERE %(upto)s::timestamptz IS NULL OR bucket <= %(upto)s
), h AS (
  INSERT INTO rollups_1h AS r
    (bucket, site_id, device_id, metric, count, min, max, mean, last, last_time)
  SELECT date_trunc('hour', bucket, 'UTC'), site_id, device_id, metric, sum(count),
         min(min), max(max), sum(sum) / sum(count), (max(tl))[2], max(last_time)
  FROM m
  GROUP BY 1, 2, 3, 4
  {_MERGE}
  RETURNING 1
), n AS (
  INSERT INTO rollups_1m AS r
    (bucket, site_id, device_id, metric, count, min, max, mean, last, last_time)
  SELECT bucket, site_id, device_id, metric, count, min, max, sum / count, tl[2], last_time
  FROM m
  {_MERGE}
  RETURNING 1
)
SELECT (SELECT count(*) FROM moved WHERE %(upto)s::timestamptz IS NULL OR bucket <= %(upto)s),
       (SELECT count(*) FROM n), (SELECT count(*) FROM h), (SELECT count(*) FROM back)
"""


class _SomeSeen(Exception):
    """The COPY of a batch's message ids met an id already stored."""


@dataclass(frozen=True)
class CompactResult:
    deltas: int  # delta rows moved (0 also when another worker's compaction was running)
    minutes: int  # rollups_1m rows inserted or updated
    hours: int
    kept: int = 0  # open buckets' deltas put back collapsed, one per bucket


def new_messages(rows: Sequence[ReadingRow]) -> tuple[list[ReadingRow], dict[uuid.UUID, datetime]]:
    """The batch's rows without in-batch repeats of (msg_id, metric, time) — two copies of
    one message in the same batch — and each message's key time (its earliest reading)."""
    # Fast path: each message's readings are consecutive (as rows_from_telemetry makes
    # them), no message comes twice and none repeats a (metric, time); otherwise the full
    # check below.
    first: dict[uuid.UUID, datetime] = {}
    prev: uuid.UUID | None = None
    lo = datetime.max.replace(tzinfo=UTC)
    run: set[tuple[str, datetime]] = set()
    runs = 0
    clean = True
    for r in rows:
        m = r.msg_id
        if m is not prev and m != prev:
            if prev is not None:
                first[prev] = lo
            prev, lo = m, r.time
            run = set()
            runs += 1
        elif r.time < lo:
            lo = r.time
        k = (r.metric, r.time)
        if k in run:
            clean = False
            break
        run.add(k)
    if clean:
        if prev is not None:
            first[prev] = lo
        if runs == len(first):
            return list(rows), first
    first = {}
    seen: set[tuple[uuid.UUID, str, datetime]] = set()
    unique: list[ReadingRow] = []
    for r in rows:
        key = (r.msg_id, r.metric, r.time)
        if key in seen:
            continue
        seen.add(key)
        unique.append(r)
        t = first.get(r.msg_id)
        if t is None or r.time < t:
            first[r.msg_id] = r.time
    return unique, first


class ReadingsSink:
    """One async connection for the batches and one for the compactions; each reconnects
    on its next use after a failure.

    ``compact_every_s``: the least time between two compactions started by :meth:`write`
    (default: the ``stream.rollup_compact_s`` setting); ``None`` reads the setting, ``0``
    compacts after every batch, ``float("inf")`` only on :meth:`compact` and
    :meth:`close` (and on ``compact_rows``). ``compact_rows``: a compaction also starts
    once the sink has written this many delta rows since the last one started (default:
    ``stream.rollup_compact_rows``; ``0``: never by count). ``settle_s``: those
    compactions move the deltas of minutes that ended at least this long ago (default:
    ``stream.rollup_settle_s``); ``float("-inf")`` moves every pending delta each time.
    ``collapse_rows``: the open buckets' deltas this sink has pending before a compaction
    collapses them (default: ``stream.rollup_collapse_rows``). ``clock``: seconds since
    the epoch, for the interval and the settling (a benchmark replaying old data at speed
    passes the data's own time).
    """

    def __init__(self, dsn: str, compact_every_s: float | None = None,
                 settle_s: float | None = None, collapse_rows: int | None = None,
                 compact_rows: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._dsn = dsn
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        # Compactions run on their own connection, in the background of the writes.
        self._compact_conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._compacting = asyncio.Lock()
        self._compactor: asyncio.Task[None] | None = None
        self._writes = 0  # batches with deltas written
        self._since_compact = 0  # delta rows written since the last compaction started
        self._days: set[date] = set()
        if None in (compact_every_s, settle_s, collapse_rows, compact_rows):
            from ganzhi.settings import get_settings

            stream = get_settings().stream
            if compact_every_s is None:
                compact_every_s = stream.rollup_compact_s
            if settle_s is None:
                settle_s = stream.rollup_settle_s
            if collapse_rows is None:
                collapse_rows = stream.rollup_collapse_rows
            if compact_rows is None:
                compact_rows = stream.rollup_compact_rows
        assert compact_every_s is not None and settle_s is not None
        assert collapse_rows is not None and compact_rows is not None
        self.compact_every_s = compact_every_s
        self.settle_s = settle_s
        self.collapse_rows = collapse_rows
        self.compact_rows = compact_rows
        self._clock = clock
        self._last_compact = clock()
        self._pending = False  # deltas written by this sink since its last compaction
        # Open buckets this sink wrote deltas for, and how many rows each has pending
        # (one after a collapse): whether collapsing is worth it.
        self._open: dict[Key, int] = {}
        self._open_rows = 0
        self._copy_ids = True  # message ids by COPY (see _store)
        # Whether this sink writes the rollups: not on the TimescaleDB flavour, where
        # continuous aggregates make them (there is no rollup_deltas table).
        self.rollups = True

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await self._connect()
        return self._conn

    async def _compact_connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._compact_conn is None or self._compact_conn.closed or self._compact_conn.broken:
            self._compact_conn = await self._connect(COMPACTION_APP)
        return self._compact_conn

    async def _connect(self, name: str = SINK_APP) -> psycopg.AsyncConnection[tuple[object, ...]]:
        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True,
                                                     application_name=name)
        await conn.execute("SET TIME ZONE 'UTC'")
        cur = await conn.execute("SELECT to_regclass('rollup_deltas') IS NOT NULL")
        row = await cur.fetchone()
        self.rollups = bool(row and row[0])
        return conn

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
        """Store the batch's new readings and their minute deltas in one transaction; then
        compact if ``compact_every_s`` has passed (a compaction failure is logged, not
        raised: the batch is stored and its deltas wait for the next compaction)."""
        if not rows:
            return WriteResult(0, 0, 0)
        try:
            conn = await self._connection()
            await self._ensure_partitions(conn, _distinct_times(rows))
            unique, first = new_messages(rows)
            # The batch's minute aggregates, worked out in a thread while the server stores
            # its ids and readings (the usual case: every message new).
            ahead = (asyncio.get_running_loop().run_in_executor(None, aggregate_minutes, unique)
                     if self.rollups else None)
            try:
                stored, deltas = await self._store(conn, unique, first, self._copy_ids, ahead)
            except _SomeSeen:
                stored, deltas = await self._store(conn, unique, first, False, ahead)
            # After a batch with ids seen before (a replay, say) the next goes the way that
            # expects them; after one of new ids only, back to COPY.
            self._copy_ids = len(stored) == len(unique)
            inserted = len(stored)
        except psycopg.Error as exc:
            self._days.clear()  # a partition may have been dropped by retention
            if isinstance(exc, psycopg.OperationalError) and self._conn is not None:
                await self._conn.close()  # the next batch reconnects
            raise
        if deltas:
            self._pending = True
            self._writes += 1
            self._since_compact += len(deltas)
            opened = self._open
            for key in deltas:
                opened[key] = opened.get(key, 0) + 1
            self._open_rows += len(deltas)
        now = self._clock()
        # A clock set back counts as due, or compaction would wait for it to catch up.
        due = (not 0 <= now - self._last_compact < self.compact_every_s
               or 0 < self.compact_rows <= self._since_compact)
        if due and (self._compactor is None or self._compactor.done()):
            upto = self.settled(now)
            self._last_compact = now
            self._since_compact = 0
            self._compactor = asyncio.create_task(
                self._compact_quietly(upto, self._worth_collapsing(upto)))
        return WriteResult(inserted, len(rows) - inserted, len(deltas))

    async def wait_compaction(self) -> None:
        """Return once the compaction a write started in the background (if any) is over."""
        task, self._compactor = self._compactor, None
        if task is not None:
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():  # this caller is the one cancelled
                    raise

    async def _compact_quietly(self, upto: datetime | None, collapse: bool) -> None:
        """A compaction started by :meth:`write`; a failure is logged, not raised."""
        try:
            await self.compact(wait=False, upto=upto, collapse=collapse)
        except psycopg.Error as exc:
            metrics.ROLLUP_COMPACTION_FAILURES.inc()
            log.warning("rollup_compaction_failed", error=str(exc))
            if isinstance(exc, psycopg.OperationalError) and self._compact_conn is not None:
                await self._compact_conn.close()

    def _worth_collapsing(self, upto: datetime | None) -> bool:
        """Forget the buckets settled by ``upto``; whether the rest have
        ``collapse_rows`` delta rows pending and at least two per bucket."""
        if upto is None:
            return False
        opened = self._open
        for key in [k for k in opened if k[3] <= upto]:
            self._open_rows -= opened.pop(key)
        return bool(opened) and self._open_rows >= max(2 * len(opened), self.collapse_rows)

    async def _store(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], unique: list[ReadingRow],
        first: dict[uuid.UUID, datetime], copy_ids: bool,
        ahead: asyncio.Future[dict[Key, list[Any]]] | None,
    ) -> tuple[list[ReadingRow], Collection[Key]]:
        """One transaction: message ids, readings, minute deltas (their buckets are
        returned; ``ahead``: the minute aggregates of ``unique``). ``copy_ids``: the ids by
        a binary COPY, the cheap way when none was stored before; if one was, the unique
        key refuses the COPY, the transaction rolls back (nothing else done yet) and
        :class:`_SomeSeen` says to go again with ``INSERT … ON CONFLICT DO NOTHING``."""
        async with conn.transaction(), conn.cursor() as cur:
            if copy_ids:
                try:
                    async with cur.copy(_COPY_MESSAGES) as copy:
                        copy.set_types(_MESSAGE_TYPES)
                        write_row = copy.write_row
                        for item in first.items():
                            await write_row(item)
                except psycopg.errors.UniqueViolation as exc:
                    raise _SomeSeen from exc
                stored = unique
            else:
                ids = list(first)
                await cur.execute(_MESSAGES, (ids, list(first.values())))
                fresh = {r[0] for r in await cur.fetchall()}
                stored = unique if len(fresh) == len(ids) else [
                    r for r in unique if r.msg_id in fresh]
            if not stored:
                return stored, ()
            if not self.rollups:
                await self._copy_readings(cur, stored)
                return stored, ()
            await self._copy_readings(cur, stored)
            minutes = (await ahead if ahead is not None and stored is unique
                       else aggregate_minutes(stored))
            async with cur.copy(_COPY_DELTAS) as copy:
                copy.set_types(_DELTA_TYPES)
                write_row = copy.write_row
                for (site, device, metric, bucket), (c, s, lo, hi, lt, lv) in minutes.items():
                    await write_row((bucket, site, device, metric, c, s, lo, hi, lv, lt))
        return stored, minutes.keys()

    @staticmethod
    async def _copy_readings(cur: psycopg.AsyncCursor[tuple[object, ...]],
                             rows: Sequence[ReadingRow]) -> None:
        async with cur.copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            write_row = copy.write_row
            for r in rows:
                await write_row((r.time, r.site_id, r.device_id, r.metric, r.value, r.unit,
                                 r.msg_id))

    def settled(self, now: float) -> datetime | None:
        """The latest minute bucket that has settled at ``now`` (epoch seconds); ``None``
        when ``settle_s`` is ``-inf`` (every bucket)."""
        upto = now - self.settle_s - 60
        if not math.isfinite(upto):
            return None
        return datetime.fromtimestamp(upto, UTC)

    async def compact(self, *, wait: bool = True, upto: datetime | None = None,
                      collapse: bool = False) -> CompactResult:
        """Move the committed deltas (this worker's and others') of minute buckets up to
        ``upto`` (``None``: every one) into the rollups, in one transaction; ``collapse``:
        the later ones are put back one per bucket. ``wait=False``: if another compaction
        holds the lock, return at once (it or the next one takes the deltas)."""
        async with self._compacting:
            return await self._compact(wait=wait, upto=upto, collapse=collapse)

    async def _compact(self, *, wait: bool, upto: datetime | None,
                       collapse: bool) -> CompactResult:
        conn = await self._compact_connection()
        if not self.rollups:
            return CompactResult(0, 0, 0)
        started = time.perf_counter()
        writes = self._writes
        async with conn.transaction(), conn.cursor() as cur:
            if wait:
                await cur.execute("SELECT pg_advisory_xact_lock(%s)", (COMPACT_LOCK,))
            else:
                await cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (COMPACT_LOCK,))
                got = await cur.fetchone()
                if not (got and got[0]):
                    return CompactResult(0, 0, 0)
            # Its own statement, after the lock: its snapshot sees everything the previous
            # compaction committed.
            await cur.execute("SET LOCAL work_mem = '32MB'")  # the GROUP BY in memory
            await cur.execute(_COMPACT, {"upto": upto, "collapse": collapse and upto is not None})
            row = await cur.fetchone()
        if upto is None and writes == self._writes:  # (no batch written meanwhile)
            self._pending = False
            self._open.clear()
            self._open_rows = 0
        elif collapse:
            self._open = dict.fromkeys(self._open, 1)
            self._open_rows = len(self._open)
        self._last_compact = self._clock()
        assert row is not None
        deltas, minutes, hours, kept = cast("tuple[int, int, int, int]", row)
        metrics.ROLLUP_COMPACTION_SECONDS.observe(time.perf_counter() - started)
        metrics.ROLLUP_DELTAS_COMPACTED.inc(deltas)
        return CompactResult(deltas, minutes, hours, kept)

    async def close(self, *, compact: bool = True) -> None:
        """Compact what this sink left pending (best effort), then close the connections."""
        await self.wait_compaction()
        if compact and self._pending:
            try:
                await self.compact()
            except psycopg.Error as exc:
                metrics.ROLLUP_COMPACTION_FAILURES.inc()
                log.warning("rollup_compaction_failed", error=str(exc))
        for conn in (self._conn, self._compact_conn):
            if conn is not None:
                await conn.close()
        self._conn = self._compact_conn = None


def _distinct_times(rows: Sequence[ReadingRow]) -> set[datetime]:
    return {r.time for r in rows}
