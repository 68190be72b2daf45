"""Routing decisions of ingest: pure, no broker."""

from __future__ import annotations

import base64
import json

from ganzhi.contracts import KafkaTopic, new_id
from ingest.validate import Accepted, Rejected, route

TOPIC = "ganzhi/v1/site-a/fridge-1/telemetry"


def _payload(**over: object) -> bytes:
    body: dict[str, object] = {
        "msg_id": new_id(), "site_id": "site-a", "device_id": "fridge-1",
        "ts": "2026-01-01T00:00:00Z", "device_class": "cold_store",
        "readings": [{"metric": "temperature", "value": 3.5, "unit": "celsius"}],
    }
    body.update(over)
    return json.dumps(body).encode()


def test_valid_telemetry_goes_to_its_topic_keyed_by_device() -> None:
    out = route(TOPIC, _payload())
    assert isinstance(out, Accepted)
    assert out.kafka_topic == KafkaTopic.TELEMETRY
    assert out.key == b"site-a/fridge-1"
    assert json.loads(out.value)["kind"] == "telemetry"


def test_status_channel() -> None:
    out = route("ganzhi/v1/site-a/fridge-1/status",
                json.dumps({"msg_id": new_id(), "site_id": "site-a", "device_id": "fridge-1",
                            "ts": "2026-01-01T00:00:00Z", "state": "offline"}).encode())
    assert isinstance(out, Accepted) and out.kafka_topic == KafkaTopic.STATUS


def _reason(topic: str, payload: bytes) -> str:
    out = route(topic, payload)
    assert isinstance(out, Rejected)
    assert base64.b64decode(out.dead_letter.payload_b64) == payload  # original kept
    assert out.dead_letter.source_topic == topic
    return out.reason


def test_rejections_carry_reasons() -> None:
    assert _reason("ganzhi/v1/site-a/fridge-1/nope", _payload()) == "bad_topic"
    assert _reason(TOPIC, b"\xff\xfe") == "invalid_json"
    assert _reason(TOPIC, b"[1, 2]") == "invalid_schema"
    assert _reason(TOPIC, _payload(readings="hot")) == "invalid_schema"
    assert _reason(TOPIC, _payload(kind="event")) == "kind_mismatch"
    assert _reason(TOPIC, _payload(device_id="fridge-2")) == "identity_mismatch"


def test_schema_error_names_the_field() -> None:
    out = route(TOPIC, _payload(readings=[{"metric": "temperature", "value": "x", "unit": "c"}]))
    assert isinstance(out, Rejected)
    assert "readings.0.value" in out.dead_letter.error
