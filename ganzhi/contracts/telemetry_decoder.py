"""Telemetry read from JSON faster than through its pydantic model (1.3-1.8x).

:class:`~ganzhi.contracts.payloads.Telemetry` is the contract. Building it took a fifth
of the stream worker's time per elevator message (pydantic-core makes a model object per
reading and calls the Python validators of each), so the worker reads telemetry with
:func:`decode_telemetry` instead (docs/performance.md, "Stream: rule evaluation"):

* a msgspec decoder reads the JSON into plain frozen structs (:class:`TelemetryRecord`,
  :class:`ReadingRecord`) with the same field names, checking the same types; the same
  patterns, lengths, time range and duplicates are checked after it in Python (a name
  or unit seen valid before is not matched again: msgspec's own pattern constraint runs
  a regular expression per string, most of its time);
* it accepts only what the contract accepts, and only in the forms devices send (times
  as ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` with ``Z`` or an offset). Anything else - an error,
  or a form the contract also takes (a number as a string, another time layout) - is
  handed to the pydantic model, which decides: its error is raised as usual, or what
  it accepted is converted to the same structs.

So a message is accepted with the same values or refused with the same error either
way; tests/unit/test_telemetry_decoder.py checks this against the model on generated
payloads. Code that only reads telemetry takes :class:`TelemetryLike`, which both the
model and the record satisfy.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal, Protocol

import msgspec

from ganzhi.contracts.bounds import EARLIEST, LATEST, READINGS_MAX, UNIT_MAX
from ganzhi.contracts.payloads import DeviceClass, Telemetry
from ganzhi.contracts.topics import ID_PATTERN


class _Valid:
    """Whether a string matches ``pattern`` in full; strings found valid are remembered
    (at most ``keep``, then forgotten all at once: a sender spraying new names only
    makes the check run each time)."""

    def __init__(self, pattern: str, keep: int) -> None:
        self._full = re.compile(pattern).fullmatch  # (full match: no ``$``-before-newline)
        self._seen: set[str] = set()
        self._keep = keep

    def __call__(self, s: str) -> bool:
        if s in self._seen:
            return True
        if self._full(s) is None:
            return False
        if len(self._seen) >= self._keep:
            self._seen.clear()
        self._seen.add(s)
        return True


# The model's patterns and lengths (ASCII digits: ``\d`` takes any Unicode digit).
_valid_id = _Valid(ID_PATTERN, 200_000)
_valid_metric = _Valid(r"[a-z][a-z0-9_.]{0,63}", 10_000)
_valid_unit = _Valid(f"[^\x00-\x1f\x7f-\x9f]{{0,{UNIT_MAX}}}", 10_000)
# The time layout devices send; the model also takes others (it decides those).
_time_layout = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                          r"(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})").fullmatch


class ReadingLike(Protocol):
    """What the stream reads of a reading (:class:`~ganzhi.contracts.payloads.Reading`
    or :class:`ReadingRecord`)."""

    @property
    def metric(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def unit(self) -> str: ...
    @property
    def ts(self) -> datetime | None: ...


class TelemetryLike(Protocol):
    """What the stream reads of telemetry (:class:`~ganzhi.contracts.payloads.Telemetry`
    or :class:`TelemetryRecord`)."""

    @property
    def msg_id(self) -> uuid.UUID: ...
    @property
    def site_id(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def device_class(self) -> DeviceClass: ...
    @property
    def readings(self) -> Sequence[ReadingLike]: ...


class ReadingRecord(msgspec.Struct, frozen=True, gc=False):
    metric: str
    value: float
    unit: str
    ts: datetime | None = None


class TelemetryRecord(msgspec.Struct, frozen=True, gc=False):
    """Telemetry as the stream worker reads it (the contract's fields, validated)."""

    msg_id: uuid.UUID
    site_id: str
    device_id: str
    ts: datetime
    device_class: DeviceClass
    readings: list[ReadingRecord]


class _Reading(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    metric: str
    value: float
    unit: str
    ts: str | None = None


class _Telemetry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    msg_id: uuid.UUID
    site_id: str
    device_id: str
    ts: str
    device_class: DeviceClass
    readings: Annotated[list[_Reading], msgspec.Meta(min_length=1, max_length=READINGS_MAX)]
    schema_version: Literal[1] = 1
    kind: Literal["telemetry"] = "telemetry"


_DECODER = msgspec.json.Decoder(_Telemetry)
_fromiso = datetime.fromisoformat


def _fast(raw: bytes | str) -> TelemetryRecord | None:
    """The record, or None where the model has to decide."""
    try:
        m = _DECODER.decode(raw)
    except msgspec.DecodeError:
        return None
    if not (_valid_id(m.site_id) and _valid_id(m.device_id) and _time_layout(m.ts)):
        return None
    for r in m.readings:
        if not (_valid_metric(r.metric) and _valid_unit(r.unit)
                and (r.ts is None or _time_layout(r.ts))):
            return None
    try:
        ts = _fromiso(m.ts)
        readings = [ReadingRecord(r.metric, r.value, r.unit,
                                  None if r.ts is None else _fromiso(r.ts))
                    for r in m.readings]
    except ValueError:  # (a day or an hour out of range)
        return None
    if not EARLIEST <= ts < LATEST:
        return None
    own = [r.ts for r in readings if r.ts is not None]
    if own:
        if not all(EARLIEST <= t < LATEST for t in own):
            return None
        if len({(r.metric, r.ts or ts) for r in readings}) != len(readings):
            return None
    elif len({r.metric for r in readings}) != len(readings):
        return None
    return TelemetryRecord(m.msg_id, m.site_id, m.device_id, ts, m.device_class, readings)


def record_of(msg: Telemetry) -> TelemetryRecord:
    """The record of a telemetry model."""
    return TelemetryRecord(
        msg.msg_id, msg.site_id, msg.device_id, msg.ts, msg.device_class,
        [ReadingRecord(r.metric, r.value, r.unit, r.ts) for r in msg.readings])


def decode_telemetry(raw: bytes | str) -> TelemetryRecord:
    """``raw`` read as telemetry; raises the model's ``ValidationError`` where the
    contract refuses it."""
    rec = _fast(raw)
    if rec is None:
        rec = record_of(Telemetry.model_validate_json(raw))
    return rec
