"""The alerts service: transitions consumer, ticker and clue dispatcher in one asyncio loop.

The ticker works by time alone, whether messages arrive or not: every
``GANZHI_ALERTS__TICK_S`` it releases clues held by a silence that ended or an
inhibition that cleared, and escalates incidents nobody acknowledged in time.

``run(settings)`` migrates the database (a no-op when up to date), makes sure the Kafka
topics exist, serves ``/metrics`` and ``/healthz`` on ``settings.ops.alerts`` and runs
until SIGTERM/SIGINT, then finishes the batch in hand, commits and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

from psycopg_pool import AsyncConnectionPool

from alerts import metrics
from alerts.consumer import TransitionConsumer
from alerts.dispatcher import ClueDispatcher
from alerts.policy import settings_check
from alerts.repository import Policy, tick
from alerts.routing import receivers_from
from ganzhi.db.migrate import migrate
from ganzhi.kafka import ensure_topics
from ganzhi.observability import OpsServer, configure_logging, get_logger, install_stop_signals
from ganzhi.settings import InsecureSettingError, Settings

log = get_logger("alerts.main")
HEALTH_INTERVAL_S = 5.0


class Health:
    """Snapshot read by the ops server thread; written by the service loop."""

    def __init__(self) -> None:
        self.db_ok = False
        self.db_error: str | None = None

        self.last_tick: float | None = None

    def check(self, consumer: TransitionConsumer, dispatcher: ClueDispatcher) -> dict[str, Any]:
        return {
            "ok": self.db_ok and consumer.running,
            "db": "ok" if self.db_ok else f"down: {self.db_error}",
            "consumer_running": consumer.running,
            "transitions_applied": consumer.applied,
            "outbox_pending": dispatcher.pending,
            "receivers": {name: {"failures": b.failures}
                          for name, b in dispatcher.breakers.items()},
            "last_tick_age_s": (round(time.monotonic() - self.last_tick, 1)
                                if self.last_tick is not None else None),
        }


async def _tick(pool: AsyncConnectionPool[Any], policy: Policy, health: Health,
                stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with pool.connection() as conn:
                released, escalated = await tick(conn, policy)
            health.last_tick = time.monotonic()
            if released or escalated:
                log.info("tick", released=released, escalated=escalated)
        except Exception as exc:  # database down: the next tick tries again
            metrics.TICK_ERRORS.inc()
            log.warning("tick_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), policy.alerts.tick_s)


async def _watch_db(pool: AsyncConnectionPool[Any], health: Health, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with pool.connection(timeout=5) as conn:
                await conn.execute("SELECT 1")
            health.db_ok, health.db_error = True, None
        except Exception as exc:
            health.db_ok, health.db_error = False, type(exc).__name__
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEALTH_INTERVAL_S)


async def _stop_on_failure(job: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """One part failing stops the others (the service exits non-zero, to be restarted)."""
    try:
        await job
    except BaseException:
        stop.set()
        raise


async def serve(settings: Settings, stop: asyncio.Event, ops_port: int | None = None) -> None:
    """Run consumer and dispatcher until ``stop`` is set (tests call this directly)."""
    dsn = settings.db.dsn.get_secret_value()
    await asyncio.to_thread(migrate, dsn)
    await ensure_topics(settings.kafka)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn,
        min_size=settings.db.pool_min,
        max_size=max(settings.db.pool_max, 2),
        kwargs={"autocommit": True},
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    policy = Policy.from_settings(settings)
    consumer = TransitionConsumer(settings, pool, policy)
    dispatcher = ClueDispatcher(settings.webhook, policy.receivers, pool)
    health = Health()
    ops = OpsServer(
        settings.ops.alerts if ops_port is None else ops_port,
        lambda: health.check(consumer, dispatcher),
        settings.ops.host,
    ).start()
    try:
        results = await asyncio.gather(
            _stop_on_failure(consumer.run(stop), stop),
            _stop_on_failure(dispatcher.run(stop), stop),
            _stop_on_failure(_tick(pool, policy, health, stop), stop),
            _stop_on_failure(_watch_db(pool, health, stop), stop),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                log.error("task_failed", error=f"{type(result).__name__}: {result}")
                raise result
    finally:
        stop.set()
        ops.stop()
        await pool.close()


async def _main(settings: Settings) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        await serve(settings, stop)
    except Exception as exc:
        log.error("alerts_failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    log.info("alerts_stopped")
    return 0


def run(settings: Settings) -> int:
    """Entry point of ``ganzhi alerts``; returns the process exit code."""
    receivers = receivers_from(settings)  # refuse to start without real secrets
    problems = settings_check(settings.alerts, [r.name for r in receivers])
    if problems:
        raise InsecureSettingError("; ".join(problems))
    configure_logging(settings.log_level, settings.log_json)
    return asyncio.run(_main(settings))
