"""Apply the SQL migrations in ``migrations/`` in name order, each once, recorded.

Each file runs in its own transaction together with its row in ``schema_migrations``;
an advisory lock lets several services start at once. A file changed after it was
applied is an error, not silently skipped.

The first migrate of a database chooses its flavour (:mod:`ganzhi.db.timescaledb`) and
records it in ``schema_flavour``; on the TimescaleDB flavour a file of
``migrations/timescaledb/`` replaces the plain file of the same name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ganzhi.db import roles, timescaledb
from ganzhi.db.timescaledb import Choice, Flavour, Wanted
from ganzhi.observability import get_logger

log = get_logger("db")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_ID = 0x67616E7A  # "ganz"

# Files edited after release in a way that does not change what they did on a database
# already migrated (the TimescaleDB branch moved to migrations/timescaledb/): their
# earlier checksums are accepted too.
EQUIVALENT: dict[str, frozenset[str]] = {
    "0001_readings.sql": frozenset(
        {"89baa309cbde177f00b932a5d830b2abcfcd13eff20fca6e5f6757a29b8688d9"}),
    "0014_message_dedupe.sql": frozenset(
        {"aa9441d4efe4bc28c8323ed4c3a5c55fee4df415b9e0ac73b260b6a7c6a4ce74"}),
}


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR,
                    flavour: Flavour = "postgresql") -> list[Migration]:
    """The migrations in name order; on TimescaleDB each file's variant where it has one."""
    variants = directory / "timescaledb"
    out = []
    for p in sorted(directory.glob("*.sql")):
        if flavour == "timescaledb" and (variants / p.name).is_file():
            p = variants / p.name
        out.append(Migration(p.name, p.read_text()))
    return out


@dataclass(frozen=True)
class MigrateReport:
    applied: list[str]
    flavour: Flavour
    warning: str | None  # why TimescaleDB was not used although installed


def migrate(dsn: str, directory: Path = MIGRATIONS_DIR, timescale: Wanted = "auto"
            ) -> list[str]:
    """Bring the database up to date; returns the names of the migrations applied now."""
    return migrate_report(dsn, directory, timescale).applied


def _choose_flavour(conn: psycopg.Connection[Any], wanted: Wanted) -> Choice:
    choice = timescaledb.choose(timescaledb.probe(conn), wanted)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_flavour ("
        " one boolean PRIMARY KEY DEFAULT true CHECK (one),"
        " flavour text NOT NULL CHECK (flavour IN ('postgresql', 'timescaledb')),"
        " chosen_at timestamptz NOT NULL DEFAULT now())")
    conn.execute("INSERT INTO schema_flavour (flavour) VALUES (%s) ON CONFLICT DO NOTHING",
                 (choice.flavour,))
    if choice.warning:
        log.warning("timescaledb_not_used", reason=choice.warning)
    return choice


def migrate_report(dsn: str, directory: Path = MIGRATIONS_DIR, timescale: Wanted = "auto"
                   ) -> MigrateReport:
    """:func:`migrate`, also saying the database's flavour and any warning."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            choice = _choose_flavour(conn, timescale)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = conn.execute("SELECT name, checksum FROM schema_migrations").fetchall()
            done: dict[str, str] = {str(name): str(checksum) for name, checksum in rows}
            for m in load_migrations(directory, choice.flavour):
                if m.name in done:
                    if (done[m.name] != m.checksum
                            and done[m.name] not in EQUIVALENT.get(m.name, ())):
                        raise RuntimeError(f"migration {m.name} changed after it was applied")
                    continue
                with conn.transaction():
                    conn.execute(m.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                        (m.name, m.checksum),
                    )
                applied_now.append(m.name)
            roles.apply_grants(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return MigrateReport(applied_now, choice.flavour, choice.warning)
