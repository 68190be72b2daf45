"""Handling figures for the supervision office: response times and false positives of
the incidents opened in a period (see :mod:`alerts.figures`), of the sites in the
caller's scope only."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from alerts.figures import false_positive_counts, handling_figures
from api.deps import ConnDep, ReaderDep
from api.errors import unprocessable
from api.params import IsoDateTime
from api.schemas import FalsePositiveRow, FalsePositiveStats, HandlingRow, HandlingStats
from ganzhi.contracts import utcnow

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
async def handling(conn: ConnDep, caller: ReaderDep, since: Since = None,
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
async def false_positives(conn: ConnDep, caller: ReaderDep, since: Since = None,
                          until: Until = None) -> FalsePositiveStats:
    """Clues the task system rejected, per rule and camera model of the primary alert."""
    since, until = _period(since, until)
    rows = await false_positive_counts(conn, since, until, caller.scope)
    items = [FalsePositiveRow(rule_id=r.rule_id, camera_model=r.camera_model, count=r.count)
             for r in rows]
    return FalsePositiveStats(since=since, until=until, items=items)
