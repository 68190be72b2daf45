"""Migrations and storage housekeeping on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ganzhi.db.maintenance import maintain
from ganzhi.db.migrate import migrate

pytestmark = pytest.mark.integration


def _partitions(conn: psycopg.Connection[tuple[object, ...]]) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'readings'::regclass"
    ).fetchall()
    return {str(r[0]) for r in rows}


def test_migrations_apply_once_and_refuse_edited_files(pg_dsn: str, tmp_path: Path) -> None:
    assert migrate(pg_dsn) == []  # the fixture applied them already
    edited = tmp_path / "migrations"
    edited.mkdir()
    (edited / "0001_readings.sql").write_text("SELECT 1;")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        migrate(pg_dsn, edited)


def test_readings_are_partitioned_by_day_and_retention_drops_old_days(pg_dsn: str) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SELECT ganzhi_ensure_reading_partitions(%s, %s)", (old, old))
        conn.execute(
            "INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id) "
            "VALUES (%s, 's', 'd', 'temperature', 1.0, 'celsius', gen_random_uuid())",
            (old,),
        )
        report = maintain(pg_dsn, 30)
        assert not report.timescaledb
        assert report.partitions_created == 3  # today and the next two days
        assert report.partitions_dropped == 1
        assert f"readings_{old:%Y%m%d}" not in _partitions(conn)
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)
        # Idempotent: a second run changes nothing.
        again = maintain(pg_dsn, 30)
        assert (again.partitions_created, again.partitions_dropped) == (0, 0)


def test_a_reading_outside_any_partition_is_an_error_not_a_silent_drop(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id) "
            "VALUES ('2001-01-01', 's', 'd', 'temperature', 1.0, 'celsius', gen_random_uuid())"
        )
