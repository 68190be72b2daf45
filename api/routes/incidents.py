"""Incidents (related alerts; one clue each): read them with their alerts, history and
clue deliveries; act on them (permission ``work_incidents``); the task system's feedback
on clues (permission ``feedback``).

Every query carries the caller's scope in SQL: an incident (or clue) of a site outside
it is 404 for reads and actions alike, as if it did not exist. Every action answers the
incident as it is afterwards.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from psycopg.rows import dict_row

from alerts import actions
from alerts.repository import NotFound
from api.deps import (
    Caller,
    ConnDep,
    FeedbackDep,
    PolicyDep,
    ReaderDep,
    StaffDep,
    domain_errors,
)
from api.filters import FiltersDep
from api.schemas import (
    AckIn,
    AlertStatus,
    AlertSummary,
    AssignIn,
    ClueEventDelivery,
    CommentIn,
    FeedbackIn,
    FeedbackOut,
    HistoryEntry,
    IncidentDetail,
    IncidentPage,
    IncidentSummary,
    NotifyState,
    ResolveIn,
)
from ganzhi.access import Scope, subtree_prefix
from ganzhi.contracts.topics import ID_PATTERN

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])
clues = APIRouter(prefix="/api/v1/clues", tags=["incidents"])

_ID = f"^{ID_PATTERN}$"
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such incident"}}
_ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    401: {"description": "No valid access token or API key"},
    403: {"description": "The caller lacks the permission"},
    409: {"description": "The incident's state does not allow it"},
}
# An IncidentSummary's columns and tables (``i``: the incident, ``a``: its primary
# alert, for its summary; the primary's rule id is on the incident since 0013), shared
# with the overview and the live stream.
SUMMARY_COLUMNS = (
    "i.id, i.group_key, i.family, i.site_id, i.device_id, i.status, i.severity,"
    " i.rule_id, a.summary, i.primary_alert_id, i.clue_id::text AS clue_id, i.notify_state,"
    " i.held_reason, i.notified_at, i.opened_at, i.resolved_at, i.resolved_by,"
    " i.resolve_reason, i.acknowledged_at, i.acknowledged_by, i.assignee,"
    " i.escalation_level, i.escalated_at, i.reopen_count, i.task_status, i.accepted_at,"
    " i.dispatched_at, i.rectified_at, i.closed_at, i.rejected_at, i.false_positive,"
    " i.updated_at"
)
SUMMARY_FROM = "FROM incidents i LEFT JOIN alerts a ON a.id = i.primary_alert_id"
_ALERT_COLUMNS = (
    "id, fingerprint, rule_id, severity, site_id, device_id, status, started_at, ended_at,"
    ' summary, "values", updated_at, incident_id'
)


# The search: ILIKE on the primary alert's summary and rule id, the site id, the device
# id and the site's name, with the pattern's wildcards escaped (``q`` is text, not a
# pattern). 0013 keeps these fields, lower-cased and folded, in incidents.search_text,
# separated by chr(31): one LIKE on one column, which the planner answers from the
# trigram index (a rare term) or by walking the primary key (a common one, the first
# page comes soon). Same rows as the ILIKEs as long as the term holds no chr(31); one that
# does (it could match across two fields) gets the ILIKEs themselves.
_SEARCH = "i.search_text LIKE ganzhi_search_fold(%s)"
_SEPARATOR = "\x1f"
_SEARCH_FIELDS = ("(a.summary ILIKE %s OR i.rule_id ILIKE %s OR i.site_id ILIKE %s"
                  " OR i.device_id ILIKE %s OR i.site_id IN (SELECT sn.id FROM sites sn"
                  " WHERE sn.name ILIKE %s))")


def _contains(text: str) -> str:
    return "%" + subtree_prefix(text)


@router.get("", response_model=IncidentPage)
async def list_incidents(
    conn: ConnDep,
    caller: ReaderDep,
    filters: FiltersDep,
    status: AlertStatus | None = None,
    site_id: Annotated[str | None, Query(pattern=_ID)] = None,
    notify_state: NotifyState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[
        int | None, Query(ge=1, description="Only incidents with a lower id.")
    ] = None,
    q: Annotated[str | None, Query(
        min_length=1, max_length=100, pattern=r"^[^\x00]*$",
        description="Text in the primary alert's summary or rule id, the site id, the"
                    " device id or the site's name (any case).")] = None,
) -> IncidentPage:
    """Newest first, keyset pagination like the alerts."""
    where: list[str] = []
    params: list[Any] = []
    if q is not None and _SEPARATOR not in q:
        where.append(_SEARCH)
        params.append(_contains(q))
    elif q is not None:
        where.append(_SEARCH_FIELDS)
        params.extend([_contains(q)] * 5)
    for column, value in (("status", status), ("site_id", site_id),
                          ("notify_state", notify_state)):
        if value is not None:
            where.append(f"i.{column} = %s")
            params.append(value)
    if before_id is not None:
        where.append("i.id < %s")
        params.append(before_id)
    more_where, more_params = filters.sql(severity="i.severity", rule="i.rule_id",
                                          site="i.site_id", time="i.opened_at")
    where += more_where
    params += more_params
    cond, scope_params = caller.scope.site_filter("i.site_id")
    where.append(cond)
    params.extend(scope_params)
    clause = f"WHERE {' AND '.join(where)}"
    async with conn.cursor(row_factory=dict_row) as cur:
        # Never a prepared statement with a term: its generic plan would choose between
        # the trigram index and the walk without seeing the term.
        await cur.execute(
            f"SELECT {SUMMARY_COLUMNS} {SUMMARY_FROM} {clause} ORDER BY i.id DESC LIMIT %s",
            [*params, limit + 1], prepare=False if q is not None else None,
        )
        rows = await cur.fetchall()
    items = [IncidentSummary.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return IncidentPage(items=items, next_before_id=items[-1].id if more and items else None)


async def _detail(conn: ConnDep, incident_id: int, scope: Scope) -> IncidentDetail | None:
    cond, params = scope.site_filter("i.site_id")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {SUMMARY_COLUMNS} {SUMMARY_FROM} WHERE i.id = %s AND {cond}",
                          [incident_id, *params])
        incident = await cur.fetchone()
        if incident is None:
            return None
        await cur.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE incident_id = %s ORDER BY id",
            (incident_id,))
        alerts = [AlertSummary.model_validate(r) for r in await cur.fetchall()]
        await cur.execute(
            "SELECT id, at, actor, action, alert_id, detail FROM incident_history"
            " WHERE incident_id = %s ORDER BY id", (incident_id,))
        history = [HistoryEntry.model_validate(r) for r in await cur.fetchall()]
        await cur.execute(
            "SELECT id, receiver, event, seq, status, attempts,"
            " CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,"
            " last_status, last_error, created_at, delivered_at"
            " FROM clue_outbox WHERE incident_id = %s ORDER BY receiver, seq, id",
            (incident_id,))
        deliveries = [ClueEventDelivery.model_validate(r) for r in await cur.fetchall()]
    return IncidentDetail(**incident, alerts=alerts, history=history, deliveries=deliveries)


@router.get("/{incident_id}", response_model=IncidentDetail, responses=_NOT_FOUND)
async def get_incident(
    conn: ConnDep, caller: ReaderDep, incident_id: Annotated[int, Path(ge=1)]
) -> IncidentDetail:
    """The incident, its alerts, its full history and its clue events per receiver."""
    detail = await _detail(conn, incident_id, caller.scope)
    if detail is None:
        raise HTTPException(404, f"incident {incident_id} not found")
    return detail


async def _visible(conn: ConnDep, caller: Caller, incident_id: int) -> None:
    """404 for an unknown incident and for one outside the caller's scope alike."""
    cond, params = caller.scope.site_filter("site_id")
    cur = await conn.execute(f"SELECT 1 FROM incidents WHERE id = %s AND {cond}",
                             [incident_id, *params])
    if await cur.fetchone() is None:
        raise HTTPException(404, f"incident {incident_id} not found")


