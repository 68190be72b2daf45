"""The console's live stream: ``GET /api/v1/live``, Server-Sent Events of every
incident history row of a site in the caller's scope (docs/contracts.md, "Live stream").

One :class:`LiveHub` per API process holds one PostgreSQL connection that LISTENs on
``ganzhi_incident_history`` (migration 0011's trigger sends each new history row's id),
loads each row once with its incident's summary and its site's jurisdiction path, and
offers it to every open stream; each stream keeps the rows its caller's scope allows
(:meth:`ganzhi.access.Scope.allows`, the same rule the SQL filters apply). A stream's
queue is bounded: a client too slow to keep up gets ``event: resync`` (reload the list)
instead of the server holding an ever longer backlog. The hub starts with the first
stream, reconnects with capped backoff when PostgreSQL goes away (then catches up on
the rows it missed), and closes with the app.

A client that reconnects sends ``Last-Event-ID``: the rows of its scope after that id
are replayed first (at most :data:`REPLAY_MAX`; more, or a gap too long to search, is a
``resync``). A comment ping every 15 s keeps proxies from closing an idle stream. Every
minute the stream checks its caller again: a token that expired, an account disabled or
moved, a key revoked ends the stream (the client reconnects and signs in again).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import Counter, Gauge
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from api.deps import Caller, PoolDep, _bearer, get_caller
from api.routes.incidents import SUMMARY_COLUMNS, SUMMARY_FROM
from api.schemas import IncidentSummary, LiveEvent
from ganzhi.access import Permission, Scope
from ganzhi.observability import get_logger

router = APIRouter(prefix="/api/v1", tags=["live"])
log = get_logger("api.live")

CHANNEL = "ganzhi_incident_history"
APPLICATION_NAME = "ganzhi-api-live"  # the LISTEN connection, in pg_stat_activity
REPLAY_MAX = 500  # rows replayed after Last-Event-ID; more: resync
REPLAY_SEARCH_MAX = 50_000  # history rows after Last-Event-ID searched at most; more: resync
QUEUE_MAX = 1_000  # events waiting for one slow client; more: resync
PING_S = 15.0
RECHECK_S = 60.0  # the caller is checked again this often
READY_WAIT_S = 5.0  # a new stream waits this long for the hub to be listening
SEND_TIMEOUT_S = 30.0  # a client that takes no bytes for this long is dropped
BACKOFF_BASE_S, BACKOFF_MAX_S = 0.5, 30.0
_RECENT_MAX = 4_096  # ids the hub remembers, so a catch-up does not send a row twice

STREAMS = Gauge("ganzhi_api_live_streams", "Open live streams (GET /api/v1/live).")
EVENTS = Counter("ganzhi_api_live_events_total",
                 "Events sent on live streams, by event (incident, resync).", ["event"])

_EVENT_SQL = (
    "SELECT h.id AS history_id, h.action, h.at, h.actor, j.path AS site_path,"
    f" {SUMMARY_COLUMNS} {SUMMARY_FROM} JOIN incident_history h ON h.incident_id = i.id"
    " LEFT JOIN sites s ON s.id = i.site_id"
    " LEFT JOIN jurisdictions j ON j.id = s.jurisdiction_id")


@dataclass(frozen=True)
class HistoryEvent:
    """One history row, loaded once, ready to send to every stream whose scope has it."""

    history_id: int
    site_id: str
    site_path: str | None  # None: the site is not registered
    data: str  # the event's JSON (LiveEvent)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> HistoryEvent:
        history_id, site_path = row.pop("history_id"), row.pop("site_path")
        action, at, actor = row.pop("action"), row.pop("at"), row.pop("actor")
        incident = IncidentSummary.model_validate(row)
        event = LiveEvent(history_id=history_id, incident_id=incident.id, action=action,
                          at=at, actor=actor, incident=incident)
        return cls(history_id, incident.site_id, site_path, event.model_dump_json())


class Resync:
    """The client missed events: it should reload what it shows."""


RESYNC = Resync()


async def load_events(conn: AsyncConnection[Any], where: str, params: list[Any],
                      limit: int) -> list[HistoryEvent]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"{_EVENT_SQL} WHERE {where} ORDER BY h.id LIMIT %s",
                          [*params, limit])
        return [HistoryEvent.from_row(r) for r in await cur.fetchall()]


class Subscriber:
    """One open stream: its caller's scope and its bounded queue."""

    def __init__(self, scope: Scope, maxsize: int = QUEUE_MAX) -> None:
        self.scope = scope
        self.queue: asyncio.Queue[HistoryEvent | Resync] = asyncio.Queue(maxsize)

    def offer(self, event: HistoryEvent) -> None:
        if self.scope.allows(event.site_id, event.site_path):
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.resync()

    def resync(self) -> None:
        """Drop what waits and ask the client to reload: its backlog is bounded."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(RESYNC)


class LiveHub:
    """One LISTEN connection per process, fanned out to the open streams."""

    def __init__(self, dsn: str, pool: AsyncConnectionPool[Any]) -> None:
        self._dsn = dsn
        self._pool = pool
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_id: int | None = None  # the newest row seen; None before the first LISTEN
        self._recent: OrderedDict[int, None] = OrderedDict()
        self.listening = asyncio.Event()

    def subscribe(self, scope: Scope) -> Subscriber:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="live-hub")
        sub = Subscriber(scope)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    async def wait_listening(self, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), within_s)
        return self.listening.is_set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.listening.clear()

    async def _run(self) -> None:
        delay = BACKOFF_BASE_S
        while True:
            try:
                async with await AsyncConnection.connect(
                        self._dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self._catch_up()
                    self.listening.set()
                    log.info("live_listening")
                    delay = BACKOFF_BASE_S
                    while True:
                        async for notify in conn.notifies(timeout=PING_S):
                            await self._on_notify(notify.payload)
                        await conn.execute("SELECT 1")  # a dead connection fails here
            except Exception as exc:  # the database gone, or a bug: never stop listening
                self.listening.clear()
                wait = delay / 2 + random.uniform(0, delay / 2)
                level = log.warning if isinstance(exc, psycopg.Error | OSError) else log.error
                level("live_listen_lost", error=f"{type(exc).__name__}: {exc}"[:300],
                      retry_s=round(wait, 2))
                await asyncio.sleep(wait)
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def _catch_up(self) -> None:
        """After (re)connecting: the rows committed while nobody listened, or, the first
        time, only where history stands now."""
        async with self._pool.connection() as conn:
            if self._last_id is None:
                cur = await conn.execute("SELECT COALESCE(max(id), 0) FROM incident_history")
                row = await cur.fetchone()
                self._last_id = int(row[0]) if row else 0
                return
            events = await load_events(conn, "h.id > %s", [self._last_id], REPLAY_MAX + 1)
            if len(events) > REPLAY_MAX:
                cur = await conn.execute("SELECT COALESCE(max(id), 0) FROM incident_history")
                row = await cur.fetchone()
                self._last_id = int(row[0]) if row else self._last_id
                for sub in list(self._subscribers):
                    sub.resync()
                return
        for event in events:
            self._dispatch(event)

    async def _on_notify(self, payload: str) -> None:
        try:
            history_id = int(payload)
        except ValueError:
            log.warning("live_bad_payload", payload=payload[:64])
            return
        if history_id in self._recent:
            return
        if self._subscribers:
            async with self._pool.connection() as conn:
                events = await load_events(conn, "h.id = %s", [history_id], 1)
            for event in events:
                self._dispatch(event)
        self._seen(history_id)

    def _dispatch(self, event: HistoryEvent) -> None:
        if event.history_id in self._recent:
            return
        for sub in list(self._subscribers):
            sub.offer(event)
        self._seen(event.history_id)

    def _seen(self, history_id: int) -> None:
        self._recent[history_id] = None
        while len(self._recent) > _RECENT_MAX:
            self._recent.popitem(last=False)
        self._last_id = max(self._last_id or 0, history_id)


def get_hub(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.live
    return hub


def _incident(event: HistoryEvent) -> ServerSentEvent:
    EVENTS.labels("incident").inc()
    return ServerSentEvent(data=event.data, event="incident", id=str(event.history_id))


def _resync() -> ServerSentEvent:
    EVENTS.labels("resync").inc()
    return ServerSentEvent(data="{}", event="resync")


async def _replay(pool: AsyncConnectionPool[Any], scope: Scope, after: int
                  ) -> list[HistoryEvent] | None:
    """The scope's rows after ``after``, or None when the client must resync instead."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT COALESCE(max(id), 0) FROM incident_history")
        row = await cur.fetchone()
        newest = int(row[0]) if row else 0
        if newest - after > REPLAY_SEARCH_MAX:
            return None
        cond, params = scope.site_filter("i.site_id")
        events = await load_events(conn, f"h.id > %s AND {cond}", [after, *params],
                                   REPLAY_MAX + 1)
    return None if len(events) > REPLAY_MAX else events


