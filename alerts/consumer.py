"""Kafka consumer of alert transitions: parse, apply, THEN commit (at-least-once).

The database sink is idempotent (``transition_id``), so a batch redelivered after a crash
or a rebalance changes nothing. A record that cannot be parsed is logged, counted and
skipped; a database error is retried (the batch is not committed until it is applied).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from alerts import metrics
from alerts.lifecycle import backoff_delay
from alerts.repository import ApplyResult, apply_transition
from ganzhi.contracts import AlertTransition, KafkaTopic
from ganzhi.observability import get_logger
from ganzhi.settings import Settings

GROUP_ID = "ganzhi-alerts"
log = get_logger("alerts.consumer")


@dataclass(frozen=True)
class Rejected:
    reason: str
    error: str


def parse_transition(raw: bytes | None) -> AlertTransition | Rejected:
    """Parse one record value; never raises."""
    if raw is None:
        return Rejected("empty", "record has no value")
    try:
        return AlertTransition.model_validate_json(raw)
    except ValidationError as exc:
        types = {e["type"] for e in exc.errors()}
        reason = "invalid_json" if "json_invalid" in types else "invalid_schema"
        return Rejected(reason, str(exc)[:500])


_OUTCOME_METRIC = {"opened": metrics.ALERTS_OPENED, "resolved": metrics.ALERTS_RESOLVED}


class TransitionConsumer:
    """Consumes ``KafkaTopic.ALERT_TRANSITIONS`` in group ``ganzhi-alerts``."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[Any],
        *,
        group_id: str = GROUP_ID,
        max_records: int = 500,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._group_id = group_id
        self._max_records = max_records
        self.running = False
        self.applied = 0

    async def _apply(self, t: AlertTransition, stop: asyncio.Event) -> ApplyResult | None:
        """Apply one transition, retrying database errors; None when stopped while failing."""
        attempt = 0
        while True:
            try:
                async with self._pool.connection() as conn:
                    return await apply_transition(conn, t, self._settings.webhook.public_base_url)
            except Exception as exc:
                attempt += 1
                metrics.APPLY_ERRORS.inc()
                delay = backoff_delay(attempt, 0.5, 30.0)
                log.warning(
                    "apply_failed",
                    transition_id=t.transition_id,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 2),
                )
                if stop.is_set():
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def handle(self, raw: bytes | None, stop: asyncio.Event) -> bool:
        """Parse and apply one record value. False: stopped before it could be applied."""
        parsed = parse_transition(raw)
        if isinstance(parsed, Rejected):
            metrics.TRANSITIONS_INVALID.labels(parsed.reason).inc()
            log.warning("transition_invalid", reason=parsed.reason, error=parsed.error)
            return True
        result = await self._apply(parsed, stop)
        if result is None:
            return False
        metrics.TRANSITIONS.labels(result.outcome).inc()
        if result.outcome in _OUTCOME_METRIC:
            _OUTCOME_METRIC[result.outcome].inc()
        self.applied += 1
        log.info(
            "transition_applied",
            transition_id=parsed.transition_id,
            kind=parsed.kind.value,
            fingerprint=parsed.fingerprint,
            outcome=result.outcome,
            reason=result.reason,
            alert_id=result.alert_id,
        )
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished and committed first."""
        consumer = AIOKafkaConsumer(
            KafkaTopic.ALERT_TRANSITIONS.value,
            bootstrap_servers=self._settings.kafka.bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self.running = True
        log.info("consumer_started", topic=KafkaTopic.ALERT_TRANSITIONS.value, group=self._group_id)
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
                if not batches:
                    continue
                complete = True
                for records in batches.values():
                    for record in records:
                        if not await self.handle(record.value, stop):
                            complete = False
                            break
                    if not complete:
                        break
                if not complete:
                    # Stopped while the database was failing: commit nothing, the records
                    # come again to whoever consumes next.
                    break
                await consumer.commit()
        finally:
            self.running = False
            await consumer.stop()
            log.info("consumer_stopped")
