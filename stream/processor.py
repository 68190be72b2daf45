"""One batch of messages: store readings, run the rules, send transitions, save state.

No Faust here: the agents hand in raw message values with their partitions and receive
times, and supply the rule-state store and the transition sender, so this is testable
without a broker. Order is what makes at-least-once safe: readings are committed to
PostgreSQL and transitions delivered *before* rule state is saved and offsets are
acknowledged. A crash in between replays the batch: the sink ignores stored rows, and the
rules repeat the same transitions with the same ids, which the alerts service
deduplicates.

The telemetry agent, the status agent and the offline timer share one lock: each reads
rule state, awaits the sender, then writes state, and must not interleave with another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import psycopg
from pydantic import ValidationError

from ganzhi.contracts import AlertTransition, Detection, DeviceStatus, Telemetry
from ganzhi.observability import get_logger
from stream import metrics
from stream.engine import Evaluation, RuleEngine, StateStore, StateView
from stream.sinks.readings import ReadingRow, WriteResult, rows_from_telemetry

log = get_logger(__name__)

M = TypeVar("M", Telemetry, DeviceStatus, Detection)


@dataclass(frozen=True)
class Incoming:
    partition: int
    value: bytes
    received_at: datetime | None = None  # when the broker got it (None: now)


class ReadingsWriter(Protocol):
    async def write(self, rows: Sequence[ReadingRow]) -> WriteResult: ...


TransitionSender = Callable[[Sequence[AlertTransition]], Awaitable[None]]


@dataclass
class BatchOutcome:
    messages: int = 0
    invalid: int = 0
    inserted: int = 0
    duplicates: int = 0
    late: int = 0
    transitions: list[AlertTransition] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


class BatchProcessor:
    def __init__(
        self,
        engine: RuleEngine,
        sink: ReadingsWriter,
        states: StateStore,
        send: TransitionSender,
        *,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._engine = engine
        self._sink = sink
        self._states = states
        self._send = send
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self.last_batch_at: float | None = None

    def _parse(
        self, model: type[M], batch: Sequence[Incoming], out: BatchOutcome
    ) -> list[tuple[Incoming, M]]:
        parsed: list[tuple[Incoming, M]] = []
        for item in batch:
            try:
                parsed.append((item, model.model_validate_json(item.value)))
            except ValidationError as exc:
                out.invalid += 1
                metrics.INVALID.inc()
                log.warning("invalid message skipped", partition=item.partition,
                            model=model.__name__, errors=exc.error_count(),
                            error=str(exc)[:500])
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

    async def _emit(self, view: StateView, ev: Evaluation, out: BatchOutcome) -> None:
        if ev.transitions:
            await self._send(ev.transitions)
            for tr in ev.transitions:
                metrics.TRANSITIONS.labels(tr.rule_id, tr.kind.value).inc()
                log.info("alert transition", kind=tr.kind.value, rule_id=tr.rule_id,
                         site_id=tr.site_id, device_id=tr.device_id,
                         transition_id=tr.transition_id, summary=tr.summary)
        view.flush()
        out.transitions.extend(ev.transitions)
        out.late += ev.late

    def _done(self, out: BatchOutcome, started: float) -> BatchOutcome:
        metrics.BATCHES.inc()
        metrics.BATCH_MESSAGES.observe(out.messages)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self.last_batch_at = time.time()
        return out

    async def process(self, batch: Sequence[Incoming]) -> BatchOutcome:
        """A batch of the telemetry topic."""
        started = time.perf_counter()
        out = BatchOutcome(messages=len(batch))
        messages = self._parse(Telemetry, batch, out)
        rows = [row for _, msg in messages for row in rows_from_telemetry(msg)]
        if rows:
            written = await self._write(rows)
            out.inserted, out.duplicates = written.inserted, written.duplicates
            metrics.READINGS_WRITTEN.inc(written.inserted)
            metrics.READINGS_DUPLICATE.inc(written.duplicates)
        async with self._lock:
            view, ev = StateView(self._states), Evaluation()
            for item, msg in messages:
                self._engine.telemetry(view, item.partition, msg,
                                       item.received_at or self._clock(), ev)
            await self._emit(view, ev, out)
        return self._done(out, started)

    async def _evaluate(self, model: type[M], batch: Sequence[Incoming],
                        handle: Callable[[StateView, int, M, datetime, Evaluation], None]
                        ) -> BatchOutcome:
        started = time.perf_counter()
        out = BatchOutcome(messages=len(batch))
        messages = self._parse(model, batch, out)
        async with self._lock:
            view, ev = StateView(self._states), Evaluation()
            for item, msg in messages:
                handle(view, item.partition, msg, item.received_at or self._clock(), ev)
            await self._emit(view, ev, out)
        return self._done(out, started)

    async def process_status(self, batch: Sequence[Incoming]) -> BatchOutcome:
        """A batch of the status topic (births and last wills)."""
        return await self._evaluate(DeviceStatus, batch, self._engine.status)

    async def process_detections(self, batch: Sequence[Incoming]) -> BatchOutcome:
        """A batch of the detection topic (camera findings raised / cleared)."""
        return await self._evaluate(Detection, batch, self._engine.detection)

    async def tick(self, partitions: Collection[int], active_since: datetime) -> BatchOutcome:
        """The device-offline timer, over the devices of the telemetry ``partitions``."""
        out = BatchOutcome()
        async with self._lock:
            view, ev = StateView(self._states), Evaluation()
            self._engine.tick(view, self._clock(), partitions, active_since, ev)
            await self._emit(view, ev, out)
        metrics.TICKS.inc()
        return out