async def _still_allowed(request: Request, pool: AsyncConnectionPool[Any],
                         credentials: HTTPAuthorizationCredentials, caller: Caller) -> bool:
    """The caller checked again as a new request would be: token, account, key, scope."""
    try:
        async with pool.connection() as conn:
            now = await get_caller(request, conn, credentials)
    except HTTPException:
        return False
    return now.can(Permission.READ) and now.scope == caller.scope


async def _stream(request: Request, pool: AsyncConnectionPool[Any], hub: LiveHub,
                  sub: Subscriber, caller: Caller, credentials: HTTPAuthorizationCredentials,
                  last_event_id: int | None) -> AsyncIterator[ServerSentEvent]:
    STREAMS.inc()
    try:
        replayed = 0
        if last_event_id is not None:
            events = await _replay(pool, caller.scope, last_event_id)
            if events is None:
                yield _resync()
            else:
                for event in events:
                    replayed = event.history_id
                    yield _incident(event)
        recheck_at = time.monotonic() + RECHECK_S
        while True:
            try:
                item = await asyncio.wait_for(sub.queue.get(),
                                              max(recheck_at - time.monotonic(), 0))
            except TimeoutError:
                if not await _still_allowed(request, pool, credentials, caller):
                    log.info("live_stream_ended", actor=caller.actor, reason="caller")
                    return
                recheck_at = time.monotonic() + RECHECK_S
                continue
            if isinstance(item, Resync):
                yield _resync()
            elif item.history_id > replayed:
                yield _incident(item)
    finally:
        hub.unsubscribe(sub)
        STREAMS.dec()


