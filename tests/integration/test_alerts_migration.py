"""0006_clue_events on a database that already holds alerts and delivered/pending clues."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection, errors
from psycopg.types.json import Jsonb

from alerts.repository import claim_due
from ganzhi.db.migrate import MIGRATIONS_DIR, migrate
from ganzhi.stack.infra import Managed, create_database

pytestmark = pytest.mark.integration

EVENTS_MIGRATION = "0006_clue_events.sql"


def _constraints(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'clue_outbox'::regclass AND contype IN ('u', 'c')"
    ).fetchall()
    return {str(name): str(definition) for name, definition in rows}


async def test_events_migration_keeps_existing_clues_as_created(
    pg_server: Managed, tmp_path: Path
) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    create_database(pg_server.extra["admin_dsn"], name)
    dsn = pg_server.extra["admin_dsn"].rsplit("/", 1)[0] + f"/{name}"
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < EVENTS_MIGRATION:
            shutil.copy(path, before / path.name)
    assert EVENTS_MIGRATION not in migrate(dsn, before)

    clue_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert {"clue_outbox_clue_id_key", "clue_outbox_alert_id_key"} <= set(_constraints(conn))
        for i, (clue_id, status) in enumerate(zip(clue_ids, ["delivered", "pending"],
                                                  strict=True)):
            row = conn.execute(
                "INSERT INTO alerts (fingerprint, rule_id, severity, site_id, device_id, status,"
                " started_at, summary) VALUES (%s, 'r', 'major', 's', 'd', 'resolved',"
                " now() - interval '1 hour', 'x') RETURNING id", (f"fp-{i}",)).fetchone()
            assert row is not None
            conn.execute(
                "INSERT INTO clue_outbox (clue_id, alert_id, payload, status, attempts)"
                " VALUES (%s, %s, %s, %s, 1)",
                (clue_id, row[0], Jsonb({"clue_id": clue_id}), status))

    # The real migration set: 0006 and the later ones apply over the rows.
    assert migrate(dsn)[0] == EVENTS_MIGRATION
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT clue_id::text, event, status, attempts FROM clue_outbox ORDER BY id"
        ).fetchall()
        assert rows == [(clue_ids[0], "created", "delivered", 1),
                        (clue_ids[1], "created", "pending", 1)]
        constraints = _constraints(conn)
        assert "clue_outbox_clue_id_key" not in constraints
        assert "clue_outbox_alert_id_key" not in constraints
        assert constraints["clue_outbox_clue_event"] == "UNIQUE (clue_id, event)"
        assert constraints["clue_outbox_alert_event"] == "UNIQUE (alert_id, event)"

        # A second event per clue is allowed now; a second row of the same event is not.
        insert = ("INSERT INTO clue_outbox (clue_id, alert_id, event, payload)"
                  " SELECT clue_id, alert_id, %s, payload FROM clue_outbox WHERE clue_id = %s")
        conn.execute(insert, ("resolved", clue_ids[0]))
        with pytest.raises(errors.UniqueViolation):
            conn.execute(insert, ("resolved", clue_ids[0]))
        with pytest.raises(errors.UniqueViolation):
            conn.execute(insert, ("created", clue_ids[0]))
        with pytest.raises(errors.CheckViolation):
            conn.execute(insert, ("closed", clue_ids[1]))

    # The claim query works on the migrated table: the old pending clue, and the new
    # resolution of the clue that was delivered before the migration.
    async with await AsyncConnection.connect(dsn, autocommit=True) as aconn:
        claimed = await claim_due(aconn, 10, 60)
    assert sorted((i.clue_id, i.event) for i in claimed) == sorted(
        [(clue_ids[1], "created"), (clue_ids[0], "resolved")])
    assert migrate(dsn) == []  # applied once
