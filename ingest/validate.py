"""Decide, without I/O, where one MQTT message goes: its Kafka topic or the dead letters."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from pydantic import ValidationError

from ganzhi.contracts import (
    CHANNEL_KIND,
    KAFKA_TOPIC_FOR_CHANNEL,
    DeadLetter,
    DeviceMessage,
    Evidence,
    device_message_adapter,
    kafka_key,
    parse_mqtt_topic,
)

MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
# A dead letter keeps at most this much of the payload: it must fit a Kafka record
# (1 MB by default), and a refused 8 MB snapshot would not.
DEAD_LETTER_PAYLOAD_MAX = 512 * 1024


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
    if len(payload) > DEAD_LETTER_PAYLOAD_MAX:
        error = f"{error[:1900]} (payload of {len(payload)} bytes kept truncated to " \
                f"{DEAD_LETTER_PAYLOAD_MAX})"
    return Rejected(
        DeadLetter(
            source_topic=topic,
            reason=reason,
            error=error[:2000],
            payload_b64=base64.b64encode(payload[:DEAD_LETTER_PAYLOAD_MAX]).decode(),
        )
    )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def route(topic: str, payload: bytes) -> Accepted | Rejected:
    try:
        where = parse_mqtt_topic(topic)
    except ValueError as exc:
        return _reject(topic, payload, "bad_topic", str(exc))
    if len(payload) > MAX_PAYLOAD_BYTES:
        return _reject(topic, payload, "too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _reject(topic, payload, "invalid_json", str(exc))
    if not isinstance(raw, dict):
        return _reject(topic, payload, "invalid_schema", "payload must be a JSON object")
    expected_kind = CHANNEL_KIND[where.channel]
    if raw.get("kind", expected_kind) != expected_kind:
        return _reject(
            topic, payload, "kind_mismatch",
            f"kind {raw.get('kind')!r} published on the {where.channel.value} channel",
        )
    raw.setdefault("kind", expected_kind)
    try:
        message = device_message_adapter.validate_python(raw)
    except ValidationError as exc:
        return _reject(topic, payload, "invalid_schema", _describe(exc))
    if (message.site_id, message.device_id) != (where.site_id, where.device_id):
        return _reject(
            topic, payload, "identity_mismatch",
            f"payload says {message.site_id}/{message.device_id}, "
            f"topic says {where.site_id}/{where.device_id}",
        )
    blob = None
    if isinstance(message, Evidence):
        try:
            blob = base64.b64decode(message.data_b64, validate=True)
        except ValueError as exc:
            return _reject(topic, payload, "invalid_evidence", f"data_b64: {exc}")
        actual = hashlib.sha256(blob).hexdigest()
        if actual != message.sha256:
            return _reject(topic, payload, "evidence_hash_mismatch",
                           f"snapshot hashes to {actual}, message says {message.sha256}")
        if blob[:3] != b"\xff\xd8\xff":
            return _reject(topic, payload, "invalid_evidence", "data_b64 is not a JPEG")
    return Accepted(
        blob=blob,
        kafka_topic=KAFKA_TOPIC_FOR_CHANNEL[where.channel].value,
        key=kafka_key(where.site_id, where.device_id),
        value=message.model_dump_json().encode(),
        message=message,
    )
