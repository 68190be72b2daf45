"""Backup and restore of the platform's database (``ganzhi backup`` / ``ganzhi restore``).

A backup is ``pg_dump``'s custom format: one file with the schema and the data of every
table (readings and their partitions, rollups, alerts, clues, accounts, rule-state
checkpoints, migrations applied), compressed, restorable table by table. The DSN's parts
go to the PostgreSQL tools as ``PG*`` environment variables, never on their command line
(where any local user could read the password).

A restore goes into an empty database (one with no ganzhi tables: refused otherwise), in
one transaction, then applies the migrations newer than the backup. A database with
TimescaleDB follows its documented procedure (:func:`ganzhi.db.timescaledb.pre_restore`
before, :func:`~ganzhi.db.timescaledb.post_restore` after); that path needs a TimescaleDB
server and was not run by the tests (docs/operations.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ganzhi.db import timescaledb
from ganzhi.db.migrate import migrate

# Connection parameters and the libpq environment variables that carry them.
_PG_ENV = {"host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "user": "PGUSER",
           "password": "PGPASSWORD", "dbname": "PGDATABASE", "sslmode": "PGSSLMODE",
           "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
           "passfile": "PGPASSFILE", "connect_timeout": "PGCONNECT_TIMEOUT",
           "application_name": "PGAPPNAME", "options": "PGOPTIONS"}


class BackupError(RuntimeError):
    """A backup or restore that did not happen, with the reason."""


@dataclass(frozen=True)
class BackupReport:
    path: Path
    bytes: int
    tables: int
    seconds: float


@dataclass(frozen=True)
class RestoreReport:
    tables: int
    readings: int
    migrations_applied: list[str]
    timescaledb: bool
    seconds: float


def pg_env(dsn: str) -> dict[str, str]:
    """The environment for a PostgreSQL tool connecting to ``dsn``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in conninfo_to_dict(dsn).items():
        if value is None:
            continue
        if key not in _PG_ENV:
            raise BackupError(f"connection parameter {key!r} is not supported here")
        env[_PG_ENV[key]] = str(value)
    return env


def pg_tool(name: str) -> str:
    """``pg_dump`` / ``pg_restore``: the newest server's own (matching or newer than the
    server is what pg_dump needs), else the one on PATH."""
    from ganzhi.stack.infra import InfraError, postgres_bindir

    try:
        candidate = postgres_bindir() / name
        if candidate.exists():
            return str(candidate)
    except InfraError:
        pass
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found (Debian: apt-get install postgresql-client)")
    return found


def _run(argv: list[str], env: dict[str, str]) -> str:
    res = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed: {res.stderr.strip()[-2000:]}")
    return res.stdout


def _tables_in(listing: str) -> int:
    return sum(1 for line in listing.splitlines()
               if re.search(r"\bTABLE DATA\b", line) and not line.startswith(";"))


def backup(dsn: str, path: Path) -> BackupReport:
    """Dump the database of ``dsn`` into ``path`` (custom format), written atomically."""
    started = time.perf_counter()
    env = pg_env(dsn)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    _run([pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
          f"--file={partial}"], env)
    listing = _run([pg_tool("pg_restore"), "--list", str(partial)], env)
    tables = _tables_in(listing)
    if tables == 0:
        partial.unlink(missing_ok=True)
        raise BackupError("the dump holds no table data: is this the platform's database?")
    partial.replace(path)
    return BackupReport(path, path.stat().st_size, tables, time.perf_counter() - started)


def restore(dsn: str, path: Path) -> RestoreReport:
    """Restore ``path`` into the (empty) database of ``dsn``, then migrate it."""
    started = time.perf_counter()
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    env = pg_env(dsn)
    listing = _run([pg_tool("pg_restore"), "--list", str(path)], env)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_name IN ('schema_migrations', 'readings', 'alerts')").fetchone()
        if row and row[0]:
            raise BackupError("the target database already holds ganzhi tables: restore "
                              "into a new, empty database (createdb), then point "
                              "GANZHI_DB__DSN at it")
        timescale = bool(re.search(r"\bEXTENSION\b.*\btimescaledb\b", listing))
        if timescale:
            timescaledb.pre_restore(conn)
    try:
        _run([pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
              "--single-transaction", f"--dbname={env.get('PGDATABASE', '')}", str(path)],
             env)
    finally:
        if timescale:
            with psycopg.connect(dsn, autocommit=True) as conn:
                timescaledb.post_restore(conn)
    applied = migrate(dsn)
    with psycopg.connect(dsn) as conn:
        readings = conn.execute("SELECT count(*) FROM readings").fetchone()
        ts = timescaledb.flavour_of(conn) == "timescaledb"
    return RestoreReport(_tables_in(listing), int(readings[0]) if readings else 0,
                         list(applied), ts, time.perf_counter() - started)
