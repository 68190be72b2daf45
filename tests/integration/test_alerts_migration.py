"""0008_incidents on a database that already holds alerts and delivered/pending clues."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import AsyncConnection, errors
from psycopg.types.json import Jsonb

from alerts.outbox import claim_due
from alerts.repository import apply_transition
from ganzhi.db.migrate import MIGRATIONS_DIR, migrate
from ganzhi.stack.infra import Managed, create_database

from alerting import RESOLVED, policy, tr

pytestmark = pytest.mark.integration

INCIDENTS_MIGRATION = "0008_incidents.sql"
START = datetime(2026, 1, 1, 8, tzinfo=UTC)


async def test_incidents_migration_keeps_every_clue_and_alert(
    pg_server: Managed, tmp_path: Path
) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    create_database(pg_server.extra["admin_dsn"], name)
    dsn = pg_server.extra["admin_dsn"].rsplit("/", 1)[0] + f"/{name}"
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < INCIDENTS_MIGRATION:
            shutil.copy(path, before / path.name)
    migrate(dsn, before)

    # Three alerts as the previous schema kept them: one resolved whose clue and
    # resolution went out, one resolved whose resolution is pending, one still open
    # whose clue is pending.
    clue_ids = [str(uuid.uuid4()) for _ in range(3)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i, (status, created, resolved) in enumerate([
                ("resolved", "delivered", "delivered"), ("resolved", "delivered", "pending"),
                ("open", "pending", None)]):
            t = tr(RESOLVED, "cold_chain.temperature_high", device=f"room-{i}", start=START)
            row = conn.execute(
                "INSERT INTO alerts (fingerprint, rule_id, severity, site_id, device_id, status,"
                " started_at, ended_at, summary) VALUES (%s, %s, 'major', 'site-1', %s, %s, %s,"
                " %s, 'x') RETURNING id",
                (t.fingerprint, t.rule_id, t.device_id, status, START,
                 START + timedelta(minutes=5) if status == "resolved" else None)).fetchone()
            assert row is not None
            for event, st in (("created", created), ("resolved", resolved)):
                if st is not None:
                    conn.execute(
                        "INSERT INTO clue_outbox (clue_id, alert_id, event, payload, status,"
                        " attempts) VALUES (%s, %s, %s, %s, %s, 1)",
                        (clue_ids[i], row[0], event, Jsonb({"clue_id": clue_ids[i]}), st))

    assert migrate(dsn)[0] == INCIDENTS_MIGRATION
    with psycopg.connect(dsn, autocommit=True) as conn:
        incidents = conn.execute(
            "SELECT clue_id::text, status, notify_state, event_seq FROM incidents ORDER BY id"
        ).fetchall()
        assert incidents == [(clue_ids[0], "resolved", "notified", 1),
                             (clue_ids[1], "resolved", "notified", 1),
                             (clue_ids[2], "open", "notified", 0)]
        rows = conn.execute(
            "SELECT receiver, idempotency_key, seq, status FROM clue_outbox ORDER BY id"
        ).fetchall()
        assert rows == [
            ("task-system", clue_ids[0], 0, "delivered"),
            ("task-system", f"{clue_ids[0]}:resolved", 1, "delivered"),
            ("task-system", clue_ids[1], 0, "delivered"),
            ("task-system", f"{clue_ids[1]}:resolved", 1, "pending"),
            ("task-system", clue_ids[2], 0, "pending")]
        with pytest.raises(errors.UniqueViolation):  # one row per receiver and key
            conn.execute(
                "INSERT INTO clue_outbox (clue_id, receiver, event, seq, idempotency_key,"
                " payload) VALUES (%s, 'task-system', 'created', 0, %s, '{}')",
                (clue_ids[2], clue_ids[2]))

    # The pending events are claimed in order, and the open alert resolves through its
    # incident: the task system hears the resolution under a new key after the clue.
    async with await AsyncConnection.connect(dsn, autocommit=True) as aconn:
        claimed = await claim_due(aconn, "task-system", 10, 60)
        assert sorted(i.key for i in claimed) == sorted(
            [f"{clue_ids[1]}:resolved", clue_ids[2]])
        t = tr(RESOLVED, "cold_chain.temperature_high", device="room-2", start=START)
        result = await apply_transition(aconn, t, policy())
        assert result.outcome == "resolved"
    with psycopg.connect(dsn) as conn:
        last = conn.execute(
            "SELECT idempotency_key, event, seq FROM clue_outbox ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert last == (f"{clue_ids[2]}:resolved:1", "resolved", 1)
    assert migrate(dsn) == []  # applied once
