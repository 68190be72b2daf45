"""The outbox dispatcher against real PostgreSQL and a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from alerts.dispatcher import ClueDispatcher
from alerts.lifecycle import clue_id_for
from alerts.outbox import requeue
from alerts.repository import ApplyResult, apply_transition
from alerts.routing import Receiver as Receiver_
from alerts.routing import receivers_from
from alerts.signing import EVENT_HEADER, IDEMPOTENCY_HEADER, KEY_ID_HEADER, verify_headers
from ganzhi.contracts import AlertTransition, Clue, Severity, TransitionKind
from ganzhi.settings import WebhookSettings

from alerting import SECRET, T0, policy, settings

pytestmark = pytest.mark.integration



class Receiver:
    """A task system stand-in: answers the scripted statuses in turn, then 200."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.calls: list[tuple[int, dict[str, str], bytes, bool]] = []
        self.accepted: dict[str, bytes] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = dict(self.headers.items())
                valid = verify_headers(SECRET.encode(), headers, body)
                status = outer.script.pop(0) if outer.script else 200
                if not valid:
                    status = 401
                elif status == 200:
                    outer.accepted.setdefault(headers[IDEMPOTENCY_HEADER], body)
                outer.calls.append((status, headers, body, valid))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/clues"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(
        pg_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    )
    await p.open(wait=True)
    yield p
    await p.close()


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(script: list[int]) -> Receiver:
        made.append(Receiver(script))
        return made[-1]

    yield make
    for r in made:
        r.close()


def webhook(url: str | None, **kw: Any) -> tuple[WebhookSettings, list[Receiver_]]:
    s = settings(url)
    s.webhook = s.webhook.model_copy(update=kw)
    return s.webhook, receivers_from(s)


def dispatcher_for(url: str | None, pool: AsyncConnectionPool[Any], **kw: Any
                   ) -> ClueDispatcher:
    hook, receivers = webhook(url)
    return ClueDispatcher(hook, receivers, pool, **kw)


POLICY = policy()


async def open_alert(pool: AsyncConnectionPool[Any], hours: int = 0) -> ApplyResult:
    start = T0 + timedelta(hours=hours)
    t = AlertTransition(
        transition_id=f"fp:{start.isoformat()}",
        kind=TransitionKind.FIRING,
        fingerprint=f"fp-{hours}",
        rule_id="cold_chain.chilled",
        severity=Severity.MAJOR,
        site_id="site-1",
        device_id=f"fridge-{hours}",
        started_at=start,
        at=start + timedelta(minutes=10),
        summary="冷库温度超限",
        values={"max": 11.5},
    )
    async with pool.connection() as conn:
        return await apply_transition(conn, t, POLICY)


def clue_of(result: ApplyResult, fingerprint: str, start: datetime) -> str:
    assert result.outcome == "opened"
    return clue_id_for(fingerprint, start)


