"""Readings sink throughput: the stream worker's idempotent write path against COPY.

Starts its own PostgreSQL cluster (fsync on), applies the migrations, and writes the same
readings several ways in one run, in batches like the stream worker's:

1. plain binary COPY into an unindexed table (no idempotency, no rollups);
2. binary COPY into a readings-shaped table (partitioned by day) with the one
   ``(site_id, device_id, metric, time DESC)`` index queries need: the floor for a
   queryable store, and the reference for the ratios;
3. the old sink (before issue 13, kept here only; ``--no-old`` skips it): COPY into
   staging, ``INSERT … ON CONFLICT DO NOTHING`` on ``(msg_id, metric, time)``, minute and
   hour rollups recomputed from the stored rows, into tables of the old shape;
4. the sink of migration 0014 (``--before REF``, default the commit before the delta
   log; its source is taken from git and pointed at ``before_*`` tables of the same shape):
   message ids into a message table, COPY into readings, minute and hour aggregates
   merged into the rollups with two upserts per batch;
5. ``ReadingsSink``: message ids into ``stream_messages``, COPY of the new messages'
   readings into ``readings``, their minute aggregates COPYed into ``rollup_deltas``,
   compactions into ``rollups_1m`` / ``rollups_1h`` every ``--compact-s`` seconds (the
   ``stream.rollup_compact_s`` setting by default) or ``stream.rollup_compact_rows``
   delta rows, in the background of the writes as in the worker, and once more after the
   last batch, all inside the timed window;
6. the same batches again through ``ReadingsSink`` (a replay: every message a duplicate).

``--data-clock``: the sink's clock follows the data (the latest reading written, plus a
second), so it compacts every ``--compact-s`` seconds *of data time* and settles minutes by
data time, as it does at real time, instead of seeing hours of readings arrive within
seconds. Path 5 then also runs with ``settle_s = -inf`` (every pending delta at each
compaction: the sink before settled compactions) for a before/after in the same run.

Paths 2, 4 and 5 run ``--rounds`` times, interleaved, on emptied tables (the machine's
speed drifts within a run); each path's best round counts.

    .venv/bin/python benchmarks/readings_sink.py --rows 200000 --batch 2000
    .venv/bin/python benchmarks/readings_sink.py --rows 200000 --batch 2000 --devices 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import types
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from ganzhi.db.migrate import migrate
from ganzhi.settings import get_settings
from ganzhi.stack.infra import start_postgres
from stream.sinks.readings import CompactResult, ReadingRow, ReadingsSink

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def make_rows(n: int, devices: int) -> list[ReadingRow]:
    """One message of 2 readings per device every 10 s; the readings of a message share
    one msg_id object, as ``rows_from_telemetry`` makes them. The ids are random, as the
    devices' uuid4 ids are (seeded: the same in every run)."""
    rng = random.Random(7)
    rows = []
    per_tick = devices * 2
    msg_id = uuid.UUID(int=0)
    for i in range(n):
        tick, slot = divmod(i, per_tick)
        dev, metric = divmod(slot, 2)
        if metric == 0:
            msg_id = uuid.UUID(bytes=rng.randbytes(16), version=4)
        rows.append(
            ReadingRow(
                T0 + timedelta(seconds=10 * tick), "bench", f"dev-{dev:05d}",
                "temperature" if metric == 0 else "humidity", 3.0 + (i % 100) / 10,
                "celsius" if metric == 0 else "percent", msg_id,
            )
        )
    return rows


PREFILL_AT = T0 + timedelta(hours=12)  # --prefill rows: later the same day


