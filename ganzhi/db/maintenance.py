"""Storage housekeeping: partitions ahead of time and retention (``ganzhi maintain``).

Readings and message ids: on TimescaleDB the extension's policies do the work and this
only sets them to the configured number of days; on plain PostgreSQL it creates the next
days' partitions and drops those older than the retention.

Alerts and clues, on both flavours: incidents resolved longer ago than
``alerts_retention_days`` go, with their alerts, alert events, history, clue outbox
rows, delivery attempts and feedback, in batches of one transaction each. An incident
with an open alert or a clue not yet delivered is kept whatever its age. Delivery
attempts (one row per webhook try) are kept ``deliveries_retention_days``. Evidence
snapshots of the file store that no remaining alert names are removed once older than
``evidence_grace_days`` (a snapshot is stored before its alert is; on S3 use a bucket
lifecycle rule instead).

Run it daily (a systemd timer or cron); the stream worker also creates partitions as
data arrives.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ganzhi.db import timescaledb
from ganzhi.evidence import SHA256


@dataclass(frozen=True)
class Retention:
    readings_days: int = 400
    alerts_days: int = 1095
    deliveries_days: int = 180
    evidence_grace_days: int = 7


@dataclass(frozen=True)
class MaintenanceReport:
    timescaledb: bool
    partitions_created: int
    partitions_dropped: int
    incidents_deleted: int = 0
    alerts_deleted: int = 0
    deliveries_deleted: int = 0
    evidence_deleted: int = 0


# One batch of old incidents and everything that hangs off them, children first
# (alerts and incidents point at each other: the incident's primary alert is unset first).
_PURGE_BATCH = [
    """CREATE TEMP TABLE gone_incidents ON COMMIT DROP AS
       SELECT i.id FROM incidents i
       WHERE i.status = 'resolved' AND i.resolved_at < now() - make_interval(days => %(days)s)
         AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.incident_id = i.id
                         AND a.status = 'open')
         AND NOT EXISTS (SELECT 1 FROM clue_outbox o WHERE o.incident_id = i.id
                         AND o.status = 'pending')
       ORDER BY i.id LIMIT %(limit)s FOR UPDATE OF i SKIP LOCKED""",
    """CREATE TEMP TABLE gone_alerts ON COMMIT DROP AS
       SELECT id FROM alerts WHERE incident_id IN (SELECT id FROM gone_incidents)""",
    """CREATE TEMP TABLE gone_outbox ON COMMIT DROP AS
       SELECT id FROM clue_outbox WHERE incident_id IN (SELECT id FROM gone_incidents)
          OR alert_id IN (SELECT id FROM gone_alerts)""",
    "DELETE FROM clue_deliveries WHERE outbox_id IN (SELECT id FROM gone_outbox)",
    "DELETE FROM clue_outbox WHERE id IN (SELECT id FROM gone_outbox)",
    "DELETE FROM clue_feedback WHERE incident_id IN (SELECT id FROM gone_incidents)",
    """DELETE FROM incident_history WHERE incident_id IN (SELECT id FROM gone_incidents)
          OR alert_id IN (SELECT id FROM gone_alerts)""",
    "DELETE FROM alert_events WHERE alert_id IN (SELECT id FROM gone_alerts)",
    "UPDATE incidents SET primary_alert_id = NULL WHERE id IN (SELECT id FROM gone_incidents)",
    "DELETE FROM alerts WHERE id IN (SELECT id FROM gone_alerts)",
    "DELETE FROM incidents WHERE id IN (SELECT id FROM gone_incidents)",
]


def purge_incidents(conn: psycopg.Connection[Any], days: int, batch: int = 1000
                    ) -> tuple[int, int]:
    """Incidents and alerts deleted (see the module text), batch by batch."""
    incidents = alerts = 0
    while True:
        with conn.transaction():
            for statement in _PURGE_BATCH:
                conn.execute(statement, {"days": days, "limit": batch})
            row = conn.execute("SELECT (SELECT count(*) FROM gone_incidents),"
                               " (SELECT count(*) FROM gone_alerts)").fetchone()
        n_inc, n_al = (int(row[0]), int(row[1])) if row else (0, 0)
        incidents += n_inc
        alerts += n_al
        if n_inc < batch:
            return incidents, alerts


def linked_snapshots(conn: psycopg.Connection[Any]) -> set[str]:
    """Every snapshot a remaining alert or alert event names."""
    rows = conn.execute(
        "SELECT \"values\"->>'snapshot_sha256' FROM alerts WHERE \"values\" ? 'snapshot_sha256'"
        " UNION SELECT payload->'values'->>'snapshot_sha256' FROM alert_events"
        " WHERE payload->'values' ? 'snapshot_sha256'").fetchall()
    return {str(r[0]) for r in rows}


def sweep_evidence(root: Path, keep: set[str], grace_days: int) -> int:
    """Delete the file store's snapshots not in ``keep`` and older than the grace."""
    cutoff = time.time() - grace_days * 86400
    deleted = 0
    for path in root.glob("*/*/*.jpg"):
        sha = path.stem
        if not SHA256.match(sha) or sha in keep:
            continue
        try:
            if path.stat().st_mtime < cutoff:
                os.unlink(path)
                deleted += 1
        except FileNotFoundError:
            continue
    return deleted


def maintain(dsn: str, retention: int | Retention, days_ahead: int = 2,
             evidence_dir: Path | None = None) -> MaintenanceReport:
    """``retention``: the whole policy, or the readings' days only (the rest defaults)."""
    r = retention if isinstance(retention, Retention) else Retention(readings_days=retention)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if timescaledb.flavour_of(conn) == "timescaledb":
            timescaledb.set_retention(conn, r.readings_days)
            ts, created, dropped = True, 0, 0
        else:
            row = conn.execute(
                "SELECT ganzhi_ensure_reading_partitions(now(),"
                " now() + make_interval(days => %s))", (days_ahead,)).fetchone()
            created = int(row[0]) if row else 0
            row = conn.execute("SELECT ganzhi_drop_reading_partitions(%s)",
                               (r.readings_days,)).fetchone()
            ts, dropped = False, int(row[0]) if row else 0
        incidents, alerts = purge_incidents(conn, r.alerts_days)
        cur = conn.execute("DELETE FROM clue_deliveries"
                           " WHERE at < now() - make_interval(days => %s)",
                           (r.deliveries_days,))
        deliveries = cur.rowcount
        evidence = 0
        if evidence_dir is not None and evidence_dir.is_dir():
            evidence = sweep_evidence(evidence_dir, linked_snapshots(conn),
                                      r.evidence_grace_days)
    return MaintenanceReport(ts, created, dropped, incidents, alerts, deliveries, evidence)
