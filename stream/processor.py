"""One batch of messages: store readings, run the rules, send transitions, save state.

No Faust here: the agents hand in raw message values with their partitions and receive
times, and supply the rule-state store and the senders, so this is testable without a
broker. Order is what makes at-least-once safe: readings are committed to PostgreSQL and
transitions and dead letters delivered *before* rule state is saved and offsets are
acknowledged. A crash in between replays the batch: the sink ignores stored rows, and
the rules repeat the same transitions with the same ids, which the alerts service
deduplicates.

One message never stops the batch (:mod:`ganzhi.failures`): a record that does not
parse, whose event time lies ahead of its arrival, whose values PostgreSQL refuses, or
on which a rule raises is dead-lettered (``ganzhi.deadletter.v1``, stage ``stream``)
with its reason and the rest goes on. The sink write is bisected to find the refused
messages. Only transient failures (database or Kafka down) are retried, with the
platform's backoff, until they succeed or the worker is asked to stop
(:class:`~ganzhi.failures.Stopped`: nothing is acknowledged, the batch comes again).

The telemetry, status, detection and event agents and the timer share one lock: each reads
rule state, awaits the sender, then writes state, and must not interleave with another.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from pydantic import ValidationError

from ganzhi.contracts import (
    AlertTransition,
    DeadLetter,
    Detection,
    DeviceEvent,
    DeviceStatus,
)
from ganzhi.contracts.dead_letters import describe, make_dead_letter
from ganzhi.contracts.telemetry_decoder import TelemetryRecord, decode_telemetry
from ganzhi.failures import (
    RetryPolicy,
    is_permanent_db_error,
    is_transient,
    retry_transient,
)
from ganzhi.observability import get_logger
from stream import metrics
from stream.engine import Evaluation, RuleEngine
from stream.sinks.readings import ReadingRow, WriteResult, rows_from_telemetry
from stream.state import StateStore, StateView

log = get_logger(__name__)

M = TypeVar("M", TelemetryRecord, DeviceStatus, Detection, DeviceEvent)
STREAM_RETRY = RetryPolicy(base_s=0.5, max_s=30.0)


@dataclass(frozen=True)
class Incoming:
    partition: int
    value: bytes
    received_at: datetime | None = None  # when the broker got it (None: now)
    topic: str = ""
    key: bytes | None = None
    offset: int | None = None


class ReadingsWriter(Protocol):
    async def write(self, rows: Sequence[ReadingRow]) -> WriteResult: ...


TransitionSender = Callable[[Sequence[AlertTransition]], Awaitable[None]]
DeadLetterSender = Callable[[Sequence[tuple[bytes, DeadLetter]]], Awaitable[None]]


@dataclass
class BatchOutcome:
    messages: int = 0
    inserted: int = 0
    duplicates: int = 0
    late: int = 0
    transitions: list[AlertTransition] = field(default_factory=list)
    dead_letters: list[tuple[bytes, DeadLetter]] = field(default_factory=list)

    @property
    def invalid(self) -> int:
        return len(self.dead_letters)


def _now() -> datetime:
    return datetime.now(UTC)


def _times(msg: TelemetryRecord | DeviceStatus | Detection | DeviceEvent) -> list[datetime]:
    if isinstance(msg, TelemetryRecord):
        return [msg.ts, *(r.ts for r in msg.readings if r.ts is not None)]
    return [msg.ts]


class BatchProcessor:
    def __init__(
        self,
        engine: RuleEngine,
        sink: ReadingsWriter,
        states: StateStore,
        send: TransitionSender,
        *,
        dead_letter: DeadLetterSender,
        retry: RetryPolicy = STREAM_RETRY,
        stop: asyncio.Event | None = None,
        max_ts_ahead: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = _now,
        on_processed: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._sink = sink
        self._states = states
        self._send = send
        self._send_dead = dead_letter
        self._retry = retry
        self.stop = stop or asyncio.Event()
        self._max_ts_ahead = max_ts_ahead
        self._clock = clock
        # Held while state is read and written; the checkpointer takes it to copy state
        # and positions that agree with each other.
        self.lock = asyncio.Lock()
        self._on_processed = on_processed  # (topic, partition, offset): its effects are saved
        self.last_batch_at: float | None = None
        # Per telemetry partition: the last offset processed and its receive time.
        self._progress: dict[int, tuple[int, datetime]] = {}

    # --- refusals --------------------------------------------------------------------

    def _refuse(self, item: Incoming, out: BatchOutcome, reason: str, error: str) -> None:
        dl = make_dead_letter(item.topic or "?", item.value, reason, error, stage="stream")
        out.dead_letters.append((item.key or b"", dl))
        metrics.DEAD_LETTERED.labels(reason).inc()
        log.warning("dead_letter", topic=item.topic, partition=item.partition, reason=reason,
                    error=error[:300])

    def _parse(
        self, decode: Callable[[bytes], M], batch: Sequence[Incoming], out: BatchOutcome
    ) -> list[tuple[Incoming, M]]:
        """Parsed messages; the unparseable and those from the future are refused."""
        parsed: list[tuple[Incoming, M]] = []
        for item in batch:
            try:
                msg = decode(item.value)
            except ValidationError as exc:
                invalid_json = any(e["type"] == "json_invalid" for e in exc.errors())
                self._refuse(item, out, "invalid_json" if invalid_json else "invalid_schema",
                             describe(exc))
                continue
            horizon = (item.received_at or self._clock()) + self._max_ts_ahead
            ahead = max(_times(msg))
            if ahead > horizon:
                # It would push the device's watermark ahead and make its real data late.
                self._refuse(item, out, "ts_in_future",
                             f"ts {ahead.isoformat()} is after {horizon.isoformat()}")
                continue
            parsed.append((item, msg))
        return parsed

    # --- effects -----------------------------------------------------------------------

    def _on_retry(self, what: str) -> Callable[[BaseException, int, float], None]:
        def report(exc: BaseException, attempt: int, delay: float) -> None:
            if what == "readings":
                metrics.DB_ERRORS.inc()
            else:
                metrics.SEND_ERRORS.labels(what).inc()
            log.error("transient_failure", stage=what, error=f"{type(exc).__name__}: {exc}"[:500],
                      attempt=attempt, retry_in_s=round(delay, 2))
        return report

    async def _store(self, messages: list[tuple[Incoming, TelemetryRecord]],
                     out: BatchOutcome) -> list[tuple[Incoming, TelemetryRecord]]:
        """Write the readings of ``messages``; returns those stored. A permanent refusal
        is narrowed down by halves to the messages that cause it, which are refused."""
        rows = [row for _, msg in messages for row in rows_from_telemetry(msg)]
        if not rows:
            return messages
        try:
            written = await retry_transient(lambda: self._sink.write(rows), policy=self._retry,
                                            stop=self.stop, on_retry=self._on_retry("readings"))
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(messages) > 1:
                half = len(messages) // 2
                return (await self._store(messages[:half], out)
                        + await self._store(messages[half:], out))
            reason = "db_refused" if is_permanent_db_error(exc) else "sink_error"
            self._refuse(messages[0][0], out, reason, f"{type(exc).__name__}: {exc}")
            return []
        out.inserted += written.inserted
        out.duplicates += written.duplicates
        metrics.READINGS_WRITTEN.inc(written.inserted)
        metrics.READINGS_DUPLICATE.inc(written.duplicates)
        return messages

    def _evaluate_each(self, messages: Sequence[tuple[Incoming, M]], view: StateView,
                       ev: Evaluation, out: BatchOutcome,
                       handle: Callable[[StateView, int, M, datetime, Evaluation], None]) -> None:
        """Run ``handle`` per message; one that raises is undone and refused alone."""
        for item, msg in messages:
            mark = len(ev.transitions), ev.late
            view.begin()
            try:
                handle(view, item.partition, msg, item.received_at or self._clock(), ev)
            except Exception as exc:
                view.rollback()
                del ev.transitions[mark[0]:]
                ev.late = mark[1]
                metrics.RULE_ERRORS.inc()
                log.exception("rule_error", msg_id=str(msg.msg_id))
                self._refuse(item, out, "rule_error",
                             f"{type(exc).__name__}: {exc} (readings stored, rules skipped)")

    async def _emit(self, view: StateView, ev: Evaluation, out: BatchOutcome) -> None:
        """Send transitions and dead letters (retrying while Kafka is down), then save
        the rule state: in that order, so a crash in between repeats, never loses."""
        if ev.transitions:
            await retry_transient(lambda: self._send(ev.transitions), policy=self._retry,
                                  stop=self.stop, on_retry=self._on_retry("transitions"))
            for tr in ev.transitions:
                metrics.TRANSITIONS.labels(tr.rule_id, tr.kind.value).inc()
                log.info("alert_transition", kind=tr.kind.value, rule_id=tr.rule_id,
                         site_id=tr.site_id, device_id=tr.device_id,
                         transition_id=tr.transition_id, summary=tr.summary)
        if out.dead_letters:
            await retry_transient(lambda: self._send_dead(out.dead_letters), policy=self._retry,
                                  stop=self.stop, on_retry=self._on_retry("dead_letters"))
        view.flush()
        out.transitions.extend(ev.transitions)
        out.late += ev.late

    def _processed(self, batch: Sequence[Incoming]) -> None:
        if self._on_processed is not None:
            for item in batch:
                if item.offset is not None:
                    self._on_processed(item.topic, item.partition, item.offset)

    def _done(self, out: BatchOutcome, started: float) -> BatchOutcome:
        metrics.BATCHES.inc()
        metrics.BATCH_MESSAGES.observe(out.messages)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self.last_batch_at = time.time()
        return out

    # --- entry points --------------------------------------------------------------------

    async def process(self, batch: Sequence[Incoming]) -> BatchOutcome:
        """A batch of the telemetry topic."""
        started = time.perf_counter()
        out = BatchOutcome(messages=len(batch))
        stored = await self._store(self._parse(decode_telemetry, batch, out), out)
        async with self.lock:
            view, ev = StateView(self._states), Evaluation()
            self._evaluate_each(stored, view, ev, out, self._engine.telemetry)
            await self._emit(view, ev, out)
            self._processed(batch)
        for item in batch:
            if item.offset is not None and item.received_at is not None:
                last = self._progress.get(item.partition)
                if last is None or item.offset > last[0]:
                    self._progress[item.partition] = (item.offset, item.received_at)
        return self._done(out, started)

    async def _evaluate(self, decode: Callable[[bytes], M], batch: Sequence[Incoming],
                        handle: Callable[[StateView, int, M, datetime, Evaluation], None]
                        ) -> BatchOutcome:
        started = time.perf_counter()
        out = BatchOutcome(messages=len(batch))
        messages = self._parse(decode, batch, out)
        async with self.lock:
            view, ev = StateView(self._states), Evaluation()
            self._evaluate_each(messages, view, ev, out, handle)
            await self._emit(view, ev, out)
            self._processed(batch)
        return self._done(out, started)

    async def process_status(self, batch: Sequence[Incoming]) -> BatchOutcome:
        """A batch of the status topic (births and last wills)."""
        return await self._evaluate(DeviceStatus.model_validate_json, batch,
                                    self._engine.status)

    async def process_detections(self, batch: Sequence[Incoming]) -> BatchOutcome:
        """A batch of the detection topic (camera findings raised / cleared)."""
        return await self._evaluate(Detection.model_validate_json, batch,
                                    self._engine.detection)

    async def process_events(self, batch: Sequence[Incoming]) -> BatchOutcome:
        """A batch of the device-event topic (alarm button, power, source errors)."""
        return await self._evaluate(DeviceEvent.model_validate_json, batch,
                                    self._engine.event)

    def read_up_to(self, partition: int) -> int | None:
        """The offset of the last telemetry record processed on ``partition``."""
        return self._progress[partition][0] if partition in self._progress else None

    async def tick(self, partitions: Collection[int], active_since: datetime,
                   behind: Collection[int] = ()) -> BatchOutcome:
        """The device-offline timer, over the devices of the telemetry ``partitions``.
        On a partition the worker is ``behind`` on (a backlog after a restart, a slow
        database), silence is measured up to the receive time of the last record read
        there, not up to now: a device whose messages wait in the backlog is not silent."""
        out = BatchOutcome()
        now = self._clock()
        clocks = {}
        for p in partitions:
            if p not in behind:
                clocks[p] = now
            elif p in self._progress:
                clocks[p] = min(now, self._progress[p][1])
        async with self.lock:
            view, ev = StateView(self._states), Evaluation()
            self._engine.tick(view, clocks, active_since, ev)
            await self._emit(view, ev, out)
        metrics.TICKS.inc()
        return out
