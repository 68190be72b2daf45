"""What a stored reading costs on disk, on either database flavour, and what TimescaleDB's
compression saves.

Simulated cold rooms and elevators (the scenario simulators, each device with its own
seed) report every ``--interval-s`` for ``--hours``; their messages go through the stream
worker's readings sink (message ids, readings, rollups as the flavour keeps them) into a
migrated database. Then it prints bytes per reading of each table, and on TimescaleDB
compresses every chunk of ``readings`` (what the compression policy does after 7 days)
and both continuous aggregates (after 45 days), and prints the sizes again and the
ratios.

    .venv/bin/python benchmarks/storage_size.py                  # PostgreSQL, started here
    node tests/timescaledb/server.mjs 55432 &                     # a TimescaleDB (PGlite)
    .venv/bin/python benchmarks/storage_size.py \\
        --dsn postgresql://postgres:postgres@127.0.0.1:55432/postgres

A day of data gives a segment (site, device, metric) of one daily chunk its real length:
compression works per segment, so a short run understates it.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLD = ROOT / "scenarios" / "cold_room" / "chilled-normal.yaml"
ELEVATOR = ROOT / "scenarios" / "elevator" / "normal.yaml"


def device_rows(kind: str, n: int, hours: float, interval_s: float,
                start: datetime) -> list[list[Any]]:
    """Per message: its readings as sink rows, oldest first, devices interleaved."""
    from edge.simulators.scenario import iter_samples, load_scenario
    from stream.sinks.readings import ReadingRow

    base = load_scenario(COLD if kind == "cold" else ELEVATOR)
    sc = base.model_copy(update={"interval_s": interval_s, "duration_s": hours * 3600})
    per_device = []
    for d in range(n):
        msgs = []
        for s in iter_samples(sc, seed=1000 + d, start=start):
            msg = uuid.uuid4()
            msgs.append([ReadingRow(s.ts, f"site-{d % 10}", f"{kind}-{d}", v.metric,
                                    float(v.value), v.unit[:16] or "1", msg)
                         for v in s.values])
        per_device.append(msgs)
    return [m for step in zip(*per_device, strict=True) for m in step]


async def store(dsn: str, messages: list[list[Any]], batch: int) -> tuple[int, float]:
    from stream.sinks.readings import ReadingsSink

    sink = ReadingsSink(dsn)
    stored, t0, rows = 0, time.perf_counter(), []
    for i, m in enumerate(messages):
        rows.extend(m)
        if len(rows) >= batch or i == len(messages) - 1:
            stored += (await sink.write(rows)).inserted
            rows = []
            if (i + 1) % max(1, len(messages) // 10) < len(m):
                print(f"  {i + 1:,}/{len(messages):,} messages", file=sys.stderr)
    await sink.close()  # the last rollup compaction too
    return stored, time.perf_counter() - t0


def sizes(conn: Any, flavour: str) -> dict[str, int]:
    def one(q: str) -> int:
        row = conn.execute(q).fetchone()
        return int(row[0] or 0) if row else 0

    if flavour == "timescaledb":
        mats = dict(conn.execute(
            "SELECT view_name, format('%I.%I', materialization_hypertable_schema,"
            " materialization_hypertable_name) FROM"
            " timescaledb_information.continuous_aggregates").fetchall())
        return {
            "readings": one("SELECT hypertable_size('readings')"),
            "stream_messages": one("SELECT hypertable_size('stream_messages')"),
            "rollups_1m": one(f"SELECT hypertable_size('{mats['rollups_1m_cagg']}')"),
            "rollups_1h": one(f"SELECT hypertable_size('{mats['rollups_1h_cagg']}')"),
        }

    def tree(table: str) -> int:
        return one("SELECT sum(pg_total_relation_size(relid))"
                   f" FROM pg_partition_tree('{table}')")
    return {"readings": tree("readings"), "stream_messages": tree("stream_messages"),
            "rollups_1m": one("SELECT pg_total_relation_size('rollups_1m')"),
            "rollups_1h": one("SELECT pg_total_relation_size('rollups_1h')")}


def measure(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    from ganzhi.db.migrate import migrate_report

    report = migrate_report(dsn)
    start = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0,
                                                            microsecond=0)
    print(f"flavour {report.flavour}; simulating {args.cold} cold rooms and "
          f"{args.elevators} elevators, every {args.interval_s:g} s for {args.hours:g} h",
          file=sys.stderr)
    messages = (device_rows("cold", args.cold, args.hours, args.interval_s, start)
                + device_rows("elevator", args.elevators, args.hours, args.interval_s,
                              start))
    messages.sort(key=lambda m: m[0].time)
    readings = sum(len(m) for m in messages)
    stored, seconds = asyncio.run(store(dsn, messages, args.batch))
    assert stored == readings, (stored, readings)
    out: dict[str, Any] = {"flavour": report.flavour, "messages": len(messages),
                           "readings": readings, "store_s": round(seconds, 1)}
    with psycopg.connect(dsn, autocommit=True) as conn:
        if report.flavour == "timescaledb":
            conn.execute("CALL refresh_continuous_aggregate('rollups_1m_cagg', NULL, NULL)")
            conn.execute("CALL refresh_continuous_aggregate('rollups_1h_cagg', NULL, NULL)")
        conn.execute("VACUUM ANALYZE")
        out["before"] = sizes(conn, report.flavour)
        if report.flavour == "timescaledb":
            # What the policies do after 7 days (readings) and 45 days (the rollups).
            conn.execute("SELECT compress_chunk(c) FROM show_chunks('readings') c")
            for view in ("rollups_1m_cagg", "rollups_1h_cagg"):
                conn.execute(f"SELECT compress_chunk(c) FROM show_chunks('{view}') c")
            conn.execute("VACUUM ANALYZE")
            out["compressed"] = sizes(conn, report.flavour)
    return out


def show(r: dict[str, Any]) -> None:
    n, msgs = r["readings"], r["messages"]
    print(f"\n{r['flavour']}: {n:,} readings in {msgs:,} messages, stored in {r['store_s']} s")
    cols = ["before"] + (["compressed"] if "compressed" in r else [])
    print(f"{'table':<16}" + "".join(f"{c + ' B/reading':>22}" for c in cols))
    for table in r["before"]:
        print(f"{table:<16}" + "".join(f"{r[c][table] / n:>22.1f}" for c in cols))
    total = {c: sum(r[c].values()) for c in cols}
    print(f"{'total':<16}" + "".join(f"{total[c] / n:>22.1f}" for c in cols))
    if "compressed" in r:
        before, after = r["before"]["readings"], r["compressed"]["readings"]
        share = total["compressed"] / total["before"]
        m_before, m_after = r["before"]["rollups_1m"], r["compressed"]["rollups_1m"]
        print(f"rollups_1m compressed to {m_after / m_before:.1%} of its size")
        print(f"readings compressed to {after / before:.1%} of its size "
              f"({before / after:.1f}x smaller); all tables {share:.1%}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", help="a database to migrate and fill (default: a PostgreSQL"
                    " cluster started here, removed after)")
    ap.add_argument("--cold", type=int, default=20, help="cold rooms (6 metrics)")
    ap.add_argument("--elevators", type=int, default=10, help="elevators (13 metrics)")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--interval-s", type=float, default=30.0)
    ap.add_argument("--batch", type=int, default=2000, help="readings per sink write")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = ap.parse_args()
    if args.hours <= 0 or args.interval_s <= 0 or args.cold + args.elevators <= 0:
        ap.error("--hours, --interval-s and the device counts must be positive")
    if args.dsn:
        result = measure(args.dsn, args)
    else:
        from ganzhi.stack.infra import create_database, start_postgres

        root = Path(tempfile.mkdtemp(prefix="ganzhi-storage-"))
        pg = start_postgres(root / "data")
        try:
            create_database(pg.extra["admin_dsn"], "sizing")
            result = measure(pg.extra["admin_dsn"].rsplit("/", 1)[0] + "/sizing", args)
        finally:
            pg.stop()
            shutil.rmtree(root, ignore_errors=True)
    show(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
