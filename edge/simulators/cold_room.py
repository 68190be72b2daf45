"""A cold room: air pulled down by a cycling compressor, pushed up by the room around it.

Pure and seeded: the same spec, faults and seed give the same readings, so a test or a
trainer can replay the same day. Random door openings come from their own random stream,
so a fault scenario is identical to its normal day until the fault starts.

Readings (metric, unit): ``temperature`` (celsius, the air / control probe),
``temperature_product`` (celsius, a probe in a product simulant: follows the air with a
time constant of ``product_tau_s``), ``humidity`` (percent), ``door_open``,
``compressor_on``, ``defrost_on`` (bool, 0/1).

Model, per step of at most 5 s: the air gains ``warming_per_s`` of its gap to ambient per
second (``door_warming_per_s`` more while the door is open); a running compressor takes
``cooling_c_per_s`` off; a thermostat on the air probe switches the compressor on above
``setpoint + band`` and off below ``setpoint - band``. A defrost every
``defrost_every_s`` stops the compressor for ``defrost_for_s`` and heats by
``defrost_heat_c_per_s`` (0 for an off-cycle defrost): the air rises a few degrees, the
product barely moves.

Variants: ``variant: chilled`` (setpoint 3 °C, the defaults) and ``variant: frozen``
(setpoint −20 °C, electric defrost every 6 h); any field given overrides the variant.

Scripted faults: ``compressor_failure`` (the compressor cannot run), ``door_left_open``,
``probe_failure`` (``probe``: which one; ``mode``: ``stuck`` holds the value it had,
``open`` reads ``850.0`` and ``short`` reads ``-99.9`` — typical sensor-error codes;
``value`` overrides).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.simulators.faults import FaultWindow
from edge.sources.base import MetricValue

_FROZEN_DEFAULTS: dict[str, Any] = {
    "setpoint_c": -20.0, "band_c": 1.5, "start_c": -20.0, "cooling_c_per_s": 0.012,
    "warming_per_s": 0.00007, "door_warming_per_s": 0.0005, "humidity_pct": 70.0,
    "defrost_every_s": 21600.0, "defrost_for_s": 900.0, "defrost_heat_c_per_s": 0.002,
}


class ColdRoomSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: Literal["chilled", "frozen"] = "chilled"
    setpoint_c: float = 3.0
    band_c: float = Field(default=1.0, gt=0)  # compressor on above sp + band, off below sp - band
    ambient_c: float = 26.0
    start_c: float = 3.0
    cooling_c_per_s: float = Field(default=0.1, ge=0)
    warming_per_s: float = Field(default=0.0005, ge=0)  # share of the gap to ambient, per s
    door_warming_per_s: float = Field(default=0.001, ge=0)  # more while the door is open
    noise_c: float = Field(default=0.05, ge=0)
    product_tau_s: float = Field(default=3600.0, gt=0)
    humidity_pct: float = Field(default=85.0, ge=0, le=100)
    defrost_every_s: float = Field(default=0.0, ge=0)  # 0: no defrost
    defrost_for_s: float = Field(default=900.0, gt=0)
    defrost_first_at_s: float | None = Field(default=None, ge=0)  # default: one period in
    defrost_heat_c_per_s: float = Field(default=0.0, ge=0)
    door_openings_per_h: float = Field(default=0.0, ge=0)  # random, from the seed
    door_open_s: tuple[float, float] = (20.0, 90.0)  # min, max of one opening
    door_openings: list[tuple[float, float]] = Field(default_factory=list)  # (at_s, for_s)
    # A compressor failure as two numbers (the demo uses it): failure_for_s 0 = never repaired.
    failure_at_s: float | None = None
    failure_for_s: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("variant") == "frozen":
            return {**_FROZEN_DEFAULTS, **data}
        return data


class CompressorFailure(FaultWindow):
    type: Literal["compressor_failure"]


class DoorLeftOpen(FaultWindow):
    type: Literal["door_left_open"]


class ProbeFailure(FaultWindow):
    type: Literal["probe_failure"]
    probe: Literal["temperature", "temperature_product"] = "temperature"
    mode: Literal["stuck", "open", "short"] = "open"
    value: float | None = None  # what the probe reads; default by mode

    def reading(self, held: float) -> float:
        if self.value is not None:
            return self.value
        return {"stuck": held, "open": 850.0, "short": -99.9}[self.mode]


ColdRoomFault = Annotated[CompressorFailure | DoorLeftOpen | ProbeFailure,
                          Field(discriminator="type")]


@dataclass(frozen=True)
class ColdRoomSample:
    ts: datetime
    temperature_c: float
    compressor_on: bool
    temperature_product_c: float = 0.0
    humidity_pct: float = 0.0
    door_open: bool = False
    defrost_on: bool = False
    offset_s: float = 0.0

    def values(self) -> list[MetricValue]:
        return [
            MetricValue("temperature", self.temperature_c, "celsius"),
            MetricValue("temperature_product", self.temperature_product_c, "celsius"),
            MetricValue("humidity", self.humidity_pct, "percent"),
            MetricValue("door_open", float(self.door_open), "bool"),
            MetricValue("compressor_on", float(self.compressor_on), "bool"),
            MetricValue("defrost_on", float(self.defrost_on), "bool"),
        ]


def door_schedule(spec: ColdRoomSpec, seed: int, until_s: float) -> list[tuple[float, float]]:
    """Door openings (start, end) up to ``until_s``: scripted ones plus random ones."""
    rng = random.Random(f"doors:{seed}")
    out = [(a, a + d) for a, d in spec.door_openings]
    if spec.door_openings_per_h > 0:
        t = 0.0
        while True:
            t += rng.expovariate(spec.door_openings_per_h / 3600.0)
            if t >= until_s:
                break
            d = rng.uniform(*spec.door_open_s)
            out.append((t, t + d))
            t += d
    return sorted(out)


def _defrosting(spec: ColdRoomSpec, t: float) -> bool:
    if spec.defrost_every_s <= 0:
        return False
    first = spec.defrost_every_s if spec.defrost_first_at_s is None else spec.defrost_first_at_s
    if t < first:
        return False
    return (t - first) % spec.defrost_every_s < spec.defrost_for_s


def simulate(
    spec: ColdRoomSpec, start: datetime, interval_s: float, seed: int,
    faults: Sequence[CompressorFailure | DoorLeftOpen | ProbeFailure] = (),
    duration_s: float | None = None,
) -> Iterator[ColdRoomSample]:
    """Samples every ``interval_s`` from ``start``; endless unless ``duration_s`` is given."""
    faults = list(faults)
    if spec.failure_at_s is not None:
        faults.append(CompressorFailure(
            type="compressor_failure", at_s=spec.failure_at_s,
            for_s=spec.failure_for_s if spec.failure_for_s > 0 else None))
    rng = random.Random(seed)
    horizon = duration_s if duration_s is not None else 30 * 86400.0
    doors = door_schedule(spec, seed, horizon)
    air, product, hum = spec.start_c, spec.start_c, spec.humidity_pct
    compressor = False
    held: dict[str, float] = {}
    n_sub = max(1, math.ceil(interval_s / 5.0))
    dt = interval_s / n_sub
    t = 0.0
    i = 0
    while duration_s is None or t < duration_s:
        failed = any(isinstance(f, CompressorFailure) and f.active(t) for f in faults)
        door = any(isinstance(f, DoorLeftOpen) and f.active(t) for f in faults) or any(
            a <= t < b for a, b in doors)
        defrost = _defrosting(spec, t)
        running = False
        if i > 0:  # the first sample is the starting state
            for _ in range(n_sub):
                if air > spec.setpoint_c + spec.band_c:
                    compressor = True
                elif air < spec.setpoint_c - spec.band_c:
                    compressor = False
                running = compressor and not failed and not defrost
                leak = spec.warming_per_s + (spec.door_warming_per_s if door else 0.0)
                air += (spec.ambient_c - air) * leak * dt
                if running:
                    air -= spec.cooling_c_per_s * dt
                if defrost:
                    air += spec.defrost_heat_c_per_s * dt
                product += (air - product) * dt / spec.product_tau_s
                target = spec.humidity_pct + (8.0 if door else 0.0) - (5.0 if running else 0.0)
                hum += (target - hum) * dt / 300.0
        else:
            running = compressor
        noise = rng.gauss(0, spec.noise_c), rng.gauss(0, spec.noise_c / 2), rng.gauss(0, 0.4)
        readings = {"temperature": round(air + noise[0], 2),
                    "temperature_product": round(product + noise[1], 2)}
        for f in faults:
            if isinstance(f, ProbeFailure):
                if f.active(t):
                    held.setdefault(f.probe, readings[f.probe])
                    readings[f.probe] = f.reading(held[f.probe])
                else:
                    held.pop(f.probe, None)
        yield ColdRoomSample(
            ts=start + timedelta(seconds=t),
            temperature_c=readings["temperature"],
            compressor_on=running,
            temperature_product_c=readings["temperature_product"],
            humidity_pct=round(min(100.0, max(0.0, hum + noise[2])), 1),
            door_open=door,
            defrost_on=defrost,
            offset_s=t,
        )
        i += 1
        t = i * interval_s