async def _answer(conn: ConnDep, caller: Caller, incident_id: int) -> IncidentDetail:
    detail = await _detail(conn, incident_id, caller.scope)
    assert detail is not None  # incidents are never deleted
    return detail


@router.post("/{incident_id}/ack", response_model=IncidentDetail, responses=_ACTION_ERRORS)
async def acknowledge(conn: ConnDep, caller: StaffDep, body: AckIn,
                      incident_id: Annotated[int, Path(ge=1)]) -> IncidentDetail:
    """Acknowledge: someone has it in hand, escalation stops. Twice is 409."""
    await _visible(conn, caller, incident_id)
    with domain_errors():
        await actions.acknowledge(conn, incident_id, caller.actor, body.note)
    return await _answer(conn, caller, incident_id)


@router.post("/{incident_id}/assign", response_model=IncidentDetail,
             responses=_ACTION_ERRORS)
async def assign(conn: ConnDep, caller: StaffDep, body: AssignIn,
                 incident_id: Annotated[int, Path(ge=1)]) -> IncidentDetail:
    """Give the incident to someone; assigning it to its assignee again changes nothing."""
    await _visible(conn, caller, incident_id)
    with domain_errors():
        await actions.assign(conn, incident_id, caller.actor, body.assignee)
    return await _answer(conn, caller, incident_id)


