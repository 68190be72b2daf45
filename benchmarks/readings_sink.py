"""Readings sink throughput: the stream worker's idempotent write path against plain COPY.

Starts its own PostgreSQL cluster (fsync on), applies the migrations, and writes the same
readings three ways, in batches like the stream worker's:

1. plain binary COPY into an unindexed table (the floor: no idempotency, no rollups);
2. ``ReadingsSink.write``: COPY into staging, ``INSERT … ON CONFLICT DO NOTHING``, and the
   one-minute rollups of the touched minutes recomputed;
3. the same batches again (a replay: every row a duplicate).

    .venv/bin/python benchmarks/readings_sink.py --rows 200000 --batch 2000
"""

from __future__ import annotations

import argparse
import asyncio
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


async def plain_copy(dsn: str, parts: list[list[ReadingRow]]) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS copy_floor (time timestamptz, site_id text,"
            " device_id text, metric text, value float8, unit text, msg_id uuid)"
        )
        await conn.execute("ALTER TABLE copy_floor SET LOGGED")
        start = time.perf_counter()
        for part in parts:
            async with conn.transaction(), conn.cursor() as cur, cur.copy(
                "COPY copy_floor FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["timestamptz", "text", "text", "text", "float8", "text",
                                "uuid"])
                for r in part:
                    await copy.write_row((r.time, r.site_id, r.device_id, r.metric,
                                          r.value, r.unit, r.msg_id))
        return time.perf_counter() - start


async def through_sink(dsn: str, parts: list[list[ReadingRow]], label: str) -> tuple[float, int]:
    sink = ReadingsSink(dsn)
    inserted = 0
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--devices", type=int, default=500)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ganzhi-bench-pg-"))
    pg = start_postgres(root / "data")
    try:
        dsn = pg.extra["dsn"]
        migrate(dsn)
        rows = make_rows(args.rows, args.devices)
        parts = batches(rows, args.batch)
        n = len(rows)
        floor_s = asyncio.run(plain_copy(dsn, parts))
        sink_s, inserted = asyncio.run(through_sink(dsn, parts, "first write"))
        replay_s, again = asyncio.run(through_sink(dsn, parts, "replay"))
        assert inserted == n and again == 0, (inserted, again)
        print(f"rows                        {n} in batches of {args.batch}")
        print(f"plain COPY (floor)          {n / floor_s:>10,.0f} rows/s")
        print(f"sink: first write + rollups {n / sink_s:>10,.0f} rows/s"
              f"  ({floor_s / sink_s:.2f} x plain COPY)")
        print(f"sink: replay (duplicates)   {n / replay_s:>10,.0f} rows/s"
              f"  ({floor_s / replay_s:.2f} x plain COPY)")
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
