"""Outbox dispatcher: POST each due clue, signed, to the task system's webhook.

2xx: delivered. 4xx other than 408/429: dead (the receiver refuses it). 5xx, timeouts and
connection errors: retried with capped exponential backoff and jitter, until
``max_attempts``. Every attempt of one clue event carries the same ``Idempotency-Key``
(``<clue_id>`` for ``clue.created``, ``<clue_id>:resolved`` for ``clue.resolved``) and the
same body; only the timestamp and signature are fresh.

A clue's ``resolved`` event is only claimed once its ``created`` event was delivered
(see :func:`alerts.repository.claim_due`), so the task system never hears of a
rectification before the clue itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from alerts import metrics
from alerts.lifecycle import DeliveryOutcome, classify_delivery
from alerts.repository import (
    OutboxItem,
    claim_due,
    held_count,
    mark_dead,
    mark_delivered,
    mark_retry,
    pending_count,
)
from alerts.signing import signature_headers
from ganzhi.contracts import utcnow
from ganzhi.failures import RetryPolicy
from ganzhi.observability import get_logger
from ganzhi.settings import WebhookSettings, webhook_secret

log = get_logger("alerts.dispatcher")


class ClueDispatcher:
    def __init__(
        self,
        settings: WebhookSettings,
        pool: AsyncConnectionPool[Any],
        *,
        client: httpx.AsyncClient | None = None,
        batch_size: int = 20,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._secret = webhook_secret(settings)  # refuses a missing, default or short one
        self._retry = RetryPolicy(settings.backoff_base_s, settings.backoff_max_s, "equal")
        self._pool = pool
        self._client = client
        self._batch_size = batch_size
        self._rand = rand
        self._clock = clock
        self._warned_no_url = False
        self.pending = 0
        self.held = 0  # resolved events waiting on a dead created event
        # A claim outlives the POST it is for; a dispatcher that dies releases it by expiry.
        self.lease_s = settings.timeout_s * 2 + 10

    async def refresh_pending(self) -> int:
        async with self._pool.connection() as conn:
            self.pending = await pending_count(conn)
            self.held = await held_count(conn) if self.pending else 0
        metrics.OUTBOX_PENDING.set(self.pending)
        metrics.OUTBOX_HELD.set(self.held)
        return self.pending

    async def run_once(self) -> int:
        """Claim due clues and attempt each once; returns how many were attempted."""
        if self._settings.url is None:
            if not self._warned_no_url:
                log.warning("webhook_url_not_set", detail="clues stay pending in the outbox")
                self._warned_no_url = True
            await self.refresh_pending()
            return 0
        async with self._pool.connection() as conn:
            items = await claim_due(conn, self._batch_size, self.lease_s)
        if items:
            client = self._client or httpx.AsyncClient(timeout=self._settings.timeout_s)
            try:
                await asyncio.gather(*(self._deliver(client, item) for item in items))
            finally:
                if self._client is None:
                    await client.aclose()
        await self.refresh_pending()
        return len(items)

    async def _deliver(self, client: httpx.AsyncClient, item: OutboxItem) -> None:
        url = self._settings.url
        assert url is not None
        headers = signature_headers(self._secret, int(self._clock()), item.body, item.clue_id,
                                    item.event)
        status: int | None = None
        error = ""
        started = time.monotonic()
        try:
            response = await client.post(
                url, content=item.body, headers=headers, timeout=self._settings.timeout_s
            )
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        metrics.DELIVERY_SECONDS.observe(time.monotonic() - started)
        outcome = classify_delivery(status, item.attempts, self._settings.max_attempts)
        metrics.DELIVERIES.labels(outcome.value).inc()
        fields = {
            "clue_id": item.clue_id,
            "clue_event": item.event,
            "alert_id": item.alert_id,
            "attempt": item.attempts,
            "status": status,
        }
        async with self._pool.connection() as conn:
            if outcome is DeliveryOutcome.DELIVERED:
                assert status is not None
                await mark_delivered(conn, item.id, status)
                delay = (utcnow() - item.created_at).total_seconds()
                metrics.DELIVERY_DELAY_SECONDS.observe(max(0.0, delay))
                log.info("clue_delivered", **fields)
            elif outcome is DeliveryOutcome.DEAD:
                await mark_dead(conn, item.id, error, status)
                log.error("clue_dead", error=error, **fields)
            else:
                wait = self._retry.delay(item.attempts, self._rand)
                await mark_retry(conn, item.id, wait, error, status)
                log.warning("clue_retry", error=error, retry_in_s=round(wait, 3), **fields)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; attempts in flight finish first."""
        log.info("dispatcher_started", url_set=self._settings.url is not None)
        while not stop.is_set():
            try:
                attempted = await self.run_once()
            except Exception as exc:  # database down: say so, wait, go on
                log.warning("dispatch_failed", error=f"{type(exc).__name__}: {exc}")
                attempted = 0
            if attempted:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.poll_interval_s)
        log.info("dispatcher_stopped")
