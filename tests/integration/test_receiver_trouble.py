"""Receivers in trouble, on real PostgreSQL and real HTTP receivers.

A receiver that is down, then answers 500, then 401 (a key mix-up on its side), then
recovers gets every clue event exactly once by Idempotency-Key; while it is in trouble
it costs one probe per backoff period, and another receiver is not slowed. "Down for an
hour" is scaled down here by the backoff settings (cap 0.05 s instead of 300 s): what is
shown is that no attempt limit kills a clue, and that the probes stay one at a time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from alerts.dispatcher import ClueDispatcher
from alerts.outbox import drop
from alerts.receiver import ClueReceiver
from alerts.repository import Policy, apply_transition
from alerts.signing import KEY_ID_HEADER, SIGNATURE_HEADER, verify_headers
from ganzhi.contracts import Severity

from alerting import FIRING, RESOLVED, SECRET, SECRET_2, T0, settings, tr

pytestmark = pytest.mark.integration
MIN = timedelta(minutes=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(
        pg_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False)
    await p.open(wait=True)
    yield p
    await p.close()


async def seed(pool: AsyncConnectionPool[Any], p: Policy, devices: int) -> None:
    """Per device: a cold-room excursion with its rate of rise, later resolved (one clue,
    three events)."""
    async with pool.connection() as conn:
        for d in range(devices):
            dev = f"room-{d}"
            for t in (tr(FIRING, "cold_chain.temperature_high", start=T0, device=dev),
                      tr(FIRING, "cold_chain.rate_of_rise", start=T0 + MIN, device=dev,
                         severity=Severity.CRITICAL),
                      tr(RESOLVED, "cold_chain.rate_of_rise", start=T0 + MIN, device=dev,
                         at=T0 + 5 * MIN, severity=Severity.CRITICAL),
                      tr(RESOLVED, "cold_chain.temperature_high", start=T0, device=dev,
                         at=T0 + 9 * MIN)):
                await apply_transition(conn, t, p, now=t.at)


def statuses(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT receiver || ':' || status, count(*) FROM clue_outbox GROUP BY 1").fetchall()
    return {r[0]: int(r[1]) for r in rows}


async def until(cond: Callable[[], bool], limit_s: float = 20.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_down_then_500_then_401_then_recovered_gets_everything_exactly_once(
        pg_dsn: str, pool: AsyncConnectionPool[Any]) -> None:
    port = free_port()
    other = ClueReceiver(SECRET_2.encode()).start()
    s = settings(f"http://127.0.0.1:{port}/clues",
                 receivers=[{"name": "district", "url": other.url, "secret": SECRET_2}])
    p = Policy.from_settings(s)
    await seed(pool, p, devices=5)
    assert statuses(pg_dsn) == {"task-system:pending": 15, "district:pending": 15}
    dispatcher = ClueDispatcher(s.webhook, p.receivers, pool)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    receiver: ClueReceiver | None = None
    try:
        # Down (nothing listens): the other receiver gets all of its clues meanwhile.
        await until(lambda: statuses(pg_dsn).get("district:delivered") == 15)
        await asyncio.sleep(1.5)
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute(
                "SELECT count(*), max(attempt) FROM clue_deliveries"
                " WHERE receiver = 'task-system' AND outcome = 'retry'").fetchone()
        assert row is not None
        retries, _ = row
        assert retries > 12  # the old limit: no attempt limit now, nothing died
        assert statuses(pg_dsn)["task-system:pending"] == 15

        # Up, but failing with 500, then answering 401: still kept, still one probe.
        receiver = ClueReceiver(SECRET.encode(), port=port).start()
        receiver.answer_with = 500
        await until(lambda: receiver is not None and receiver.deliveries >= 5)
        receiver.answer_with = 401
        seen = receiver.deliveries
        await until(lambda: receiver is not None and receiver.deliveries >= seen + 5)
        assert statuses(pg_dsn)["task-system:pending"] == 15
        assert not receiver.accepted

        # Recovered: everything arrives, each event once, in order per clue.
        receiver.answer_with = None
        await until(lambda: statuses(pg_dsn).get("task-system:delivered") == 15)
    finally:
        stop.set()
        await task
        other.stop()
        if receiver is not None:
            receiver.stop()
    assert receiver is not None
    assert len(receiver.accepted) == 15 and len(other.accepted) == 15
    assert set(receiver.accepted) == set(other.accepted)  # same keys for every receiver
    for task_ in receiver.tasks.values():
        assert task_["events"] == ["created", "updated", "resolved"]
        assert task_["status"] == "closed"
    with psycopg.connect(pg_dsn) as conn:
        outcomes = dict(conn.execute(
            "SELECT outcome, count(*) FROM clue_deliveries WHERE receiver = 'task-system'"
            " GROUP BY 1").fetchall())
    assert outcomes["delivered"] == 15 and outcomes["retry"] > 20


async def test_an_operator_drops_a_receivers_clues_without_sql(
        pg_dsn: str, pool: AsyncConnectionPool[Any]) -> None:
    port = free_port()
    s = settings(f"http://127.0.0.1:{port}/clues")
    p = Policy.from_settings(s)
    await seed(pool, p, devices=2)
    async with pool.connection() as conn:
        assert await drop(conn, "task-system", "operator:wang") == 6
        assert await drop(conn, "task-system", "operator:wang") == 0
    dispatcher = ClueDispatcher(s.webhook, p.receivers, pool)
    assert await dispatcher.run_once() == 0
    assert statuses(pg_dsn) == {"task-system:dropped": 6}


async def test_rotating_the_signing_key_signs_with_both(
        pg_dsn: str, pool: AsyncConnectionPool[Any]) -> None:
    new_secret = "rotated-secret-0123456789abcdefghijkl"
    old = ClueReceiver(SECRET.encode()).start()  # a receiver not yet told of the new key
    s = settings(old.url)
    s.webhook = s.webhook.model_copy(update={
        "secret": SecretStr(new_secret), "key_id": "k2",
        "previous_secret": SecretStr(SECRET), "previous_key_id": "k1"})
    p = Policy.from_settings(s)
    await seed(pool, p, devices=1)
    dispatcher = ClueDispatcher(s.webhook, p.receivers, pool)
    try:
        for _ in range(3):
            await dispatcher.run_once()
    finally:
        old.stop()
    assert statuses(pg_dsn) == {"task-system:delivered": 3}
    assert len(old.accepted) == 3  # the old key's signature still verifies
    headers, body = old.last_request
    assert headers[KEY_ID_HEADER] == "k2"
    assert headers[SIGNATURE_HEADER].count("v1=") == 2
    assert verify_headers(new_secret.encode(), headers, body)
