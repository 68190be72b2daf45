"""Database roles of least privilege, granted by every ``ganzhi migrate``.

* ``ganzhi_api``: the API. Reads what the console and the task system read; writes only
  what its routes change (alert and incident handling, clue feedback, silences, the
  registry, accounts and keys, the audit log). No readings, rollups or stream state
  written, no DDL.
* ``ganzhi_reader``: read-only; the console's heavy reads, typically on a read replica
  (``GANZHI_DB__READ_DSN``). No credentials tables (password and key hashes, tokens).

Both are group roles (``NOLOGIN``): give each service its own login role in the group,
e.g. ``CREATE ROLE console_api LOGIN PASSWORD '…' IN ROLE ganzhi_api``. The migrating role
creates the groups if it may (``CREATEROLE``); otherwise a DBA creates them once and
migrate only grants. Grants are re-applied on every migrate, so a new table is covered
as soon as it exists. The stream, ingest and alerts services use the owner role.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ganzhi.observability import get_logger

log = get_logger("db")

API = "ganzhi_api"
READER = "ganzhi_reader"

# What the API writes, per table.
API_WRITES: dict[str, str] = {
    "alerts": "INSERT, UPDATE",
    "alert_events": "INSERT",
    "incidents": "INSERT, UPDATE",
    "incident_history": "INSERT",
    "clue_outbox": "INSERT, UPDATE",
    "clue_deliveries": "INSERT",
    "clue_feedback": "INSERT, UPDATE",
    "silences": "INSERT, UPDATE",
    "audit_log": "INSERT",
    "users": "INSERT, UPDATE",
    "refresh_tokens": "INSERT, UPDATE",
    "login_failures": "INSERT, UPDATE, DELETE",
    "api_keys": "INSERT, UPDATE",
    "jurisdictions": "INSERT, UPDATE, DELETE",
    "sites": "INSERT, UPDATE, DELETE",
    "devices": "INSERT, UPDATE, DELETE",
}
# Not even read by the API: the stream's own bookkeeping (readers use the rollup views).
API_NO_READ = frozenset({"stream_state", "stream_partitions", "stream_messages",
                         "rollup_deltas", "rollups_1m", "rollups_1h", "schema_migrations",
                         "schema_flavour"})
# Credentials: never readable on the replica role.
SECRET_TABLES = frozenset({"users", "refresh_tokens", "login_failures", "api_keys"})


def _relations(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables and views of the schema (partitions and TimescaleDB's internals are not:
    privileges on a parent cover queries through it)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm')"
        " AND NOT c.relispartition ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows]


def _ensure_role(conn: psycopg.Connection[Any], role: str) -> bool:
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        return True
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    except psycopg.errors.DuplicateObject:  # another database's migrate, just now
        return True
    except psycopg.errors.InsufficientPrivilege:
        log.warning("db_role_missing", role=role,
                    reason=f"the migrating role may not create roles: a DBA runs "
                           f"CREATE ROLE {role} NOLOGIN once, and the next migrate grants")
        return False
    return True


def apply_grants(conn: psycopg.Connection[Any]) -> list[str]:
    """Create the group roles if allowed and grant them; returns the roles granted."""
    granted = []
    rels = _relations(conn)
    db = conn.info.dbname
    for role, readable, writes in (
        (API, [r for r in rels if r not in API_NO_READ], API_WRITES),
        (READER, [r for r in rels if r not in API_NO_READ | SECRET_TABLES], {}),
    ):
        if not _ensure_role(conn, role):
            continue
        ident = sql.Identifier(role)
        with conn.transaction():
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(db), ident))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
            conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(
                ident))
            conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}")
                         .format(ident))
            if readable:
                conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, readable)), ident))
            for table, privileges in writes.items():
                if table in rels:
                    conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(
                        sql.SQL(privileges), sql.Identifier(table), ident))
            if writes:
                conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}")
                             .format(ident))
        granted.append(role)
    return granted