def prefill(dsn: str, tables: list[str], n: int, devices: int) -> None:
    """``n`` readings of the same devices (random message ids, 2 readings each) into each
    of ``tables`` (readings-shaped) and, with ``readings``, their ids into
    ``stream_messages``: the day's partition as a store that has been running for hours
    holds it. From ``PREFILL_AT`` on, where the timed rows never reach, every 10 s or
    closer so that they stay within the day."""
    if n <= 0:
        return
    ticks = -(-n // (2 * devices))
    step = timedelta(seconds=min(10.0, (T0 + timedelta(days=1) - PREFILL_AT).total_seconds()
                                 / ticks))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT ganzhi_ensure_reading_partitions(%s, %s)", (T0, T0))
        conn.execute(
            "CREATE TEMP TABLE pre AS SELECT %s::timestamptz"
            " + (g / (2 * %s)) * %s::interval AS time,"
            " 'dev-' || lpad(((g / 2) %% %s)::text, 5, '0') AS device_id,"
            " CASE WHEN g %% 2 = 0 THEN 'temperature' ELSE 'humidity' END AS metric,"
            " gen_random_uuid() AS msg_id FROM generate_series(0, %s - 1) g",
            (PREFILL_AT, devices, step, devices, n))
        for table in tables:
            conn.execute(f"INSERT INTO {table} {_COLS} SELECT time, 'bench', device_id,"
                         " metric, 3.0, 'celsius', msg_id FROM pre")
        if "readings" in tables:
            conn.execute("INSERT INTO stream_messages (msg_id, time)"
                         " SELECT msg_id, time FROM pre WHERE metric = 'temperature'")
        conn.execute("VACUUM ANALYZE")


def checkpoint(dsn: str) -> None:
    """Before a timed path with ``--prefill``: the prefill's (or the previous path's) WAL
    checkpointed now, not during the timing of whichever path runs when it comes due."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def batches(rows: list[ReadingRow], size: int) -> list[list[ReadingRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


_TYPES = ["timestamptz", "text", "text", "text", "float8", "text", "uuid"]
_COLS = "(time, site_id, device_id, metric, value, unit, msg_id)"
_SHAPE = """(
  time timestamptz NOT NULL, site_id text NOT NULL, device_id text NOT NULL,
  metric text NOT NULL, value double precision NOT NULL, unit text NOT NULL,
  msg_id uuid NOT NULL, ingested_at timestamptz NOT NULL DEFAULT now(){extra}
)"""


def _day_partition(conn_sql: list[str], table: str) -> None:
    conn_sql.append(
        f"CREATE TABLE {table}_d PARTITION OF {table}"
        f" FOR VALUES FROM ('{T0.isoformat()}') TO ('{(T0 + timedelta(days=1)).isoformat()}')")


async def copy_into(dsn: str, parts: list[list[ReadingRow]], table: str,
                    setup: list[str]) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for sql in setup:
            await conn.execute(sql)
        start = time.perf_counter()
        for part in parts:
            async with conn.transaction(), conn.cursor() as cur, cur.copy(
                f"COPY {table} {_COLS} FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(_TYPES)
                for r in part:
                    await copy.write_row((r.time, r.site_id, r.device_id, r.metric,
                                          r.value, r.unit, r.msg_id))
        return time.perf_counter() - start


def unindexed_setup() -> list[str]:
    return [f"CREATE TABLE copy_plain {_SHAPE.format(extra='')}"]


def indexed_setup(table: str) -> list[str]:
    sql = [f"CREATE TABLE {table} {_SHAPE.format(extra='')} PARTITION BY RANGE (time)"]
    _day_partition(sql, table)
    sql.append(f"CREATE INDEX ON {table} (site_id, device_id, metric, time DESC)")
    return sql


# --- the old sink (before issue 13), on tables of the old shape --------------------------

_ROLLUP_SHAPE = """(
  bucket timestamptz NOT NULL, site_id text NOT NULL, device_id text NOT NULL,
  metric text NOT NULL, count integer NOT NULL, min double precision NOT NULL,
  max double precision NOT NULL, mean double precision NOT NULL,
  last double precision NOT NULL, last_time timestamptz NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (site_id, device_id, metric, bucket)
)"""


def old_setup() -> list[str]:
    key = ", PRIMARY KEY (msg_id, metric, time)"
    sql = [f"CREATE TABLE old_readings {_SHAPE.format(extra=key)} PARTITION BY RANGE (time)"]
    _day_partition(sql, "old_readings")
    sql += [
        "CREATE INDEX ON old_readings (site_id, device_id, metric, time DESC)",
        f"CREATE TABLE old_rollups_1m {_ROLLUP_SHAPE}",
        "CREATE INDEX ON old_rollups_1m (site_id, bucket DESC)",
        f"CREATE TABLE old_rollups_1h {_ROLLUP_SHAPE}",
        "CREATE INDEX ON old_rollups_1h (site_id, bucket DESC)",
    ]
    return sql


_OLD_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS readings_stage (
  time timestamptz, site_id text, device_id text, metric text,
  value double precision, unit text, msg_id uuid
) ON COMMIT DELETE ROWS
"""
_OLD_INSERT = """
INSERT INTO old_readings (time, site_id, device_id, metric, value, unit, msg_id)
SELECT time, site_id, device_id, metric, value, unit, msg_id FROM readings_stage
ON CONFLICT DO NOTHING
"""
_OLD_ROLLUP = """
WITH touched AS (
  SELECT DISTINCT site_id, device_id, metric, date_trunc('minute', time) AS bucket
  FROM readings_stage
)
INSERT INTO old_rollups_1m AS r
  (bucket, site_id, device_id, metric, count, min, max, mean, last, last_time)
SELECT t.bucket, t.site_id, t.device_id, t.metric, count(*), min(x.value), max(x.value),
       avg(x.value), (array_agg(x.value ORDER BY x.time DESC, x.msg_id DESC))[1], max(x.time)
FROM touched t
JOIN old_readings x ON x.site_id = t.site_id AND x.device_id = t.device_id
  AND x.metric = t.metric AND x.time >= t.bucket AND x.time < t.bucket + interval '1 minute'
GROUP BY t.site_id, t.device_id, t.metric, t.bucket
ON CONFLICT (site_id, device_id, metric, bucket) DO UPDATE SET
  count = EXCLUDED.count, min = EXCLUDED.min, max = EXCLUDED.max, mean = EXCLUDED.mean,
  last = EXCLUDED.last, last_time = EXCLUDED.last_time, updated_at = now()
"""
_OLD_ROLLUP_1H = """
WITH touched AS (
  SELECT DISTINCT site_id, device_id, metric, date_trunc('hour', time) AS bucket
  FROM readings_stage
)
INSERT INTO old_rollups_1h AS r
  (bucket, site_id, device_id, metric, count, min, max, mean, last, last_time)
SELECT t.bucket, t.site_id, t.device_id, t.metric, sum(m.count), min(m.min), max(m.max),
       sum(m.mean * m.count) / sum(m.count),
       (array_agg(m.last ORDER BY m.last_time DESC))[1], max(m.last_time)
FROM touched t
JOIN old_rollups_1m m ON m.site_id = t.site_id AND m.device_id = t.device_id
  AND m.metric = t.metric AND m.bucket >= t.bucket AND m.bucket < t.bucket + interval '1 hour'
GROUP BY t.site_id, t.device_id, t.metric, t.bucket
ON CONFLICT (site_id, device_id, metric, bucket) DO UPDATE SET
  count = EXCLUDED.count, min = EXCLUDED.min, max = EXCLUDED.max, mean = EXCLUDED.mean,
  last = EXCLUDED.last, last_time = EXCLUDED.last_time, updated_at = now()
"""


async def old_sink(dsn: str, parts: list[list[ReadingRow]]) -> tuple[float, int]:
    inserted = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for sql in old_setup():
            await conn.execute(sql)
        await conn.execute("SET TIME ZONE 'UTC'")
        await conn.execute(_OLD_STAGE)
        start = last = time.perf_counter()
        for i, part in enumerate(parts, 1):
            async with conn.transaction(), conn.cursor() as cur:
                async with cur.copy(f"COPY readings_stage {_COLS} FROM STDIN (FORMAT BINARY)"
                                    ) as copy:
                    copy.set_types(_TYPES)
                    for r in part:
                        await copy.write_row((r.time, r.site_id, r.device_id, r.metric,
                                              r.value, r.unit, r.msg_id))
                await cur.execute(_OLD_INSERT)
                n = max(cur.rowcount, 0)
                inserted += n
                if n:
                    await cur.execute(_OLD_ROLLUP)
                    await cur.execute(_OLD_ROLLUP_1H)
            if time.perf_counter() - last > 2:
                print(f"  old sink: batch {i}/{len(parts)}", file=sys.stderr)
                last = time.perf_counter()
        return time.perf_counter() - start, inserted


# --- the sink of migration 0014 (the before figure), from git ------------------------------

BEFORE_REF = "85c2197"  # the last commit whose sink upserted the rollups per batch


def before_setup() -> list[str]:
    sql = ["CREATE TABLE before_readings (LIKE readings INCLUDING DEFAULTS)"
           " PARTITION BY RANGE (time)"]
    _day_partition(sql, "before_readings")
    sql += [
        "CREATE INDEX ON before_readings (site_id, device_id, metric, time DESC)",
        "CREATE TABLE before_messages (LIKE stream_messages INCLUDING DEFAULTS,"
        " PRIMARY KEY (msg_id, time)) PARTITION BY RANGE (time)",
    ]
    _day_partition(sql, "before_messages")
    for width, fill in (("1m", 70), ("1h", 50)):
        sql.append(f"CREATE TABLE before_rollups_{width} (LIKE rollups_{width} INCLUDING ALL)"
                   f" WITH (fillfactor = {fill})")
    return sql


def load_before(ref: str) -> type | None:
    """``ReadingsSink`` as it was at ``ref``, writing to the ``before_*`` tables."""
    try:
        src = subprocess.run(["git", "show", f"{ref}:stream/sinks/readings.py"],
                             capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"  before: no sink at {ref} ({exc}); skipped", file=sys.stderr)
        return None
    for old, new in (("INSERT INTO stream_messages", "INSERT INTO before_messages"),
                     ("COPY readings ", "COPY before_readings "),
                     ('table="rollups_1m"', 'table="before_rollups_1m"'),
                     ('table="rollups_1h"', 'table="before_rollups_1h"')):
        assert old in src, (ref, old)
        src = src.replace(old, new)
    mod = types.ModuleType("before_sink")
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"{ref}:stream/sinks/readings.py", "exec"), mod.__dict__)
    sink: type = mod.ReadingsSink
    return sink


