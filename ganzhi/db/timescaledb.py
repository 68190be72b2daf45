"""TimescaleDB: whether a database gets it, and the project's only TimescaleDB calls.

A database has one *flavour*, chosen by its first ``ganzhi migrate`` and recorded in
``schema_flavour``: ``timescaledb`` or ``postgresql``. The TimescaleDB flavour applies
``migrations/timescaledb/<name>.sql`` instead of ``migrations/<name>.sql`` wherever such a
variant exists: ``readings`` and ``stream_messages`` as hypertables with compression and
retention policies, the one-minute and one-hour rollups as real-time continuous
aggregates. Every TimescaleDB statement of the project is in those files or in this
module; the rest of the code works on both flavours.

The TimescaleDB flavour is chosen only where it can work (:func:`choose`): the extension
package installed in a supported version *and* preloaded, or already created in the
database (a managed service's way; it loads there without the preload setting). A
package installed but not in ``shared_preload_libraries`` (``CREATE EXTENSION`` would
fail) or of an unsupported version gives the plain flavour with a warning;
``GANZHI_DB__TIMESCALEDB=on`` makes that an error instead, ``off`` never uses it. A
database keeps its flavour: switching means a new database and a restore of the data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

Flavour = Literal["postgresql", "timescaledb"]
Wanted = Literal["auto", "on", "off"]

# Supported TimescaleDB versions: [SUPPORTED_FROM, SUPPORTED_BEFORE). 2.13 is the first
# line with every call the migrations make in its current form; 2.28.x is the last line
# built for PostgreSQL 15 (newer lines need PostgreSQL 16 or later).
SUPPORTED_FROM = (2, 13)
SUPPORTED_BEFORE = (3, 0)
LAST_FOR_PG15 = (2, 28)

HYPERTABLES = ("readings", "stream_messages")
# TimescaleDB 2.28.x on PostgreSQL 15.20 and later: policy jobs do their work, then log this
# and are marked failed (an upstream issue); `db check` does not count it as a failure.
KNOWN_PORTAL_ERROR = "cannot drop portal while it is being set up"
KNOWN_PORTAL_ERROR_FROM = 150020
CAGGS = ("rollups_1m_cagg", "rollups_1h_cagg")


class TimescaleError(RuntimeError):
    """The wanted flavour is impossible on this database, with the reason."""


@dataclass(frozen=True)
class Probe:
    """What a database says about TimescaleDB and about its own past."""

    server_version: int  # server_version_num, e.g. 150008
    available: str | None  # the extension package's default version, if installed
    installed: str | None  # the extension's version in this database, if created
    preloaded: bool  # 'timescaledb' in shared_preload_libraries
    recorded: Flavour | None  # the flavour an earlier migrate chose
    readings: Literal["partitioned", "plain", "absent"]  # what `readings` is now


@dataclass(frozen=True)
class Choice:
    flavour: Flavour
    warning: str | None = None


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def preloaded(shared_preload_libraries: str) -> bool:
    """Whether the setting's list names timescaledb (bare, quoted or with a path)."""
    for item in shared_preload_libraries.split(","):
        name = item.strip().strip('"').rsplit("/", 1)[-1]
        if name == "timescaledb":
            return True
    return False


def unusable(p: Probe) -> str | None:
    """Why the TimescaleDB flavour cannot be used here, or None if it can."""
    if p.available is None:
        return "the timescaledb extension is not installed on the server"
    version = p.installed or p.available  # the one in the database, once created
    v = version_tuple(version)
    if not SUPPORTED_FROM <= v[:2] < SUPPORTED_BEFORE:
        return (f"timescaledb {version} is not supported (supported: "
                f"{'.'.join(map(str, SUPPORTED_FROM))} to before "
                f"{'.'.join(map(str, SUPPORTED_BEFORE))})")
    if not p.preloaded and p.installed is None:
        # Created in this database already shows it loads (a managed service, or a
        # build that links it in); otherwise the preload is what CREATE EXTENSION needs.
        return ("timescaledb is installed but not in shared_preload_libraries, so "
                "CREATE EXTENSION would fail; add it and restart PostgreSQL before the "
                "first migrate to use it")
    return None


