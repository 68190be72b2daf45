"""Figures for the supervision office and the console: response times and false
positives of the incidents opened in a period (see :mod:`alerts.figures`); the console's
overview, risk table (:mod:`alerts.risk`) and daily trend (:mod:`alerts.overview`). Of
the sites in the caller's scope only, filtered in SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from psycopg.rows import dict_row

from alerts import overview as figures
from alerts.figures import false_positive_counts, handling_figures
from alerts.risk import FORMULA
from api.deps import ReadConnDep, ReaderDep, site_visible
from api.errors import unprocessable
from api.filters import NODE_PATTERN
from api.params import IsoDateTime
from api.routes.incidents import SUMMARY_COLUMNS, SUMMARY_FROM
from api.schemas import (
    FalsePositiveRow,
    FalsePositiveStats,
    HandlingRow,
    HandlingStats,
    HandlingSummary,
    IncidentSummary,
    JurisdictionCounts,
    Overview,
    RiskItem,
    RiskTable,
    Trend,
    TrendDay,
    TypeCounts,
)
from ganzhi.access import EVERYTHING, Scope
from ganzhi.contracts import utcnow
from ganzhi.contracts.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1/stats", tags=["stats"])
DEFAULT_PERIOD = timedelta(days=30)

Since = Annotated[IsoDateTime | None, Query(description="Default: 30 days before until.")]
Until = Annotated[IsoDateTime | None, Query(description="Exclusive; default: now.")]


def _period(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or utcnow()
    since = since or until - DEFAULT_PERIOD
    if since >= until:
        raise unprocessable("since must be before until", ("query", "since"))
    return since, until


@router.get("/handling", response_model=HandlingStats)
async def handling(conn: ReadConnDep, caller: ReaderDep, since: Since = None,
                   until: Until = None, group_by: Literal["site", "rule"] = "site"
                   ) -> HandlingStats:
    """Per site or rule: incidents whose clue went out, how many were acknowledged,
    median and p90 seconds from the clue to acknowledgement, dispatch and closing (null
    when none got there), false positives."""
    since, until = _period(since, until)
    rows = await handling_figures(conn, since, until, group_by, caller.scope)
    items = [
        HandlingRow(key=r.key, incidents=r.incidents, acknowledged=r.acknowledged,
                    ack_median_s=r.to_acknowledge.median_s, ack_p90_s=r.to_acknowledge.p90_s,
                    dispatch_median_s=r.to_dispatch.median_s,
                    dispatch_p90_s=r.to_dispatch.p90_s, close_median_s=r.to_close.median_s,
                    close_p90_s=r.to_close.p90_s, false_positives=r.false_positives)
        for r in rows
    ]
    return HandlingStats(since=since, until=until, group_by=group_by, items=items)


@router.get("/false-positives", response_model=FalsePositiveStats)
async def false_positives(conn: ReadConnDep, caller: ReaderDep, since: Since = None,
                          until: Until = None) -> FalsePositiveStats:
    """Clues the task system rejected, per rule and camera model of the primary alert."""
    since, until = _period(since, until)
    rows = await false_positive_counts(conn, since, until, caller.scope)
    items = [FalsePositiveRow(rule_id=r.rule_id, camera_model=r.camera_model, count=r.count)
             for r in rows]
    return FalsePositiveStats(since=since, until=until, items=items)


# --- the console ---------------------------------------------------------------------------

OPEN_CRITICAL_MAX = 20
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such site or jurisdiction in the caller's scope"}}
Days = Annotated[int, Query(ge=1, le=366, description="Days back from now (1..366).")]


@router.get("/overview", response_model=Overview)
async def overview(conn: ReadConnDep, caller: ReaderDep) -> Overview:
    """The console's first page: open incidents (all, critical) by jurisdiction and by
    type, the open critical ones, the last 24 hours, and 30 days' handling figures."""
    now = utcnow()
    scope = caller.scope
    totals, nodes, types = await figures.overview_counts(conn, scope, now)
    cond, params = scope.site_filter("i.site_id")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {SUMMARY_COLUMNS} {SUMMARY_FROM} WHERE i.status = 'open'"
            f" AND i.severity = 'critical' AND {cond} ORDER BY i.id DESC LIMIT %s",
            [*params, OPEN_CRITICAL_MAX])
        critical = [IncidentSummary.model_validate(r) for r in await cur.fetchall()]
    handled = await handling_figures(conn, now - DEFAULT_PERIOD, now, "all", scope)
    h = handled[0] if handled else None
    return Overview(
        generated_at=now, open_total=totals.open, open_critical_total=totals.open_critical,
        by_jurisdiction=[
            JurisdictionCounts(jurisdiction_id=n.jurisdiction_id, name=n.name, path=n.path,
                               open=n.counts.open, critical=n.counts.critical,
                               opened_24h=n.counts.opened_24h) for n in nodes],
        by_type=[TypeCounts(type=t, open=c.open, critical=c.critical, opened_24h=c.opened_24h)
                 for t, c in types.items()],
        open_critical=critical, opened_24h=totals.opened_24h,
        resolved_24h=totals.resolved_24h,
        handling=HandlingSummary(
            ack_median_s=h.to_acknowledge.median_s if h else None,
            ack_p90_s=h.to_acknowledge.p90_s if h else None,
            close_median_s=h.to_close.median_s if h else None,
            close_p90_s=h.to_close.p90_s if h else None,
            incidents=h.incidents if h else 0, false_positives=h.false_positives if h else 0),
    )


