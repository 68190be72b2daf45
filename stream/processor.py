"""One batch of telemetry: store readings, run the rules, send transitions.

No Faust here: the agent hands in raw message values with their partitions and supplies
the rule-state store and the transition sender, so this is testable without a broker.
Order is what makes at-least-once safe: readings are committed to PostgreSQL and
transitions delivered *before* rule state is saved and offsets are acknowledged. A crash
in between replays the batch: the sink ignores stored rows, and the rule repeats the same
transitions with the same ids, which the alerts service deduplicates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import psycopg
from pydantic import ValidationError

from ganzhi.contracts import AlertTransition, Telemetry
from ganzhi.observability import get_logger
from stream import metrics
from stream.rules.config import ColdChainRules
from stream.rules.excursion import ExcursionState, step
from stream.sinks.readings import ReadingRow, WriteResult, rows_from_telemetry

log = get_logger(__name__)


@dataclass(frozen=True)
class Incoming:
    partition: int
    value: bytes


class ReadingsWriter(Protocol):
    async def write(self, rows: Sequence[ReadingRow]) -> WriteResult: ...


class StateStore(Protocol):
    """Rule state per key; ``partition`` is that of the message the state came from."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, partition: int) -> None: ...


TransitionSender = Callable[[Sequence[AlertTransition]], Awaitable[None]]


@dataclass
class BatchOutcome:
    messages: int = 0
    invalid: int = 0
    inserted: int = 0
    duplicates: int = 0
    late: int = 0
    transitions: list[AlertTransition] = field(default_factory=list)


def state_key(site_id: str, device_id: str, rule_id: str) -> str:
    return f"{site_id}/{device_id}/{rule_id}"


class BatchProcessor:
    def __init__(
        self,
        rules: ColdChainRules,
        sink: ReadingsWriter,
        states: StateStore,
        send: TransitionSender,
        *,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        self._rules = rules
        self._sink = sink
        self._states = states
        self._send = send
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self.last_batch_at: float | None = None

    def _parse(self, batch: Sequence[Incoming], out: BatchOutcome) -> list[tuple[int, Telemetry]]:
        parsed: list[tuple[int, Telemetry]] = []
        for item in batch:
            try:
                parsed.append((item.partition, Telemetry.model_validate_json(item.value)))
            except ValidationError as exc:
                out.invalid += 1
                metrics.INVALID.inc()
                log.warning("invalid telemetry skipped", partition=item.partition,
                            errors=exc.error_count(), error=str(exc)[:500])
        return parsed

    async def _write(self, rows: list[ReadingRow]) -> WriteResult:
        """Retries until PostgreSQL takes the batch; cancellation leaves it unacknowledged."""
        delay = self._retry_base_s
        while True:
            try:
                return await self._sink.write(rows)
            except psycopg.Error as exc:
                metrics.DB_ERRORS.inc()
                log.error("readings write failed, retrying", error=str(exc)[:500],
                          rows=len(rows), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)

    def _run_rules(
        self, messages: list[tuple[int, Telemetry]], out: BatchOutcome
    ) -> dict[str, tuple[ExcursionState, int]]:
        touched: dict[str, tuple[ExcursionState, int]] = {}
        for partition, msg in messages:
            params = self._rules.params_for(msg.site_id, msg.device_id)
            samples = sorted(
                ((r.ts or msg.ts, r.value) for r in msg.readings if r.metric == params.metric),
                key=lambda s: s[0],
            )
            if not samples:
                continue
            key = state_key(msg.site_id, msg.device_id, params.rule_id)
            if key in touched:
                state = touched[key][0]
            else:
                raw = self._states.get(key)
                state = ExcursionState.model_validate_json(raw) if raw else ExcursionState()
            for ts, value in samples:
                result = step(state, params, msg.site_id, msg.device_id, ts, value)
                state = result.state
                out.transitions.extend(result.transitions)
                if result.late:
                    out.late += 1
                    metrics.LATE_DROPPED.labels(params.rule_id).inc()
            touched[key] = (state, partition)
        return touched

    async def process(self, batch: Sequence[Incoming]) -> BatchOutcome:
        started = time.perf_counter()
        out = BatchOutcome(messages=len(batch))
        messages = self._parse(batch, out)
        rows = [row for _, msg in messages for row in rows_from_telemetry(msg)]
        if rows:
            written = await self._write(rows)
            out.inserted, out.duplicates = written.inserted, written.duplicates
            metrics.READINGS_WRITTEN.inc(written.inserted)
            metrics.READINGS_DUPLICATE.inc(written.duplicates)
        states = self._run_rules(messages, out)
        if out.transitions:
            await self._send(out.transitions)
            for tr in out.transitions:
                metrics.TRANSITIONS.labels(tr.rule_id, tr.kind.value).inc()
                log.info("alert transition", kind=tr.kind.value, rule_id=tr.rule_id,
                         site_id=tr.site_id, device_id=tr.device_id,
                         transition_id=tr.transition_id, summary=tr.summary)
        for key, (state, partition) in states.items():
            self._states.put(key, state.model_dump_json(), partition)
        metrics.BATCHES.inc()
        metrics.BATCH_MESSAGES.observe(len(batch))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self.last_batch_at = time.time()
        return out
