"""Faust glue: the telemetry agent, the table-backed state store, the transition sender."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ganzhi.contracts import AlertTransition, kafka_key
from ganzhi.settings import Settings
from stream.app import StreamApp
from stream.processor import BatchProcessor, Incoming, TransitionSender


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


def transition_sender(topic: Any) -> TransitionSender:
    async def send(transitions: Sequence[AlertTransition]) -> None:
        # publish waits for the broker's acknowledgement of each record, in order.
        for tr in transitions:
            await topic.send(
                key=kafka_key(tr.site_id, tr.device_id),
                value=tr.model_dump_json().encode(),
            )

    return send


def register_agents(stream_app: StreamApp, settings: Settings, processor: BatchProcessor) -> None:
    batch_size, within = settings.stream.batch_size, settings.stream.batch_within_s

    @stream_app.app.agent(stream_app.telemetry, name="telemetry")  # type: ignore[untyped-decorator]
    async def telemetry(stream: Any) -> None:
        # noack_take: events are acknowledged only after the whole batch is done, so a
        # crash or a cancelled DB retry leaves them to be redelivered.
        async for events in stream.noack_take(batch_size, within=within):
            await processor.process(
                [Incoming(e.message.partition, bytes(e.value)) for e in events])
            for e in events:
                await stream.ack(e)