async def run_until(dispatcher: ClueDispatcher, done: Any, limit_s: float = 10.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        async with asyncio.timeout(limit_s):
            while not done():  # noqa: ASYNC110 - polls database state, not an event
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task


def camera_transition(kind: TransitionKind, at: datetime, sha: str) -> AlertTransition:
    return AlertTransition(
        transition_id=f"cam:{kind.value}:{at.isoformat()}",
        kind=kind,
        fingerprint="cam-fp",
        rule_id="vision.no_mask",
        severity=Severity.MINOR,
        site_id="rest-1",
        device_id="cam-prep",
        started_at=T0,
        at=at,
        summary="kitchen staff without a mask" if kind is TransitionKind.FIRING
        else "rectified: kitchen staff without a mask",
        values={"violation": "no_mask", "snapshot_sha256": sha},
    )


FIRING = camera_transition(TransitionKind.FIRING, T0 + timedelta(minutes=1), "a" * 64)
RESOLVED = camera_transition(TransitionKind.RESOLVED, T0 + timedelta(minutes=9), "b" * 64)


async def apply(pool: AsyncConnectionPool[Any], t: AlertTransition) -> ApplyResult:
    async with pool.connection() as conn:
        return await apply_transition(conn, t, POLICY)


def events(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT event, status, attempts, last_status FROM clue_outbox ORDER BY id"
        ).fetchall()


def outbox(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT status, attempts, last_status FROM clue_outbox ORDER BY id"
        ).fetchall()


async def test_retries_after_500s_then_delivers_once(
    pg_dsn: str, pool: AsyncConnectionPool[Any], receiver_factory: Any
) -> None:
    receiver: Receiver = receiver_factory([500, 500])
    opened = await open_alert(pool)
    clue_id = clue_of(opened, "fp-0", T0)
    dispatcher = dispatcher_for(receiver.url, pool)
    await run_until(dispatcher, lambda: outbox(pg_dsn)[0][0] == "delivered")

    assert [c[0] for c in receiver.calls] == [500, 500, 200]
    assert all(valid for *_, valid in receiver.calls)
    keys = {c[1][IDEMPOTENCY_HEADER] for c in receiver.calls}
    assert keys == {clue_id}
    assert {c[1][EVENT_HEADER] for c in receiver.calls} == {"clue.created"}
    assert {c[1][KEY_ID_HEADER] for c in receiver.calls} == {"k1"}
    assert len({c[2] for c in receiver.calls}) == 1  # the same body every time
    assert list(receiver.accepted) == [clue_id]
    clue = Clue.model_validate_json(receiver.accepted[clue_id])
    assert clue.alert_id == opened.alert_id and clue.summary == "冷库温度超限"
    assert clue.incident_id == opened.incident_id
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT payload FROM clue_outbox").fetchone()
        log = conn.execute("SELECT receiver, attempt, status_code, outcome FROM"
                           " clue_deliveries ORDER BY id").fetchall()
    assert row is not None and json.loads(receiver.accepted[clue_id]) == row[0]
    assert log == [("task-system", 1, 500, "retry"), ("task-system", 2, 500, "retry"),
                   ("task-system", 3, 200, "delivered")]
    assert outbox(pg_dsn) == [("delivered", 3, 200)]
    assert await dispatcher.refresh_pending() == 0


async def test_refused_clue_is_dead_and_others_go_on(
    pg_dsn: str, pool: AsyncConnectionPool[Any], receiver_factory: Any
) -> None:
    receiver: Receiver = receiver_factory([422])
    await open_alert(pool, 0)
    await open_alert(pool, 1)
    dispatcher = dispatcher_for(receiver.url, pool, batch_size=1)
    await run_until(dispatcher, lambda: all(r[0] != "pending" for r in outbox(pg_dsn)))
    assert outbox(pg_dsn) == [("dead", 1, 422), ("delivered", 1, 200)]


async def test_without_url_clues_stay_pending(pg_dsn: str, pool: AsyncConnectionPool[Any]) -> None:
    await open_alert(pool)
    dispatcher = dispatcher_for(None, pool)
    assert await dispatcher.run_once() == 0
    assert await dispatcher.run_once() == 0
    assert dispatcher.pending == 1
    assert outbox(pg_dsn) == [("pending", 0, None)]


async def test_resolution_is_delivered_after_the_created_event_under_its_own_key(
    pg_dsn: str, pool: AsyncConnectionPool[Any], receiver_factory: Any
) -> None:
    receiver: Receiver = receiver_factory([503, 503])  # the created event fails twice
    opened = await apply(pool, FIRING)
    assert (await apply(pool, RESOLVED)).outcome == "resolved"
    clue_id = clue_of(opened, "cam-fp", T0)
    assert [e[:3] for e in events(pg_dsn)] == [("created", "pending", 0),
                                              ("resolved", "pending", 0)]
    dispatcher = dispatcher_for(receiver.url, pool)

    # Both are due, but only the created event is claimed while it is undelivered.
    assert await dispatcher.run_once() == 1
    assert events(pg_dsn) == [("created", "pending", 1, 503), ("resolved", "pending", 0, None)]
    await run_until(dispatcher, lambda: all(e[1] == "delivered" for e in events(pg_dsn)))

    assert [(c[0], c[1][EVENT_HEADER]) for c in receiver.calls] == [
        (503, "clue.created"), (503, "clue.created"), (200, "clue.created"),
        (200, "clue.resolved")]
    assert all(valid for *_, valid in receiver.calls)
    assert [c[1][IDEMPOTENCY_HEADER] for c in receiver.calls] == [clue_id] * 3 + [
        f"{clue_id}:resolved:1"]
    assert list(receiver.accepted) == [clue_id, f"{clue_id}:resolved:1"]
    assert events(pg_dsn) == [("created", "delivered", 3, 200),
                              ("resolved", "delivered", 1, 200)]

    # The bodies are the stored payloads, byte for byte what was signed.
    with psycopg.connect(pg_dsn) as conn:
        payloads = [r[0] for r in conn.execute(
            "SELECT payload FROM clue_outbox ORDER BY id").fetchall()]
    assert [json.loads(b) for b in receiver.accepted.values()] == payloads
    created = Clue.model_validate_json(receiver.accepted[clue_id])
    resolved = Clue.model_validate_json(receiver.accepted[f"{clue_id}:resolved:1"])
    assert (created.event, resolved.event) == ("created", "resolved")
    assert resolved.clue_id == created.clue_id and resolved.alert_id == opened.alert_id
    assert created.ended_at is None and resolved.ended_at == RESOLVED.at
    assert created.links.evidence == f"http://ganzhi.test/api/v1/evidence/{'a' * 64}"
    assert resolved.links.evidence == f"http://ganzhi.test/api/v1/evidence/{'b' * 64}"
    assert resolved.resolution is not None
    assert resolved.resolution["values"]["snapshot_sha256"] == "b" * 64

    # Replaying the RESOLVED transition (or another one for the closed alert) adds nothing.
    assert (await apply(pool, RESOLVED)).outcome == "duplicate"
    later = camera_transition(TransitionKind.RESOLVED, T0 + timedelta(minutes=20), "c" * 64)
    assert (await apply(pool, later)).outcome == "ignored"
    assert len(events(pg_dsn)) == 2
    assert await dispatcher.run_once() == 0
    assert len(receiver.calls) == 4


async def test_resolution_is_held_while_its_created_event_is_dead(
    pg_dsn: str, pool: AsyncConnectionPool[Any], receiver_factory: Any
) -> None:
    receiver: Receiver = receiver_factory([422])  # the task system refuses the clue once
    await apply(pool, FIRING)
    await apply(pool, RESOLVED)
    dispatcher = dispatcher_for(receiver.url, pool)
    await run_until(dispatcher, lambda: events(pg_dsn)[0][1] == "dead")
    for _ in range(3):
        assert await dispatcher.run_once() == 0
    assert events(pg_dsn) == [("created", "dead", 1, 422), ("resolved", "pending", 0, None)]
    assert (dispatcher.pending, dispatcher.held) == (1, 1)
    assert [c[1][EVENT_HEADER] for c in receiver.calls] == ["clue.created"]

    # The operator re-queues the dead clue (docs/operations.md): the resolution follows.
    async with pool.connection() as conn:
        assert await requeue(conn, "task-system", "operator:wang") == 1
    await run_until(dispatcher, lambda: all(e[1] == "delivered" for e in events(pg_dsn)))
    assert [(c[0], c[1][EVENT_HEADER]) for c in receiver.calls] == [
        (422, "clue.created"), (200, "clue.created"), (200, "clue.resolved")]
    assert (dispatcher.pending, dispatcher.held) == (0, 0)


async def test_idle_polls_are_cheap_and_a_new_clue_goes_out_within_a_poll(
    pg_dsn: str, pool: AsyncConnectionPool[Any], receiver_factory: Any
) -> None:
    """The default poll is short (alert latency, docs/performance.md); an idle round is
    one claim query, the outbox figures are refreshed at most once a second."""
    assert WebhookSettings().poll_interval_s <= 0.1
    receiver: Receiver = receiver_factory([])
    dispatcher = dispatcher_for(receiver.url, pool)
    await dispatcher.refresh_pending()
    refreshed = dispatcher._figures_at
    assert await dispatcher.run_once() == 0
    assert dispatcher._figures_at == refreshed  # not refreshed again when idle
    dispatcher.figures_every_s = 0.0
    assert await dispatcher.run_once() == 0
    assert dispatcher._figures_at > refreshed

    stop = asyncio.Event()
    hook, receivers = webhook(receiver.url,
                              poll_interval_s=WebhookSettings().poll_interval_s)
    dispatcher = ClueDispatcher(hook, receivers, pool)
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.sleep(0.3)  # idle rounds
        await open_alert(pool)
        started = asyncio.get_running_loop().time()
        while not receiver.accepted:
            assert asyncio.get_running_loop().time() - started < 5
            await asyncio.sleep(0.01)
        waited = asyncio.get_running_loop().time() - started
        assert waited < 0.1 + 0.4  # a poll, the claim and the POST
        assert dispatcher.pending == 0
    finally:
        stop.set()
        await task
