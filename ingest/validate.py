"""Decide, without I/O, where one MQTT message goes: its Kafka topic or the dead letters.

:func:`route` never raises, whatever the bytes: every refusal is a :class:`Rejected` with
a reason from :data:`REASONS` (docs/contracts.md, "Dead letters"). The checks run
cheapest first: topic, size, JSON (any parse error, nesting too deep, numbers too long,
duplicate keys), schema version, the channel's model and its bounds
(:mod:`ganzhi.contracts.bounds`), the identity in the topic, event times against the
receive time, the evidence bytes, and last the size of the Kafka record it would become.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from ganzhi.contracts import (
    CHANNEL_KIND,
    KAFKA_TOPIC_FOR_CHANNEL,
    SCHEMA_VERSION,
    DeadLetter,
    DeviceMessage,
    Evidence,
    Telemetry,
    device_message_adapter,
    kafka_key,
    parse_mqtt_topic,
    utcnow,
)
from ganzhi.contracts.bounds import KAFKA_RECORD_MAX_BYTES, check_event_time
from ganzhi.contracts.dead_letters import describe, make_dead_letter

MAX_PAYLOAD_BYTES = 8 * 1024 * 1024

REASONS = (
    "bad_topic", "too_large", "invalid_json", "duplicate_key", "unsupported_schema_version",
    "invalid_schema", "kind_mismatch", "identity_mismatch", "ts_too_old", "ts_in_future",
    "invalid_evidence", "evidence_hash_mismatch", "too_large_for_kafka", "internal_error",
)


@dataclass(frozen=True)
class Limits:
    """What ingest accepts beyond the models' own bounds (``IngestSettings``)."""

    max_ts_age: timedelta = timedelta(days=30)
    max_ts_ahead: timedelta = timedelta(minutes=5)
    max_record_bytes: int = KAFKA_RECORD_MAX_BYTES


@dataclass(frozen=True)
class Accepted:
    kafka_topic: str
    key: bytes
    value: bytes
    message: DeviceMessage
    blob: bytes | None = None  # evidence: the decoded snapshot, stored out of band


@dataclass(frozen=True)
class Rejected:
    dead_letter: DeadLetter

    @property
    def reason(self) -> str:
        return self.dead_letter.reason


def _reject(topic: str, payload: bytes, reason: str, error: str) -> Rejected:
    return Rejected(make_dead_letter(topic, payload, reason, error))


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may keep different copies of a repeated key (the first or the last):
    # a message that means two things is refused.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise _DuplicateKey(f"key {dup[:64]!r} appears more than once")
    return obj


def parse_json(payload: bytes) -> tuple[Any, None] | tuple[None, tuple[str, str]]:
    """``(value, None)`` or ``(None, (reason, error))``; never raises."""
    try:
        # UTF-8 only: json.loads would also guess UTF-16 and UTF-32 from bytes.
        return json.loads(payload.decode("utf-8"), object_pairs_hook=_no_duplicates), None
    except _DuplicateKey as exc:
        return None, ("duplicate_key", str(exc))
    except RecursionError:
        return None, ("invalid_json", "nested too deeply")
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers too long
        return None, ("invalid_json", str(exc)[:500])


def _event_times(message: DeviceMessage) -> list[datetime]:
    if isinstance(message, Telemetry):
        return [message.ts, *(r.ts for r in message.readings if r.ts is not None)]
    return [message.ts]


def route(topic: str, payload: bytes, *, received_at: datetime | None = None,
          limits: Limits = Limits()) -> Accepted | Rejected:
    """Where ``payload`` received on ``topic`` goes; never raises."""
    try:
        return _route(topic, payload, received_at or utcnow(), limits)
    except Exception as exc:  # a bug must cost one message, not the service
        return _reject(topic, payload, "internal_error", f"{type(exc).__name__}: {exc}")


def _route(topic: str, payload: bytes, received_at: datetime,
           limits: Limits) -> Accepted | Rejected:
    try:
        where = parse_mqtt_topic(topic)
    except ValueError as exc:
        return _reject(topic, payload, "bad_topic", str(exc))
    if len(payload) > MAX_PAYLOAD_BYTES:
        return _reject(topic, payload, "too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    raw, failed = parse_json(payload)
    if failed is not None:
        return _reject(topic, payload, *failed)
    if not isinstance(raw, dict):
        return _reject(topic, payload, "invalid_schema", "payload must be a JSON object")
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        return _reject(topic, payload, "unsupported_schema_version",
                       f"schema_version {str(version)[:20]!r}; this platform reads "
                       f"{SCHEMA_VERSION}")
    expected_kind = CHANNEL_KIND[where.channel]
    if raw.get("kind", expected_kind) != expected_kind:
        return _reject(
            topic, payload, "kind_mismatch",
            f"kind {str(raw.get('kind'))[:40]!r} published on the {where.channel.value} channel",
        )
    raw.setdefault("kind", expected_kind)
    try:
        message = device_message_adapter.validate_python(raw)
    except ValidationError as exc:
        return _reject(topic, payload, "invalid_schema", describe(exc))
    if (message.site_id, message.device_id) != (where.site_id, where.device_id):
        return _reject(
            topic, payload, "identity_mismatch",
            f"payload says {message.site_id}/{message.device_id}, "
            f"topic says {where.site_id}/{where.device_id}",
        )
    for ts in _event_times(message):
        late_or_early = check_event_time(ts, received_at, limits.max_ts_age, limits.max_ts_ahead)
        if late_or_early is not None:
            return _reject(topic, payload, late_or_early,
                           f"ts {ts.isoformat()} received at {received_at.isoformat()}; "
                           f"accepted: up to {limits.max_ts_age} old, "
                           f"{limits.max_ts_ahead} ahead")
    blob = None
    if isinstance(message, Evidence):
        try:
            blob = base64.b64decode(message.data_b64, validate=True)
        except (ValueError, binascii.Error) as exc:
            return _reject(topic, payload, "invalid_evidence", f"data_b64: {exc}")
        actual = hashlib.sha256(blob).hexdigest()
        if actual != message.sha256:
            return _reject(topic, payload, "evidence_hash_mismatch",
                           f"snapshot hashes to {actual}, message says {message.sha256}")
        if blob[:3] != b"\xff\xd8\xff":
            return _reject(topic, payload, "invalid_evidence", "data_b64 is not a JPEG")
    key = kafka_key(where.site_id, where.device_id)
    value = message.model_dump_json().encode()
    # Evidence travels as a small reference (its bytes go to the evidence store).
    if blob is None and len(key) + len(value) > limits.max_record_bytes:
        return _reject(topic, payload, "too_large_for_kafka",
                       f"{len(key) + len(value)} bytes as a Kafka record, at most "
                       f"{limits.max_record_bytes}")
    return Accepted(
        blob=blob,
        kafka_topic=KAFKA_TOPIC_FOR_CHANNEL[where.channel].value,
        key=key,
        value=value,
        message=message,
    )
