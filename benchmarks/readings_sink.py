"""Readings sink throughput: the stream worker's idempotent write path against COPY.

Starts its own PostgreSQL cluster (fsync on), applies the migrations, and writes the same
readings five ways in one run, in batches like the stream worker's:

1. plain binary COPY into an unindexed table (no idempotency, no rollups);
2. binary COPY into a readings-shaped table (partitioned by day) with the one
   ``(site_id, device_id, metric, time DESC)`` index queries need: the floor for a
   queryable store, and the reference for the ratios;
3. the old sink (kept here only, for the before figure): COPY into staging,
   ``INSERT … ON CONFLICT DO NOTHING`` on ``(msg_id, metric, time)``, minute and hour
   rollups recomputed from the stored rows, into tables of the old shape;
4. ``ReadingsSink.write``: message ids into ``stream_messages`` (conflict check per
   message), COPY of the new messages' readings into ``readings``, minute and hour
   rollups aggregated in the worker and merged with one upsert per bucket;
5. the same batches again through ``ReadingsSink`` (a replay: every message a duplicate).

    .venv/bin/python benchmarks/readings_sink.py --rows 200000 --batch 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from ganzhi.db.migrate import migrate
from ganzhi.stack.infra import start_postgres
from stream.sinks.readings import ReadingRow, ReadingsSink

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def make_rows(n: int, devices: int) -> list[ReadingRow]:
    rows = []
    per_tick = devices * 2
    for i in range(n):
        tick, slot = divmod(i, per_tick)
        dev, metric = divmod(slot, 2)
        rows.append(
            ReadingRow(
                T0 + timedelta(seconds=10 * tick), "bench", f"dev-{dev:04d}",
                "temperature" if metric == 0 else "humidity", 3.0 + (i % 100) / 10,
                "celsius" if metric == 0 else "percent",
                uuid.UUID(int=tick * devices + dev),
            )
        )
    return rows


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


# --- the sink -----------------------------------------------------------------------------


async def through_sink(dsn: str, parts: list[list[ReadingRow]], label: str) -> tuple[float, int]:
    sink = ReadingsSink(dsn)
    inserted = 0
    await sink.write(parts[0][:0])  # nothing; the connection is made inside the timing
    start = time.perf_counter()
    last = start
    for i, part in enumerate(parts, 1):
        inserted += (await sink.write(part)).inserted
        if time.perf_counter() - last > 2:
            print(f"  {label}: batch {i}/{len(parts)}", file=sys.stderr)
            last = time.perf_counter()
    elapsed = time.perf_counter() - start
    await sink.close()
    return elapsed, inserted


def check_rollups(dsn: str) -> None:
    """The new sink's rollups equal the old sink's recomputed ones."""
    with psycopg.connect(dsn) as conn:
        for width in ("1m", "1h"):
            diff = conn.execute(
                f"SELECT count(*) FROM rollups_{width} n FULL JOIN old_rollups_{width} o"
                " USING (site_id, device_id, metric, bucket)"
                " WHERE n.count IS DISTINCT FROM o.count OR n.min IS DISTINCT FROM o.min"
                " OR n.max IS DISTINCT FROM o.max OR n.last IS DISTINCT FROM o.last"
                " OR n.last_time IS DISTINCT FROM o.last_time"
                " OR abs(n.mean - o.mean) > 1e-9 * greatest(1, abs(o.mean))"
                " OR n.mean IS NULL OR o.mean IS NULL"
            ).fetchone()
            assert diff == (0,), (width, diff)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--json", type=Path, metavar="PATH",
                    help="also write the printed figures to PATH as JSON")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ganzhi-bench-pg-"))
    pg = start_postgres(root / "data")
    try:
        dsn = pg.extra["dsn"]
        migrate(dsn)
        rows = make_rows(args.rows, args.devices)
        parts = batches(rows, args.batch)
        n = len(rows)
        plain_s = asyncio.run(copy_into(dsn, parts, "copy_plain", unindexed_setup()))
        floor_a = asyncio.run(copy_into(dsn, parts, "copy_indexed", indexed_setup("copy_indexed")))
        old_s, old_n = asyncio.run(old_sink(dsn, parts))
        sink_s, inserted = asyncio.run(through_sink(dsn, parts, "first write"))
        replay_s, again = asyncio.run(through_sink(dsn, parts, "replay"))
        # The indexed COPY again, after the sinks: the faster of the two is the reference
        # (the stricter ratio; the machine's speed drifts within a run).
        floor_b = asyncio.run(copy_into(dsn, parts, "copy_indexed2",
                                        indexed_setup("copy_indexed2")))
        floor_s = min(floor_a, floor_b)
        assert old_n == inserted == n and again == 0, (old_n, inserted, again)
        check_rollups(dsn)

        def line(label: str, secs: float) -> None:
            print(f"{label:<46} {n / secs:>10,.0f} rows/s  {floor_s / secs:5.2f} x indexed COPY")

        print(f"rows {n} in batches of {args.batch}, {args.devices} devices x 2 metrics")
        line("plain COPY, unindexed table", plain_s)
        line("COPY into indexed readings-shaped table", floor_s)
        print(f"  (indexed COPY first {n / floor_a:,.0f}, last {n / floor_b:,.0f} rows/s)")
        line("old sink (ON CONFLICT per reading, recompute)", old_s)
        line("new sink: first write + 1m/1h rollups", sink_s)
        line("new sink: replay (all duplicates)", replay_s)
        if args.json:
            figures = {"plain_copy": ("plain COPY, unindexed table", plain_s),
                       "indexed_copy": ("COPY into indexed readings-shaped table", floor_s),
                       "old_sink": ("old sink (ON CONFLICT per reading, recompute)", old_s),
                       "sink_first_write": ("new sink: first write + 1m/1h rollups", sink_s),
                       "sink_replay": ("new sink: replay (all duplicates)", replay_s)}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "rows": n, "batch": args.batch, "devices": args.devices,
                "indexed_copy_first_rows_s": n / floor_a,
                "indexed_copy_last_rows_s": n / floor_b,
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
