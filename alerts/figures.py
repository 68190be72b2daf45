"""Handling figures for the supervision office (监督考核): how fast clues were taken up,
dispatched and closed, and how many were false positives.

Only incidents whose clue went out (``notified_at`` set) count: a held clue asked
nobody to do anything. An incident belongs to the period it opened in (``opened_at`` in
``[since, until)``), so a period's figures stay put once its incidents are done.
Durations run from the clue going out; an incident acknowledged while its clue was still
held counts as handled at once (0 s), not as a negative time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection

from ganzhi.access import EVERYTHING, Scope

AnyConn = AsyncConnection[Any]
GroupBy = Literal["site", "rule", "all"]

# "all": one row for the whole scope (the console's overview).
# "rule": the primary alert's rule id, kept on the incident (0013).
_KEYS: dict[str, str] = {"site": "i.site_id", "rule": "COALESCE(i.rule_id, i.family)",
                         "all": "'all'::text"}


@dataclass(frozen=True)
class Latency:
    """Seconds from the clue going out; None when no incident of the group got there."""

    median_s: float | None
    p90_s: float | None


@dataclass(frozen=True)
class HandlingFigures:
    key: str  # the site id or the primary alert's rule id
    incidents: int
    acknowledged: int
    to_acknowledge: Latency
    to_dispatch: Latency
    to_close: Latency
    false_positives: int


@dataclass(frozen=True)
class FalsePositives:
    rule_id: str
    camera_model: str
    count: int


def _micros(column: str) -> str:
    """The column's microseconds since the epoch, exact, as double precision: date_part
    (seconds, one division of the exact microseconds) times 10^6 is within 0.5 us of
    them until the year 2100, so round() gives them back."""
    return f"round(date_part('epoch', i.{column}) * 1000000.0::float8)"


def _percentiles(column: str) -> str:
    # GREATEST ignores NULLs (it would make a missing time 0 s): only the times there are.
    # The seconds in double precision: the exact microseconds apart, divided once, which
    # is the double nearest to EXTRACT(EPOCH FROM i.x - i.notified_at) (numeric), the
    # value percentile_cont took before (it casts to double) - sorting doubles instead of
    # numerics saves a fifth of the handling figures (docs/performance.md).
    seconds = (f"CASE WHEN i.{column} IS NOT NULL"
               f" THEN GREATEST(({_micros(column)} - {_micros('notified_at')})"
               " / 1000000.0::float8, 0) END")
    # Both percentiles from one sort.
    return f"percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY {seconds})"


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _latency(pair: list[Any] | None) -> Latency:
    """From ``percentile_cont(ARRAY[0.5, 0.9])``: NULL when no time was there."""
    if pair is None:
        return Latency(None, None)
    return Latency(_float(pair[0]), _float(pair[1]))


async def handling_figures(conn: AnyConn, since: datetime, until: datetime,
                           group_by: GroupBy = "site",
                           scope: Scope = EVERYTHING) -> list[HandlingFigures]:
    """Per site or per rule (of the primary alert), or one row ``all`` for the whole
    scope: incidents notified, acknowledged, median and p90 seconds to acknowledge,
    dispatch and close, false positives. Only the incidents of sites in ``scope`` count
    (a district sees its own figures)."""
    if group_by not in _KEYS:
        raise ValueError(f"group_by must be one of {sorted(_KEYS)}")
    cond, params = scope.site_filter("i.site_id")
    cur = await conn.execute(
        f"SELECT {_KEYS[group_by]} AS key, count(*), count(i.acknowledged_at),"
        f" {_percentiles('acknowledged_at')}, {_percentiles('dispatched_at')},"
        f" {_percentiles('closed_at')}, count(*) FILTER (WHERE i.false_positive)"
        # Every column from incidents_opened (0013 covers the window): an index-only scan.
        " FROM incidents i"
        " WHERE i.notified_at IS NOT NULL AND i.opened_at >= %s AND i.opened_at < %s"
        f" AND {cond} GROUP BY key ORDER BY key", [since, until, *params])
    return [
        HandlingFigures(r[0], r[1], r[2], _latency(r[3]), _latency(r[4]), _latency(r[5]),
                        r[6])
        for r in await cur.fetchall()
    ]


async def false_positive_counts(conn: AnyConn, since: datetime, until: datetime,
                                scope: Scope = EVERYTHING) -> list[FalsePositives]:
    """False positives (clues the task system rejected) of incidents opened in the
    period and of sites in ``scope``, per rule and camera model of the primary alert:
    which detector to re-tune."""
    cond, params = scope.site_filter("i.site_id")
    cur = await conn.execute(
        "SELECT COALESCE(a.rule_id, i.family) AS rule_id,"
        " COALESCE(a.\"values\"->>'model', 'unknown') AS model, count(*)"
        " FROM incidents i LEFT JOIN alerts a ON a.id = i.primary_alert_id"
        " WHERE i.false_positive AND i.notified_at IS NOT NULL"
        " AND i.opened_at >= %s AND i.opened_at < %s"
        f" AND {cond} GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2", [since, until, *params])
    return [FalsePositives(r[0], r[1], r[2]) for r in await cur.fetchall()]
