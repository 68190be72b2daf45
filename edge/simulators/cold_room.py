"""A cold room: temperature pulled down by a cycling compressor, pushed up by the room.

Pure and seeded: the same spec and seed give the same readings, so a test or a demo can
replay the same day. A compressor failure lets the room warm towards ambient.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ColdRoomSpec:
    setpoint_c: float = 3.0
    band_c: float = 1.0  # compressor on above setpoint + band, off below setpoint - band
    ambient_c: float = 26.0
    start_c: float = 3.0
    cooling_c_per_s: float = 0.1
    warming_per_s: float = 0.0005  # share of the gap to ambient gained per second
    noise_c: float = 0.05
    failure_at_s: float | None = None  # compressor fails at this offset
    failure_for_s: float = 0.0  # and is repaired after this long (0: never)


@dataclass(frozen=True)
class ColdRoomSample:
    ts: datetime
    temperature_c: float
    compressor_on: bool


def simulate(
    spec: ColdRoomSpec, start: datetime, interval_s: float, seed: int
) -> Iterator[ColdRoomSample]:
    rng = random.Random(seed)
    temp = spec.start_c
    compressor = False
    t = 0.0
    while True:
        failed = spec.failure_at_s is not None and t >= spec.failure_at_s and (
            spec.failure_for_s <= 0 or t < spec.failure_at_s + spec.failure_for_s
        )
        if temp > spec.setpoint_c + spec.band_c:
            compressor = True
        elif temp < spec.setpoint_c - spec.band_c:
            compressor = False
        running = compressor and not failed
        temp += (spec.ambient_c - temp) * spec.warming_per_s * interval_s
        if running:
            temp -= spec.cooling_c_per_s * interval_s
        yield ColdRoomSample(
            ts=start + timedelta(seconds=t),
            temperature_c=round(temp + rng.gauss(0, spec.noise_c), 2),
            compressor_on=running,
        )
        t += interval_s
