"""Properties of the two places every device byte passes (hypothesis): ingest's routing
and the stream worker's batch path. For any input, no exception escapes, and each
message ends in exactly one place: accepted / stored, or dead-lettered with a reason."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganzhi.contracts import device_message_adapter
from ganzhi.settings import ColdChainRuleSettings
from ingest.validate import REASONS, Accepted, Limits, route
from stream.engine import RuleEngine
from stream.memory import MemoryAdapters
from stream.processor import BatchProcessor, Incoming
from stream.rules.model import Rules, RulesDoc
from stream.sinks.readings import ReadingRow, WriteResult

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SITE, DEVICE = "site-a", "dev-1"

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=20)


def _valid(i: int, msg_id: uuid.UUID | None = None, offset_s: float = -60.0) -> dict[str, Any]:
    return {
        "kind": "telemetry", "msg_id": str(msg_id or uuid.UUID(int=i + 1)), "schema_version": 1,
        "site_id": SITE, "device_id": DEVICE,
        "ts": (NOW + timedelta(seconds=offset_s + i)).isoformat(),
        "device_class": "cold_store",
        "readings": [{"metric": "temperature", "value": 3.0 + i % 7, "unit": "celsius"},
                     {"metric": "door_open", "value": 0, "unit": "bool"}],
    }


FIELDS = ["kind", "msg_id", "schema_version", "site_id", "device_id", "ts", "device_class",
          "readings"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with fields replaced, dropped or added, or bytes cut and spliced."""
    body = _valid(draw(st.integers(0, 600)), msg_id=draw(st.uuids()))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add", "reading"]))
        name = draw(st.sampled_from(FIELDS))
        if action == "replace":
            body[name] = draw(json_values)
        elif action == "drop":
            body.pop(name, None)
        elif action == "add":
            body[draw(st.text(max_size=10))] = draw(json_values)
        else:
            body["readings"] = [{"metric": draw(st.text(max_size=20)),
                                 "value": draw(json_scalars), "unit": draw(st.text(max_size=20)),
                                 "ts": draw(st.one_of(st.none(), st.text(max_size=30)))}]
    raw = json.dumps(body, allow_nan=True).encode()
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    if cut is not None:
        raw = raw[:cut] + draw(st.binary(max_size=8))
    return raw


payloads = st.one_of(st.binary(max_size=300), mutated(),
                     st.builds(lambda v: json.dumps(v).encode(), json_values))
topics = st.one_of(
    st.just(f"ganzhi/v1/{SITE}/{DEVICE}/telemetry"),
    st.sampled_from([f"ganzhi/v1/{SITE}/{DEVICE}/{c}" for c in
                     ("event", "detection", "evidence", "status", "other")]),
    st.text(max_size=60))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, payload=payloads)
def test_route_never_raises_and_decides_once(topic: str, payload: bytes) -> None:
    out = route(topic, payload, received_at=NOW, limits=Limits())
    if isinstance(out, Accepted):
        again = device_message_adapter.validate_json(out.value)
        assert (again.site_id, again.device_id) == (SITE, DEVICE)
        assert len(out.key) + len(out.value) <= Limits().max_record_bytes
    else:
        assert out.reason in REASONS
        assert out.dead_letter.error
        assert len(out.dead_letter.model_dump_json()) < 1_000_000


class Memory(MemoryAdapters):
    """In-memory adapters whose readings sink refuses, like PostgreSQL, rows it cannot
    hold, and keeps the ``msg_id`` of what it stored."""

    stored: set[uuid.UUID]

    def __init__(self) -> None:
        super().__init__()
        self.stored = set()

    async def write(self, rows: Sequence[ReadingRow]) -> WriteResult:
        if any(abs(r.value) > 1e300 for r in rows):
            raise psycopg.errors.NumericValueOutOfRange("value out of range")
        self.stored.update(r.msg_id for r in rows)
        return WriteResult(len(rows), 0, 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(mutated(), st.integers(0, 600).map(
    lambda i: json.dumps(_valid(i, uuid.uuid4())).encode())), min_size=1, max_size=25))
def test_stream_batch_never_raises_and_each_message_ends_once(values: list[bytes]) -> None:
    mem = Memory()
    rules = Rules(RulesDoc(), ColdChainRuleSettings(duration_s=60, allowed_lateness_s=30))
    proc = BatchProcessor(RuleEngine(lambda: rules, lambda s, d: 0), mem, mem, mem.send,
                          dead_letter=mem.dead_letter, clock=lambda: NOW)
    batch = [Incoming(0, v, NOW, "ganzhi.telemetry.v1", b"k") for v in values]
    out = asyncio.run(proc.process(batch))

    assert out.invalid == len(mem.dead)
    assert {d.reason for d in mem.dead} <= {"invalid_json", "invalid_schema", "ts_in_future",
                                            "db_refused"}
    refused = [base64.b64decode(d.payload_b64) for d in mem.dead]
    for v in values:
        dead = v in refused
        stored = _msg_id(v) in mem.stored
        assert dead != stored, (v, dead, stored)
    assert len(refused) == len(values) - sum(_msg_id(v) in mem.stored for v in values)


def _msg_id(value: bytes) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(json.loads(value)["msg_id"]))
    except Exception:
        return None