async def through_before(dsn: str, parts: list[list[ReadingRow]], cls: type
                         ) -> tuple[float, int]:
    sink = cls(dsn)
    inserted = 0
    await sink.write(parts[0][:0])
    start = time.perf_counter()
    for part in parts:
        inserted += (await sink.write(part)).inserted
    elapsed = time.perf_counter() - start
    await sink.close()
    return elapsed, inserted


# --- the sink -----------------------------------------------------------------------------


@dataclass
class SinkRun:
    seconds: float = 0.0
    inserted: int = 0
    compactions: int = 0
    compact_s: float = 0.0  # compacting (the final one included; the others overlap)
    deltas: int = 0
    minutes: int = 0  # rollups_1m rows written (inserted or updated)
    hours: int = 0
    collapses: int = 0  # compactions that collapsed the open buckets' deltas


async def through_sink(dsn: str, parts: list[list[ReadingRow]], label: str,
                       compact_s: float | None, *, data_clock: bool = False,
                       settle_s: float | None = None) -> SinkRun:
    """Every batch through ``ReadingsSink.write`` (compacting at its interval), then a final
    compaction, all timed: the figure includes the whole cost of the rollups.
    ``data_clock``: the sink's clock is the data's (module docstring)."""
    data_now = [parts[0][0].time.timestamp() if parts and parts[0] else 0.0]
    sink = ReadingsSink(dsn, compact_every_s=compact_s, settle_s=settle_s,
                        clock=(lambda: data_now[0]) if data_clock else time.time)
    run = SinkRun()
    compact = sink.compact

    async def timed_compact(*, wait: bool = True, upto: datetime | None = None,
                            collapse: bool = False) -> CompactResult:
        t = time.perf_counter()
        res = await compact(wait=wait, upto=upto, collapse=collapse)
        run.collapses += collapse
        run.compact_s += time.perf_counter() - t
        run.compactions += 1
        run.deltas += res.deltas
        run.minutes += res.minutes
        run.hours += res.hours
        return res

    sink.compact = timed_compact  # type: ignore[method-assign]
    await sink.write(parts[0][:0])  # nothing; the connection is made inside the timing
    start = time.perf_counter()
    last = start
    ends = [max(r.time for r in part).timestamp() + 1 for part in parts]
    for i, part in enumerate(parts, 1):
        if data_clock:
            data_now[0] = max(data_now[0], ends[i - 1])
        run.inserted += (await sink.write(part)).inserted
        if time.perf_counter() - last > 2:
            print(f"  {label}: batch {i}/{len(parts)}", file=sys.stderr)
            last = time.perf_counter()
    await sink.compact()
    run.seconds = time.perf_counter() - start
    await sink.close()
    return run


