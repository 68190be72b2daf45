"""What people and the task system do to incidents, and silences: used by the API and
the CLI.

Each action is one transaction that first takes the site's advisory lock
(:func:`alerts.repository.lock_site`), so it never races the alerts service applying a
transition or ticking on the same site, and leaves an ``incident_history`` row saying
who did what. Errors: :class:`NotFound` (HTTP 404), :class:`Conflict` (409) and
``ValueError`` for bad input (422). Resolving by hand is
:func:`alerts.repository.resolve_by_hand`: it emits the ``resolved`` clue event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from prometheus_client import Counter
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from alerts.policy import MATCHER_KEYS
from alerts.repository import Conflict, NotFound, Policy, history, lock_site, resolve_by_hand
from ganzhi.access import EVERYTHING, Scope
from ganzhi.contracts import utcnow

AnyConn = AsyncConnection[Any]

COMMENT_MAX = 2000
NOTE_MAX = 2000
REASON_MAX = 500
ASSIGNEE_MAX = 100
MATCHER_VALUE_MAX = 200
SILENCE_MAX = timedelta(days=30)
FALSE_POSITIVE_REASON = "false positive (task system)"

FeedbackStatus = Literal["accepted", "dispatched", "rectified", "closed", "rejected"]
FEEDBACK_STATUSES: tuple[str, ...] = get_args(FeedbackStatus)
# Progress of a task: a late retry of an earlier state must not move task_status back.
# 'rejected' ends a task like 'closed' does.
_PROGRESS = {"accepted": 1, "dispatched": 2, "rectified": 3, "closed": 4, "rejected": 4}
SilenceKind = Literal["silence", "maintenance"]

FALSE_POSITIVES = Counter(
    "ganzhi_api_false_positives_total",
    "Clues the task system rejected as false positives, by the primary alert's rule and"
    " camera model ('unknown' when the alert has none): what to retrain or re-tune.",
    ["rule_id", "camera_model"],
)

async def site_of(conn: AnyConn, incident_id: int) -> str:
    """The incident's site (it never changes), or NotFound."""
    cur = await conn.execute("SELECT site_id FROM incidents WHERE id = %s", (incident_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"incident {incident_id} not found")
    return str(row[0])


def _text(value: str | None, what: str, limit: int, *, required: bool) -> str | None:
    """Stripped text, None when empty and optional; ValueError when too long or missing."""
    text = (value or "").strip()
    if not text:
        if required:
            raise ValueError(f"{what} is required")
        return None
    if len(text) > limit:
        raise ValueError(f"{what} has {len(text)} characters, at most {limit} allowed")
    return text


# --- incidents ---------------------------------------------------------------------------


async def acknowledge(conn: AnyConn, incident_id: int, actor: str,
                      note: str | None = None) -> datetime:
    """Someone has the incident in hand: its escalation stops (the ticker reads
    ``acknowledged_at``). Once only, and only while open; returns when."""
    note = _text(note, "note", NOTE_MAX, required=False)
    async with conn.transaction():
        await lock_site(conn, await site_of(conn, incident_id))
        cur = await conn.execute(
            "SELECT status, acknowledged_at, acknowledged_by FROM incidents WHERE id = %s",
            (incident_id,))
        state = await cur.fetchone()
        assert state is not None  # the site lock is held: it cannot have gone
        if state[1] is not None:
            raise Conflict(f"incident {incident_id} was acknowledged by {state[2]}"
                           f" at {state[1].isoformat()}")
        if state[0] != "open":
            raise Conflict(f"incident {incident_id} is resolved")
        cur = await conn.execute(
            "UPDATE incidents SET acknowledged_at = now(), acknowledged_by = %s,"
            " updated_at = now() WHERE id = %s RETURNING acknowledged_at",
            (actor, incident_id))
        row = await cur.fetchone()
        assert row is not None
        await history(conn, incident_id, actor, "acknowledged", {"note": note})
    acknowledged_at: datetime = row[0]
    return acknowledged_at


async def assign(conn: AnyConn, incident_id: int, actor: str, assignee: str) -> bool:
    """Give the incident to someone (open or resolved: follow-up work). False, and no
    history, when it already was theirs, so a retried call changes nothing."""
    name = _text(assignee, "assignee", ASSIGNEE_MAX, required=True)
    async with conn.transaction():
        await lock_site(conn, await site_of(conn, incident_id))
        cur = await conn.execute("SELECT assignee FROM incidents WHERE id = %s",
                                 (incident_id,))
        row = await cur.fetchone()
        before = row[0] if row else None
        if before == name:
            return False
        await conn.execute("UPDATE incidents SET assignee = %s, updated_at = now()"
                           " WHERE id = %s", (name, incident_id))
        await history(conn, incident_id, actor, "assigned", {"assignee": name, "from": before})
    return True


async def comment(conn: AnyConn, incident_id: int, actor: str, text: str) -> None:
    """A note on the incident's timeline; changes nothing else."""
    body = _text(text, "text", COMMENT_MAX, required=True)
    async with conn.transaction():
        await lock_site(conn, await site_of(conn, incident_id))
        await history(conn, incident_id, actor, "commented", {"text": body})


async def resolve(conn: AnyConn, incident_id: int, actor: str, reason: str,
                  policy: Policy) -> None:
    """Resolve by hand (:func:`alerts.repository.resolve_by_hand`) after checking the
    reason, which the receivers are told."""
    why = _text(reason, "reason", REASON_MAX, required=True)
    assert why is not None
    await resolve_by_hand(conn, incident_id, actor, why, policy)


# --- feedback of the task system --------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    incident_id: int
    site_id: str
    status: str
    task_status: str | None
    rule_id: str
    camera_model: str


async def clue_site(conn: AnyConn, clue_id: str) -> tuple[int, str, str]:
    """(incident id, site, canonical clue id) of a clue, or NotFound (a malformed id is
    unknown too)."""
    try:
        canonical = str(uuid.UUID(clue_id))
    except ValueError:
        raise NotFound(f"clue {clue_id} not found") from None
    cur = await conn.execute(
        "SELECT id, site_id FROM incidents WHERE clue_id = %s::uuid", (canonical,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"clue {clue_id} not found")
    return int(row[0]), str(row[1]), canonical


async def _target(conn: AnyConn, incident_id: int) -> _Target:
    cur = await conn.execute(
        "SELECT i.id, i.site_id, i.status, i.task_status, COALESCE(a.rule_id, i.family),"
        " COALESCE(a.\"values\"->>'model', 'unknown')"
        " FROM incidents i LEFT JOIN alerts a ON a.id = i.primary_alert_id WHERE i.id = %s",
        (incident_id,))
    r = await cur.fetchone()
    assert r is not None
    return _Target(r[0], r[1], r[2], r[3], r[4], r[5])


async def record_feedback(conn: AnyConn, clue_id: str, status: str, actor: str,
                          at: datetime | None = None, task_id: str | None = None,
                          note: str | None = None, *, policy: Policy) -> bool:
    """The task system reports a state of the task it made of a clue. Once per clue and
    state: a retried call changes nothing and returns False. ``rejected`` marks the
    incident a false positive (counted per rule and camera model) and resolves it if it
    is still open."""
    if status not in FEEDBACK_STATUSES:
        raise ValueError(f"status must be one of {list(FEEDBACK_STATUSES)}")
    note = _text(note, "note", NOTE_MAX, required=False)
    at = at or utcnow()
    incident_id, site, clue_id = await clue_site(conn, clue_id)
    async with conn.transaction():
        await lock_site(conn, site)
        t = await _target(conn, incident_id)
        cur = await conn.execute(
            "INSERT INTO clue_feedback (clue_id, status, incident_id, at, actor, task_id, note)"
            " VALUES (%s::uuid, %s, %s, %s, %s, %s, %s) ON CONFLICT (clue_id, status) DO NOTHING"
            " RETURNING 1", (clue_id, status, incident_id, at, actor, task_id, note))
        if await cur.fetchone() is None:
            return False
        await _apply_feedback(conn, t, status, at)
        await history(conn, incident_id, actor, f"feedback.{status}",
                      {"task_id": task_id, "note": note, "at": at.isoformat()})
        if status == "rejected" and t.status == "open":
            # A savepoint inside this transaction: the feedback and the resolution commit
            # together (the site lock is already held, taking it again is a no-op).
            await resolve_by_hand(conn, incident_id, actor, FALSE_POSITIVE_REASON, policy)
    if status == "rejected":
        FALSE_POSITIVES.labels(t.rule_id, t.camera_model).inc()
    return True


async def _apply_feedback(conn: AnyConn, t: _Target, status: str, at: datetime) -> None:
    column = f"{status}_at"  # one of five known columns: status was checked above
    current = _PROGRESS.get(t.task_status or "", 0)
    task_status = status if _PROGRESS[status] >= current else t.task_status
    await conn.execute(
        f"UPDATE incidents SET task_status = %s, {column} = COALESCE({column}, %s),"
        " false_positive = false_positive OR %s, updated_at = now() WHERE id = %s",
        (task_status, at, status == "rejected", t.incident_id))


# --- silences ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SilenceRow:
    id: int
    kind: str
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    reason: str
    created_at: datetime
    ended_at: datetime | None
    ended_by: str | None


def check_matchers(matchers: dict[str, Any]) -> dict[str, str]:
    """The matchers of a silence, or ValueError: at least one key, only the keys the
    policy matches on (a typo would otherwise silence everything), glob values."""
    if not matchers:
        raise ValueError(f"matchers need at least one of {sorted(MATCHER_KEYS)}")
    unknown = sorted(set(matchers) - MATCHER_KEYS)
    if unknown:
        raise ValueError(f"unknown matcher keys {unknown}: use {sorted(MATCHER_KEYS)}")
    out = {}
    for key, value in sorted(matchers.items()):
        if not isinstance(value, str) or not 1 <= len(value) <= MATCHER_VALUE_MAX:
            raise ValueError(f"matcher {key} must be a glob of 1 to {MATCHER_VALUE_MAX}"
                             " characters")
        out[key] = value
    return out


def check_window(starts_at: datetime, ends_at: datetime, now: datetime) -> None:
    """A silence ends after it starts, in the future, and lasts at most 30 days: a
    forgotten silence must not hide alerts for good."""
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise ValueError("starts_at and ends_at need a time zone")
    if ends_at <= starts_at:
        raise ValueError("ends_at must be after starts_at")
    if ends_at <= now:
        raise ValueError("ends_at must be in the future")
    if ends_at - starts_at > SILENCE_MAX:
        raise ValueError(f"a silence lasts at most {SILENCE_MAX.days} days")


async def create_silence(conn: AnyConn, kind: str, matchers: dict[str, Any],
                         starts_at: datetime | None, ends_at: datetime, created_by: str,
                         reason: str, now: datetime | None = None) -> int:
    """A silence (or maintenance window); returns its id. Held clues are released by the
    alerts service's ticker once it ends, not here."""
    if kind not in get_args(SilenceKind):
        raise ValueError(f"kind must be one of {list(get_args(SilenceKind))}")
    clean = check_matchers(matchers)
    now = now or utcnow()
    starts_at = starts_at or now
    check_window(starts_at, ends_at, now)
    why = _text(reason, "reason", REASON_MAX, required=True)
    cur = await conn.execute(
        "INSERT INTO silences (kind, matchers, starts_at, ends_at, created_by, reason)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (kind, Jsonb(clean), starts_at, ends_at, created_by, why))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


_SILENCE_COLUMNS = ("id, kind, matchers, starts_at, ends_at, created_by, reason, created_at,"
                    " ended_at, ended_by")
# A scoped caller sees the silences whose site_id matcher is one of its sites (a glob or
# no site matcher at all may reach other jurisdictions' sites: not theirs to see).
_SILENCE_SITE = "(matchers->>'site_id')"


async def get_silence(conn: AnyConn, silence_id: int,
                      scope: Scope = EVERYTHING) -> SilenceRow:
    """The silence, or NotFound (unknown, or outside ``scope``)."""
    cond, params = scope.site_filter(_SILENCE_SITE)
    cur = await conn.execute(
        f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE id = %s AND {cond}",
        [silence_id, *params])
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"silence {silence_id} not found")
    return SilenceRow(*row)


async def end_silence(conn: AnyConn, silence_id: int, actor: str) -> datetime:
    """End a silence early; Conflict when it has ended or run out already."""
    cur = await conn.execute(
        "UPDATE silences SET ended_at = now(), ended_by = %s"
        " WHERE id = %s AND ended_at IS NULL AND ends_at > now() RETURNING ended_at",
        (actor, silence_id))
    row = await cur.fetchone()
    if row is not None:
        ended_at: datetime = row[0]
        return ended_at
    s = await get_silence(conn, silence_id)
    if s.ended_at is not None:
        raise Conflict(f"silence {silence_id} was ended by {s.ended_by} at"
                       f" {s.ended_at.isoformat()}")
    raise Conflict(f"silence {silence_id} expired at {s.ends_at.isoformat()}")


async def list_silences(conn: AnyConn, active_only: bool = True,
                        now: datetime | None = None,
                        scope: Scope = EVERYTHING) -> list[SilenceRow]:
    """Silences, newest first; ``active_only``: those not ended nor run out (the ones in
    force now and the ones scheduled); only those of ``scope`` (see _SILENCE_SITE)."""
    cond, params = scope.site_filter(_SILENCE_SITE)
    if active_only:
        cond += " AND ended_at IS NULL AND ends_at > %s"
        params.append(now or utcnow())
    cur = await conn.execute(
        f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE {cond} ORDER BY id DESC", params)
    return [SilenceRow(*r) for r in await cur.fetchall()]
