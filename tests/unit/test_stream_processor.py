"""Batch processor without Faust: order of effects, bad input, DB retries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import psycopg

from ganzhi.contracts import AlertTransition, DeviceClass, Reading, Telemetry, TransitionKind
from ganzhi.settings import ColdChainRuleSettings
from stream.engine import RuleEngine, state_key
from stream.processor import BatchProcessor, Incoming
from stream.rules.model import Rules, RulesDoc
from stream.sinks.readings import ReadingRow, WriteResult

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


class Recorder:
    def __init__(self, fail_writes: int = 0) -> None:
        self.events: list[str] = []
        self.rows: list[ReadingRow] = []
        self.states: dict[str, tuple[str, int]] = {}
        self.sent: list[AlertTransition] = []
        self.fail_writes = fail_writes

    async def write(self, rows: Sequence[ReadingRow]) -> WriteResult:
        if self.fail_writes:
            self.fail_writes -= 1
            raise psycopg.OperationalError("connection refused")
        self.events.append("write")
        self.rows.extend(rows)
        return WriteResult(len(rows), 0, 1)

    def get(self, key: str) -> str | None:
        return self.states[key][0] if key in self.states else None

    def put(self, key: str, value: str, partition: int) -> None:
        if self.events[-1:] != ["state"]:
            self.events.append("state")
        self.states[key] = (value, partition)

    def keys(self) -> Iterator[str]:
        return iter(list(self.states))

    async def send(self, transitions: Sequence[AlertTransition]) -> None:
        self.events.append("send")
        self.sent.extend(transitions)


def processor(rec: Recorder) -> BatchProcessor:
    rules = Rules(RulesDoc(), ColdChainRuleSettings(duration_s=60, allowed_lateness_s=0))
    engine = RuleEngine(lambda: rules, lambda site, device: 0)
    return BatchProcessor(engine, rec, rec, rec.send, retry_base_s=0.001)


def msg(second: int, temp: float, device: str = "cs-1") -> Incoming:
    t = Telemetry(
        msg_id=uuid.uuid4(), site_id="site-a", device_id=device,
        ts=T0 + timedelta(seconds=second), device_class=DeviceClass.COLD_STORE,
        readings=[Reading(metric="temperature", value=temp, unit="celsius"),
                  Reading(metric="humidity", value=70.0, unit="percent")],
    )
    return Incoming(partition=1, value=t.model_dump_json().encode())


async def test_writes_then_sends_then_saves_state() -> None:
    rec = Recorder()
    out = await processor(rec).process([msg(0, 10), msg(30, 10), msg(60, 10)])
    assert rec.events == ["write", "send", "state"]
    assert len(rec.rows) == 6 and out.inserted == 6
    assert [t.kind for t in rec.sent] == [TransitionKind.FIRING]
    assert rec.states[state_key("site-a", "cs-1", "cold_store")][1] == 1  # device's partition
    assert rec.states[state_key("site-a", "cs-1", "health")][1] == 1


async def test_state_carries_across_batches() -> None:
    rec = Recorder()
    p = processor(rec)
    await p.process([msg(0, 10)])
    await p.process([msg(30, 10)])
    assert rec.sent == []
    await p.process([msg(60, 10), msg(90, 10)])
    assert [t.kind for t in rec.sent] == [TransitionKind.FIRING]


async def test_invalid_message_is_skipped_not_fatal() -> None:
    rec = Recorder()
    out = await processor(rec).process(
        [Incoming(0, b"{not json"), Incoming(0, b'{"kind": "telemetry"}'), msg(0, 3)])
    assert out.invalid == 2 and out.messages == 3
    assert len(rec.rows) == 2


async def test_database_errors_are_retried() -> None:
    rec = Recorder(fail_writes=2)
    out = await processor(rec).process([msg(0, 3)])
    assert out.inserted == 2 and rec.fail_writes == 0


async def test_humidity_is_not_fed_to_the_temperature_rule() -> None:
    rec = Recorder()
    # Humidity 70 > 8 every time, temperature fine: nothing fires.
    await processor(rec).process([msg(s, 3) for s in range(0, 600, 30)])
    assert rec.sent == []