def choose(p: Probe, wanted: Wanted = "auto") -> Choice:
    """The flavour to migrate with. Raises :class:`TimescaleError` where ``wanted`` cannot
    be had or the database's recorded flavour cannot go on."""
    recorded = p.recorded
    if recorded is None and p.readings != "absent":
        # Migrated before flavours were recorded: what `readings` is says which.
        recorded = "postgresql" if p.readings == "partitioned" else "timescaledb"
    if recorded is not None:
        if recorded == "timescaledb" and p.installed is None:
            raise TimescaleError("the database was migrated with TimescaleDB, but the "
                                 "extension is not in it now")
        if wanted == "on" and recorded == "postgresql":
            raise TimescaleError("the database was migrated on plain PostgreSQL and keeps "
                                 "that flavour: migrate a new database and restore into it")
        if wanted == "off" and recorded == "timescaledb":
            raise TimescaleError("the database was migrated with TimescaleDB and keeps it")
        return Choice(recorded)
    if wanted == "off":
        return Choice("postgresql")
    reason = unusable(p)
    if reason is None:
        return Choice("timescaledb")
    if wanted == "on":
        raise TimescaleError(f"GANZHI_DB__TIMESCALEDB=on, but {reason}")
    # Not installed at all is the ordinary plain path; installed but unusable is worth
    # a warning (someone meant to use it).
    return Choice("postgresql", None if p.available is None else reason)


def probe(conn: psycopg.Connection[Any]) -> Probe:
    def one(query: str) -> Any:
        row = conn.execute(query).fetchone()
        return None if row is None else row[0]

    recorded = None
    if one("SELECT to_regclass('schema_flavour')") is not None:
        recorded = one("SELECT flavour FROM schema_flavour")
    kind = one("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
               " WHERE c.relname = 'readings' AND n.nspname = current_schema()")
    return Probe(
        server_version=int(one("SHOW server_version_num")),
        available=one("SELECT default_version FROM pg_available_extensions"
                      " WHERE name = 'timescaledb'"),
        installed=one("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"),
        preloaded=preloaded(str(one("SHOW shared_preload_libraries") or "")),
        recorded=recorded,
        readings="absent" if kind is None else "partitioned" if kind == "p" else "plain",
    )


def flavour_of(conn: psycopg.Connection[Any]) -> Flavour:
    """The flavour of a migrated database."""
    return choose(probe(conn)).flavour


# --- the TimescaleDB calls outside migrations ---------------------------------------


def set_retention(conn: psycopg.Connection[Any], days: int) -> None:
    """Raw readings and message ids kept ``days`` days (the hypertables' policies)."""
    for table in HYPERTABLES:
        conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (table,))
        conn.execute("SELECT add_retention_policy(%s, make_interval(days => %s))",
                     (table, days))


