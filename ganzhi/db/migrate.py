"""Apply the SQL migrations in ``migrations/`` in name order, each once, recorded.

Each file runs in its own transaction together with its row in ``schema_migrations``;
an advisory lock lets several services start at once. A file changed after it was
applied is an error, not silently skipped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_ID = 0x67616E7A  # "ganz"


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [Migration(p.name, p.read_text()) for p in sorted(directory.glob("*.sql"))]


def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Bring the database up to date; returns the names of the migrations applied now."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = conn.execute("SELECT name, checksum FROM schema_migrations").fetchall()
            done: dict[str, str] = {str(name): str(checksum) for name, checksum in rows}
            for m in load_migrations(directory):
                if m.name in done:
                    if done[m.name] != m.checksum:
                        raise RuntimeError(f"migration {m.name} changed after it was applied")
                    continue
                with conn.transaction():
                    conn.execute(m.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                        (m.name, m.checksum),
                    )
                applied_now.append(m.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


def has_timescaledb(conn: psycopg.Connection[object]) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None
