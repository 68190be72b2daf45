"""Wire contracts: topics, payload rules, and the published JSON Schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from ganzhi.contracts import (
    Channel,
    Telemetry,
    device_message_adapter,
    mqtt_topic,
    new_id,
    parse_mqtt_topic,
    shared_subscription,
)
from ganzhi.contracts.schemas import SCHEMA_DIR, render


def _telemetry(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "kind": "telemetry", "msg_id": new_id(), "site_id": "s1", "device_id": "d1",
        "ts": "2026-01-01T00:00:00Z", "device_class": "cold_store",
        "readings": [{"metric": "temperature", "value": 3.5, "unit": "celsius"}],
    }
    base.update(over)
    return base


def test_topic_round_trip() -> None:
    topic = mqtt_topic("site-a", "fridge-1", Channel.TELEMETRY)
    assert topic == "ganzhi/v1/site-a/fridge-1/telemetry"
    parsed = parse_mqtt_topic(topic)
    assert (parsed.site_id, parsed.device_id, parsed.channel) == (
        "site-a", "fridge-1", Channel.TELEMETRY,
    )
    assert shared_subscription("g") == "$share/g/ganzhi/v1/+/+/+"


@pytest.mark.parametrize(
    "topic",
    ["ganzhi/v1/a/b", "ganzhi/v2/a/b/telemetry", "ganzhi/v1/A/b/telemetry",
     "ganzhi/v1/a/b/unknown", "other/v1/a/b/telemetry"],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(ValueError):
        parse_mqtt_topic(topic)


def test_invalid_ids_cannot_build_a_topic() -> None:
    with pytest.raises(ValueError):
        mqtt_topic("site/a", "d", Channel.STATUS)


def test_telemetry_parses_and_serialises() -> None:
    msg = device_message_adapter.validate_python(_telemetry())
    assert isinstance(msg, Telemetry)
    again = device_message_adapter.validate_json(msg.model_dump_json())
    assert again == msg


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"ts": "2026-01-01T00:00:00"}, "ts"),  # naive time is ambiguous
        ({"readings": []}, "readings"),
        ({"readings": [{"metric": "t", "value": "NaN", "unit": "c"}]}, "value"),
        ({"schema_version": 2}, "schema_version"),
        ({"extra": 1}, "extra"),
        ({"msg_id": "x"}, "msg_id"),
    ],
)
def test_invalid_telemetry(override: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        device_message_adapter.validate_python(_telemetry(**override))
    assert field in str(err.value)


def test_duplicate_sample_in_one_message_is_refused() -> None:
    reading = {"metric": "temperature", "value": 3.5, "unit": "celsius"}
    with pytest.raises(ValidationError, match="duplicate reading"):
        device_message_adapter.validate_python(_telemetry(readings=[reading, reading]))


def test_reading_time_defaults_to_message_time() -> None:
    msg = device_message_adapter.validate_python(_telemetry())
    assert isinstance(msg, Telemetry)
    assert msg.readings[0].ts is None
    assert msg.ts == datetime(2026, 1, 1, tzinfo=UTC)


def test_published_schemas_match_the_models() -> None:
    rendered = render()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == rendered, "run: python -m ganzhi.contracts.schemas"
    telemetry = json.loads(rendered["telemetry.v1.json"])
    assert set(telemetry["required"]) >= {"msg_id", "site_id", "device_id", "ts", "readings"}


def test_bounds_refuse_what_would_break_a_service_downstream() -> None:
    from ganzhi.contracts import DeviceStatus, Violation
    from ganzhi.contracts.bounds import check_event_time

    with pytest.raises(ValidationError, match="control characters"):
        device_message_adapter.validate_python(_telemetry(
            readings=[{"metric": "t", "value": 1, "unit": "c\u0000"}]))
    with pytest.raises(ValidationError, match="between 2000-01-01 and 2100-01-01"):
        device_message_adapter.validate_python(_telemetry(ts="0001-01-01T00:00:00+01:00"))
    with pytest.raises(ValidationError, match="report_period_s"):
        DeviceStatus.model_validate({"msg_id": new_id(), "site_id": "s1", "device_id": "d1",
                                     "ts": "2026-01-01T00:00:00Z", "state": "online",
                                     "report_period_s": 1e300})
    with pytest.raises(ValidationError, match="violation"):
        device_message_adapter.validate_python({
            "kind": "detection", "msg_id": new_id(), "site_id": "s1", "device_id": "d1",
            "ts": "2026-01-01T00:00:00Z", "violation": "made_up", "state": "raised",
            "score": 0.5})
    with pytest.raises(ValidationError, match="bytes as JSON"):
        device_message_adapter.validate_python({
            "kind": "event", "msg_id": new_id(), "site_id": "s1", "device_id": "d1",
            "ts": "2026-01-01T00:00:00Z", "event": "power_lost",
            "detail": {"blob": "x" * 9000}})
    assert "no_mask" in {v.value for v in Violation}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    from datetime import timedelta

    window = (timedelta(days=30), timedelta(minutes=5))
    assert check_event_time(now, now, *window) is None
    assert check_event_time(now + timedelta(minutes=6), now, *window) == "ts_in_future"
    assert check_event_time(now - timedelta(days=31), now, *window) == "ts_too_old"


def test_a_model_card_cannot_map_a_class_to_an_unknown_violation() -> None:
    from vision.card import ModelCard

    base = {"name": "m", "version": "1", "input_size": 320, "classes": ["hat", "no_hat"]}
    assert ModelCard.model_validate({**base, "violations": {"no_hat": "no_chef_hat"}})
    with pytest.raises(ValidationError, match="violations"):
        ModelCard.model_validate({**base, "violations": {"no_hat": "made_up"}})
