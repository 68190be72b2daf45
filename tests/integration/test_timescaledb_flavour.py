"""The TimescaleDB flavour on a real TimescaleDB: the migrations, the stream's sink, the
continuous aggregates, the compression and retention policies, the roles and
``ganzhi db check``.

The server is PGlite (PostgreSQL 17 compiled to WebAssembly) with TimescaleDB 2.23, served
on a free port by tests/timescaledb/server.mjs; ``./dev test`` installs it. What differs
from a TimescaleDB server: one connection at a time, no background workers (the tests run
each policy job with ``CALL run_job``, as the scheduler would), PostgreSQL 17 rather than
the 15 the rest of the suite uses (docs/operations.md)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ganzhi.db.check import check
from ganzhi.db.maintenance import maintain
from ganzhi.db.migrate import migrate, migrate_report
from ganzhi.db.roles import API, READER
from ganzhi.db.timescaledb import TimescaleError
from ganzhi.stack.infra import free_port
from stream.sinks.readings import ReadingRow, ReadingsSink, WriteResult

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "var" / "tools" / "npm" / "node_modules"
SERVER = ROOT / "tests" / "timescaledb" / "server.mjs"


@pytest.fixture
def ts_dsn() -> Iterator[str]:
    """A fresh TimescaleDB server with the extension created (as a managed service has it)."""
    if not (MODULES / "@unni-craftsman" / "pglite" / "dist" / "timescaledb.tar.gz").is_file():
        pytest.fail("PGlite with TimescaleDB is missing: ./dev test installs it into "
                    "var/tools/npm")
    node = shutil.which("node")
    assert node, "node is needed (./dev setup installs it)"
    port = free_port()
    proc = subprocess.Popen([node, str(SERVER), str(port), str(MODULES)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # PGlite boots in 1-3 s
        assert line.strip() == f"ready {port}", line
        yield f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def one(dsn: str, query: str, *params: Any) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def run_policies(dsn: str, proc: str | None = None) -> list[str]:
    """Each policy job run once, as TimescaleDB's scheduler would (PGlite has none)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        jobs = conn.execute(
            "SELECT job_id, proc_name FROM timescaledb_information.jobs"
            " WHERE proc_name LIKE 'policy_%%' AND (%s::text IS NULL OR proc_name = %s)"
            " ORDER BY job_id", (proc, proc)).fetchall()
        for job_id, _ in jobs:
            conn.execute("CALL run_job(%s)", (job_id,))
    return [str(p) for _, p in jobs]


def write(dsn: str, batch: list[ReadingRow]) -> WriteResult:
    async def go() -> WriteResult:
        sink = ReadingsSink(dsn)
        try:
            return await sink.write(batch)
        finally:
            await sink.close()
    return asyncio.run(go())


def readings(at: datetime, device: str, n: int, site: str = "site-1") -> list[ReadingRow]:
    """``n`` messages a minute apart up to ``at``, each with air temperature and door."""
    out = []
    for i in range(n):
        msg, t = uuid.uuid4(), at - timedelta(minutes=i, seconds=7)
        out += [ReadingRow(t, site, device, "air_temperature", -18.0 + i % 5, "celsius", msg),
                ReadingRow(t, site, device, "door_open", float(i % 2), "bool", msg)]
    return out


