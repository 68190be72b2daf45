"""The port every device source implements, and what one read returns.

A source is read by the agent's sampler at the device's sampling interval. It returns
the current values of its metrics and any edge-detectable happenings; it raises
:class:`SourceError` when the device cannot be read (the sampler turns that into a
metric and a device event, never a crash).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ganzhi.contracts import Severity


class SourceError(Exception):
    """The device could not be read (timeout, connection refused, bad response)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # short machine-readable cause, e.g. "modbus_timeout"
        self.detail = detail


@dataclass(frozen=True)
class MetricValue:
    metric: str
    value: float
    unit: str


@dataclass(frozen=True)
class SourceEvent:
    """Something the device itself signals (alarm button pressed, power lost)."""

    event: str
    severity: Severity = Severity.INFO
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceSample:
    ts: datetime
    values: list[MetricValue]
    events: list[SourceEvent] = field(default_factory=list)


class DeviceSource(Protocol):
    async def open(self) -> None: ...

    async def read(self) -> SourceSample: ...

    async def close(self) -> None: ...
