"""The platform's one line between permanent and transient failures, and its retry policy."""

from __future__ import annotations

import asyncio

import aiokafka.errors as kafka_errors
import psycopg
import psycopg_pool
import pytest

from ganzhi.failures import (
    PermanentError,
    RetryPolicy,
    Stopped,
    is_permanent_db_error,
    is_transient,
    retry_transient,
)


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError("connection refused"),
    psycopg.errors.AdminShutdown("terminating connection"),
    psycopg.errors.TooManyConnections("too many"),
    psycopg.errors.SerializationFailure("retry"),
    psycopg.errors.UndefinedTable("a platform fault, not the message's"),
    psycopg_pool.PoolTimeout("no connection in time"),
    kafka_errors.KafkaConnectionError("down"),
    kafka_errors.KafkaTimeoutError("no answer"),
    kafka_errors.NotLeaderForPartitionError(),
    ConnectionResetError(),
    TimeoutError(),
])
def test_transient(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    psycopg.errors.CharacterNotInRepertoire("invalid byte sequence for encoding UTF8: 0x00"),
    psycopg.errors.NumericValueOutOfRange("out of range"),
    psycopg.errors.DatetimeFieldOverflow("overflow"),
    psycopg.errors.CheckViolation("no partition"),
    psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    kafka_errors.MessageSizeTooLargeError(),
    kafka_errors.RecordTooLargeError(),
    PermanentError("invalid_schema", "x"),
    ValueError("a parse error"),
    RecursionError(),
    TypeError("a bug one input triggers"),
])
def test_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_database_refusals_are_told_from_outages() -> None:
    assert is_permanent_db_error(psycopg.errors.UniqueViolation("dup"))
    assert not is_permanent_db_error(psycopg.OperationalError("down"))


def test_full_jitter_grows_to_a_cap() -> None:
    p = RetryPolicy(base_s=1.0, max_s=30.0)
    assert [p.delay(n, lambda: 1.0) for n in (1, 2, 3, 4, 6, 40)] == [1, 2, 4, 8, 30, 30]
    assert p.delay(3, lambda: 0.25) == 1.0
    assert p.delay(10_000) <= 30.0


def test_equal_jitter_keeps_half_of_each_step() -> None:
    p = RetryPolicy(base_s=1.0, max_s=60.0, jitter="equal")
    high = [p.delay(n, lambda: 1.0) for n in range(1, 9)]
    low = [p.delay(n, lambda: 0.0) for n in range(1, 9)]
    assert high == [1, 2, 4, 8, 16, 32, 60, 60]
    assert low == [h / 2 for h in high]


async def test_transient_failures_are_retried_until_success() -> None:
    calls: list[int] = []
    seen: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise psycopg.OperationalError("down")
        return "ok"

    result = await retry_transient(flaky, policy=RetryPolicy(0.001, 0.002),
                                   on_retry=lambda e, attempt, d: seen.append(attempt))
    assert result == "ok" and len(calls) == 4 and seen == [1, 2, 3]


async def test_permanent_failure_is_raised_at_once() -> None:
    calls: list[int] = []

    async def refused() -> None:
        calls.append(1)
        raise psycopg.errors.CharacterNotInRepertoire("0x00")

    with pytest.raises(psycopg.errors.CharacterNotInRepertoire):
        await retry_transient(refused, policy=RetryPolicy(0.001, 0.002))
    assert calls == [1]


async def test_a_stop_ends_the_wait_at_once() -> None:
    stop = asyncio.Event()

    async def down() -> None:
        raise psycopg.OperationalError("down")

    task = asyncio.create_task(retry_transient(down, policy=RetryPolicy(60.0, 60.0, "equal"),
                                               stop=stop))
    await asyncio.sleep(0.05)
    stop.set()
    async with asyncio.timeout(1):
        with pytest.raises(Stopped):
            await task


async def test_a_long_wait_on_a_server_ends_at_a_stop() -> None:
    from ganzhi.failures import unless_stopped

    stop = asyncio.Event()
    task = asyncio.create_task(unless_stopped(asyncio.sleep(60, "late"), stop))
    await asyncio.sleep(0.05)
    stop.set()
    async with asyncio.timeout(1):
        with pytest.raises(Stopped):
            await task
    assert await unless_stopped(asyncio.sleep(0, "now"), asyncio.Event()) == "now"


async def test_closing_a_client_is_bounded_whatever_it_does() -> None:
    from ganzhi.failures import close_within

    closed: list[str] = []

    async def hangs() -> None:
        await asyncio.sleep(60)

    async def fails() -> None:
        raise asyncio.CancelledError

    async def works() -> None:
        closed.append("ok")

    async with asyncio.timeout(2):
        await close_within(0.1, hangs, fails, works)
    assert closed == ["ok"]