async def _node_scope(conn: ReadConnDep, scope: Scope, node: str | None) -> Scope:
    """The sites of ``node``'s subtree as a scope (everything when no node is asked);
    404 for a node that does not exist or is outside the caller's subtree."""
    if node is None:
        return EVERYTHING
    cond, params = scope.path_filter("path")
    cur = await conn.execute(f"SELECT path FROM jurisdictions WHERE id = %s AND {cond}",
                             [node, *params])
    row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, f"jurisdiction {node} not found")
    return Scope(path=row[0])


@router.get("/risk", response_model=RiskTable, responses=_NOT_FOUND)
async def risk(
    conn: ReadConnDep, caller: ReaderDep, days: Days = 30,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    jurisdiction: Annotated[str | None, Query(
        pattern=NODE_PATTERN, description="A node: the sites of its subtree.")] = None,
) -> RiskTable:
    """Sites by risk score (docs/alerts.md, "Risk scores"), from their incidents opened
    in the last ``days``; sites without one are not listed."""
    within = await _node_scope(conn, caller.scope, jurisdiction)
    until = utcnow()
    since = until - timedelta(days=days)
    sites = await figures.site_risks(conn, since, until, caller.scope, within)
    items = [
        RiskItem(site_id=site.site_id, name=site.name, jurisdiction_id=site.jurisdiction_id,
                 score=r.score, incidents=r.incidents, critical=r.critical, open=r.open,
                 unresolved_hours=r.unresolved_hours, false_positives=r.false_positives)
        for site in sites for r in (site.risk,)
    ]
    items.sort(key=lambda i: (-i.score, -i.incidents, i.site_id))
    return RiskTable(since=since, until=until, formula=FORMULA, items=items[:limit])


@router.get("/trend", response_model=Trend, responses=_NOT_FOUND)
async def trend(
    conn: ReadConnDep, caller: ReaderDep, days: Days = 30,
    site_id: Annotated[str | None, Query(
        pattern=f"^{ID_PATTERN}$", description="One site; default: the whole scope.")
    ] = None,
) -> Trend:
    """Per UTC day, oldest first, today included: incidents opened (all, critical, by
    type), the hours with at least one open incident (neither info nor a false
    positive), and compliance = 1 − open_hours / 24."""
    if site_id is not None and not await site_visible(conn, caller.scope, site_id):
        raise HTTPException(404, f"site {site_id} not found")
    now = utcnow().astimezone(UTC)
    first = now.date() - timedelta(days=days - 1)
    rows = await figures.trend(conn, first, days, now, caller.scope, site_id)
    return Trend(
        site_id=site_id, since=datetime.combine(first, datetime.min.time(), tzinfo=UTC),
        until=now,
        days=[TrendDay(day=d.day.isoformat(), opened=d.opened, critical=d.critical,
                       by_type=d.by_type, open_hours=d.open_hours,
                       compliance=d.compliance) for d in rows])
