"""Where the readings sink's time goes: the stages of its write transaction, timed apart.

Starts its own PostgreSQL cluster (fsync on), applies the migrations and writes the same
readings as ``readings_sink.py`` (one message of 2 readings per device every 10 s) into
the real ``readings`` table, in batches, four ways, each on emptied tables, ``--rounds``
times interleaved:

* ``readings``: the batch's readings by binary COPY, one transaction per batch (what the
  reference of ``readings_sink.py`` does, on the real table);
* ``+ids``: the message ids into ``stream_messages`` first (their unique key is the
  sink's idempotence);
* ``+deltas``: the readings' minute aggregates (worked out here, not in a thread) into
  ``rollup_deltas`` after them;
* ``+ids+deltas``: both, the sink's transaction without its compactions.

For each it prints rows per second and the seconds spent per stage (the time to the end
of each COPY, the server's work included; ``commit`` is the WAL flush) and the client's
CPU seconds. The client does about a quarter of the work: the server's stages are what
the sink waits for.

    .venv/bin/python benchmarks/sink_stages.py --rows 200000 --batch 2000 --devices 500
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from readings_sink import T0, batches, make_rows

from ganzhi.db.migrate import migrate
from ganzhi.stack.infra import start_postgres
from stream.sinks import readings as sink
from stream.sinks.rollups import aggregate_minutes

STAGES = ("ids", "readings", "aggregate", "deltas", "commit")
WAYS = {"readings": set(), "+ids": {"ids"}, "+deltas": {"deltas"},
        "+ids+deltas": {"ids", "deltas"}}


async def run(dsn: str, parts: list[list[sink.ReadingRow]], way: set[str]
              ) -> tuple[float, float, dict[str, float]]:
    """Seconds of wall time, of client CPU, and per stage."""
    spent = dict.fromkeys(STAGES, 0.0)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SET TIME ZONE 'UTC'")
        await conn.execute("SELECT ganzhi_ensure_reading_partitions(%s, %s)", (T0, T0))
        start, cpu = time.perf_counter(), time.process_time()
        for part in parts:
            unique, first = sink.new_messages(part)
            t = time.perf_counter()
            async with conn.transaction(), conn.cursor() as cur:
                if "ids" in way:
                    async with cur.copy(sink._COPY_MESSAGES) as copy:
                        copy.set_types(sink._MESSAGE_TYPES)
                        for item in first.items():
                            await copy.write_row(item)
                    t = _lap(spent, "ids", t)
                await sink.ReadingsSink._copy_readings(cur, unique)
                t = _lap(spent, "readings", t)
                if "deltas" in way:
                    minutes = aggregate_minutes(unique)
                    t = _lap(spent, "aggregate", t)
                    async with cur.copy(sink._COPY_DELTAS) as copy:
                        copy.set_types(sink._DELTA_TYPES)
                        for (site, device, metric, bucket), (c, s, lo, hi, lt, lv) \
                                    in minutes.items():
                            await copy.write_row(
                                (bucket, site, device, metric, c, s, lo, hi, lv, lt))
                    t = _lap(spent, "deltas", t)
            _lap(spent, "commit", t)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        await conn.execute("TRUNCATE readings, stream_messages, rollup_deltas")
    return wall, cpu, spent


def _lap(spent: dict[str, float], stage: str, since: float) -> float:
    now = time.perf_counter()
    spent[stage] += now - since
    return now


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved; best round kept")
    a = ap.parse_args()
    parts = batches(make_rows(a.rows, a.devices), a.batch)
    best: dict[str, tuple[float, float, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="ganzhi-sink-stages-") as tmp:
        pg = start_postgres(Path(tmp) / "data")
        try:
            dsn = pg.extra["dsn"]
            migrate(dsn)
            for r in range(a.rounds):
                for name, way in WAYS.items():
                    res = asyncio.run(run(dsn, parts, way))
                    print(f"  round {r + 1} {name}: {a.rows / res[0]:,.0f} rows/s",
                          file=sys.stderr, flush=True)
                    if name not in best or res[0] < best[name][0]:
                        best[name] = res
        finally:
            pg.stop()
    print(f"rows {a.rows} in batches of {a.batch}, {a.devices} devices x 2 metrics, "
          f"best of {a.rounds} interleaved rounds; seconds per stage")
    print("| way | rows/s | vs readings | " + " | ".join(STAGES) + " | client CPU s |")
    print("|---|---|---|" + "---|" * len(STAGES) + "---|")
    ref = best["readings"][0]
    for name, (wall, cpu, spent) in best.items():
        print(f"| {name} | {a.rows / wall:,.0f} | {ref / wall:.2f} | "
              + " | ".join(f"{spent[s]:.2f}" for s in STAGES) + f" | {cpu:.2f} |")


if __name__ == "__main__":
    main()
