"""Least-privilege roles and the console's read replica, on real PostgreSQL: the API's
role may change only what its routes change, the reader role only reads and never sees
credentials, and the readings route reads from a streaming standby."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from ganzhi.db.roles import READER
from ganzhi.stack.infra import Managed, start_replica

from access_fixtures import api_client, api_dsn, root_reader_token, settings

pytestmark = pytest.mark.integration


def reader_dsn(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'ganzhi_reader_test'"
                            ).fetchone():
            conn.execute(f"CREATE ROLE ganzhi_reader_test LOGIN IN ROLE {READER}")
    return make_conninfo(dsn, user="ganzhi_reader_test")


def refused(dsn: str, query: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(query)
        except psycopg.errors.InsufficientPrivilege:
            return True
    return False


def test_the_api_role_changes_only_what_its_routes_change(pg_dsn: str) -> None:
    api = api_dsn(pg_dsn)
    for query in (
        "INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id)"
        " VALUES (now(), 's', 'd', 'temperature', 1, 'celsius', gen_random_uuid())",
        "DELETE FROM readings",
        "SELECT * FROM stream_state",
        "DELETE FROM alerts",
        "DELETE FROM audit_log",
        "UPDATE audit_log SET actor = 'someone else'",
        "TRUNCATE incidents",
        "DROP TABLE alerts",
        "CREATE TABLE mine (x int)",
    ):
        assert refused(api, query), query
    with psycopg.connect(api, autocommit=True) as conn:  # what it may do
        conn.execute("SELECT count(*) FROM readings")
        conn.execute("SELECT count(*) FROM rollups_1m_live")
        conn.execute("INSERT INTO audit_log (actor, action, entity, entity_id)"
                     " VALUES ('test', 'test.check', 'test', '1')")


def test_the_reader_role_only_reads_and_never_credentials(pg_dsn: str) -> None:
    reader = reader_dsn(pg_dsn)
    for query in ("SELECT * FROM users", "SELECT * FROM api_keys",
                  "SELECT * FROM refresh_tokens", "UPDATE alerts SET summary = ''",
                  "INSERT INTO audit_log (actor, action, entity, entity_id)"
                  " VALUES ('x', 'x', 'x', 'x')"):
        assert refused(reader, query), query
    with psycopg.connect(reader, autocommit=True) as conn:
        for table in ("readings", "rollups_1h_live", "incidents", "sites", "jurisdictions"):
            conn.execute(f"SELECT count(*) FROM {table}")


@pytest.fixture
def replica(pg_server: Managed) -> Iterator[Managed]:
    root = Path(tempfile.mkdtemp(prefix="ganzhi-test-replica-"))
    part = start_replica(pg_server, root / "data")
    yield part
    part.stop()
    shutil.rmtree(root, ignore_errors=True)


def _on(server: Managed, dsn: str) -> str:
    return make_conninfo(dsn, host=server.host, port=server.port)


async def _wait_replayed(primary: str, standby: str) -> None:
    with psycopg.connect(primary, autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
    assert lsn is not None
    for _ in range(200):
        with psycopg.connect(standby, autocommit=True) as conn:
            row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", lsn).fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the standby did not catch up")


async def test_readings_are_read_from_the_replica(pg_dsn: str, replica: Managed) -> None:
    standby = _on(replica, pg_dsn)
    reader_dsn(pg_dsn)  # the role exists on the primary: the standby has it too
    token = await root_reader_token(pg_dsn)
    now = datetime.now(UTC).replace(microsecond=0)

    def insert(value: float, at: datetime) -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("SELECT ganzhi_ensure_reading_partitions(%s, %s)", (at, at))
            conn.execute(
                "INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id)"
                " VALUES (%s, 'site-1', 'dev-1', 'temperature', %s, 'celsius', %s)",
                (at, value, uuid.uuid4()))

    insert(4.0, now - timedelta(minutes=2))
    await _wait_replayed(pg_dsn, standby)
    read_dsn = make_conninfo(standby, user="ganzhi_reader_test")
    app_settings = settings(pg_dsn)
    app_settings = app_settings.model_copy(update={"db": app_settings.db.model_copy(
        update={"read_dsn": SecretStr(read_dsn)})})
    url = "/api/v1/devices/site-1/dev-1/readings"
    params = {"resolution": "raw", "from": (now - timedelta(hours=1)).isoformat()}

    async def values(client: Any) -> list[float]:
        r = await client.get(url, params=params)
        assert r.status_code == 200, r.text
        return [p["value"] for p in r.json()["points"]]

    async with api_client(app_settings, token) as client:
        assert await values(client) == [4.0]
        # Replay paused on the standby: a reading stored on the primary is not seen by
        # the route until replay goes on, so the route reads the standby.
        with psycopg.connect(_on(replica, pg_dsn), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        insert(5.0, now - timedelta(minutes=1))
        assert await values(client) == [4.0]
        with psycopg.connect(_on(replica, pg_dsn), autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
        await _wait_replayed(pg_dsn, standby)
        assert await values(client) == [4.0, 5.0]
        # Statistics read there too; actions go to the primary.
        r = await client.get("/api/v1/stats/overview")
        assert r.status_code == 200, r.text
        health = await client.get("/healthz")
        assert health.status_code == 200
