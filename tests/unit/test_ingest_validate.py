"""Routing decisions of ingest: pure, no broker. Every poison class gets its reason."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ganzhi.contracts import KafkaTopic, new_id
from ingest.validate import REASONS, Accepted, Limits, Rejected, route

TOPIC = "ganzhi/v1/site-a/fridge-1/telemetry"
NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
TS = "2026-11-30T07:59:00Z"
DEFAULT = Limits()


def _body(**over: object) -> dict[str, Any]:
    body: dict[str, Any] = {
        "msg_id": new_id(), "site_id": "site-a", "device_id": "fridge-1",
        "ts": TS, "device_class": "cold_store",
        "readings": [{"metric": "temperature", "value": 3.5, "unit": "celsius"}],
    }
    body.update(over)
    return body


def _payload(**over: object) -> bytes:
    return json.dumps(_body(**over)).encode()


def _route(topic: str, payload: bytes, limits: Limits = DEFAULT) -> Accepted | Rejected:
    return route(topic, payload, received_at=NOW, limits=limits)


def test_valid_telemetry_goes_to_its_topic_keyed_by_device() -> None:
    out = _route(TOPIC, _payload())
    assert isinstance(out, Accepted)
    assert out.kafka_topic == KafkaTopic.TELEMETRY
    assert out.key == b"site-a/fridge-1"
    assert json.loads(out.value)["kind"] == "telemetry"


def test_status_channel() -> None:
    out = _route("ganzhi/v1/site-a/fridge-1/status",
                 json.dumps({"msg_id": new_id(), "site_id": "site-a", "device_id": "fridge-1",
                             "ts": TS, "state": "offline"}).encode())
    assert isinstance(out, Accepted) and out.kafka_topic == KafkaTopic.STATUS


def _rejected(topic: str, payload: bytes, limits: Limits = DEFAULT) -> Rejected:
    out = _route(topic, payload, limits)
    assert isinstance(out, Rejected), out
    assert base64.b64decode(out.dead_letter.payload_b64) == payload[:512 * 1024]
    assert out.dead_letter.source_topic == topic
    assert out.dead_letter.stage == "ingest"
    assert out.reason in REASONS
    return out


def _reason(topic: str, payload: bytes, limits: Limits = DEFAULT) -> str:
    return _rejected(topic, payload, limits).reason


def _detection(**over: object) -> bytes:
    body: dict[str, Any] = {
        "msg_id": new_id(), "site_id": "site-a", "device_id": "fridge-1", "ts": TS,
        "violation": "no_mask", "state": "raised", "score": 0.9,
        "boxes": [{"label": "no_mask", "score": 0.9, "x1": 1, "y1": 2, "x2": 30, "y2": 40}],
    }
    body.update(over)
    return json.dumps(body).encode()


DETECTION = "ganzhi/v1/site-a/fridge-1/detection"
EVENT = "ganzhi/v1/site-a/fridge-1/event"
STATUS = "ganzhi/v1/site-a/fridge-1/status"
EVIDENCE = "ganzhi/v1/site-a/fridge-1/evidence"


def _evidence(data: bytes, sha: str | None = None) -> bytes:
    return json.dumps({
        "msg_id": new_id(), "site_id": "site-a", "device_id": "fridge-1", "ts": TS,
        "sha256": sha or hashlib.sha256(data).hexdigest(),
        "data_b64": base64.b64encode(data).decode()}).encode()


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    ("ganzhi/v1/site-a/fridge-1/nope", _payload(), "bad_topic"),
    ("ganzhi/v1/Site-A/fridge-1/telemetry", _payload(), "bad_topic"),
    (TOPIC, b"\xff\xfe", "invalid_json"),
    (TOPIC, b"{not json", "invalid_json"),
    (TOPIC, _payload()[:-7], "invalid_json"),  # truncated
    (TOPIC, b"[" * 100_000, "invalid_json"),  # nesting deeper than the parser's stack
    (TOPIC, b"1" * 5000, "invalid_json"),  # an integer of 5,000 digits
    (TOPIC, b'{"ts": ' + b"9" * 5000 + b"}", "invalid_json"),
    (TOPIC, _payload().decode().encode("utf-16"), "invalid_json"),  # wrong encoding
    (TOPIC, b'{"site_id": "site-a", "site_id": "site-b"}', "duplicate_key"),
    (TOPIC, b"[1, 2]", "invalid_schema"),
    (TOPIC, _payload(readings="hot"), "invalid_schema"),
    (TOPIC, _payload(readings=[{"metric": "t", "value": 1, "unit": "c\u0000"}]),
     "invalid_schema"),
    (TOPIC, _payload(readings=[{"metric": "t", "value": 1, "unit": "x" * 17}]),
     "invalid_schema"),
    (TOPIC, _payload(readings=[{"metric": "t", "value": 1e400, "unit": "c"}]),
     "invalid_schema"),
    (TOPIC, _payload(readings=[{"metric": "t", "value": i, "unit": "c", "ts": TS}
                               for i in range(1001)]), "invalid_schema"),
    (TOPIC, _payload(ts="0001-01-01T00:00:00+01:00"), "invalid_schema"),
    (TOPIC, _payload(ts="2026-11-30T08:00:00"), "invalid_schema"),  # naive
    (TOPIC, _payload(schema_version=2), "unsupported_schema_version"),
    (TOPIC, _payload(kind="event"), "kind_mismatch"),
    (TOPIC, _payload(device_id="fridge-2"), "identity_mismatch"),
    (TOPIC, _payload(site_id="site-b"), "identity_mismatch"),
    (TOPIC, _payload(ts="2090-01-01T00:00:00Z"), "ts_in_future"),
    (TOPIC, _payload(ts="2026-11-30T08:06:00Z"), "ts_in_future"),
    (TOPIC, _payload(readings=[{"metric": "t", "value": 1, "unit": "c",
                                "ts": "2026-11-30T09:00:00Z"}]), "ts_in_future"),
    (TOPIC, _payload(ts="2026-01-01T00:00:00Z"), "ts_too_old"),
    (DETECTION, _detection(violation="made_up"), "invalid_schema"),
    (DETECTION, _detection(boxes=[{"label": "x", "score": 0.5, "x1": 0, "y1": 0, "x2": 1,
                                   "y2": 1}] * 101), "invalid_schema"),
    (DETECTION, _detection(boxes=[{"label": "x\n", "score": 0.5, "x1": 0, "y1": 0, "x2": 1,
                                   "y2": 1}]), "invalid_schema"),
    (STATUS, json.dumps({"msg_id": new_id(), "site_id": "site-a", "device_id": "fridge-1",
                         "ts": TS, "state": "online", "report_period_s": 1e300}).encode(),
     "invalid_schema"),
    (EVENT, json.dumps({"msg_id": new_id(), "site_id": "site-a", "device_id": "fridge-1",
                        "ts": TS, "event": "power_lost",
                        "detail": {"blob": "x" * 2_000_000}}).encode(), "invalid_schema"),
    (EVENT, json.dumps({"msg_id": new_id(), "site_id": "site-a", "device_id": "fridge-1",
                        "ts": TS, "event": "power_lost",
                        "detail": {"note": "a\u0000b"}}).encode(), "invalid_schema"),
    (EVIDENCE, _evidence(b"GIF89a not a jpeg"), "invalid_evidence"),
    (EVIDENCE, _evidence(b"\xff\xd8\xff\xe0 jpeg", sha="0" * 64), "evidence_hash_mismatch"),
    (TOPIC, b"x" * (8 * 1024 * 1024 + 1), "too_large"),
])
def test_every_poison_class_has_its_reason(topic: str, payload: bytes, reason: str) -> None:
    assert _reason(topic, payload) == reason


def test_schema_error_names_the_field() -> None:
    out = _rejected(TOPIC, _payload(
        readings=[{"metric": "temperature", "value": "x", "unit": "c"}]))
    assert "readings.0.value" in out.dead_letter.error
    out = _rejected(TOPIC, _payload(readings=[{"metric": "t", "value": 1, "unit": "c\u0000"}]))
    assert "control characters" in out.dead_letter.error


def test_record_over_the_kafka_limit_is_dead_lettered_not_produced() -> None:
    readings = [{"metric": f"m{i}", "value": i, "unit": "celsius"} for i in range(200)]
    payload = _payload(readings=readings)
    assert isinstance(_route(TOPIC, payload), Accepted)
    out = _rejected(TOPIC, payload, Limits(max_record_bytes=4096))
    assert out.reason == "too_large_for_kafka"


def test_time_window_is_configurable() -> None:
    old = _payload(ts="2026-11-01T00:00:00Z")
    assert _reason(TOPIC, old, Limits(max_ts_age=timedelta(days=7))) == "ts_too_old"
    assert isinstance(_route(TOPIC, old, Limits(max_ts_age=timedelta(days=60))), Accepted)


def test_huge_payload_is_kept_truncated_in_its_dead_letter() -> None:
    out = _rejected(TOPIC, b"x" * (8 * 1024 * 1024 + 1))
    assert len(base64.b64decode(out.dead_letter.payload_b64)) == 512 * 1024
    assert "truncated" in out.dead_letter.error
    # The dead letter itself fits a Kafka record.
    assert len(out.dead_letter.model_dump_json()) < 1_000_000


def test_route_never_raises_on_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest.validate as v

    def broken(_: object) -> object:
        raise TypeError("a bug")

    monkeypatch.setattr(v.device_message_adapter, "validate_python", broken)
    assert _reason(TOPIC, _payload()) == "internal_error"
