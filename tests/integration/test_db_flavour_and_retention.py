"""The database's flavour, `ganzhi db check` and retention on a real PostgreSQL (the plain
flavour: no TimescaleDB installs here; the choice itself is unit-tested)."""

from __future__ import annotations

import math
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts.repository import apply_transition
from ganzhi.db import timescaledb
from ganzhi.db.check import check
from ganzhi.db.maintenance import Retention, maintain
from ganzhi.db.migrate import EQUIVALENT, migrate, migrate_report
from ganzhi.db.timescaledb import Probe, TimescaleError
from stream.sinks.readings import ReadingRow, ReadingsSink

from alerting import FIRING, RESOLVED, policy, tr

pytestmark = pytest.mark.integration


def one(dsn: str, query: str, *params: Any) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]


def test_the_first_migrate_records_the_plain_flavour(pg_dsn: str) -> None:
    assert one(pg_dsn, "SELECT flavour FROM schema_flavour") == "postgresql"
    report = migrate_report(pg_dsn)
    assert (report.applied, report.flavour, report.warning) == ([], "postgresql", None)
    with pytest.raises(TimescaleError, match="keeps that flavour"):
        migrate(pg_dsn, timescale="on")


def test_on_fails_on_a_fresh_database_without_timescaledb(pg_server: Any) -> None:
    from ganzhi.stack.infra import create_database

    name = f"t_{uuid.uuid4().hex[:12]}"
    create_database(pg_server.extra["admin_dsn"], name)
    dsn = pg_server.extra["admin_dsn"].rsplit("/", 1)[0] + f"/{name}"
    with pytest.raises(TimescaleError, match="not installed"):
        migrate(dsn, timescale="on")
    assert one(dsn, "SELECT to_regclass('readings')") is None  # nothing half-made


def test_a_database_from_before_flavours_and_the_edited_files_migrate(pg_dsn: str) -> None:
    """Databases migrated before flavours existed: no schema_flavour table, and the earlier
    checksums of the files whose TimescaleDB branch moved out."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE schema_flavour")
        for name, old in EQUIVALENT.items():
            conn.execute("UPDATE schema_migrations SET checksum = %s WHERE name = %s",
                         (next(iter(old)), name))
    assert migrate(pg_dsn) == []
    assert one(pg_dsn, "SELECT flavour FROM schema_flavour") == "postgresql"


def test_the_timescaledb_flavour_applies_the_variants(pg_dsn: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The variant mechanism, with stand-in files (the real variants need the extension)
    and a server that claims TimescaleDB: each variant replaces its plain file, and the
    choice is recorded, with the warning-free path."""
    d = tmp_path / "m"
    (d / "timescaledb").mkdir(parents=True)
    (d / "0001_a.sql").write_text("CREATE TABLE flavour_a (plain int);")
    (d / "timescaledb" / "0001_a.sql").write_text("CREATE TABLE flavour_a (variant int);")
    (d / "0002_b.sql").write_text("CREATE TABLE flavour_b (plain int);")
    real = timescaledb.probe

    def claims(conn: Any) -> Probe:
        p = real(conn)
        return Probe(p.server_version, "2.17.2", None, True, None, "absent")

    monkeypatch.setattr(timescaledb, "probe", claims)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE schema_flavour; DELETE FROM schema_migrations")
    report = migrate_report(pg_dsn, d)
    assert (report.flavour, report.applied) == ("timescaledb", ["0001_a.sql", "0002_b.sql"])
    assert one(pg_dsn, "SELECT attname FROM pg_attribute WHERE attrelid = 'flavour_a'::regclass"
               " AND attnum = 1") == "variant"
    assert one(pg_dsn, "SELECT attname FROM pg_attribute WHERE attrelid = 'flavour_b'::regclass"
               " AND attnum = 1") == "plain"


