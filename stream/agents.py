"""Faust glue: the agents, the timers, the table-backed state store, the transition sender."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from ganzhi.contracts import AlertTransition, KafkaTopic, kafka_key
from ganzhi.observability import get_logger
from ganzhi.settings import Settings
from stream.app import StreamApp
from stream.processor import BatchProcessor, Incoming, TransitionSender
from stream.rules.sources import RulesProvider

log = get_logger(__name__)


class TableStateStore:
    """Rule state in a changelogged Faust table.

    Writes go to the changelog partition of the message the state came from (the
    device's partition), not to that of whatever event happens to be current: a batch
    holds events of several partitions, and a worker recovers only its own partitions.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> str | None:
        value = self._table.get(key.encode())
        return value.decode() if value is not None else None

    def put(self, key: str, value: str, partition: int) -> None:
        k, v = key.encode(), value.encode()
        self._table.data[k] = v
        self._table.send_changelog(partition, k, v)

    def keys(self) -> Iterator[str]:
        for k in list(self._table.data.keys()):
            yield k.decode()


def transition_sender(topic: Any) -> TransitionSender:
    async def send(transitions: Sequence[AlertTransition]) -> None:
        # publish waits for the broker's acknowledgement of each record, in order.
        for tr in transitions:
            await topic.send(
                key=kafka_key(tr.site_id, tr.device_id),
                value=tr.model_dump_json().encode(),
            )

    return send


def _incoming(event: Any) -> Incoming:
    ts = event.message.timestamp
    received = datetime.fromtimestamp(ts, UTC) if ts else None
    return Incoming(event.message.partition, bytes(event.value), received)


class Ownership:
    """Which telemetry partitions this worker holds, and since when."""

    def __init__(self) -> None:
        self.partitions: frozenset[int] = frozenset()
        self.since = datetime.now(UTC)

    def update(self, assigned: Any) -> None:
        self.partitions = frozenset(
            tp.partition for tp in assigned if tp.topic == KafkaTopic.TELEMETRY.value)
        self.since = datetime.now(UTC)
        log.info("partitions assigned", telemetry_partitions=sorted(self.partitions))


def register_agents(stream_app: StreamApp, settings: Settings, processor: BatchProcessor,
                    provider: RulesProvider) -> Ownership:
    s = settings.stream
    app = stream_app.app
    owned = Ownership()

    def batch_agent(topic: Any, name: str,
                    handle: Callable[[Sequence[Incoming]], Awaitable[Any]]) -> None:
        # noack_take: events are acknowledged only after the whole batch is done, so a
        # crash or a cancelled DB retry leaves them to be redelivered.
        async def agent(stream: Any) -> None:
            async for events in stream.noack_take(s.batch_size, within=s.batch_within_s):
                await handle([_incoming(e) for e in events])
                for e in events:
                    await stream.ack(e)

        app.agent(topic, name=name)(agent)

    batch_agent(stream_app.telemetry, "telemetry", processor.process)
    batch_agent(stream_app.status, "status", processor.process_status)
    batch_agent(stream_app.detections, "detections", processor.process_detections)

    @app.on_rebalance_complete.connect  # type: ignore[untyped-decorator]
    async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        owned.update(app.consumer.assignment())

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def _revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        owned.partitions = frozenset()

    @app.timer(interval=s.health_tick_s)  # type: ignore[untyped-decorator]
    async def offline_timer() -> None:
        # Only on state that is complete: not while partitions move or tables recover.
        if owned.partitions and not app.rebalancing and not app.in_recovery:
            await processor.tick(owned.partitions, owned.since)

    @app.timer(interval=s.rules_poll_s)  # type: ignore[untyped-decorator]
    async def rules_poll() -> None:
        await asyncio.to_thread(provider.refresh)

    return owned
