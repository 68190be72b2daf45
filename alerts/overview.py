"""The console's figures from PostgreSQL: the overview's counts (by jurisdiction, by
type), the incidents a risk score is computed from (:mod:`alerts.risk`), and the daily
trend with its open hours. Every query carries the caller's :class:`Scope` in SQL.

An incident's **type** is the first part of its primary alert's rule id (its family
when it has no primary alert): ``cold_chain``, ``elevator``, ``vision``, ``device``, or
``other``. Days are UTC days.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from psycopg import AsyncConnection

from alerts.risk import (
    RiskIncident,
    RiskScore,
    contribution_sql,
    from_sums,
    unresolved_hours_sql,
)
from ganzhi.access import EVERYTHING, Scope

AnyConn = AsyncConnection[Any]
TYPES = ("cold_chain", "elevator", "vision", "device", "other")

# The primary alert's rule id is on the incident (incidents.rule_id, kept by 0013's
# triggers): no join with the alerts.
_RULE = "COALESCE(i.rule_id, i.family)"
TYPE_SQL = (f"CASE WHEN split_part({_RULE}, '.', 1) IN"
            f" ('cold_chain', 'elevator', 'vision', 'device')"
            f" THEN split_part({_RULE}, '.', 1) ELSE 'other' END")
# The same of a column ``rule``.
_TYPE_OF_RULE = ("CASE WHEN split_part(rule, '.', 1) IN"
                 " ('cold_chain', 'elevator', 'vision', 'device')"
                 " THEN split_part(rule, '.', 1) ELSE 'other' END")


@dataclass(frozen=True)
class Counts:
    open: int
    critical: int  # open and critical
    opened_24h: int


@dataclass(frozen=True)
class Totals:
    open: int
    open_critical: int
    opened_24h: int
    resolved_24h: int


@dataclass(frozen=True)
class NodeCounts:
    jurisdiction_id: str
    name: str
    path: str
    counts: Counts


@dataclass(frozen=True)
class SiteIncidents:
    """A site's incidents of the risk window, with what the risk table shows of it."""

    site_id: str
    name: str | None  # None: the site is not registered
    jurisdiction_id: str | None
    incidents: list[RiskIncident] = field(default_factory=list)


@dataclass(frozen=True)
class SiteRisk:
    """A site's risk score of the window, with what the risk table shows of it."""

    site_id: str
    name: str | None  # None: the site is not registered
    jurisdiction_id: str | None
    risk: RiskScore


@dataclass(frozen=True)
class Day:
    day: date
    opened: int
    critical: int
    by_type: dict[str, int]
    open_hours: float

    @property
    def compliance(self) -> float:
        """The share of the day without an open incident, 0..1."""
        return round(min(max(1.0 - self.open_hours / 24.0, 0.0), 1.0), 4)


async def totals(conn: AnyConn, scope: Scope, now: datetime) -> Totals:
    """Open incidents (and critical ones) now; opened and resolved in the last 24 h."""
    cond, params = scope.site_filter("i.site_id")
    day_ago = now - timedelta(hours=24)
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE i.status = 'open'),"
        " count(*) FILTER (WHERE i.status = 'open' AND i.severity = 'critical'),"
        " count(*) FILTER (WHERE i.opened_at >= %s),"
        " count(*) FILTER (WHERE i.resolved_at >= %s)"
        " FROM incidents i WHERE (i.status = 'open' OR i.opened_at >= %s"
        f" OR i.resolved_at >= %s) AND {cond}",
        [day_ago, day_ago, day_ago, day_ago, *params])
    row = await cur.fetchone()
    assert row is not None
    return Totals(*row)


async def by_type(conn: AnyConn, scope: Scope, now: datetime) -> dict[str, Counts]:
    """Every type (zeros included): open, open critical, opened in the last 24 h."""
    cond, params = scope.site_filter("i.site_id")
    day_ago = now - timedelta(hours=24)
    cur = await conn.execute(
        f"SELECT {TYPE_SQL} AS type, count(*) FILTER (WHERE i.status = 'open'),"
        " count(*) FILTER (WHERE i.status = 'open' AND i.severity = 'critical'),"
        " count(*) FILTER (WHERE i.opened_at >= %s)"
        " FROM incidents i"
        f" WHERE (i.status = 'open' OR i.opened_at >= %s) AND {cond} GROUP BY 1",
        [day_ago, day_ago, *params])
    found = {r[0]: Counts(r[1], r[2], r[3]) for r in await cur.fetchall()}
    return {t: found.get(t, Counts(0, 0, 0)) for t in TYPES}


