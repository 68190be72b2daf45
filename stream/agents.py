"""Faust glue: the agents (telemetry, status, detections, device events), the timers,
the rule-state checkpoints at assignment, revocation and on a timer, the senders."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from faust.types import TP

from ganzhi.contracts import AlertTransition, DeadLetter, KafkaTopic, kafka_key
from ganzhi.failures import Stopped
from ganzhi.observability import get_logger
from ganzhi.settings import Settings
from stream import metrics
from stream.app import StreamApp
from stream.checkpoints import Checkpointer
from stream.engine import tune_gc
from stream.offset_gaps import OffsetTracker
from stream.processor import BatchProcessor, DeadLetterSender, Incoming, TransitionSender
from stream.rules.sources import RulesProvider

log = get_logger(__name__)
SOURCE_TOPICS = {KafkaTopic.TELEMETRY.value, KafkaTopic.STATUS.value,
                 KafkaTopic.DETECTION.value, KafkaTopic.EVENT.value}


async def _send_all(topic: Any, records: Sequence[tuple[bytes, bytes]]) -> None:
    """Produce in order, then wait until the broker has every record: the batch's offsets
    are acknowledged only after this returns."""
    futures = [await topic.send(key=key, value=value) for key, value in records]
    await asyncio.gather(*futures)


def transition_sender(topic: Any) -> TransitionSender:
    async def send(transitions: Sequence[AlertTransition]) -> None:
        await _send_all(topic, [(kafka_key(tr.site_id, tr.device_id),
                                 tr.model_dump_json().encode()) for tr in transitions])

    return send


def dead_letter_sender(topic: Any) -> DeadLetterSender:
    async def send(letters: Sequence[tuple[bytes, DeadLetter]]) -> None:
        await _send_all(topic, [(key, dl.model_dump_json().encode()) for key, dl in letters])

    return send


def _incoming(event: Any) -> Incoming:
    message = event.message
    ts = message.timestamp
    received = datetime.fromtimestamp(ts, UTC) if ts else None
    return Incoming(message.partition, bytes(event.value), received, message.topic,
                    bytes(message.key) if message.key is not None else None,
                    message.offset)


class Ownership:
    """Which telemetry partitions this worker holds, and since when."""

    def __init__(self) -> None:
        self.partitions: frozenset[int] = frozenset()
        self.since = datetime.now(UTC)

    def update(self, assigned: Any) -> None:
        self.partitions = frozenset(
            tp.partition for tp in assigned if tp.topic == KafkaTopic.TELEMETRY.value)
        self.since = datetime.now(UTC)
        log.info("partitions_assigned", telemetry_partitions=sorted(self.partitions))


def lag(app: Any, processor: BatchProcessor, partitions: Iterable[int]) -> dict[int, int | None]:
    """Per telemetry partition, the records not yet processed: the consumer's highwater,
    from its last fetch, beyond the last offset processed (None: not known now)."""
    out: dict[int, int | None] = {}
    for p in partitions:
        try:
            highwater = app.consumer.highwater(TP(KafkaTopic.TELEMETRY.value, p))
        except Exception:  # not assigned any more, consumer restarting: judge nothing
            out[p] = None
            continue
        done = processor.read_up_to(p)
        out[p] = None if highwater is None else \
            max(0, highwater - (done + 1 if done is not None else 0))
    return out


def backlogged(behind: Mapping[int, int | None]) -> set[int]:
    """The partitions of :func:`lag` with records waiting (or where it is not known)."""
    return {p for p, n in behind.items() if n is None or n > 0}


def report_lag(behind: Mapping[int, int | None], reported: set[int]) -> set[int]:
    """Set ``ganzhi_stream_lag_records`` from :func:`lag`; partitions reported before and
    not owned any more are removed. Returns the partitions reported now."""
    now = {p for p, n in behind.items() if n is not None}
    for p in reported - now:
        with contextlib.suppress(KeyError):
            metrics.LAG.remove(str(p))
    for p in now:
        metrics.LAG.labels(str(p)).set(behind[p] or 0)
    return now


def start_offsets(state: Mapping[int, Mapping[str, int]],
                  earliest: Mapping[tuple[str, int], int | None]
                  ) -> tuple[dict[tuple[str, int], int | None], list[tuple[str, int, int, int]]]:
    """Where to read each source partition (``earliest``'s keys) from: the first record
    the rule state does not reflect (``state``: partition -> topic -> next offset), or the
    log's start where no record of that topic was processed. An offset the log no longer
    holds (retention deleted it while no worker ran) starts at the log's start instead:
    returned second, as (topic, partition, wanted, start), for the log."""
    out: dict[tuple[str, int], int | None] = {}
    lost: list[tuple[str, int, int, int]] = []
    for (topic, partition), start in earliest.items():
        want = state.get(partition, {}).get(topic)
        if want is None:
            out[(topic, partition)] = start
        elif start is not None and want < start:
            out[(topic, partition)] = start
            lost.append((topic, partition, want, start))
        else:
            out[(topic, partition)] = want
    return out, lost


async def seek_to_state(app: Any, checkpointer: Checkpointer, offsets: OffsetTracker) -> None:
    """After an assignment: claim the partitions' rule state (kept or loaded from its
    checkpoint) and read each source partition from the first record that state does not
    reflect (:func:`start_offsets`). Faust's committed offsets are not used: they may be
    ahead of the last checkpoint. Should Faust seek to them afterwards
    (stream/offset_gaps.py), the tracker sees the jump and seeks back."""
    tps = [tp for tp in app.consumer.assignment() if tp.topic in SOURCE_TOPICS]
    state = await checkpointer.assigned({tp.partition for tp in tps})
    earliest = dict(await app.consumer.earliest_offsets(*tps)) if tps else {}
    targets, lost = start_offsets(
        state, {(tp.topic, tp.partition): earliest.get(tp) for tp in tps})
    for topic, partition, want, start in lost:
        log.error("records_gone_before_processed", topic=topic, partition=partition,
                  first_wanted=want, log_start=start,
                  detail="retention deleted them while no worker read this partition")
    for tp in tps:
        offset = targets[(tp.topic, tp.partition)]
        if offset is not None:
            await app.consumer.seek(tp, offset)
    offsets.assigned(targets)


def register_agents(stream_app: StreamApp, settings: Settings, processor: BatchProcessor,
                    provider: RulesProvider, checkpointer: Checkpointer) -> Ownership:
    s = settings.stream
    app = stream_app.app
    tune_gc()
    owned = Ownership()
    offsets = OffsetTracker()

    def batch_agent(topic: Any, name: str,
                    handle: Callable[[Sequence[Incoming]], Awaitable[Any]]) -> None:
        # noack_take: events are acknowledged only after the whole batch is done, so a
        # crash or a stop during a retry leaves them to be redelivered.
        # The batch is handed over when it is full or when ``within`` has passed since the
        # last one was done (a fixed tick, not from the first event): an idle event waits
        # up to ``within`` (alert latency), while under load the batches are filled by
        # what arrived during the previous one, so a short tick costs little throughput
        # (docs/performance.md, "Alert latency").
        async def agent(stream: Any) -> None:
            async for events in stream.noack_take(s.batch_size, within=s.batch_within_s):
                batch = offsets.split(events, where=lambda e: e.message)
                if batch.fresh:
                    try:
                        await handle([_incoming(e) for e in batch.fresh])
                    except Stopped:
                        log.warning("stopped_with_batch_unacknowledged", agent=name,
                                    messages=len(events))
                        return
                for e in (*batch.fresh, *batch.seen):
                    await stream.ack(e)
                for (topic, partition), offset in batch.rewind.items():
                    metrics.REWINDS.inc()
                    log.warning("offset_gap_rewind", topic=topic, partition=partition,
                                offset=offset)
                    await app.consumer.seek(TP(topic, partition), offset)

        app.agent(topic, name=name)(agent)

    batch_agent(stream_app.telemetry, "telemetry", processor.process)
    batch_agent(stream_app.status, "status", processor.process_status)
    batch_agent(stream_app.detections, "detections", processor.process_detections)
    batch_agent(stream_app.events, "events", processor.process_events)

    @app.on_rebalance_complete.connect  # type: ignore[untyped-decorator]
    async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await seek_to_state(app, checkpointer, offsets)
        except Stopped:
            return
        owned.update(app.consumer.assignment())

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def _revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        owned.partitions = frozenset()
        # The agents are idle here (Faust waited for them): save everything, so whoever
        # takes a partition starts from this worker's last record.
        await checkpointer.checkpoint("revoked")

    @app.timer(interval=s.checkpoint_s)  # type: ignore[untyped-decorator]
    async def checkpoint_timer() -> None:
        await checkpointer.checkpoint()

    reported: set[int] = set()

    @app.timer(interval=s.health_tick_s)  # type: ignore[untyped-decorator]
    async def offline_timer() -> None:
        nonlocal reported
        behind = lag(app, processor, owned.partitions)
        reported = report_lag(behind, reported)
        # Only on state that is complete: not while partitions move or tables recover.
        if owned.partitions and not app.rebalancing and not app.in_recovery:
            with contextlib.suppress(Stopped):  # the next worker's timer does it
                await processor.tick(owned.partitions, owned.since,
                                     behind=backlogged(behind))

    @app.timer(interval=s.rules_poll_s)  # type: ignore[untyped-decorator]
    async def rules_poll() -> None:
        await asyncio.to_thread(provider.refresh)

    return owned
