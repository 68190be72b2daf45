"""The outbox dispatcher against real PostgreSQL and a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from alerts.dispatcher import ClueDispatcher
from alerts.repository import ApplyResult, apply_transition
from alerts.signing import EVENT_HEADER, IDEMPOTENCY_HEADER, verify_headers
from ganzhi.contracts import AlertTransition, Clue, Severity, TransitionKind
from ganzhi.settings import WebhookSettings

pytestmark = pytest.mark.integration

SECRET = "test-webhook-secret"
T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


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


def webhook(url: str | None, **kw: Any) -> WebhookSettings:
    fields: dict[str, Any] = {
        "url": url,
        "secret": SecretStr(SECRET),
        "timeout_s": 2.0,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "poll_interval_s": 0.02,
        "max_attempts": 5,
    }
    fields.update(kw)
    return WebhookSettings(**fields)


async def open_alert(pool: AsyncConnectionPool[Any], hours: int = 0) -> ApplyResult:
    start = T0 + timedelta(hours=hours)
    t = AlertTransition(
        transition_id=f"fp:{start.isoformat()}",
        kind=TransitionKind.FIRING,
        fingerprint="fp",
        rule_id="cold_chain.chilled",
        severity=Severity.MAJOR,
        site_id="site-1",
        device_id="fridge-1",
        started_at=start,
        at=start + timedelta(minutes=10),
        summary="冷库温度超限",
        values={"max": 11.5},
    )
    async with pool.connection() as conn:
        result = await apply_transition(conn, t, "http://ganzhi.test")
        await conn.execute("UPDATE alerts SET status = 'resolved'")  # leave room for the next
    return result


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
    dispatcher = ClueDispatcher(webhook(receiver.url), pool)
    await run_until(dispatcher, lambda: outbox(pg_dsn)[0][0] == "delivered")

    assert [c[0] for c in receiver.calls] == [500, 500, 200]
    assert all(valid for *_, valid in receiver.calls)
    keys = {c[1][IDEMPOTENCY_HEADER] for c in receiver.calls}
    assert keys == {opened.clue_id}
    assert {c[1][EVENT_HEADER] for c in receiver.calls} == {"clue.created"}
    assert len({c[2] for c in receiver.calls}) == 1  # the same body every time
    assert list(receiver.accepted) == [opened.clue_id]
    clue = Clue.model_validate_json(receiver.accepted[str(opened.clue_id)])
    assert clue.alert_id == opened.alert_id and clue.summary == "冷库温度超限"
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT payload FROM clue_outbox").fetchone()
    assert row is not None and json.loads(receiver.accepted[str(opened.clue_id)]) == row[0]
    assert outbox(pg_dsn) == [("delivered", 3, 200)]
    assert await dispatcher.refresh_pending() == 0


async def test_refused_clue_is_dead_and_others_go_on(
    pg_dsn: str, pool: AsyncConnectionPool[Any], receiver_factory: Any
) -> None:
    receiver: Receiver = receiver_factory([422])
    await open_alert(pool, 0)
    await open_alert(pool, 1)
    dispatcher = ClueDispatcher(webhook(receiver.url), pool, batch_size=1)
    await run_until(dispatcher, lambda: all(r[0] != "pending" for r in outbox(pg_dsn)))
    assert outbox(pg_dsn) == [("dead", 1, 422), ("delivered", 1, 200)]


async def test_unreachable_receiver_retries_until_max_attempts(
    pg_dsn: str, pool: AsyncConnectionPool[Any]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    await open_alert(pool)
    dispatcher = ClueDispatcher(webhook(f"http://127.0.0.1:{port}/", max_attempts=3), pool)
    await run_until(dispatcher, lambda: outbox(pg_dsn)[0][0] == "dead")
    assert outbox(pg_dsn) == [("dead", 3, None)]


async def test_without_url_clues_stay_pending(pg_dsn: str, pool: AsyncConnectionPool[Any]) -> None:
    await open_alert(pool)
    dispatcher = ClueDispatcher(webhook(None), pool)
    assert await dispatcher.run_once() == 0
    assert await dispatcher.run_once() == 0
    assert dispatcher.pending == 1
    assert outbox(pg_dsn) == [("pending", 0, None)]
