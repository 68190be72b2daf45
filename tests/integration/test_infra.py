"""The stack starters bring up real, usable parts."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg

from ganzhi.stack.infra import Managed, port_open, start_postgres


def test_postgres_fixture_is_migrated(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names[0] == "0001_readings.sql"
    assert "0003_alerts.sql" in names


def test_brokers_listen_and_stop(mqtt_broker: Managed, tansu: Managed) -> None:
    assert port_open(mqtt_broker.host, mqtt_broker.port)
    assert port_open(tansu.host, tansu.port)
    tansu.stop()
    assert not port_open(tansu.host, tansu.port)


def test_the_stack_never_takes_a_port_someone_else_listens_on() -> None:
    import socket

    from ganzhi.stack.infra import free_port
    from ganzhi.stack.system import Ports

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        free = free_port()
        ports = Ports.choose({"mqtt": busy, "kafka": free})
    assert ports.mqtt != busy  # a broker it did not start is never reused
    assert ports.kafka == free  # a free configured port is kept
    assert len(set(vars(ports).values())) == len(vars(ports))  # all distinct


def test_a_throwaway_cluster_lives_where_its_caller_removes_it(tmp_path: Path) -> None:
    """Run as root, 'postgres' cannot enter a 0700 temporary directory; the cluster must
    still go there (the directories opened to it), not to a /var/tmp directory that
    nobody removes once the benchmark or test is over."""
    root = Path(tempfile.mkdtemp(prefix="ganzhi-test-pg-", dir=tmp_path))
    assert oct(root.stat().st_mode & 0o777) == "0o700"
    pg = start_postgres(root / "data", fast_unsafe=True)
    try:
        assert (root / "data" / "PG_VERSION").is_file()
        with psycopg.connect(pg.extra["dsn"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pg.stop()
    shutil.rmtree(root)
    assert not root.exists()