async def overview_counts(conn: AnyConn, scope: Scope, now: datetime
                          ) -> tuple[Totals, list[NodeCounts], dict[str, Counts]]:
    """:func:`totals`, :func:`by_jurisdiction` and :func:`by_type` from one pass over the
    incidents open now or opened or resolved in the last 24 h: counted per site and type
    once, then summed per type, per breakdown node and in all."""
    nodes = await _breakdown_nodes(conn, scope)
    cond, params = scope.site_filter("i.site_id")
    day_ago = now - timedelta(hours=24)
    cur = await conn.execute(
        "WITH c AS MATERIALIZED ("
        f"  SELECT i.site_id, {TYPE_SQL} AS type,"
        "   count(*) FILTER (WHERE i.status = 'open') AS open,"
        "   count(*) FILTER (WHERE i.status = 'open' AND i.severity = 'critical') AS crit,"
        "   count(*) FILTER (WHERE i.opened_at >= %s) AS opened,"
        "   count(*) FILTER (WHERE i.resolved_at >= %s) AS resolved"
        "  FROM incidents i WHERE (i.status = 'open' OR i.opened_at >= %s"
        f"  OR i.resolved_at >= %s) AND {cond} GROUP BY 1, 2)"
        " SELECT 't', type, sum(open), sum(crit), sum(opened), sum(resolved)"
        " FROM c GROUP BY type"
        " UNION ALL"
        " SELECT 'n', n.id, sum(c.open), sum(c.crit), sum(c.opened), 0"
        " FROM jurisdictions n"
        " JOIN jurisdictions j ON starts_with(j.path, n.path)"
        " JOIN sites s ON s.jurisdiction_id = j.id JOIN c ON c.site_id = s.id"
        " WHERE n.id = ANY(%s) GROUP BY n.id",
        [day_ago, day_ago, day_ago, day_ago, *params, [n[0] for n in nodes]])
    types: dict[str, Counts] = {}
    node_counts: dict[str, Counts] = {}
    resolved = 0
    for kind, key, n_open, n_crit, n_opened, n_resolved in await cur.fetchall():
        counts = Counts(int(n_open), int(n_crit), int(n_opened))
        if kind == "t":
            types[key] = counts
            resolved += int(n_resolved)
        else:
            node_counts[key] = counts
    total = Totals(sum(c.open for c in types.values()),
                   sum(c.critical for c in types.values()),
                   sum(c.opened_24h for c in types.values()), resolved)
    zero = Counts(0, 0, 0)
    return (total,
            [NodeCounts(i, name, path, node_counts.get(i, zero)) for i, name, path in nodes],
            {t: types.get(t, zero) for t in TYPES})


async def _breakdown_nodes(conn: AnyConn, scope: Scope) -> list[tuple[str, str, str]]:
    """The nodes the overview breaks the caller's incidents down by: the children of the
    caller's node (of the root nodes, for a caller without a node path), or that node
    itself (the roots) when it has none."""
    if scope.path is not None:
        children = ("SELECT c.id, c.name, c.path FROM jurisdictions c JOIN jurisdictions p"
                    " ON p.id = c.parent_id WHERE p.path = %s ORDER BY c.path")
        itself = "SELECT id, name, path FROM jurisdictions WHERE path = %s"
        params: list[Any] = [scope.path]
    else:
        children = ("SELECT c.id, c.name, c.path FROM jurisdictions c JOIN jurisdictions p"
                    " ON p.id = c.parent_id WHERE p.parent_id IS NULL ORDER BY c.path")
        itself = ("SELECT id, name, path FROM jurisdictions WHERE parent_id IS NULL"
                  " ORDER BY path")
        params = []
    for sql in (children, itself):
        cur = await conn.execute(sql, params)
        rows = await cur.fetchall()
        if rows:
            return [(r[0], r[1], r[2]) for r in rows]
    return []


