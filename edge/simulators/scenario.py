"""Scenario files: one simulated device's day, replayable (same file + seed ⇒ same data).

A scenario is YAML::

    kind: cold_room            # or elevator
    name: chilled room, compressor fails for 30 min
    seed: 7
    start: 2026-01-05T08:00:00+08:00   # needs a timezone
    interval_s: 10
    duration_s: 7200
    spec: {variant: chilled, ...}      # ColdRoomSpec / ElevatorSpec fields
    faults:
      - {type: compressor_failure, at_s: 1800, for_s: 1800}

:func:`load_scenario` validates it (errors name the field and the file);
:func:`iter_samples` yields its samples: offset, timestamp, readings, device events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.simulators import cold_room, elevator
from edge.sources.base import MetricValue, SourceEvent
from edge.sources.edges import edge_events


class ScenarioError(ValueError):
    """A scenario file that cannot be used, with the reason and where."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    seed: int = 1
    start: AwareDatetime
    interval_s: float = Field(gt=0, le=3600)
    duration_s: float = Field(gt=0, le=31 * 86400)

    @model_validator(mode="after")
    def _faults_inside(self) -> Any:
        for i, f in enumerate(getattr(self, "faults", [])):
            if f.at_s >= self.duration_s:
                raise ValueError(f"faults.{i}: at_s {f.at_s} is not before duration_s "
                                 f"{self.duration_s}")
        return self


class ColdRoomScenario(_Base):
    kind: Literal["cold_room"]
    spec: cold_room.ColdRoomSpec = Field(default_factory=cold_room.ColdRoomSpec)
    faults: list[cold_room.ColdRoomFault] = Field(default_factory=list)


class ElevatorScenario(_Base):
    kind: Literal["elevator"]
    spec: elevator.ElevatorSpec = Field(default_factory=elevator.ElevatorSpec)
    faults: list[elevator.ElevatorFault] = Field(default_factory=list)

    @model_validator(mode="after")
    def _plannable(self) -> ElevatorScenario:
        try:
            elevator.plan_day(self.spec, self.faults, self.seed, self.duration_s)
        except elevator.PlanError as exc:
            raise ValueError(str(exc)) from None
        return self


Scenario = Annotated[ColdRoomScenario | ElevatorScenario, Field(discriminator="kind")]


class _File(BaseModel):
    scenario: Scenario


def parse_scenario(data: Any, source: str = "<scenario>") -> ColdRoomScenario | ElevatorScenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping with kind, start, ...")
    try:
        return _File.model_validate({"scenario": data}).scenario
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"][2:])  # drop 'scenario' and the kind tag
            lines.append(f"  {loc or '(top)'}: {e['msg']}")
        raise ScenarioError(f"{source}: invalid scenario:\n" + "\n".join(lines)) from None


def load_scenario(path: Path | str) -> ColdRoomScenario | ElevatorScenario:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not valid YAML: {exc}") from None
    return parse_scenario(data, str(p))


@dataclass(frozen=True)
class ScenarioSample:
    offset_s: float
    ts: datetime
    values: list[MetricValue]
    events: list[SourceEvent] = field(default_factory=list)


def iter_samples(
    sc: ColdRoomScenario | ElevatorScenario, *, seed: int | None = None,
    start: datetime | None = None,
) -> Iterator[ScenarioSample]:
    """The scenario's samples, ``interval_s`` apart for ``duration_s``; finite.

    ``seed`` and ``start`` override the file's. Device events: the elevator's built-in
    edge events (:data:`edge.simulators.elevator.EVENTS`); the cold room raises none.
    """
    s = sc.seed if seed is None else seed
    t0 = sc.start if start is None else start
    if isinstance(sc, ColdRoomScenario):
        for c in cold_room.simulate(sc.spec, t0, sc.interval_s, s, sc.faults, sc.duration_s):
            yield ScenarioSample(c.offset_s, c.ts, c.values())
        return
    before: dict[str, float] = {}
    for e in elevator.simulate(sc.spec, t0, sc.interval_s, s, sc.faults, sc.duration_s):
        values = e.values()
        now = {v.metric: v.value for v in values}
        yield ScenarioSample(e.offset_s, e.ts, values, edge_events(elevator.EVENTS, before, now))
        before = now

