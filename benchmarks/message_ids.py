"""The sink's message-id inserts against the size of a day's ``stream_messages`` index.

Every batch the stream sink COPYs its messages' ``(msg_id, time)`` into
``stream_messages``, whose primary key makes a redelivered message a no-op. Message ids are
random (uuid4). This script starts its own PostgreSQL cluster (fsync on) and, for each
``--preload`` size, fills a table with that many ids of the day and then times batches of
``--batch`` new ids COPYed in one transaction each (the sink's way), for the key of
migration 0014, ``(msg_id, time)``, and that of 0019, ``(time, msg_id)``; sequential ids
under the 0014 key are the best case for comparison. The times of the timed ids follow
those of the preloaded ones, as live data does. Rounds alternate the layouts; the best
round of each counts.

    .venv/bin/python benchmarks/message_ids.py --preload 100000 2000000 --ids 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from ganzhi.stack.infra import start_postgres

T0 = datetime(2026, 7, 1, tzinfo=UTC)
LAYOUTS = {  # name: (primary key, random ids)
    "0014 key (msg_id, time), uuid4 ids": ("msg_id, time", True),
    "0019 key (time, msg_id), uuid4 ids": ("time, msg_id", True),
    "0014 key (msg_id, time), sequential ids": ("msg_id, time", False),
}


async def timed_copy(dsn: str, table: str, rows: list[tuple[uuid.UUID, datetime]],
                     batch: int) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            async with conn.transaction(), conn.cursor() as cur, cur.copy(
                f"COPY {table} (msg_id, time) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["uuid", "timestamptz"])
                for row in rows[i : i + batch]:
                    await copy.write_row(row)
        return time.perf_counter() - start


def measure(dsn: str, preload: int, ids: int, batch: int, rounds: int) -> dict[str, float]:
    """Ids per second of each layout with ``preload`` ids already in the table."""
    rng = random.Random(7)
    times = [T0 + timedelta(milliseconds=10 * i) for i in range(preload + ids)]
    best: dict[str, float] = {}
    for r in range(rounds):
        for name, (key, random_ids) in LAYOUTS.items():
            ids_ = ([uuid.UUID(bytes=rng.randbytes(16), version=4) for _ in times]
                    if random_ids else [uuid.UUID(int=i) for i in range(len(times))])
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS ids")
                conn.execute("CREATE TABLE ids (msg_id uuid NOT NULL,"
                             f" time timestamptz NOT NULL, PRIMARY KEY ({key}))")
                with conn.cursor().copy("COPY ids (msg_id, time) FROM STDIN") as copy:
                    for row in zip(ids_[:preload], times[:preload], strict=True):
                        copy.write_row(row)
                conn.execute("VACUUM ANALYZE ids")
                conn.execute("CHECKPOINT")
            secs = asyncio.run(timed_copy(
                dsn, "ids", list(zip(ids_[preload:], times[preload:], strict=True)), batch))
            best[name] = max(best.get(name, 0.0), ids / secs)
            print(f"  preload {preload:,} round {r + 1}: {name}: {ids / secs:,.0f} ids/s",
                  file=sys.stderr, flush=True)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preload", type=int, nargs="+", default=[100_000, 2_000_000],
                    help="ids already in the table (one measurement per size)")
    ap.add_argument("--ids", type=int, default=100_000, help="ids timed")
    ap.add_argument("--batch", type=int, default=1000,
                    help="ids per COPY (a batch of 2,000 readings, 2 per message)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, metavar="PATH")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ganzhi-bench-ids-"))
    pg = start_postgres(root / "data")
    out: dict[str, dict[str, float]] = {}
    try:
        for n in args.preload:
            out[str(n)] = measure(pg.extra["dsn"], n, args.ids, args.batch, args.rounds)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.ids:,} ids timed in COPYs of {args.batch}, best of {args.rounds} rounds")
    print("| ids already in the table | layout | ids/s | vs 0014 key, uuid4 |")
    print("|---|---|---|---|")
    for n, figs in out.items():
        base = figs[next(iter(LAYOUTS))]
        for name, v in figs.items():
            print(f"| {int(n):,} | {name} | {v:,.0f} | {v / base:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