_ROLLUP_DIFF = """
SELECT count(*) FROM {a} n FULL JOIN {b} o USING (site_id, device_id, metric, bucket)
WHERE n.count IS DISTINCT FROM o.count OR n.min IS DISTINCT FROM o.min
   OR n.max IS DISTINCT FROM o.max OR n.last IS DISTINCT FROM o.last
   OR n.last_time IS DISTINCT FROM o.last_time
   OR abs(n.mean - o.mean) > 1e-9 * greatest(1, abs(o.mean))
   OR n.mean IS NULL OR o.mean IS NULL
"""


def check_rollups(dsn: str, others: list[str]) -> None:
    """The new sink's rollups (compacted, and through the live views) equal the other
    sinks' and a GROUP BY over the stored readings."""
    with psycopg.connect(dsn) as conn:
        pending = conn.execute("SELECT count(*) FROM rollup_deltas").fetchone()
        assert pending == (0,), pending
        for width, unit in (("1m", "minute"), ("1h", "hour")):
            conn.execute(
                f"CREATE TEMP TABLE g_{width} AS SELECT date_trunc('{unit}', time, 'UTC')"
                " AS bucket, site_id, device_id, metric, count(*) AS count, min(value) AS min,"
                " max(value) AS max, avg(value) AS mean,"
                " (array_agg(value ORDER BY time DESC, value DESC))[1] AS last,"
                " max(time) AS last_time FROM readings WHERE time < %s GROUP BY 1, 2, 3, 4",
                (PREFILL_AT,))
            for other in [f"g_{width}", f"rollups_{width}_live",
                          *(f"{o}_{width}" for o in others)]:
                diff = conn.execute(_ROLLUP_DIFF.format(a=f"rollups_{width}", b=other)
                                    ).fetchone()
                assert diff == (0,), (width, other, diff)