async def by_jurisdiction(conn: AnyConn, scope: Scope, now: datetime) -> list[NodeCounts]:
    """Per breakdown node: its subtree's open, open critical, and opened in 24 h."""
    nodes = await _breakdown_nodes(conn, scope)
    if not nodes:
        return []
    cond, params = scope.site_filter("i.site_id")
    day_ago = now - timedelta(hours=24)
    cur = await conn.execute(
        "SELECT n.id, count(i.id) FILTER (WHERE i.status = 'open'),"
        " count(i.id) FILTER (WHERE i.status = 'open' AND i.severity = 'critical'),"
        " count(i.id) FILTER (WHERE i.opened_at >= %s)"
        " FROM jurisdictions n"
        " LEFT JOIN (jurisdictions j JOIN sites s ON s.jurisdiction_id = j.id"
        "            JOIN incidents i ON i.site_id = s.id"
        f"             AND (i.status = 'open' OR i.opened_at >= %s) AND {cond})"
        "   ON starts_with(j.path, n.path)"
        " WHERE n.id = ANY(%s) GROUP BY n.id",
        [day_ago, day_ago, *params, [n[0] for n in nodes]])
    counts = {r[0]: Counts(r[1], r[2], r[3]) for r in await cur.fetchall()}
    return [NodeCounts(i, name, path, counts.get(i, Counts(0, 0, 0)))
            for i, name, path in nodes]


async def risk_incidents(conn: AnyConn, since: datetime, until: datetime,
                         scope: Scope = EVERYTHING, within: Scope = EVERYTHING
                         ) -> list[SiteIncidents]:
    """The incidents opened in ``[since, until)`` of the sites in ``scope`` (and in
    ``within``: a jurisdiction the caller chose), per site."""
    cond, params = scope.site_filter("i.site_id")
    within_cond, within_params = within.site_filter("i.site_id")
    cur = await conn.execute(
        "SELECT i.site_id, s.name, s.jurisdiction_id, i.severity, i.opened_at,"
        " i.resolved_at, i.false_positive"
        " FROM incidents i LEFT JOIN sites s ON s.id = i.site_id"
        f" WHERE i.opened_at >= %s AND i.opened_at < %s AND {cond} AND {within_cond}"
        " ORDER BY i.site_id, i.id", [since, until, *params, *within_params])
    sites: dict[str, SiteIncidents] = {}
    for site, name, node, severity, opened, resolved, fp in await cur.fetchall():
        entry = sites.get(site)
        if entry is None:
            entry = sites[site] = SiteIncidents(site, name, node)
        entry.incidents.append(RiskIncident(severity, opened, resolved, fp))
    return list(sites.values())


async def site_risks(conn: AnyConn, since: datetime, until: datetime,
                     scope: Scope = EVERYTHING, within: Scope = EVERYTHING
                     ) -> list[SiteRisk]:
    """The risk score (:mod:`alerts.risk`, ``now`` = ``until``) of every site with an
    incident opened in ``[since, until)``, of the sites in ``scope`` and ``within``:
    :func:`alerts.risk.site_risk` of :func:`risk_incidents`, summed per site in SQL."""
    cond, params = scope.site_filter("i.site_id")
    within_cond, within_params = within.site_filter("i.site_id")
    cur = await conn.execute(
        "SELECT i.site_id, min(s.name), min(s.jurisdiction_id),"
        f" COALESCE(sum({contribution_sql('p.now')}) FILTER (WHERE NOT false_positive), 0),"
        " count(*),"
        " count(*) FILTER (WHERE severity = 'critical' AND NOT false_positive),"
        " count(*) FILTER (WHERE resolved_at IS NULL),"
        f" COALESCE(sum({unresolved_hours_sql('p.now')}) FILTER (WHERE NOT false_positive),"
        " 0), count(*) FILTER (WHERE false_positive)"
        " FROM (SELECT %s::timestamptz AS now) p, incidents i"
        " LEFT JOIN sites s ON s.id = i.site_id"
        f" WHERE i.opened_at >= %s AND i.opened_at < p.now AND {cond} AND {within_cond}"
        " GROUP BY i.site_id", [until, since, *params, *within_params])
    return [SiteRisk(site, name, node, from_sums(float(raw), n, crit, still_open,
                                                 float(hours), fps))
            for site, name, node, raw, n, crit, still_open, hours, fps
            in await cur.fetchall()]


