"""The alerts service: transitions consumer + clue dispatcher in one asyncio loop.

``run(settings)`` migrates the database (a no-op when up to date), makes sure the Kafka
topics exist, serves ``/metrics`` and ``/healthz`` on ``settings.ops.alerts`` and runs
until SIGTERM/SIGINT, then finishes the batch in hand, commits and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from psycopg_pool import AsyncConnectionPool

from alerts.consumer import TransitionConsumer
from alerts.dispatcher import ClueDispatcher
from ganzhi.db.migrate import migrate
from ganzhi.kafka import ensure_topics
from ganzhi.observability import OpsServer, configure_logging, get_logger, install_stop_signals
from ganzhi.settings import Settings, webhook_secret

log = get_logger("alerts.main")
HEALTH_INTERVAL_S = 5.0


class Health:
    """Snapshot read by the ops server thread; written by the service loop."""

    def __init__(self) -> None:
        self.db_ok = False
        self.db_error: str | None = None

    def check(self, consumer: TransitionConsumer, dispatcher: ClueDispatcher) -> dict[str, Any]:
        return {
            "ok": self.db_ok and consumer.running,
            "db": "ok" if self.db_ok else f"down: {self.db_error}",
            "consumer_running": consumer.running,
            "transitions_applied": consumer.applied,
            "outbox_pending": dispatcher.pending,
        }


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
    await ensure_topics(settings.kafka.bootstrap, settings.kafka.partitions)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn,
        min_size=settings.db.pool_min,
        max_size=max(settings.db.pool_max, 2),
        kwargs={"autocommit": True},
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    consumer = TransitionConsumer(settings, pool)
    dispatcher = ClueDispatcher(settings.webhook, pool)
    health = Health()
    ops = OpsServer(
        settings.ops.alerts if ops_port is None else ops_port,
        lambda: health.check(consumer, dispatcher),
    ).start()
    try:
        results = await asyncio.gather(
            _stop_on_failure(consumer.run(stop), stop),
            _stop_on_failure(dispatcher.run(stop), stop),
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
    webhook_secret(settings.webhook)  # refuse to start without a real one
    configure_logging(settings.log_level, settings.log_json)
    return asyncio.run(_main(settings))
