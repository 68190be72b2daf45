"""Outbox dispatcher: POST each due clue event, signed, to its receiver.

2xx: delivered. A 4xx that refuses the body (400, 409, 413, 422...): dead, kept for an
operator to re-queue. Anything that is the receiver's trouble rather than the clue's -
timeouts, connection errors, 5xx, 401/403/404, 408/429 - is retried with no attempt
limit: the receiver's clues wait until it comes back or an operator drops them.

Each receiver has a breaker: after a failure it gets no attempt until its backoff
(capped exponential with jitter, growing with consecutive failures) has passed, then a
single probe; the first success opens it up again. So a receiver that is down for hours
costs one request per backoff period, not one per clue, and one receiver's trouble never
slows another's deliveries. Every attempt of one event carries the same
``Idempotency-Key`` and body; only the timestamp and signature are fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from psycopg_pool import AsyncConnectionPool

from alerts import metrics
from alerts.lifecycle import DeliveryOutcome, classify_delivery
from alerts.outbox import (
    OutboxItem,
    claim_due,
    figures,
    mark_dead,
    mark_delivered,
    mark_retry,
)
from alerts.routing import Receiver
from alerts.signing import signature_headers
from ganzhi.contracts import utcnow
from ganzhi.failures import RetryPolicy
from ganzhi.observability import get_logger
from ganzhi.settings import WebhookSettings

log = get_logger("alerts.dispatcher")


@dataclass
class Breaker:
    failures: int = 0  # consecutive rounds that failed
    closed_until: float = 0.0  # monotonic: no attempt before
    failed_at: float = float("-inf")  # monotonic time of the last failure

    def failed(self, attempt_started: float, policy: RetryPolicy,
               rand: Callable[[], float]) -> float:
        """Record a failed attempt; attempts of one round (started before the round's
        first failure came back) count once. Returns the wait before the next probe."""
        if attempt_started > self.failed_at:
            self.failures += 1
        self.failed_at = time.monotonic()
        wait = policy.delay(self.failures, rand)
        self.closed_until = max(self.closed_until, self.failed_at + wait)
        return wait

    def allowance(self, now: float, batch: int) -> int:
        if now < self.closed_until:
            return 0
        return 1 if self.failures else batch


class ClueDispatcher:
    def __init__(
        self,
        settings: WebhookSettings,
        receivers: Sequence[Receiver],
        pool: AsyncConnectionPool[Any],
        *,
        client: httpx.AsyncClient | None = None,
        batch_size: int = 20,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._receivers = list(receivers)
        self._retry = RetryPolicy(settings.backoff_base_s, settings.backoff_max_s, "equal")
        self._pool = pool
        self._client = client
        self._batch_size = batch_size
        self._rand = rand
        self._clock = clock
        self._warned: set[str] = set()
        self.breakers = {r.name: Breaker() for r in self._receivers}
        self.pending = 0
        self.held = 0
        # A claim outlives the POST it is for; a dispatcher that dies releases it by expiry.
        self.lease_s = settings.timeout_s * 2 + 10
        # The figures (a scan of the pending and dead rows) are refreshed after deliveries
        # and otherwise at most this often, so a short poll interval stays cheap.
        self.figures_every_s = 1.0
        self._figures_at = float("-inf")

    async def refresh_pending(self) -> int:
        async with self._pool.connection() as conn:
            rows = await figures(conn)
        seen = {f.receiver for f in rows}
        for f in rows:
            metrics.OUTBOX_PENDING.labels(f.receiver).set(f.pending)
            metrics.OUTBOX_HELD.labels(f.receiver).set(f.held)
            metrics.OUTBOX_DEAD.labels(f.receiver).set(f.dead)
            metrics.OUTBOX_OLDEST.labels(f.receiver).set(f.oldest_pending_s)
        for r in self._receivers:
            if r.name not in seen:
                for gauge in (metrics.OUTBOX_PENDING, metrics.OUTBOX_HELD, metrics.OUTBOX_DEAD,
                              metrics.OUTBOX_OLDEST):
                    gauge.labels(r.name).set(0)
        self.pending = sum(f.pending for f in rows)
        self.held = sum(f.held for f in rows)
        self._figures_at = time.monotonic()
        return self.pending

    async def run_once(self) -> int:
        """Claim what each receiver may take now and attempt each once; returns how many."""
        now = time.monotonic()
        claims: list[tuple[Receiver, OutboxItem]] = []
        for r in self._receivers:
            if r.url is None:
                if r.name not in self._warned:
                    log.warning("receiver_url_not_set", receiver=r.name,
                                detail="its clues stay pending in the outbox")
                    self._warned.add(r.name)
                continue
            n = self.breakers[r.name].allowance(now, self._batch_size)
            if n == 0:
                continue
            async with self._pool.connection() as conn:
                items = await claim_due(conn, r.name, n, self.lease_s)
            claims.extend((r, item) for item in items)
        if claims:
            client = self._client or httpx.AsyncClient(timeout=self._settings.timeout_s)
            try:
                await asyncio.gather(*(self._deliver(client, r, item) for r, item in claims))
            finally:
                if self._client is None:
                    await client.aclose()
        if claims or time.monotonic() - self._figures_at >= self.figures_every_s:
            await self.refresh_pending()
        return len(claims)

    async def _deliver(self, client: httpx.AsyncClient, r: Receiver, item: OutboxItem) -> None:
        assert r.url is not None
        headers = signature_headers(r.keys, int(self._clock()), item.body, item.key, item.event)
        status: int | None = None
        error = ""
        started = time.monotonic()
        try:
            response = await client.post(r.url, content=item.body, headers=headers,
                                          timeout=self._settings.timeout_s)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        latency = time.monotonic() - started
        metrics.DELIVERY_SECONDS.labels(r.name).observe(latency)
        outcome = classify_delivery(status)
        metrics.DELIVERIES.labels(r.name, outcome.value).inc()
        fields = {"receiver": r.name, "clue_id": item.clue_id, "clue_event": item.event,
                  "seq": item.seq, "attempt": item.attempts, "status": status}
        breaker = self.breakers[r.name]
        async with self._pool.connection() as conn:
            if outcome is DeliveryOutcome.DELIVERED:
                assert status is not None
                breaker.failures, breaker.closed_until = 0, 0.0
                await mark_delivered(conn, item, status, latency)
                delay = (utcnow() - item.created_at).total_seconds()
                metrics.DELIVERY_DELAY_SECONDS.labels(r.name).observe(max(0.0, delay))
                log.info("clue_delivered", **fields)
            elif outcome is DeliveryOutcome.DEAD:
                await mark_dead(conn, item, error, status, latency)
                log.error("clue_dead", error=error, **fields)
            else:
                wait = breaker.failed(started, self._retry, self._rand)
                await mark_retry(conn, item, wait, error, status, latency)
                log.warning("clue_retry", error=error, retry_in_s=round(wait, 3),
                            receiver_failures=breaker.failures, **fields)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; attempts in flight finish first."""
        log.info("dispatcher_started", receivers=[r.name for r in self._receivers])
        own_client = self._client is None
        if own_client:  # one client (and TLS context) for the service's life
            self._client = httpx.AsyncClient(timeout=self._settings.timeout_s)
        try:
            await self._loop(stop)
        finally:
            if own_client and self._client is not None:
                await self._client.aclose()
                self._client = None
        log.info("dispatcher_stopped")

    async def _loop(self, stop: asyncio.Event) -> None:
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