@router.post("/{incident_id}/comments", response_model=IncidentDetail,
             responses=_ACTION_ERRORS)
async def comment(conn: ConnDep, caller: StaffDep, body: CommentIn,
                  incident_id: Annotated[int, Path(ge=1)]) -> IncidentDetail:
    await _visible(conn, caller, incident_id)
    with domain_errors():
        await actions.comment(conn, incident_id, caller.actor, body.text)
    return await _answer(conn, caller, incident_id)


@router.post("/{incident_id}/resolve", response_model=IncidentDetail,
             responses={**_ACTION_ERRORS, 503: {"description": "No alerts policy"}})
async def resolve(conn: ConnDep, caller: StaffDep, policy: PolicyDep, body: ResolveIn,
                  incident_id: Annotated[int, Path(ge=1)]) -> IncidentDetail:
    """Resolve by hand with a reason: its open alerts end, the clue's receivers get
    ``resolved`` with who and why. Resolved already: 409."""
    await _visible(conn, caller, incident_id)
    with domain_errors():
        await actions.resolve(conn, incident_id, caller.actor, body.reason, policy)
    return await _answer(conn, caller, incident_id)


@clues.post("/{clue_id}/feedback", response_model=FeedbackOut,
            responses={404: {"description": "No such clue"},
                       503: {"description": "No alerts policy"}})
async def feedback(conn: ConnDep, caller: FeedbackDep, policy: PolicyDep, body: FeedbackIn,
                   clue_id: Annotated[str, Path(max_length=64)]) -> FeedbackOut:
    """The task system reports on the task it made of a clue: accepted, dispatched,
    rectified, closed, or rejected (a false positive: the incident is resolved). Once per
    clue and status; a retry answers ``recorded: false``."""
    with domain_errors():
        incident_id, _, _ = await actions.clue_site(conn, clue_id)
        cond, params = caller.scope.site_filter("site_id")
        cur = await conn.execute(f"SELECT 1 FROM incidents WHERE id = %s AND {cond}",
                                 [incident_id, *params])
        if await cur.fetchone() is None:
            raise NotFound(f"clue {clue_id} not found")
        recorded = await actions.record_feedback(
            conn, clue_id, body.status, caller.actor, body.at, body.task_id, body.note,
            policy=policy)
    return FeedbackOut(recorded=recorded)
