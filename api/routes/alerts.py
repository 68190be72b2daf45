"""Alerts: newest first with keyset pagination, and one alert with its timeline. Only
the alerts of sites in the caller's scope, filtered in SQL; another site's alert is 404."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from psycopg.rows import dict_row

from alerts.routing import DEFAULT_RECEIVER
from api.deps import ConnDep, ReaderDep
from api.filters import FiltersDep
from api.schemas import (
    AlertDetail,
    AlertEventOut,
    AlertPage,
    AlertStatus,
    AlertSummary,
    ClueDeliveryOut,
)
from ganzhi.contracts.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

_ID = f"^{ID_PATTERN}$"
_COLUMNS = (
    "id, fingerprint, rule_id, severity, site_id, device_id, status, started_at, ended_at,"
    ' summary, "values", updated_at, incident_id'
)


@router.get("", response_model=AlertPage)
async def list_alerts(
    conn: ConnDep,
    caller: ReaderDep,
    filters: FiltersDep,
    status: AlertStatus | None = None,
    site_id: Annotated[str | None, Query(pattern=_ID)] = None,
    device_id: Annotated[str | None, Query(pattern=_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[
        int | None, Query(ge=1, description="Only alerts with a lower id.")
    ] = None,
) -> AlertPage:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("status", status), ("site_id", site_id), ("device_id", device_id)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if before_id is not None:
        where.append("id < %s")
        params.append(before_id)
    more_where, more_params = filters.sql(severity="severity", rule="rule_id",
                                          site="site_id", time="started_at")
    where += more_where
    params += more_params
    cond, scope_params = caller.scope.site_filter("site_id")
    where.append(cond)
    params.extend(scope_params)
    clause = f"WHERE {' AND '.join(where)}"
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM alerts {clause} ORDER BY id DESC LIMIT %s",
            [*params, limit + 1],
        )
        rows = await cur.fetchall()
    items = [AlertSummary.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return AlertPage(items=items, next_before_id=items[-1].id if more and items else None)


@router.get(
    "/{alert_id}", response_model=AlertDetail, responses={404: {"description": "No such alert"}}
)
async def get_alert(
    conn: ConnDep, caller: ReaderDep, alert_id: Annotated[int, Path(ge=1)]
) -> AlertDetail:
    cond, params = caller.scope.site_filter("site_id")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = %s AND {cond}",
                          [alert_id, *params])
        alert = await cur.fetchone()
        if alert is None:
            raise HTTPException(status_code=404, detail=f"alert {alert_id} not found")
        await cur.execute(
            "SELECT transition_id, kind, at, received_at, payload->>'summary' AS summary,"
            " COALESCE(payload->'values', '{}'::jsonb) AS values"
            " FROM alert_events WHERE alert_id = %s ORDER BY at, received_at",
            (alert_id,),
        )
        events = [AlertEventOut.model_validate(r) for r in await cur.fetchall()]
        await cur.execute(
            "SELECT event, clue_id::text AS clue_id, status, attempts,"
            " CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,"
            " last_status, last_error, created_at, delivered_at"
            " FROM clue_outbox WHERE alert_id = %s"
            # Several receivers: the task system's rows come last, so theirs are shown.
            " ORDER BY receiver = %s, seq, id",
            (alert_id, DEFAULT_RECEIVER),
        )
        deliveries = {r.pop("event"): ClueDeliveryOut.model_validate(r)
                      for r in await cur.fetchall()}
    return AlertDetail(**alert, events=events, clue=deliveries.get("created"),
                       clue_resolution=deliveries.get("resolved"))
