"""Simulated devices as sources.

``cold_room``: the seeded simulator's next sample at each read. Values come from the
simulator's own clock (one step per read); the timestamp is the read's wall-clock time,
so a simulated box behaves like a real one on the wire.

``counter``: a diagnostic source whose ``sample_seq`` goes 1, 2, 3, … across restarts
(kept in ``state_file``), so a gap in what arrives upstream is a lost message. A value is
made durable only when the next one is read, i.e. after the agent spooled it: a crash
may repeat a value, never skip one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.simulators.cold_room import ColdRoomSample, ColdRoomSpec, simulate
from edge.sources.base import MetricValue, SourceSample


class SimulatorSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["simulator"]
    kind: Literal["cold_room", "counter"] = "cold_room"
    state_file: Path | None = Field(default=None, description="counter: where it persists.")
    seed: int = 1
    step_s: float = Field(default=10.0, gt=0, description="Simulated seconds per read.")
    spec: dict[str, Any] = Field(default_factory=dict, description="ColdRoomSpec overrides.")


class SimulatedSource:
    def __init__(self, cfg: SimulatorSourceConfig) -> None:
        self.cfg = cfg
        spec = ColdRoomSpec(**cfg.spec)
        self._samples: Iterator[ColdRoomSample] = simulate(
            spec, datetime.now(UTC), cfg.step_s, cfg.seed
        )

    async def open(self) -> None:
        return None

    async def read(self) -> SourceSample:
        s = next(self._samples)
        return SourceSample(
            ts=datetime.now(UTC),
            values=[
                MetricValue("temperature", s.temperature_c, "celsius"),
                MetricValue("compressor_on", 1.0 if s.compressor_on else 0.0, "bool"),
            ],
        )

    async def close(self) -> None:
        return None


class CounterSource:
    def __init__(self, cfg: SimulatorSourceConfig) -> None:
        self.state_file = cfg.state_file
        self.value = 0
        if self.state_file is not None and self.state_file.exists():
            self.value = int(self.state_file.read_text() or 0)

    def _persist(self, value: int) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(str(value))
        os.replace(tmp, self.state_file)

    async def open(self) -> None:
        return None

    async def read(self) -> SourceSample:
        self._persist(self.value)  # the previous value has been spooled by now
        self.value += 1
        return SourceSample(datetime.now(UTC), [MetricValue("sample_seq", self.value, "count")])

    async def close(self) -> None:
        self._persist(self.value)  # a clean stop: the last value was spooled
