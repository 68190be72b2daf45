"""The stream's telemetry decoder against the contract's model: the same accepted
values, the same refusals, on generated payloads (tricky ones included)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ganzhi.contracts import DeviceClass, Reading, Telemetry
from ganzhi.contracts.telemetry_decoder import _fast, decode_telemetry, record_of

MSG_ID = "0b6c3a4e-3f7e-4d3b-9a8e-6d4c2b1a0f9e"

_ids = st.sampled_from(["s-1", "cs-0001", "a", "a" * 64, "a" * 65, "S-1", "s-1\n", "-s",
                        "s 1", "s\u00e9", "s.1_2", "", 7])
_msg_ids = st.sampled_from([MSG_ID, MSG_ID.replace("-", ""), MSG_ID.upper(), f"{{{MSG_ID}}}",
                            f"urn:uuid:{MSG_ID}", MSG_ID[:-1], "x", 1, None])
_times = st.sampled_from([
    "2026-03-01T08:00:00Z", "2026-03-01T08:00:00.5Z", "2026-03-01T08:00:00.123456+05:30",
    "2026-03-01T08:00:00.1234567Z", "2026-03-01T08:00:00", "2026-03-01 08:00:00Z",
    "2026-03-01t08:00:00z", "2026-03-01T24:00:00Z", "2026-03-01T08:00:60Z",
    "2026-02-30T08:00:00Z", "2026-03-01T08:00:00+24:00", "2026-03-01T08:00:00-00:00",
    "1999-12-31T23:59:59Z", "2000-01-01T00:30:00+01:00", "2099-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z", "2026-03-01T08:00:00Z\n", "\uff12026-03-01T08:00:00Z",
    1772352000, "1772352000", None])
_metrics = st.sampled_from(["temperature", "door_open", "t", "a.b_c", "T", "1t", "t\n",
                            "t" * 64, "t" * 65, ""])
_values: st.SearchStrategy[Any] = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**30, 10**30),
    st.sampled_from([True, "1.5", None, -0.0]))
_units = st.sampled_from(["", "celsius", "1", "%", "a" * 16, "a" * 17, "\u00e9" * 16, "\ud800",
                          "c\n", "c\x7f", "c\u0085", "c\u00a0", 5])


@st.composite
def _readings(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid readings (distinct metrics, finite values), a field drawn from the tricky
    values now and then."""
    out = []
    for i in range(draw(st.integers(0, 4))):
        r: dict[str, Any] = {"metric": f"m{i}", "value": draw(st.floats(-1e6, 1e6)),
                             "unit": "celsius"}
        if draw(st.integers(0, 3)) == 0:
            r["ts"] = "2026-03-01T07:59:59.5+08:00"
        if draw(st.integers(0, 2)) == 0:
            field = draw(st.sampled_from(["metric", "value", "unit", "ts", "extra"]))
            r[field] = draw({"metric": _metrics, "value": _values, "unit": _units,
                             "ts": _times, "extra": st.just(1)}[field])
        out.append(r)
    return out


@st.composite
def _payloads(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid envelopes with a field or two drawn from the tricky values."""
    doc: dict[str, Any] = {"msg_id": MSG_ID, "site_id": "s-1", "device_id": "d-1",
                           "ts": "2026-03-01T08:00:00Z", "device_class": "cold_store",
                           "readings": draw(_readings())}
    for _ in range(draw(st.integers(0, 2))):
        field = draw(st.sampled_from(["msg_id", "site_id", "device_id", "ts", "device_class",
                                      "schema_version", "kind", "extra", "-readings"]))
        if field == "-readings":
            doc.pop("readings", None)
        else:
            doc[field] = draw({"msg_id": _msg_ids, "site_id": _ids, "device_id": _ids,
                               "ts": _times,
                               "device_class": st.sampled_from(["elevator", "camera", 1]),
                               "schema_version": st.sampled_from([1, 1.0, 2, True, "1"]),
                               "kind": st.sampled_from(["telemetry", "event"]),
                               "extra": st.just(1)}[field])
    return doc


def _model(raw: str) -> Telemetry | ValidationError:
    try:
        return Telemetry.model_validate_json(raw)
    except ValidationError as exc:
        return exc


@settings(max_examples=1500, deadline=None)
@given(doc=_payloads())
def test_the_decoder_accepts_and_refuses_as_the_model(doc: dict[str, Any]) -> None:
    raw = json.dumps(doc)
    model = _model(raw)
    fast = _fast(raw)
    if fast is not None:  # accepted without the model: the model accepts the same
        assert isinstance(model, Telemetry), f"the contract refuses {raw}: {model}"
        assert fast == record_of(model)
        for a, b in zip(fast.readings, model.readings, strict=True):
            assert type(a.value) is type(b.value)
            assert (a.ts and a.ts.utcoffset()) == (b.ts and b.ts.utcoffset())
        assert fast.ts.utcoffset() == model.ts.utcoffset()
    if isinstance(model, ValidationError):
        with pytest.raises(ValidationError) as caught:
            decode_telemetry(raw)
        assert caught.value.errors(include_context=False) == model.errors(include_context=False)
    else:
        assert decode_telemetry(raw) == record_of(model)


def test_what_devices_send_takes_the_fast_path() -> None:
    """Telemetry as the edge agents make it (the model's own JSON) needs no model."""
    msg = Telemetry(msg_id=uuid.uuid4(), site_id="s-1", device_id="el-1",
                    ts=datetime(2026, 3, 1, 8, 0, 0, 250_000, tzinfo=UTC),
                    device_class=DeviceClass.ELEVATOR,
                    readings=[Reading(metric="speed", value=1.5, unit="m/s"),
                              Reading(metric="door_state", value=0, unit="1",
                                      ts=datetime(2026, 3, 1, 7, 59, 59, tzinfo=UTC))])
    rec = _fast(msg.model_dump_json())
    assert rec is not None
    assert rec == record_of(msg)


def test_duplicate_readings_are_refused_with_the_models_reason() -> None:
    doc = {"msg_id": MSG_ID, "site_id": "s-1", "device_id": "d-1",
           "ts": "2026-03-01T08:00:00Z", "device_class": "cold_store",
           "readings": [{"metric": "t", "value": 1, "unit": "c"},
                        {"metric": "t", "value": 2, "unit": "c"}]}
    with pytest.raises(ValidationError, match="duplicate reading"):
        decode_telemetry(json.dumps(doc))


def test_the_generated_payloads_reach_both_outcomes() -> None:
    """(The comparison above is only worth something if many payloads are accepted by the
    decoder itself and many are refused.)"""
    seen = {"fast": 0, "model": 0}

    @settings(max_examples=300, deadline=None, database=None)
    @given(doc=_payloads())
    def count(doc: dict[str, Any]) -> None:
        seen["fast" if _fast(json.dumps(doc)) is not None else "model"] += 1

    count()
    assert seen["fast"] > 50 and seen["model"] > 50, seen
