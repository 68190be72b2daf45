"""Failures sorted once for the whole platform, and the one retry policy.

Every service meets two kinds of failure and must never confuse them:

* **permanent** - this message can never succeed, however often it is tried: a parse
  error of any kind, a validation error, a value the database refuses (SQLSTATE classes
  22 data exception, 23 integrity violation, 54 program limit), a record over the
  broker's size limit, a bug that one input triggers. The message is dead-lettered with a
  reason at once and the rest of the batch goes on.
* **transient** - a server is down or busy (a lost connection, a timeout, a broker
  without a leader, PostgreSQL shutting down or out of connections). The operation is
  retried with :class:`RetryPolicy`'s capped exponential backoff with full jitter, for as
  long as it takes, and the wait ends at once when the service is asked to stop
  (:class:`Stopped`), leaving the work unacknowledged for the next start.

A database error outside the "this row" classes (a missing table, a permission) is
treated as transient: it is the platform's fault, not the message's, so nothing is
dead-lettered for it; it shows in the error metrics and logs until an operator fixes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")

# SQLSTATE classes that say "this value / row is refused", whatever is retried.
_PERMANENT_SQLSTATE_CLASSES = ("22", "23", "54")


class PermanentError(Exception):
    """An input that can never succeed; ``reason`` is the dead letter's reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Stopped(Exception):
    """A stop was requested while a transient failure was being retried."""


def is_permanent_db_error(exc: BaseException) -> bool:
    """PostgreSQL (or psycopg, before sending) refused this data, as opposed to: the
    server is unavailable. psycopg raises ``DataError`` itself, without a SQLSTATE, for
    values it cannot send (a NUL character in text)."""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate[:2] in _PERMANENT_SQLSTATE_CLASSES
    return type(exc).__module__.startswith("psycopg") and any(
        c.__name__ in {"DataError", "IntegrityError"} for c in type(exc).__mro__)


def is_record_too_large(exc: BaseException) -> bool:
    """The Kafka broker or client refuses this record for its size."""
    return type(exc).__name__ in {"MessageSizeTooLargeError", "RecordTooLargeError"}


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same operation later may succeed."""
    if isinstance(exc, Stopped):
        return True  # gave up waiting for something transient: never a dead letter
    if isinstance(exc, PermanentError) or is_record_too_large(exc):
        return False
    if is_permanent_db_error(exc):
        return False
    module = type(exc).__module__
    if module.startswith(("psycopg", "psycopg_pool", "aiokafka", "kafka")):
        return True  # connection, timeout, leadership, shutdown, pool exhausted
    return isinstance(exc, OSError | TimeoutError | ConnectionError)


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter. Attempt ``n`` (1-based) has the step
    ``min(max_s, base_s * 2**(n-1))`` and waits a random part of it: all of it at most
    (``full`` jitter: many clients that failed together do not come back together), or
    at least half (``equal`` jitter: a schedule that still visibly grows, for webhooks)."""

    base_s: float = 0.5
    max_s: float = 30.0
    jitter: Literal["full", "equal"] = "full"

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        step = min(self.max_s, self.base_s * 2.0 ** min(max(attempt - 1, 0), 62))
        if self.jitter == "equal":
            return float(step / 2 + rand() * step / 2)
        return float(rand() * step)


async def sleep_or_stop(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep ``seconds``; True when ``stop`` was set first (or already)."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def unless_stopped(operation: Awaitable[T], stop: asyncio.Event | None) -> T:
    """Await ``operation``; :class:`Stopped` (and ``operation`` cancelled) when ``stop``
    is set first. For waits that a down server can make long (a produce to a Kafka that
    does not answer waits for its request timeout)."""
    task = asyncio.ensure_future(operation)
    if stop is None:
        return await task
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise Stopped("stopped while waiting on a server")
    return task.result()


async def close_within(seconds: float, *closers: Callable[[], Awaitable[object]]) -> None:
    """Run each closer (a client's ``stop``) for at most ``seconds``, whatever it raises:
    with a server down, leaving a group or flushing would wait for request timeouts, and
    what was not acknowledged comes again anyway."""
    for close in closers:
        task = asyncio.ensure_future(close())
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if not done:
            task.cancel()
        with contextlib.suppress(BaseException):
            await task


OnRetry = Callable[[BaseException, int, float], None]


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    stop: asyncio.Event | None = None,
    on_retry: OnRetry | None = None,
    rand: Callable[[], float] = random.random,
) -> T:
    """Run ``operation`` until it succeeds, retrying transient failures only.

    A permanent failure is raised at once, for the caller to dead-letter. ``on_retry``
    is told (exception, attempt, delay) before each wait, for logs and metrics.
    Raises :class:`Stopped` when ``stop`` is set while waiting.
    """
    attempt = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            wait = policy.delay(attempt, rand)
            if on_retry is not None:
                on_retry(exc, attempt, wait)
            if await sleep_or_stop(stop, wait):
                raise Stopped(f"stopped while retrying: {type(exc).__name__}") from exc
