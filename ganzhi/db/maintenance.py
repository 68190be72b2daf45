"""Storage housekeeping: partitions ahead of time and retention (``ganzhi maintain``).

On TimescaleDB the extension's own policies do the work; this only sets the retention
policy to the configured number of days. On plain PostgreSQL it creates the next days'
partitions of ``readings`` and drops those older than the retention. Run it daily (a
systemd timer or cron); the stream worker also creates partitions as data arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from ganzhi.db.migrate import has_timescaledb


@dataclass(frozen=True)
class MaintenanceReport:
    timescaledb: bool
    partitions_created: int
    partitions_dropped: int


def maintain(dsn: str, retention_days: int, days_ahead: int = 2) -> MaintenanceReport:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if has_timescaledb(conn):
            conn.execute("SELECT remove_retention_policy('readings', if_exists => true)")
            conn.execute(
                "SELECT add_retention_policy('readings', make_interval(days => %s))",
                (retention_days,),
            )
            return MaintenanceReport(True, 0, 0)
        created = conn.execute(
            "SELECT ganzhi_ensure_reading_partitions(now(), now() + make_interval(days => %s))",
            (days_ahead,),
        ).fetchone()
        dropped = conn.execute(
            "SELECT ganzhi_drop_reading_partitions(%s)", (retention_days,)
        ).fetchone()
    return MaintenanceReport(False, int(created[0]) if created else 0,
                             int(dropped[0]) if dropped else 0)
