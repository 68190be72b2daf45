"""Shared fixtures: real Mosquitto, Tansu (Kafka protocol) and PostgreSQL on free ports.

PostgreSQL is one throwaway cluster per test session with a fresh, migrated database per
test; Mosquitto and Tansu are cheap to start, so each test that asks gets its own.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ganzhi.db.migrate import migrate
from ganzhi.stack.infra import (
    Managed,
    create_database,
    start_mosquitto,
    start_postgres,
    start_tansu,
)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Managed]:
    root = Path(tempfile.mkdtemp(prefix="ganzhi-test-pg-"))
    part = start_postgres(root / "data", fast_unsafe=True)
    yield part
    part.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: Managed) -> str:
    """DSN of a fresh database with every migration applied."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    create_database(pg_server.extra["admin_dsn"], name)
    dsn = pg_server.extra["admin_dsn"].rsplit("/", 1)[0] + f"/{name}"
    migrate(dsn)
    return dsn


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Managed]:
    part = start_mosquitto(tmp_path / "mosquitto")
    yield part
    part.stop()


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[Managed]:
    part = start_tansu(tmp_path)
    yield part
    part.stop()


@pytest.fixture
def kafka_bootstrap(tansu: Managed) -> str:
    return f"{tansu.host}:{tansu.port}"