@router.get("/live", response_class=EventSourceResponse, responses={
    200: {"description": "text/event-stream: `event: incident` (data: LiveEvent, id: the"
                         " history row's id), `event: resync` (data: {}), comment pings",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    401: {"description": "No valid access token or API key"},
    403: {"description": "The caller lacks the permission"}})
async def live(
    request: Request,
    pool: PoolDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    last_event_id: Annotated[int | None, Header(
        ge=0, le=2**63 - 1, description="The id of the last event received: the rows of"
        " the caller's scope after it are sent first (at most 500; else resync).")] = None,
) -> EventSourceResponse:
    """Every incident history row (opened, acknowledged, commented, resolved, ...) of a
    site in the caller's scope, as it is committed; see docs/contracts.md."""
    # The caller is checked on a connection given back at once: a stream lives for
    # hours and must not hold one of the pool's connections.
    async with pool.connection() as conn:
        caller = await get_caller(request, conn, credentials)
    if not caller.can(Permission.READ):
        what = "role" if caller.kind == "user" else "API key"
        raise HTTPException(403, f"this {what} lacks the 'read' permission")
    assert credentials is not None  # get_caller answered 401 otherwise
    hub = get_hub(request)
    sub = hub.subscribe(caller.scope)
    if not await hub.wait_listening(READY_WAIT_S):
        log.warning("live_not_listening_yet")  # the hub catches up once it is
    return EventSourceResponse(
        _stream(request, pool, hub, sub, caller, credentials, last_event_id),
        ping=PING_S, send_timeout=SEND_TIMEOUT_S, headers={"Cache-Control": "no-store"},
        # Also when the stream never starts (HEAD, a client gone before the first byte).
        background=BackgroundTask(hub.unsubscribe, sub))