def pre_restore(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    conn.execute("SELECT timescaledb_pre_restore()")


def post_restore(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT timescaledb_post_restore()")


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str


def check_timescaledb(conn: psycopg.Connection[Any]) -> list[Finding]:
    """What ``ganzhi db check`` verifies on the TimescaleDB flavour: hypertables and their
    chunks, compression, the continuous aggregates (real-time, refreshed by a policy that
    ran), and the policy jobs (none failing). Needs a TimescaleDB server."""
    out: list[Finding] = []
    tables = {str(r[0]): (int(r[1]), bool(r[2])) for r in conn.execute(
        "SELECT hypertable_name, num_chunks, compression_enabled"
        " FROM timescaledb_information.hypertables").fetchall()}
    for table in HYPERTABLES:
        if table not in tables:
            out.append(Finding(False, f"{table} is not a hypertable"))
            continue
        chunks, compressed = tables[table]
        n_comp = conn.execute(
            "SELECT count(*) FILTER (WHERE is_compressed) FROM timescaledb_information.chunks"
            " WHERE hypertable_name = %s", (table,)).fetchone()
        out.append(Finding(True, f"{table} is a hypertable with {chunks} chunks"
                           f" ({n_comp[0] if n_comp else 0} compressed)"))
        if table == "readings":
            out.append(Finding(compressed, "readings compression "
                               + ("enabled" if compressed else "NOT enabled")))
    caggs = {str(r[0]): bool(r[1]) for r in conn.execute(
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
    ).fetchall()}
    for view in CAGGS:
        if view not in caggs:
            out.append(Finding(False, f"{view} is not a continuous aggregate"))
        else:
            out.append(Finding(not caggs[view], f"{view} is a continuous aggregate, "
                               + ("real-time" if not caggs[view] else "NOT real-time")))
    out += _check_refreshed(conn)
    jobs = conn.execute(
        "SELECT j.job_id, j.proc_name, coalesce(j.hypertable_name, ''), s.last_run_status,"
        " coalesce(s.total_failures, 0), s.last_successful_finish"
        " FROM timescaledb_information.jobs j"
        " LEFT JOIN timescaledb_information.job_stats s USING (job_id)"
        " WHERE j.proc_name LIKE 'policy_%'").fetchall()
    cagg_tables = dict(conn.execute(
        "SELECT materialization_hypertable_name, view_name"
        " FROM timescaledb_information.continuous_aggregates").fetchall())
    wanted = {("policy_compression", "readings"), ("policy_retention", "readings"),
              ("policy_retention", "stream_messages")}
    wanted |= {(proc, v) for v in CAGGS
               for proc in ("policy_refresh_continuous_aggregate", "policy_compression")}
    seen: set[tuple[str, str]] = set()
    server = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
    for job_id, proc, table, status, failures, last_ok in jobs:
        name = str(cagg_tables.get(table, table))
        seen.add((str(proc), name))
        ok = status in (None, "Success")
        ran = f"last run {status}, last success {last_ok}" if status else "not run yet"
        if not ok and server >= KNOWN_PORTAL_ERROR_FROM:
            err = conn.execute(
                "SELECT err_message FROM timescaledb_information.job_errors"
                " WHERE job_id = %s ORDER BY start_time DESC LIMIT 1", (job_id,)).fetchone()
            if err and KNOWN_PORTAL_ERROR in str(err[0]):
                ok = True
                ran += (" (the known TimescaleDB 2.28 error on PostgreSQL 15.20+: the job's"
                        " work is done, it is marked failed)")
        where = f" on {name}" if name else ""  # TimescaleDB's own jobs have no table
        out.append(Finding(ok, f"{proc}{where}: {ran}, {failures} failures"))
    for proc, name in sorted(wanted - seen):
        out.append(Finding(False, f"no {proc} job for {name}"))
    return out


_WATERMARKS = """
SELECT ca.view_name,
       CASE WHEN w.mark > '2000-01-01' THEN w.mark END,
       coalesce((j.config->>'end_offset')::interval, interval '1 hour')
         + 2 * coalesce(j.schedule_interval, interval '15 minutes')
FROM timescaledb_information.continuous_aggregates ca
JOIN _timescaledb_catalog.hypertable h
  ON h.schema_name = ca.materialization_hypertable_schema
 AND h.table_name = ca.materialization_hypertable_name
CROSS JOIN LATERAL (SELECT _timescaledb_functions.to_timestamp(
                      _timescaledb_functions.cagg_watermark(h.id)) AS mark) w
LEFT JOIN timescaledb_information.jobs j
  ON j.proc_name = 'policy_refresh_continuous_aggregate'
 AND (j.config->>'mat_hypertable_id')::integer = h.id
ORDER BY 1
"""


def _check_refreshed(conn: psycopg.Connection[Any]) -> list[Finding]:
    """Each aggregate materialized up to its watermark, and no reading older than the
    refresh policy's reach (its end offset plus two runs) still waiting past it: the
    refresh jobs run. Real-time reads stay correct either way; they get slower."""
    out: list[Finding] = []
    for view, mark, allowed in conn.execute(_WATERMARKS).fetchall():
        late = conn.execute(
            "SELECT count(*) FROM readings WHERE time >= coalesce(%s::timestamptz, '-infinity')"
            " AND time < now() - %s", (mark, allowed)).fetchone()
        n = int(late[0]) if late else 0
        where = f"materialized up to {mark:%Y-%m-%d %H:%M}" if mark else "not materialized yet"
        out.append(Finding(n == 0, f"{view} {where}" + (
            "" if n == 0 else f", but {n} readings older than {allowed} are not in it:"
                              " is its refresh policy running?")))
    return out
