"""Bounds every wire payload keeps: sizes, characters, times (docs/contracts.md, "Bounds").

A device, camera or API caller may be broken or hostile, so nothing on the wire is
unbounded: each string has a length and no control characters (PostgreSQL refuses NUL
in text, and control characters forge log lines), free-form objects have a size and a
depth, times lie in a sane absolute range (so no arithmetic on them can overflow), and
periods are finite. Ingest adds a window relative to the receive time
(:func:`check_event_time`) that a pure model cannot know.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, Field

# Absolute range of any event time on the wire. Outside it, time arithmetic (time zones,
# windows, partitions) can overflow, and no device of this platform ever made such data.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

UNIT_MAX = 16
LABEL_MAX = 64
KEY_MAX = 200
TEXT_MAX = 500
DETAIL_MAX_BYTES = 8192
DETAIL_MAX_DEPTH = 6
BOXES_MAX = 100
READINGS_MAX = 1000
REPORT_PERIOD_MAX_S = 86_400.0
# Kafka's default record limit (message.max.bytes, max.request.size) is 1 MiB; stay
# under it with room for the record's own overhead.
KAFKA_RECORD_MAX_BYTES = 1_000_000


def _no_control_chars(value: str) -> str:
    if not value.isprintable() and any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ValueError("must not contain control characters")
    return value


def _sane_time(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}") from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value


def _depth_and_values(value: Any, depth: int = 0) -> None:
    if depth > DETAIL_MAX_DEPTH:
        raise ValueError(f"nested deeper than {DETAIL_MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in k:
                raise ValueError("keys must not contain NUL characters")
            _depth_and_values(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _depth_and_values(v, depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError("strings must not contain NUL characters")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")


def _bounded_object(value: dict[str, Any]) -> dict[str, Any]:
    _depth_and_values(value)
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > DETAIL_MAX_BYTES:
        raise ValueError(f"{size} bytes as JSON, at most {DETAIL_MAX_BYTES}")
    return value


Text = Annotated[str, Field(max_length=TEXT_MAX), AfterValidator(_no_control_chars)]
Label = Annotated[str, Field(max_length=LABEL_MAX), AfterValidator(_no_control_chars)]
Key = Annotated[str, Field(min_length=1, max_length=KEY_MAX),
                AfterValidator(_no_control_chars)]
Unit = Annotated[str, Field(max_length=UNIT_MAX, examples=["celsius"]),
                 AfterValidator(_no_control_chars)]
EventTime = Annotated[AwareDatetime, AfterValidator(_sane_time)]
Detail = Annotated[dict[str, Any], AfterValidator(_bounded_object)]
FiniteCoordinate = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
ReportPeriod = Annotated[float, Field(gt=0, le=REPORT_PERIOD_MAX_S, allow_inf_nan=False)]


def check_event_time(ts: datetime, received_at: datetime, max_age: timedelta,
                     max_ahead: timedelta) -> str | None:
    """``None`` when ``ts`` lies in ``[received_at - max_age, received_at + max_ahead]``,
    else the dead-letter reason: ``ts_too_old`` or ``ts_in_future``."""
    if ts > received_at + max_ahead:
        return "ts_in_future"
    if ts < received_at - max_age:
        return "ts_too_old"
    return None