async def trend(conn: AnyConn, first_day: date, days: int, now: datetime,
                scope: Scope = EVERYTHING, site_id: str | None = None) -> list[Day]:
    """One entry per UTC day from ``first_day``, ``days`` of them, zero days included:
    incidents opened that day (all, critical, by type), and the hours of the day during
    which at least one incident that is neither info nor a false positive was open (the
    union of their intervals, up to ``now``)."""
    cond, params = scope.site_filter("i.site_id")
    where = [cond]
    if site_id is not None:
        where.append("i.site_id = %s")
        params.append(site_id)
    since = datetime.combine(first_day, time(), tzinfo=UTC)
    until = since + timedelta(days=days)
    scope_sql = " AND ".join(where)
    # The incidents open at some time in [since, until), from indexes (0013): those
    # resolved after ``since`` (incidents_resolved) and those not resolved
    # (incidents_unresolved), opened before ``until``; both covering, so the window's
    # incidents come from the indexes alone. The type is the incident's rule_id (the
    # primary alert's, kept on the incident): no join with the alerts. ``busy`` is
    # MATERIALIZED: referenced from the per-day subquery, an inlined CTE redid the union
    # of intervals for every day.
    columns = f"i.opened_at, i.severity, i.false_positive, {_RULE} AS rule"
    cur = await conn.execute(
        "WITH d AS ("
        "  SELECT g::date AS day, tstzrange(g AT TIME ZONE 'UTC',"
        "         (g + interval '1 day') AT TIME ZONE 'UTC') AS r"
        "  FROM generate_series(%s::date::timestamp, %s::date::timestamp, interval '1 day')"
        "  AS g),"
        " inc AS MATERIALIZED ("
        f"  SELECT i.resolved_at, {columns} FROM incidents i"
        f"  WHERE i.resolved_at > %s AND i.opened_at < %s AND {scope_sql}"
        "  UNION ALL"
        # NULL, not the column: the index holds no resolved_at, and an index-only scan
        # reads only what the index holds.
        f"  SELECT NULL::timestamptz, {columns} FROM incidents i"
        f"  WHERE i.resolved_at IS NULL AND i.opened_at < %s AND {scope_sql}),"
        " busy AS MATERIALIZED ("
        "  SELECT range_agg(tstzrange(opened_at, GREATEST(opened_at,"
        "         LEAST(COALESCE(resolved_at, %s), %s)))) AS m"
        "  FROM inc WHERE severity <> 'info' AND NOT false_positive),"
        # per day and rule first, then per type: the type from a few hundred rules, not
        # from every incident
        " opened AS ("
        f"  SELECT day, {_TYPE_OF_RULE} AS type, sum(n) AS n, sum(c) AS c FROM ("
        "   SELECT (i.opened_at AT TIME ZONE 'UTC')::date AS day, i.rule,"
        "          count(*) AS n, count(*) FILTER (WHERE i.severity = 'critical') AS c"
        "   FROM inc i WHERE i.opened_at >= %s GROUP BY 1, 2) r GROUP BY 1, 2)"
        " SELECT d.day, COALESCE(sum(o.n), 0), COALESCE(sum(o.c), 0),"
        "  COALESCE(jsonb_object_agg(o.type, o.n) FILTER (WHERE o.type IS NOT NULL), '{}'),"
        "  COALESCE((SELECT EXTRACT(EPOCH FROM sum(upper(x) - lower(x)))"
        "            FROM busy, unnest(busy.m * tstzmultirange(d.r)) AS x), 0)"
        " FROM d LEFT JOIN opened o ON o.day = d.day GROUP BY d.day, d.r ORDER BY d.day",
        [first_day, first_day + timedelta(days=days - 1), since, until, *params, until,
         *params, now, now, since])
    out = []
    for day, opened, critical, types, seconds in await cur.fetchall():
        counts = {t: 0 for t in TYPES} | {str(k): int(v) for k, v in types.items()}
        out.append(Day(day, int(opened), int(critical), counts,
                       round(float(seconds) / 3600.0, 2)))
    return out
