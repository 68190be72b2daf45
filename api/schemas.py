"""Public response models of the HTTP API: what clients see, never raw database rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ganzhi.contracts import Severity, TransitionKind

AlertStatus = Literal["open", "resolved"]
Resolution = Literal["raw", "1m", "1h"]
DeliveryStatus = Literal["pending", "delivered", "dead"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class AlertSummary(_Out):
    id: int
    fingerprint: str
    rule_id: str
    severity: Severity
    site_id: str
    device_id: str
    status: AlertStatus
    started_at: datetime
    ended_at: datetime | None
    summary: str
    values: dict[str, Any]
    updated_at: datetime


class AlertPage(_Out):
    items: list[AlertSummary]
    next_before_id: int | None = Field(
        description="Pass as before_id for the next (older) page; null on the last page."
    )


class AlertEventOut(_Out):
    transition_id: str
    kind: TransitionKind
    at: datetime
    received_at: datetime
    summary: str | None
    values: dict[str, Any]


class ClueDeliveryOut(_Out):
    clue_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class AlertDetail(AlertSummary):
    events: list[AlertEventOut]
    clue: ClueDeliveryOut | None  # the clue.created delivery
    clue_resolution: ClueDeliveryOut | None = None  # the clue.resolved delivery


class SeriesPoint(_Out):
    """One sample (raw), or one minute / hour (1m, 1h: value is the mean)."""

    time: datetime
    metric: str
    value: float
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    count: int | None = None
    last: float | None = None


class ReadingSeries(_Out):
    site_id: str
    device_id: str
    metric: str | None
    resolution: Resolution
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    points: list[SeriesPoint]
    truncated: bool = Field(description="More points exist in the range than limit allowed.")


class Health(_Out):
    ok: bool
    db: str
