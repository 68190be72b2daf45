"""``ganzhi db check``: what a database is and whether its storage works, verified.

On either flavour: the flavour and the server, every migration applied, and the minute
rollups agreeing with the readings of the last hour (one snapshot; the real-time view,
so nothing pending is missed). Plain PostgreSQL: readings partitioned by day with today's
and tomorrow's partitions made, message ids partitioned alike, the oldest day within the
retention. TimescaleDB (:func:`ganzhi.db.timescaledb.check_timescaledb`): hypertables
with their chunks and compression, real-time continuous aggregates, policy jobs run
without failure. It reads only; run it against any server with one command.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ganzhi.db import timescaledb
from ganzhi.db.migrate import MIGRATIONS_DIR, load_migrations
from ganzhi.db.timescaledb import Finding


def _partitions(conn: psycopg.Connection[Any], table: str) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass", (table,)).fetchall()
    return {str(r[0]) for r in rows}


def _check_plain(conn: psycopg.Connection[Any], retention_days: int) -> list[Finding]:
    out = []
    readings = _partitions(conn, "readings")
    messages = _partitions(conn, "stream_messages")
    days = sorted(p.removeprefix("readings_") for p in readings)
    out.append(Finding(True, f"readings is partitioned by day: {len(days)} partitions"
                       + (f", {days[0]} to {days[-1]}" if days else "")))
    today = datetime.now(UTC).date()
    for day in (today, today + timedelta(days=1)):
        name = f"readings_{day:%Y%m%d}"
        out.append(Finding(name in readings, f"{name} "
                           + ("exists" if name in readings
                              else "is missing: run `ganzhi maintain` daily")))
    missing = {f"stream_messages_{d}" for d in days} - messages
    out.append(Finding(not missing, "stream_messages has a partition for every readings day"
                       if not missing else f"stream_messages lacks {sorted(missing)}"))
    if days:
        oldest = datetime.strptime(days[0], "%Y%m%d").date()
        age = (today - oldest).days
        out.append(Finding(age <= retention_days + 1,
                           f"oldest readings day is {age} days old (retention {retention_days})"))
    return out


def check(dsn: str, retention_days: int = 400) -> list[Finding]:
    out: list[Finding] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        p = timescaledb.probe(conn)
        flavour = timescaledb.choose(p).flavour
        major, minor = divmod(p.server_version, 10000)
        ts = (f"timescaledb {p.installed} in the database" if p.installed
              else f"timescaledb {p.available} installed on the server, "
                   + ("preloaded" if p.preloaded else "not preloaded")
              if p.available else "no timescaledb on the server")
        out.append(Finding(True, f"PostgreSQL {major}.{minor}; flavour {flavour}"
                           f"{'' if p.recorded else ' (inferred: not recorded yet)'}; {ts}"))
        if flavour == "timescaledb" and p.installed:
            v = timescaledb.version_tuple(p.installed)[:2]
            ok = timescaledb.SUPPORTED_FROM <= v < timescaledb.SUPPORTED_BEFORE
            out.append(Finding(ok, f"timescaledb {p.installed} "
                               + ("is supported" if ok else "is NOT supported")))
        applied = {str(r[0]) for r in conn.execute(
            "SELECT name FROM schema_migrations").fetchall()}
        wanted = [m.name for m in load_migrations(MIGRATIONS_DIR, flavour)]
        todo = [n for n in wanted if n not in applied]
        out.append(Finding(not todo, f"all {len(wanted)} migrations applied" if not todo
                           else f"not applied: {', '.join(todo)} (run `ganzhi migrate`)"))
        if flavour == "timescaledb":
            out += timescaledb.check_timescaledb(conn)
        else:
            out += _check_plain(conn, retention_days)
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            since = conn.execute(
                "SELECT date_trunc('minute', now() - interval '1 hour')").fetchone()
            assert since is not None
            raw = conn.execute("SELECT count(*) FROM readings WHERE time >= %s",
                               (since[0],)).fetchone()
            rolled = conn.execute(
                "SELECT coalesce(sum(count), 0) FROM rollups_1m_live WHERE bucket >= %s",
                (since[0],)).fetchone()
        n_raw, n_rolled = int(raw[0]) if raw else 0, int(rolled[0]) if rolled else 0
        out.append(Finding(n_raw == n_rolled,
                           f"minute rollups count {n_rolled} readings of the last hour;"
                           f" readings holds {n_raw}"))
    return out
