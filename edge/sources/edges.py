"""Device events detected on the edges of a metric (alarm button pressed, power lost).

Shared by the Modbus source (configured per device) and the simulators (built in), so a
simulated device and a real one raise the same events. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.sources.base import SourceEvent
from ganzhi.contracts import Severity

METRIC_PATTERN = r"^[a-z][a-z0-9_.]{0,63}$"


class EdgeEvent(BaseModel):
    """Raise ``event`` when ``metric`` changes in a given way.

    ``rising``: was 0, now non-zero. ``falling``: was non-zero, now 0. Both need a
    previous value, so the first read of a source raises none. ``nonzero``: on every
    read while the value is non-zero (a level, e.g. a latched fault code).
    """

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(pattern=METRIC_PATTERN)
    when: Literal["rising", "falling", "nonzero"] = "rising"
    event: str = Field(pattern=METRIC_PATTERN)
    severity: Severity = Severity.MAJOR


def edge_events(
    rules: Sequence[EdgeEvent], before: Mapping[str, float], now: Mapping[str, float]
) -> list[SourceEvent]:
    """The events the change from ``before`` to ``now`` raises, in rule order. Pure."""
    out: list[SourceEvent] = []
    for rule in rules:
        if rule.metric not in now:
            continue
        is_ = bool(now[rule.metric])
        if rule.when == "nonzero":
            fire = is_
        elif rule.metric not in before:
            fire = False
        else:
            was = bool(before[rule.metric])
            fire = (is_ and not was) if rule.when == "rising" else (was and not is_)
        if fire:
            detail: dict[str, object] = {"metric": rule.metric, "value": now[rule.metric]}
            out.append(SourceEvent(rule.event, rule.severity, detail))
    return out
