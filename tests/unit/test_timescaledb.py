"""The TimescaleDB flavour without a TimescaleDB server: the choice of flavour, and the
variant migrations checked by PostgreSQL's own parser (pglast) and against the plain ones.
The plain flavour is what the integration tests run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pglast import parse_sql
from pglast.stream import RawStream

from ganzhi.db.migrate import MIGRATIONS_DIR, load_migrations
from ganzhi.db.timescaledb import Probe, TimescaleError, choose, preloaded, unusable

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = MIGRATIONS_DIR / "timescaledb"


def probe(**kw: Any) -> Probe:
    base: dict[str, Any] = {"server_version": 150008, "available": "2.17.2",
                            "installed": None, "preloaded": True, "recorded": None,
                            "readings": "absent"}
    return Probe(**{**base, **kw})


def test_a_fresh_database_gets_timescaledb_only_where_it_works() -> None:
    assert choose(probe()).flavour == "timescaledb"
    assert choose(probe(available=None)) == choose(probe(available=None), "auto")
    plain = choose(probe(available=None))
    assert (plain.flavour, plain.warning) == ("postgresql", None)  # the ordinary case
    not_preloaded = choose(probe(preloaded=False))
    assert not_preloaded.flavour == "postgresql"
    assert "shared_preload_libraries" in str(not_preloaded.warning)
    too_old = choose(probe(available="2.11.0"))
    assert too_old.flavour == "postgresql" and "not supported" in str(too_old.warning)
    assert choose(probe(available="2.28.1")).flavour == "timescaledb"
    assert choose(probe(available="3.0.0")).flavour == "postgresql"
    assert choose(probe(), "off") .flavour == "postgresql"
    # Already created in the database: it loads, whatever the preload setting says.
    assert choose(probe(preloaded=False, installed="2.23.0-dev")).flavour == "timescaledb"
    old_in_db = choose(probe(installed="2.11.0", available="2.17.2"))
    assert old_in_db.flavour == "postgresql" and "2.11.0" in str(old_in_db.warning)


def test_on_is_an_error_where_timescaledb_cannot_be_used() -> None:
    for p in (probe(available=None), probe(preloaded=False), probe(available="2.9.0")):
        with pytest.raises(TimescaleError, match="GANZHI_DB__TIMESCALEDB=on, but"):
            choose(p, "on")
    assert choose(probe(), "on").flavour == "timescaledb"


def test_a_database_keeps_its_flavour() -> None:
    assert choose(probe(recorded="postgresql")).flavour == "postgresql"  # TS installed later
    assert choose(probe(recorded="timescaledb", installed="2.17.2")).flavour == "timescaledb"
    with pytest.raises(TimescaleError, match="extension is not in it"):
        choose(probe(recorded="timescaledb", installed=None))
    with pytest.raises(TimescaleError, match="keeps that flavour"):
        choose(probe(recorded="postgresql"), "on")
    with pytest.raises(TimescaleError, match="keeps it"):
        choose(probe(recorded="timescaledb", installed="2.17.2"), "off")
    # Migrated before flavours were recorded: what readings is tells.
    assert choose(probe(readings="partitioned")).flavour == "postgresql"
    assert choose(probe(readings="plain", installed="2.17.2")).flavour == "timescaledb"


@pytest.mark.parametrize(("setting", "expected"), [
    ("timescaledb", True), ("pg_stat_statements, timescaledb", True),
    ('"timescaledb"', True), ("$libdir/timescaledb", True), ("", False),
    ("timescaledb_toolkit", False), ("pg_stat_statements", False),
])
def test_preload_setting_parsing(setting: str, expected: bool) -> None:
    assert preloaded(setting) is expected


def test_unusable_says_nothing_when_usable() -> None:
    assert unusable(probe()) is None


def test_every_variant_replaces_a_plain_migration_and_parses() -> None:
    variants = sorted(VARIANTS.glob("*.sql"))
    assert variants, "no TimescaleDB variants"
    for v in variants:
        assert (MIGRATIONS_DIR / v.name).is_file(), f"{v.name} has no plain migration"
        assert parse_sql(v.read_text()), v.name  # PostgreSQL's grammar (libpg_query)
    names = [m.name for m in load_migrations(MIGRATIONS_DIR, "timescaledb")]
    assert names == [m.name for m in load_migrations(MIGRATIONS_DIR, "postgresql")]
    texts = {m.name: m.sql for m in load_migrations(MIGRATIONS_DIR, "timescaledb")}
    assert "create_hypertable" in texts["0001_readings.sql"]


def _columns(sql: str, table: str) -> list[str]:
    """The column definitions of ``CREATE TABLE table`` in ``sql``, normalised."""
    for raw in parse_sql(sql):
        stmt = raw.stmt
        if type(stmt).__name__ == "CreateStmt" and stmt.relation.relname == table:
            return [RawStream()(elt) for elt in stmt.tableElts
                    if type(elt).__name__ == "ColumnDef"]
    raise AssertionError(f"no CREATE TABLE {table}")


@pytest.mark.parametrize(("name", "table"), [("0001_readings.sql", "readings"),
                                             ("0014_message_dedupe.sql", "stream_messages")])
def test_variants_make_the_same_columns(name: str, table: str) -> None:
    plain = _columns((MIGRATIONS_DIR / name).read_text(), table)
    variant = _columns((VARIANTS / name).read_text(), table)
    assert plain == variant


def test_the_aggregates_keep_the_columns_readers_read() -> None:
    """rollups_1m_live / rollups_1h_live: the same column names on both flavours."""
    def view_columns(sql: str, view: str) -> list[str]:
        for raw in parse_sql(sql):
            stmt = raw.stmt
            if type(stmt).__name__ == "ViewStmt" and stmt.view.relname == view:
                return [t.name or RawStream()(t.val).rsplit(".", 1)[-1]
                        for t in stmt.query.targetList]
        raise AssertionError(f"no view {view}")

    plain = (MIGRATIONS_DIR / "0015_rollup_deltas.sql").read_text()
    variant = (VARIANTS / "0017_continuous_aggregates.sql").read_text()
    for view in ("rollups_1m_live", "rollups_1h_live"):
        assert view_columns(plain, view) == view_columns(variant, view)


# The project's code (not build outputs, the venv, tests or docs).
CODE_DIRS = ("ganzhi", "edge", "ingest", "stream", "alerts", "api", "vision", "deploy")
_TIMESCALE_CALL = re.compile(
    r"create_hypertable|add_(compression|retention|continuous_aggregate)_policy"
    r"|remove_retention_policy|timescaledb\.(continuous|compress)|time_bucket\("
    r"|timescaledb_(pre|post)_restore|CREATE EXTENSION[^;]*timescaledb", re.IGNORECASE)


def test_every_timescaledb_statement_is_in_one_place() -> None:
    allowed = {ROOT / "ganzhi/db/timescaledb.py"}
    found = []
    code = [p for d in CODE_DIRS for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".sql")]
    assert len(code) > 100
    for path in code:
        rel = path.relative_to(ROOT)
        if path in allowed:
            continue
        if VARIANTS in path.parents:
            continue
        if _TIMESCALE_CALL.search(path.read_text(errors="replace")):
            found.append(str(rel))
    assert found == []
