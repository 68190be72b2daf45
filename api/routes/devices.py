"""A device's readings over a time range: raw samples or one-minute rollups. A device of
a site outside the caller's scope is 404, and the readings query carries the scope too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from api.deps import ConnDep, ReadConnDep, ReaderDep, site_visible
from api.errors import unprocessable
from api.params import IsoDateTime
from api.schemas import ReadingSeries, Resolution, SeriesPoint
from ganzhi.contracts.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

_ID = f"^{ID_PATTERN}$"
DEFAULT_SPAN = timedelta(hours=24)
# The longest span one request may ask for, per resolution (a year of raw readings is
# millions of rows: the console asks for rollups instead).
MAX_SPAN: dict[str, timedelta] = {"raw": timedelta(days=2), "1m": timedelta(days=31),
                                  "1h": timedelta(days=400)}


def choose_resolution(span: timedelta) -> Resolution:
    """raw up to 6 h, one-minute rollups up to 7 days, hourly beyond."""
    if span <= timedelta(hours=6):
        return "raw"
    if span <= timedelta(days=7):
        return "1m"
    return "1h"
MAX_LIMIT = 10_000

_RAW = (
    "SELECT time, metric, value, unit FROM readings"
    " WHERE site_id = %s AND device_id = %s AND time >= %s AND time < %s"
)
_ROLLUP = (
    "SELECT bucket AS time, metric, mean AS value, min, max, count, last FROM {table}"
    " WHERE site_id = %s AND device_id = %s AND bucket >= %s AND bucket < %s"
)
# The live views (migration 0015): the compacted rollups merged with the deltas the stream
# workers have committed since the last compaction, so a reading counts as soon as it is
# stored. The filters below reach both sides of the views (on the grouping columns).
_ROLLUP_TABLE = {"1m": "rollups_1m_live", "1h": "rollups_1h_live"}


# A device is known when it is in the registry or has ever stored a reading (one removed
# from the registry keeps its history); else its readings are a 404, not an empty series.
_KNOWN = (
    "SELECT EXISTS (SELECT 1 FROM devices WHERE site_id = %s AND device_id = %s)"
    " OR EXISTS (SELECT 1 FROM readings WHERE device_id = %s AND site_id = %s)"
)


async def _known(conn: AsyncConnection[Any], site_id: str, device_id: str) -> bool:
    cur = await conn.execute(_KNOWN, (site_id, device_id, device_id, site_id))
    row = await cur.fetchone()
    return bool(row and row[0])


@router.get(
    "/{site_id}/{device_id}/readings",
    response_model=ReadingSeries,
    response_model_by_alias=True,
    responses={404: {"description": "Device outside the caller's jurisdiction"}},
)
async def readings(
    conn: ConnDep,
    read: ReadConnDep,
    caller: ReaderDep,
    site_id: Annotated[str, Path(pattern=_ID)],
    device_id: Annotated[str, Path(pattern=_ID)],
    metric: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_.]{0,63}$")] = None,
    from_: Annotated[
        IsoDateTime | None, Query(alias="from", description="Inclusive; default to - 24 h.")
    ] = None,
    to: Annotated[IsoDateTime | None, Query(description="Exclusive; default now.")] = None,
    resolution: Annotated[Resolution | Literal["auto"], Query(
        description="auto (default): raw up to 6 h, one-minute rollups up to 7 days, hourly"
        " beyond.")] = "auto",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
) -> ReadingSeries:
    if not await site_visible(conn, caller.scope, site_id) or not await _known(
            read, site_id, device_id):
        raise HTTPException(status_code=404, detail=f"device {site_id}/{device_id} not found")
    end = to or datetime.now(UTC)
    start = from_ or end - DEFAULT_SPAN
    if start >= end:
        raise unprocessable(f"'from' ({start.isoformat()}) must be before 'to'",
                            ("query", "from"))
    resolution = choose_resolution(end - start) if resolution == "auto" else resolution
    if end - start > MAX_SPAN[resolution]:
        raise unprocessable(
            f"{resolution} readings span at most {MAX_SPAN[resolution].days} days: narrow"
            f" 'from'/'to' or use a coarser resolution", ("query", "resolution"))
    query = _RAW if resolution == "raw" else _ROLLUP.format(table=_ROLLUP_TABLE[resolution])
    params: list[Any] = [site_id, device_id, start, end]
    cond, scope_params = caller.scope.site_filter("site_id")
    query += f" AND {cond}"
    params.extend(scope_params)
    if metric is not None:
        query += " AND metric = %s"
        params.append(metric)
    query += " ORDER BY 1, 2 LIMIT %s"
    params.append(limit + 1)
    async with read.cursor(row_factory=dict_row) as cur:  # the replica, if there is one
        await cur.execute(query, params)
        rows = await cur.fetchall()
    return ReadingSeries(
        site_id=site_id,
        device_id=device_id,
        metric=metric,
        resolution=resolution,
        from_=start,
        to=end,
        points=[SeriesPoint.model_validate(r) for r in rows[:limit]],
        truncated=len(rows) > limit,
    )
