"""``ganzhi backup`` and ``ganzhi restore`` against a real PostgreSQL: what was stored
(readings through the sink, their rollups and message ids, rule-state checkpoints)
comes back in a new database, byte for byte; the password never reaches a command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ganzhi.stack.infra import Managed, create_database
from stream.sinks.readings import ReadingRow, ReadingsSink

pytestmark = pytest.mark.integration
T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
TABLES = ["readings", "rollups_1m", "rollups_1h", "stream_messages", "stream_state",
          "stream_partitions", "schema_migrations"]


def fingerprint(dsn: str) -> dict[str, tuple[int, str]]:
    """Per table: rows and an md5 over them in a fixed order."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for t in TABLES:
            row = conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '')"
                f" FROM {t} x").fetchone()
            assert row is not None
            out[t] = (int(row[0]), str(row[1]))
    return out


def ganzhi(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANZHI_")}
    env["GANZHI_DB__DSN"] = dsn
    return subprocess.run([sys.executable, "-m", "ganzhi.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def new_database(pg: Managed) -> str:
    name = f"r_{uuid.uuid4().hex[:10]}"
    create_database(pg.extra["admin_dsn"], name)
    return str(pg.extra["admin_dsn"]).rsplit("/", 1)[0] + f"/{name}"


async def store_some(dsn: str) -> None:
    sink = ReadingsSink(dsn, compact_every_s=float("inf"))
    rows = [ReadingRow(T0 + timedelta(seconds=10 * i), "site-a", f"cr-{d}", m,
                       float(i % 7) + d, "celsius", uuid.uuid5(uuid.NAMESPACE_URL, f"{d}/{i}"))
            for d in range(5) for i in range(120) for m in ("temperature", "humidity")]
    await sink.write(rows)
    await sink.compact()
    await sink.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO stream_partitions (app_id, partition, epoch, owner, offsets)"
                      " VALUES ('ganzhi-stream', 0, 3, 'w1', '{\"ganzhi.telemetry.v1\": 1200}')")
        conn.execute("INSERT INTO stream_state (app_id, key, partition, state) VALUES"
                     " ('ganzhi-stream', 'site-a/cr-1/cold_store', 0, '{\"watermark\": 1}')")


def test_a_backup_restores_into_a_new_database(pg_server: Managed, pg_dsn: str,
                                               tmp_path: Path) -> None:
    asyncio.run(store_some(pg_dsn))
    before = fingerprint(pg_dsn)
    assert before["readings"][0] == 1200 and before["rollups_1m"][0] > 0

    out = tmp_path / "backups" / "ganzhi.dump"
    res = ganzhi(pg_dsn, "backup", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert out.is_file() and "tables" in res.stdout
    assert not (tmp_path / "backups" / "ganzhi.dump.partial").exists()

    target = new_database(pg_server)
    res = ganzhi(target, "restore", str(out))
    assert res.returncode == 0, res.stderr
    assert "1,200 readings" in res.stdout and "migrations applied after it: none" in res.stdout
    assert fingerprint(target) == before

    # A second restore into a database that holds the platform's tables is refused.
    res = ganzhi(target, "restore", str(out))
    assert res.returncode == 1 and "already holds ganzhi tables" in res.stderr
    assert fingerprint(target) == before
    # A file that is not a backup, and one that does not exist.
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"not a dump")
    res = ganzhi(new_database(pg_server), "restore", str(junk))
    assert res.returncode == 1 and "pg_restore failed" in res.stderr
    res = ganzhi(new_database(pg_server), "restore", str(tmp_path / "missing.dump"))
    assert res.returncode == 1 and "no such file" in res.stderr


def test_the_password_goes_by_environment_not_argv(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    from ganzhi.db import backup

    seen: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(argv: list[str], env: dict[str, str]) -> str:
        seen.append((argv, env))
        return "1; 2 TABLE DATA public readings ganzhi\n"

    monkeypatch.setattr(backup, "_run", fake_run)
    monkeypatch.setenv("PGPASSWORD", "from-the-caller")  # not passed on: the DSN's is
    dsn = "postgresql://ganzhi:s3cret-pw@db.example:6543/ganzhi?sslmode=verify-full"
    with pytest.raises(FileNotFoundError):  # (the fake wrote no file to move into place)
        backup.backup(dsn, tmp_path / "x.dump")
    argv, env = seen[0]
    assert not any("s3cret-pw" in a for a in argv)
    assert (env["PGPASSWORD"], env["PGHOST"], env["PGPORT"], env["PGDATABASE"],
            env["PGSSLMODE"]) == ("s3cret-pw", "db.example", "6543", "ganzhi", "verify-full")