def test_installed_but_not_preloaded_migrates_plain_with_a_warning(
        pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "0001_a.sql").write_text("CREATE TABLE flavour_a (plain int);")
    real = timescaledb.probe
    monkeypatch.setattr(timescaledb, "probe", lambda conn: Probe(
        real(conn).server_version, "2.17.2", None, False, None, "absent"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE schema_flavour; DELETE FROM schema_migrations")
    report = migrate_report(pg_dsn, d)
    assert report.flavour == "postgresql" and report.applied == ["0001_a.sql"]
    assert "shared_preload_libraries" in str(report.warning)


async def _store_readings(dsn: str, n: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    rows = [ReadingRow(now + timedelta(seconds=i), "site-1", f"dev-{i % 3}", "temperature",
                       float(i), "celsius", uuid.uuid4()) for i in range(n)]
    sink = ReadingsSink(dsn, compact_every_s=math.inf)
    await sink.write(rows[: n // 2])
    await sink.compact()
    await sink.write(rows[n // 2:])  # left as deltas: the live view must count them
    await sink.close(compact=False)


async def test_db_check_verifies_partitions_and_rollups(pg_dsn: str) -> None:
    findings = check(pg_dsn)
    missing = [f.what for f in findings if not f.ok]
    assert any("is missing: run `ganzhi maintain`" in w for w in missing)  # none made yet
    maintain(pg_dsn, 400)
    await _store_readings(pg_dsn, 40)
    findings = check(pg_dsn)
    assert all(f.ok for f in findings), [f.what for f in findings if not f.ok]
    text = "\n".join(f.what for f in findings)
    assert "flavour postgresql" in text and "migrations applied" in text
    assert "minute rollups count 40 readings of the last hour; readings holds 40" in text
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM rollup_deltas")  # rollups lose readings
    bad = [f.what for f in check(pg_dsn) if not f.ok]
    assert bad == ["minute rollups count 20 readings of the last hour; readings holds 40"]


def test_db_check_command_exits_1_on_a_failure(pg_dsn: str) -> None:
    import subprocess
    import sys

    env = {**os.environ, "GANZHI_DB__DSN": pg_dsn}
    run = subprocess.run([sys.executable, "-m", "ganzhi.cli", "db", "check"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAIL readings_" in run.stdout and "ok   all " in run.stdout
    maintain(pg_dsn, 400)
    run = subprocess.run([sys.executable, "-m", "ganzhi.cli", "db", "check"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run([sys.executable, "-m", "ganzhi.cli", "migrate"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "flavour: postgresql" in run.stdout


def test_an_unreachable_database_is_one_line_not_a_traceback() -> None:
    import subprocess
    import sys

    from ganzhi.stack.infra import free_port

    dsn = f"postgresql://ganzhi:s3cret-pw@127.0.0.1:{free_port()}/ganzhi?connect_timeout=5"
    env = {**os.environ, "GANZHI_DB__DSN": dsn}
    for command in (["migrate"], ["db", "check"], ["maintain"]):
        run = subprocess.run([sys.executable, "-m", "ganzhi.cli", *command], env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 1, run.stdout + run.stderr
        assert run.stderr.startswith(f"ganzhi {' '.join(command)}: cannot reach the database")
        assert "Traceback" not in run.stderr
        assert "s3cret-pw" not in run.stdout + run.stderr


async def _incident(dsn: str, device: str, *, resolve: bool, snapshot: str | None = None
                    ) -> int:
    start = datetime.now(UTC) - timedelta(days=5)
    values = {"snapshot_sha256": snapshot} if snapshot else {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        p = policy()
        await apply_transition(conn, tr(FIRING, "cold_chain.excursion", device=device,
                                        start=start, values=values), p)
        if resolve:
            await apply_transition(conn, tr(RESOLVED, "cold_chain.excursion", device=device,
                                            start=start, values=values), p)
        cur = await conn.execute("SELECT incident_id FROM alerts WHERE device_id = %s",
                                 (device,))
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_retention_deletes_old_incidents_whole_and_keeps_what_is_live(
        pg_dsn: str, tmp_path: Path) -> None:
    old_sha, kept_sha, orphan_sha, young_sha = (c * 64 for c in "abcd")
    old = await _incident(pg_dsn, "old", resolve=True, snapshot=old_sha)
    pending = await _incident(pg_dsn, "pending", resolve=True)
    firing = await _incident(pg_dsn, "firing", resolve=False, snapshot=kept_sha)
    recent = await _incident(pg_dsn, "recent", resolve=True)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE incidents SET resolved_at = now() - interval '2000 days'"
                     " WHERE id = ANY(%s)", ([old, pending, firing],))
        conn.execute("UPDATE clue_outbox SET status = 'delivered' WHERE incident_id <> %s",
                     (pending,))
        for inc in (old, recent):
            conn.execute(
                "INSERT INTO clue_deliveries (outbox_id, receiver, attempt, outcome, latency_ms,"
                " at) SELECT id, 'default', 1, 'delivered', 5, now() - interval '1 day'"
                " FROM clue_outbox WHERE incident_id = %s", (inc,))
            conn.execute("INSERT INTO clue_feedback (clue_id, status, incident_id, at, actor)"
                         " SELECT clue_id, 'accepted', id, now(), 'task-system'"
                         " FROM incidents WHERE id = %s", (inc,))
        conn.execute("INSERT INTO clue_deliveries (outbox_id, receiver, attempt, outcome,"
                     " latency_ms, at) SELECT id, 'default', 1, 'failed', 5,"
                     " now() - interval '400 days' FROM clue_outbox WHERE incident_id = %s"
                     " ORDER BY id LIMIT 1", (recent,))
    evidence = tmp_path / "evidence"
    for sha in (old_sha, kept_sha, orphan_sha, young_sha):
        f = evidence / sha[:2] / sha[2:4] / f"{sha}.jpg"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"jpeg")
        if sha != young_sha:
            past = time.time() - 30 * 86400
            os.utime(f, (past, past))

    report = maintain(pg_dsn, Retention(alerts_days=1095, deliveries_days=180),
                      evidence_dir=evidence)
    assert (report.incidents_deleted, report.alerts_deleted) == (1, 1)
    assert report.deliveries_deleted == 1  # the 400-day-old attempt of the recent incident
    assert report.evidence_deleted == 2  # the old incident's and the orphan; not the young
    left = {f.stem for f in evidence.glob("*/*/*.jpg")}
    assert left == {kept_sha, young_sha}
    with psycopg.connect(pg_dsn) as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM incidents").fetchall()}
        assert ids == {pending, firing, recent}
        for table in ("clue_outbox", "clue_feedback", "incident_history"):
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE incident_id = %s",
                                (old,)).fetchone() == (0,), table
        assert conn.execute("SELECT count(*) FROM alert_events e JOIN alerts a"
                            " ON a.id = e.alert_id WHERE a.device_id = 'old'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM clue_feedback").fetchone() == (1,)
    again = maintain(pg_dsn, Retention(), evidence_dir=evidence)
    assert (again.incidents_deleted, again.deliveries_deleted, again.evidence_deleted) == (0, 0, 0)
