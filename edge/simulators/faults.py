"""What every scripted fault has: when it starts and how long it lasts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FaultWindow(BaseModel):
    """A fault active from ``at_s`` (seconds after the scenario's start) for ``for_s``.

    ``for_s`` left out: it lasts to the end of the scenario (never repaired).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    at_s: float = Field(ge=0)
    for_s: float | None = Field(default=None, gt=0)

    @property
    def end_s(self) -> float:
        return float("inf") if self.for_s is None else self.at_s + self.for_s

    def active(self, t: float) -> bool:
        return self.at_s <= t < self.end_s
