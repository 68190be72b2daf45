"""Simulated devices as sources: a scenario file played back, or a diagnostic counter.

``SimulatedSource`` plays a scenario (:mod:`edge.simulators.scenario`): one sample per
read, with the scenario's readings and device events.

* ``realtime: true`` (default): the scenario's clock starts at the first read (start =
  now) and runs ``speed`` times as fast as the wall clock; each read returns the latest
  sample due by then (device events of samples skipped in between are kept; read faster
  than the scenario's interval, it returns the same sample again, without events). Timestamps
  are ``now-at-first-read + offset`` (scenario time): at ``speed`` > 1 they run ahead
  of the wall clock.
* ``realtime: false``: each read returns the next sample at once, stamped with the
  scenario's own ``start + offset``: a replay of the same day, as fast as it is read.

At the end: ``at_end: loop`` (default) starts the scenario again (same seed, same day;
timestamps keep increasing), ``at_end: stop`` makes every further read raise
``SourceError("scenario_ended")``.

Without ``scenario`` (the older form) ``kind`` + ``spec`` + ``step_s`` + ``seed`` build
an endless cold room (or elevator) scenario in place.

``kind: counter``: a diagnostic source whose ``sample_seq`` goes 1, 2, 3, … across
restarts (kept in ``state_file``), so a gap in what arrives upstream is a lost message. A
value is made durable only when the next one is read, i.e. after the agent spooled it: a
crash may repeat a value, never skip one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.simulators.scenario import (
    ColdRoomScenario,
    ElevatorScenario,
    ScenarioSample,
    iter_samples,
    load_scenario,
    parse_scenario,
)
from edge.sources.base import MetricValue, SourceError, SourceEvent, SourceSample


class SimulatorSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["simulator"]
    scenario: Path | None = Field(default=None, description="Scenario YAML file.")
    seed: int | None = Field(default=None, description="Overrides the scenario's seed.")
    realtime: bool = True
    speed: float = Field(default=1.0, gt=0, le=10_000)
    at_end: Literal["loop", "stop"] = "loop"
    # The older, in-place form (no scenario file) and the diagnostic counter:
    kind: Literal["cold_room", "elevator", "counter"] = "cold_room"
    state_file: Path | None = Field(default=None, description="counter: where it persists.")
    step_s: float = Field(default=10.0, gt=0, description="Simulated seconds per sample.")
    spec: dict[str, Any] = Field(default_factory=dict, description="Spec overrides.")


def scenario_for(cfg: SimulatorSourceConfig) -> ColdRoomScenario | ElevatorScenario:
    if cfg.scenario is not None:
        return load_scenario(cfg.scenario)
    if cfg.kind == "counter":
        raise ValueError("a counter has no scenario")
    return parse_scenario({
        "kind": cfg.kind, "seed": cfg.seed if cfg.seed is not None else 1,
        "start": "2026-01-01T00:00:00+00:00", "interval_s": cfg.step_s,
        "duration_s": 86400.0, "spec": cfg.spec,
    }, "simulator source")


class SimulatedSource:
    def __init__(self, cfg: SimulatorSourceConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.scenario = scenario_for(cfg)
        self._clock = clock
        self._seed = cfg.seed if cfg.seed is not None else self.scenario.seed
        self._t0_wall: float | None = None
        self._t0: datetime = self.scenario.start
        self._loop = 0
        self._samples: Iterator[ScenarioSample] = iter(())
        self._next: ScenarioSample | None = None
        self._ended = False
        self._started = False
        self._current: ScenarioSample | None = None

    async def open(self) -> None:
        return None

    def _advance(self) -> ScenarioSample | None:
        """The next sample, looping at the end if configured; None when stopped."""
        if self._ended:
            return None
        s = next(self._samples, None)
        if s is None:
            if self._started and self.cfg.at_end == "stop":
                self._ended = True
                return None
            if self._started:
                self._loop += 1
            self._started = True
            self._samples = iter_samples(self.scenario, seed=self._seed, start=self._t0)
            s = next(self._samples, None)
            if s is None:
                self._ended = True
                return None
        shift = self._loop * self.scenario.duration_s
        return ScenarioSample(s.offset_s + shift, s.ts + timedelta(seconds=shift),
                              s.values, s.events)

    def _start(self) -> None:
        if self._t0_wall is None:
            self._t0_wall = self._clock()
            if self.cfg.realtime:
                self._t0 = datetime.now(UTC).replace(microsecond=0)
            self._next = self._advance()

    async def read(self) -> SourceSample:
        self._start()
        if not self.cfg.realtime:
            cur = self._next
            if cur is None:
                raise SourceError("scenario_ended", str(self.cfg.scenario or self.cfg.kind))
            self._next = self._advance()
            return SourceSample(cur.ts, list(cur.values), list(cur.events))
        assert self._t0_wall is not None
        due = (self._clock() - self._t0_wall) * self.cfg.speed
        events: list[SourceEvent] = []
        advanced = False
        while self._next is not None and self._next.offset_s <= due:
            advanced = True
            self._current = self._next
            events += self._next.events
            self._next = self._advance()
        if not advanced and self._next is None and self._ended:
            raise SourceError("scenario_ended", str(self.cfg.scenario or self.cfg.kind))
        cur = self._current
        assert cur is not None  # the first sample (offset 0) is always due
        return SourceSample(cur.ts, list(cur.values), events)

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