def rollups_match_readings(dsn: str) -> None:
    """Both rollup views hold exactly what a GROUP BY over the raw readings gives."""
    minute = ("SELECT date_trunc('minute', time) AS bucket, site_id, device_id, metric,"
              " count(*)::int, min(value), max(value), max(time)"
              " FROM readings GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
    hour = minute.replace("'minute'", "'hour'")
    view = ("SELECT bucket, site_id, device_id, metric, count, min, max, last_time"
            " FROM {} ORDER BY 1, 2, 3, 4")
    assert rows(dsn, view.format("rollups_1m_live")) == rows(dsn, minute)
    assert rows(dsn, view.format("rollups_1h_live")) == rows(dsn, hour)


def test_a_timescaledb_server_gets_the_timescaledb_flavour(ts_dsn: str) -> None:
    report = migrate_report(ts_dsn)
    assert (report.flavour, report.warning) == ("timescaledb", None)
    assert len(report.applied) >= 17
    assert one(ts_dsn, "SELECT flavour FROM schema_flavour") == "timescaledb"
    assert migrate(ts_dsn) == []  # again: nothing to do
    with pytest.raises(TimescaleError, match="keeps it"):
        migrate(ts_dsn, timescale="off")
    assert sorted(r[0] for r in rows(
        ts_dsn, "SELECT hypertable_name FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = 'public'")) == ["readings", "stream_messages"]
    assert rows(ts_dsn, "SELECT view_name, materialized_only"
                " FROM timescaledb_information.continuous_aggregates ORDER BY 1") == [
        ("rollups_1h_cagg", False), ("rollups_1m_cagg", False)]
    assert one(ts_dsn, "SELECT to_regclass('rollup_deltas')") is None

    env = {**os.environ, "GANZHI_DB__DSN": ts_dsn}
    out = subprocess.run([sys.executable, "-m", "ganzhi.cli", "db", "check"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("flavour timescaledb; timescaledb 2.", "readings is a hypertable",
                 "readings compression enabled", "rollups_1m_cagg is a continuous aggregate,"
                 " real-time", "policy_compression on readings",
                 "policy_retention on stream_messages",
                 "policy_refresh_continuous_aggregate on rollups_1h_cagg",
                 "policy_compression on rollups_1m_cagg"):
        assert line in out.stdout, (line, out.stdout)


def test_the_sink_rollups_and_compression_on_timescaledb(ts_dsn: str) -> None:
    migrate(ts_dsn)
    now = datetime.now(UTC)
    batch = (readings(now, "fridge-1", 30) + readings(now, "fridge-2", 30, "site-2")
             + readings(now - timedelta(days=10), "fridge-1", 20)
             + readings(now - timedelta(days=20), "fridge-2", 20, "site-2"))
    first = write(ts_dsn, batch)
    assert (first.inserted, first.duplicates, first.rollups) == (len(batch), 0, 0)
    again = write(ts_dsn, batch[:40])  # MQTT redelivery of 20 messages
    assert (again.inserted, again.duplicates) == (0, 40)
    assert one(ts_dsn, "SELECT count(*) FROM readings") == len(batch)
    assert one(ts_dsn, "SELECT count(*) FROM stream_messages") == len(batch) // 2
    rollups_match_readings(ts_dsn)  # real time: nothing materialized yet
    stale = [f.what for f in check(ts_dsn) if not f.ok]
    assert len(stale) == 2 and all("is its refresh policy running?" in s for s in stale)

    ran = run_policies(ts_dsn)
    assert {"policy_compression", "policy_retention",
            "policy_refresh_continuous_aggregate"} <= set(ran)
    compressed = rows(ts_dsn, "SELECT range_start FROM timescaledb_information.chunks"
                      " WHERE hypertable_name = 'readings' AND is_compressed")
    assert len(compressed) == 2  # the chunks 10 and 20 days old, not today's
    assert all(r[0] < now - timedelta(days=7) for r in compressed)
    rollups_match_readings(ts_dsn)  # materialized, from compressed chunks too

    # An edge box back after 20 days: its reading lands in a compressed chunk and, after
    # the next refresh (it is within the policy's 30 days), in the rollups.
    late = readings(now - timedelta(days=20, minutes=3), "fridge-9", 1)
    assert write(ts_dsn, late).inserted == 2
    assert write(ts_dsn, late).duplicates == 2
    run_policies(ts_dsn, "policy_refresh_continuous_aggregate")
    rollups_match_readings(ts_dsn)

    findings = check(ts_dsn)
    assert all(f.ok for f in findings), [f.what for f in findings if not f.ok]
    whats = "\n".join(f.what for f in findings)
    assert "readings is a hypertable with 3 chunks (2 compressed)" in whats
    assert "rollups_1m_cagg materialized up to" in whats
    assert "rollups_1h_cagg materialized up to" in whats


def test_roles_read_the_aggregates_and_write_nothing_raw(ts_dsn: str) -> None:
    migrate(ts_dsn)
    write(ts_dsn, readings(datetime.now(UTC), "fridge-1", 5))
    run_policies(ts_dsn, "policy_refresh_continuous_aggregate")
    with psycopg.connect(ts_dsn, autocommit=True) as conn:
        for role in (API, READER):
            conn.execute(f"SET ROLE {role}")
            for view in ("readings", "rollups_1m_live", "rollups_1h_live"):
                assert conn.execute(f"SELECT count(*) FROM {view}").fetchone() != (0,), (
                    role, view)
            for query in ("INSERT INTO readings (time, site_id, device_id, metric, value,"
                          " unit, msg_id) VALUES (now(), 's', 'd', 'm', 1, 'u',"
                          " gen_random_uuid())",
                          "DELETE FROM stream_messages",
                          "CALL refresh_continuous_aggregate('rollups_1m_cagg', NULL, NULL)"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(query)
            conn.execute("RESET ROLE")


def test_retention_drops_old_chunks_on_timescaledb(ts_dsn: str) -> None:
    migrate(ts_dsn)
    now = datetime.now(UTC)
    write(ts_dsn, readings(now, "fridge-1", 3) + readings(now - timedelta(days=40),
                                                          "fridge-1", 3))
    report = maintain(ts_dsn, 30)
    assert report.timescaledb
    assert rows(ts_dsn, "SELECT hypertable_name, config->>'drop_after'"
                " FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
                " ORDER BY 1") == [("readings", "30 days"), ("stream_messages", "30 days")]
    run_policies(ts_dsn, "policy_retention")
    assert one(ts_dsn, "SELECT min(time) FROM readings") > now - timedelta(days=1)
    assert one(ts_dsn, "SELECT count(*) FROM readings") == 6
    assert one(ts_dsn, "SELECT count(*) FROM stream_messages") == 3
    assert all(f.ok for f in check(ts_dsn, retention_days=30))


async def test_the_readings_route_on_timescaledb(ts_dsn: str) -> None:
    """The console's chart reads raw readings and both rollups from the aggregates."""
    from pydantic import SecretStr

    from access_fixtures import api_client, root_reader_token, settings

    migrate(ts_dsn)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await asyncio.to_thread(write, ts_dsn, readings(now - timedelta(minutes=1), "fridge-1",
                                                     3))
    token = await root_reader_token(ts_dsn)
    base = settings(ts_dsn)  # one connection: PGlite serves one client at a time
    app_settings = base.model_copy(update={"db": base.db.model_copy(update={
        "dsn": SecretStr(ts_dsn), "pool_min": 1, "pool_max": 1})})
    url = "/api/v1/devices/site-1/fridge-1/readings"
    span = {"from": (now - timedelta(hours=2)).isoformat(), "to": now.isoformat(),
            "metric": "air_temperature"}
    async with api_client(app_settings, token) as client:
        got = {}
        for resolution in ("raw", "1m", "1h"):
            r = await client.get(url, params={**span, "resolution": resolution})
            assert r.status_code == 200, r.text
            got[resolution] = r.json()["points"]
    assert [p["value"] for p in got["raw"]] == [-16.0, -17.0, -18.0]
    assert [(p["count"], p["value"]) for p in got["1m"]] == [(1, -16.0), (1, -17.0),
                                                             (1, -18.0)]
    hours = got["1h"]
    assert sum(p["count"] for p in hours) == 3
    assert min(p["min"] for p in hours) == -18.0 and max(p["max"] for p in hours) == -16.0