_EMPTY = ["readings", "stream_messages", "rollups_1m", "rollups_1h", "rollup_deltas",
          "before_readings", "before_messages", "before_rollups_1m", "before_rollups_1h"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of indexed COPY, the 0014 sink and the sink")
    ap.add_argument("--compact-s", type=float, default=None,
                    help="the sink's compaction interval (default: the setting, 5 s)")
    ap.add_argument("--data-clock", action="store_true",
                    help="the sink's clock follows the data (real-time compaction cadence),"
                    " and it also runs compacting every pending delta (before)")
    ap.add_argument("--before", default=BEFORE_REF, metavar="REF",
                    help="git ref of the before sink (0014's per-batch upserts); '' skips")
    ap.add_argument("--no-old", action="store_true",
                    help="skip the pre-issue-13 sink (ON CONFLICT per reading; slow)")
    ap.add_argument("--json", type=Path, metavar="PATH",
                    help="also write the printed figures to PATH as JSON")
    ap.add_argument("--prefill", type=int, default=0, metavar="N",
                    help="before each round, N readings of the same day already in the"
                    " reference table and in readings (their message ids in"
                    " stream_messages), not timed: indexes of a store in service")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ganzhi-bench-pg-"))
    pg = start_postgres(root / "data")
    try:
        dsn = pg.extra["dsn"]
        migrate(dsn)
        rows = make_rows(args.rows, args.devices)
        parts = batches(rows, args.batch)
        n = len(rows)
        before_cls = load_before(args.before) if args.before else None
        with psycopg.connect(dsn, autocommit=True) as conn:
            for sql in before_setup():
                conn.execute(sql)
        plain_s = asyncio.run(copy_into(dsn, parts, "copy_plain", unindexed_setup()))
        floors: list[float] = []
        befores: list[float] = []
        sinks: list[SinkRun] = []
        unsettled: list[SinkRun] = []  # --data-clock: every delta at each compaction
        for k in range(args.rounds):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {', '.join(_EMPTY)}")
                conn.execute("VACUUM ANALYZE")
            table = f"copy_indexed{k}"
            setup = indexed_setup(table)
            if args.prefill:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for sql in setup:
                        conn.execute(sql)
                prefill(dsn, [table, "readings"], args.prefill, args.devices)
                setup = []
                checkpoint(dsn)
            floors.append(asyncio.run(copy_into(dsn, parts, table, setup)))
            # Alternate which of the two sinks goes first.
            order = ["before", "sink"] if k % 2 == 0 else ["sink", "before"]
            if args.data_clock:
                order.insert(1, "unsettled")
            for which in order:
                if args.data_clock and which != "before":  # the two sinks share tables
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        conn.execute(f"TRUNCATE {', '.join(_EMPTY[:5])}")
                    prefill(dsn, ["readings"], args.prefill, args.devices)
                if args.prefill:
                    checkpoint(dsn)
                if which == "before" and before_cls is not None:
                    secs, got = asyncio.run(through_before(dsn, parts, before_cls))
                    assert got == n, got
                    befores.append(secs)
                elif which == "sink":
                    run = asyncio.run(through_sink(dsn, parts, f"sink round {k + 1}",
                                                   args.compact_s,
                                                   data_clock=args.data_clock))
                    assert run.inserted == n, run
                    sinks.append(run)
                elif which == "unsettled":
                    run = asyncio.run(through_sink(
                        dsn, parts, f"sink (every delta) round {k + 1}", args.compact_s,
                        data_clock=True, settle_s=float("-inf")))
                    assert run.inserted == n, run
                    unsettled.append(run)
            print(f"  round {k + 1}: indexed COPY {n / floors[-1]:,.0f} rows/s,"
                  + (f" 0014 sink {floors[-1] / befores[-1]:.2f}x," if befores else "")
                  + f" sink {floors[-1] / sinks[-1].seconds:.2f}x"
                  f" ({sinks[-1].compactions} compactions, {sinks[-1].compact_s:.2f} s)",
                  file=sys.stderr)
        replay = asyncio.run(through_sink(dsn, parts, "replay", args.compact_s))
        assert replay.inserted == 0, replay
        others = ["before_rollups"] if before_cls is not None else []
        old_s = None
        if not args.no_old:
            old_s, old_n = asyncio.run(old_sink(dsn, parts))
            assert old_n == n, old_n
            others.append("old_rollups")
        check_rollups(dsn, others)

        floor_s = min(floors)
        best = min(sinks, key=lambda r: r.seconds)

        def line(label: str, secs: float) -> None:
            print(f"{label:<50} {n / secs:>10,.0f} rows/s  {floor_s / secs:5.2f} x indexed COPY")

        print(f"rows {n} in batches of {args.batch}, {args.devices} devices x 2 metrics,"
              f" best of {args.rounds} interleaved rounds")
        line("plain COPY, unindexed table", plain_s)
        line("COPY into indexed readings-shaped table", floor_s)
        print("  (indexed COPY by round: "
              + ", ".join(f"{n / f:,.0f}" for f in floors) + " rows/s)")
        if old_s is not None:
            line("old sink (ON CONFLICT per reading, recompute)", old_s)
        figures = {"plain_copy": ("plain COPY, unindexed table", plain_s),
                   "indexed_copy": ("COPY into indexed readings-shaped table", floor_s)}
        if old_s is not None:
            figures["old_sink"] = ("old sink (ON CONFLICT per reading, recompute)", old_s)
        if befores:
            label = f"0014 sink ({args.before}): upserts per batch"
            line(label, min(befores))
            figures["sink_before"] = (label, min(befores))
        label = "new sink: first write + 1m/1h rollups (delta log)"
        line(label, best.seconds)
        figures["sink_first_write"] = (label, best.seconds)
        every = (f"{args.compact_s if args.compact_s is not None else 'setting'} s"
                 + (" of data time" if args.data_clock else ""))

        def detail(run: SinkRun) -> None:
            print(f"  ({run.compactions} compactions ({run.collapses} collapsing) lasting"
                  f" {run.compact_s:.3f} s, all but the last in the background of the"
                  f" writes, {run.deltas:,} deltas into {run.minutes:,} minute"
                  f" and {run.hours:,} hour rows; compaction every {every} or"
                  f" {get_settings().stream.rollup_compact_rows:,} delta rows)")

        detail(best)
        if unsettled:
            worst = min(unsettled, key=lambda r: r.seconds)
            label = "sink compacting every pending delta (before)"
            line(label, worst.seconds)
            figures["sink_every_delta"] = (label, worst.seconds)
            detail(worst)
            print(f"  settled compactions: {worst.seconds / best.seconds:.2f}x the rows/s"
                  " of compacting every delta")
        line("new sink: replay (all duplicates)", replay.seconds)
        figures["sink_replay"] = ("new sink: replay (all duplicates)", replay.seconds)
        paired = [(floors[k] / befores[k] if k < len(befores) else None,
                   floors[k] / sinks[k].seconds) for k in range(args.rounds)]
        print("  per round, each vs that round's indexed COPY: "
              + "; ".join((f"0014 {b:.2f}x, " if b is not None else "")
                          + (f"every delta {floors[k] / unsettled[k].seconds:.2f}x, "
                             if unsettled else "")
                          + f"new {s_:.2f}x"
                          for k, (b, s_) in enumerate(paired)))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "rows": n, "batch": args.batch, "devices": args.devices,
                "rounds": args.rounds, "compact_s": args.compact_s,
                "data_clock": args.data_clock,
                "indexed_copy_first_rows_s": n / floors[0],
                "indexed_copy_last_rows_s": n / floors[-1],
                "sink_compactions": best.compactions, "sink_compact_s": best.compact_s,
                "sink_rollup_rows": best.minutes + best.hours,
                "per_round": [{"indexed_copy_rows_s": n / floors[k],
                               "x_before": paired[k][0], "x_sink": paired[k][1]}
                              for k in range(args.rounds)],
                "figures": {k: {"label": label, "rows_s": n / secs,
                                "x_indexed_copy": floor_s / secs}
                            for k, (label, secs) in figures.items()}}, indent=1) + "\n")
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
