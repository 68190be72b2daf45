"""Batch processor without Faust: order of effects, bad input, DB retries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ganzhi.contracts import (
    AlertTransition,
    DeadLetter,
    DeviceClass,
    Reading,
    Telemetry,
    TransitionKind,
)
from ganzhi.failures import RetryPolicy, Stopped
from ganzhi.settings import ColdChainRuleSettings
from stream.engine import RuleEngine, state_key
from stream.processor import BatchProcessor, Incoming
from stream.rules.model import Rules, RulesDoc
from stream.sinks.readings import ReadingRow, WriteResult
from stream.state import Held, StateView

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


class Recorder:
    def __init__(self, fail_writes: int = 0) -> None:
        self.events: list[str] = []
        self.rows: list[ReadingRow] = []
        self.states: dict[str, Held] = {}
        self.sent: list[AlertTransition] = []
        self.dead: list[DeadLetter] = []
        self.fail_writes = fail_writes

    async def write(self, rows: Sequence[ReadingRow]) -> WriteResult:
        if self.fail_writes:
            self.fail_writes -= 1
            raise psycopg.OperationalError("connection refused")
        self.events.append("write")
        self.rows.extend(rows)
        return WriteResult(len(rows), 0, 1)

    def get(self, key: str) -> Held | None:
        return self.states.get(key)

    def put(self, key: str, value: Held) -> None:
        if self.events[-1:] != ["state"]:
            self.events.append("state")
        self.states[key] = value

    def keys(self) -> Iterator[str]:
        return iter(list(self.states))

    async def send(self, transitions: Sequence[AlertTransition]) -> None:
        self.events.append("send")
        self.sent.extend(transitions)

    async def dead_letter(self, letters: Sequence[tuple[bytes, DeadLetter]]) -> None:
        self.events.append("dead_letter")
        self.dead.extend(dl for _, dl in letters)


# The rooms here are chilled (the variant is never guessed: docs/rules.md).
CHILLED = RulesDoc.model_validate({"cold_store": {"defaults": {"variant": "chilled"}}})


def processor(rec: Recorder) -> BatchProcessor:
    rules = Rules(CHILLED, ColdChainRuleSettings(duration_s=60, allowed_lateness_s=0))
    engine = RuleEngine(lambda: rules, lambda site, device: 0)
    return BatchProcessor(engine, rec, rec, rec.send, dead_letter=rec.dead_letter,
                          retry=RetryPolicy(base_s=0.001, max_s=0.01))


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
    assert rec.states[state_key("site-a", "cs-1", "cold_store")].partition == 1  # device's
    assert rec.states[state_key("site-a", "cs-1", "health")].partition == 1


async def test_state_carries_across_batches() -> None:
    rec = Recorder()
    p = processor(rec)
    await p.process([msg(0, 10)])
    await p.process([msg(30, 10)])
    assert rec.sent == []
    await p.process([msg(60, 10), msg(90, 10)])
    assert [t.kind for t in rec.sent] == [TransitionKind.FIRING]


async def test_invalid_message_is_dead_lettered_not_fatal() -> None:
    rec = Recorder()
    out = await processor(rec).process(
        [Incoming(0, b"{not json"), Incoming(0, b'{"kind": "telemetry"}'), msg(0, 3)])
    assert out.invalid == 2 and out.messages == 3
    assert len(rec.rows) == 2
    assert [d.reason for d in rec.dead] == ["invalid_json", "invalid_schema"]
    assert {d.stage for d in rec.dead} == {"stream"}


async def test_database_errors_are_retried() -> None:
    rec = Recorder(fail_writes=2)
    out = await processor(rec).process([msg(0, 3)])
    assert out.inserted == 2 and rec.fail_writes == 0


async def test_humidity_is_not_fed_to_the_temperature_rule() -> None:
    rec = Recorder()
    # Humidity 70 > 8 every time, temperature fine: nothing fires.
    await processor(rec).process([msg(s, 3) for s in range(0, 600, 30)])
    assert rec.sent == []


class Refusing(Recorder):
    """A database that refuses any batch holding a row of ``bad_value`` (as PostgreSQL
    refuses a NUL character or a number out of range), and stores the rest."""

    def __init__(self, bad_value: float) -> None:
        super().__init__()
        self.bad_value = bad_value
        self.attempts = 0

    async def write(self, rows: Sequence[ReadingRow]) -> WriteResult:
        self.attempts += 1
        if any(r.value == self.bad_value for r in rows):
            raise psycopg.errors.NumericValueOutOfRange("value out of range")
        return await super().write(rows)


async def test_a_value_the_database_refuses_costs_only_its_message() -> None:
    rec = Refusing(bad_value=-273.5)
    batch = [msg(s, 3) for s in range(0, 300, 30)]
    batch[4] = msg(120, -273.5)
    out = await processor(rec).process(batch)
    assert [d.reason for d in rec.dead] == ["db_refused"]
    assert "value out of range" in rec.dead[0].error
    assert out.inserted == 2 * 9 and len(rec.rows) == 18
    assert rec.attempts <= 2 * 4 + 1  # narrowed down by halves, not row by row


async def test_a_rule_that_raises_costs_only_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    p = processor(rec)
    real = p._engine.telemetry

    def telemetry(view: StateView, partition: int, m: Telemetry, *rest: Any) -> None:
        real(view, partition, m, *rest)  # state saved first: it must be undone
        if m.device_id == "cs-bad":
            raise OverflowError("date value out of range")

    monkeypatch.setattr(p._engine, "telemetry", telemetry)
    out = await p.process([msg(0, 10), msg(0, 10, device="cs-bad"), msg(60, 10)])
    assert [d.reason for d in rec.dead] == ["rule_error"]
    assert [t.kind for t in out.transitions] == [TransitionKind.FIRING]
    assert not any(k.startswith("site-a/cs-bad/") for k in rec.states)
    assert len(rec.rows) == 6  # its readings are stored all the same


@pytest.mark.parametrize("stored", [
    '{"watermark": "soon"',  # cut short
    '{"watermark": "soon"}',  # a field of the wrong type
    '{"buffer": [{"ts": 1}]}',  # a snapshot without its values
    '[]',  # not an object
])
async def test_a_stored_state_that_does_not_read_back_costs_only_its_device(
        stored: str) -> None:
    """A checkpointed state row that is not rule state (damaged, written by hand): the
    device's rules are refused with the reason and its readings stored; the other device
    in the batch is evaluated, and the row is left as it was for an operator."""
    rec = Recorder()
    key = state_key("site-a", "cs-bad", "cold_store")
    rec.states[key] = Held.of_json(stored, 1)
    out = await processor(rec).process([msg(0, 10, device="cs-bad"), msg(0, 10),
                                        msg(60, 10)])
    assert [d.reason for d in rec.dead] == ["rule_error"]
    assert "readings stored, rules skipped" in rec.dead[0].error
    assert [t.device_id for t in out.transitions] == ["cs-1"]
    assert len(rec.rows) == 6
    assert rec.states[key].raw == stored


async def test_event_time_ahead_of_arrival_is_refused() -> None:
    rec = Recorder()
    arrived = T0 + timedelta(seconds=30)
    ahead = msg(30 + 3600, 3)
    ok = msg(30, 3)
    out = await processor(rec).process([
        Incoming(0, ahead.value, arrived, "ganzhi.telemetry.v1", b"site-a/cs-1"),
        Incoming(0, ok.value, arrived)])
    assert [d.reason for d in rec.dead] == ["ts_in_future"]
    assert rec.dead[0].source_topic == "ganzhi.telemetry.v1"
    assert out.inserted == 2


async def test_a_stop_while_the_database_is_down_leaves_the_batch_undone() -> None:
    rec = Recorder(fail_writes=10**6)
    stop = asyncio.Event()
    rules = Rules(CHILLED, ColdChainRuleSettings(duration_s=60, allowed_lateness_s=0))
    p = BatchProcessor(RuleEngine(lambda: rules, lambda site, device: 0), rec, rec, rec.send,
                       dead_letter=rec.dead_letter, stop=stop,
                       retry=RetryPolicy(base_s=0.01, max_s=0.05))
    task = asyncio.create_task(p.process([msg(0, 10)]))
    await asyncio.sleep(0.1)
    stop.set()
    async with asyncio.timeout(1):
        with pytest.raises(Stopped):
            await task
    assert rec.events == [] and rec.states == {}
