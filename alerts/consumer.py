"""Kafka consumer of alert transitions: parse, apply, THEN commit (at-least-once).

The database sink is idempotent (``transition_id``), so a batch redelivered after a crash
or a rebalance changes nothing. What can never be applied - a record that does not
parse, or one the database refuses - goes to the dead-letter topic (stage ``alerts``)
with its reason and counts in ``ganzhi_alerts_dead_lettered_total{reason}``; the next
record goes on. Only transient failures (database down, pool exhausted) are retried,
with the platform's backoff, until they succeed or the service is asked to stop: then
nothing more is committed and the records come again to whoever consumes next.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from alerts import metrics
from alerts.repository import ApplyResult, Policy, apply_transition
from ganzhi.contracts import AlertTransition, KafkaTopic
from ganzhi.contracts.dead_letters import describe, make_dead_letter
from ganzhi.failures import (
    RetryPolicy,
    Stopped,
    close_within,
    is_permanent_db_error,
    is_transient,
    retry_transient,
)
from ganzhi.kafka import client_options
from ganzhi.observability import get_logger
from ganzhi.settings import Settings

GROUP_ID = "ganzhi-alerts"
RETRY = RetryPolicy(base_s=0.5, max_s=30.0)
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
        return Rejected(reason, describe(exc))


_OUTCOME_METRIC = {"opened": metrics.ALERTS_OPENED, "resolved": metrics.ALERTS_RESOLVED}


class TransitionConsumer:
    """Consumes ``KafkaTopic.ALERT_TRANSITIONS`` in group ``ganzhi-alerts``."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[Any],
        policy: Policy,
        *,
        group_id: str = GROUP_ID,
        max_records: int = 500,
        retry: RetryPolicy = RETRY,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._policy = policy
        self._group_id = group_id
        self._max_records = max_records
        self._retry = retry
        self._instance_id = settings.alerts.instance_id or None
        self._producer: AIOKafkaProducer | None = None
        self.running = False
        self.applied = 0
        self.dead_lettered = 0

    async def _apply(self, t: AlertTransition) -> ApplyResult:
        async with self._pool.connection() as conn:
            return await apply_transition(conn, t, self._policy)

    @staticmethod
    def _on_retry(t: AlertTransition) -> Any:
        def report(exc: BaseException, attempt: int, delay: float) -> None:
            metrics.APPLY_ERRORS.inc()
            log.warning("apply_failed", transition_id=t.transition_id, attempt=attempt,
                        error=f"{type(exc).__name__}: {exc}"[:500], retry_in_s=round(delay, 2))
        return report

    async def _dead_letter(self, raw: bytes | None, key: bytes | None, reason: str,
                           error: str, stop: asyncio.Event) -> None:
        dl = make_dead_letter(KafkaTopic.ALERT_TRANSITIONS.value, raw or b"", reason, error,
                              stage="alerts")
        producer = self._producer
        assert producer is not None

        async def send() -> None:
            await producer.send_and_wait(KafkaTopic.DEAD_LETTER.value,
                                         value=dl.model_dump_json().encode(), key=key)

        await retry_transient(send, policy=self._retry, stop=stop)
        metrics.DEAD_LETTERED.labels(reason).inc()
        self.dead_lettered += 1
        log.warning("dead_letter", reason=reason, error=error[:300])

    async def handle(self, raw: bytes | None, stop: asyncio.Event,
                     key: bytes | None = None) -> None:
        """Parse and apply one record value, or dead-letter it. Raises
        :class:`~ganzhi.failures.Stopped` when stopped while the database is down."""
        parsed = parse_transition(raw)
        if isinstance(parsed, Rejected):
            await self._dead_letter(raw, key, parsed.reason, parsed.error, stop)
            return
        try:
            result = await retry_transient(lambda: self._apply(parsed), policy=self._retry,
                                           stop=stop, on_retry=self._on_retry(parsed))
        except Stopped:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            reason = "db_refused" if is_permanent_db_error(exc) else "apply_error"
            log.exception("apply_refused", transition_id=parsed.transition_id)
            await self._dead_letter(raw, key, reason, f"{type(exc).__name__}: {exc}", stop)
            return
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
            incident_id=result.incident_id,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished and committed first."""
        k = self._settings.kafka
        consumer = AIOKafkaConsumer(
            KafkaTopic.ALERT_TRANSITIONS.value,
            **client_options(k),
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(k.group_session_timeout_s * 1000),
            heartbeat_interval_ms=int(k.group_heartbeat_s * 1000),
            rebalance_timeout_ms=int(k.group_rebalance_timeout_s * 1000),
            group_instance_id=self._instance_id,
        )
        self._producer = AIOKafkaProducer(**client_options(k), acks="all",
                                          enable_idempotence=False)
        await self._producer.start()
        await consumer.start()
        self.running = True
        log.info("consumer_started", topic=KafkaTopic.ALERT_TRANSITIONS.value, group=self._group_id)
        try:
            reported: set[int] = set()
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
                for records in batches.values():
                    for record in records:
                        await self.handle(record.value, stop, record.key)
                if batches:
                    await consumer.commit()
                reported = await _report_lag(consumer, reported)
        except Stopped:
            # Stopped while the database was failing: commit nothing, the records come
            # again to whoever consumes next.
            log.warning("stopped_with_batch_uncommitted")
        finally:
            self.running = False
            # Bounded: with Kafka down, leaving the group and flushing would wait for
            # their request timeouts; what was not committed comes again anyway.
            await close_within(5.0, consumer.stop, self._producer.stop)
            log.info("consumer_stopped")


async def _report_lag(consumer: AIOKafkaConsumer, reported: set[int]) -> set[int]:
    """``ganzhi_alerts_lag_records`` per assigned partition (those no longer assigned are
    removed); returns the partitions reported."""
    now: dict[int, int] = {}
    for tp in consumer.assignment():
        try:
            highwater = consumer.highwater(tp)
            if highwater is not None:
                now[tp.partition] = max(0, highwater - await consumer.position(tp))
        except Exception:  # a rebalance took it meanwhile: not reported
            continue
    for p in reported - now.keys():
        with contextlib.suppress(KeyError):
            metrics.LAG.remove(str(p))
    for p, n in now.items():
        metrics.LAG.labels(str(p)).set(n)
    return set(now)
