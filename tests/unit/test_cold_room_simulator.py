"""The cold-room simulator is deterministic and physically sensible."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import islice

from edge.simulators.cold_room import ColdRoomSpec, simulate

START = datetime(2026, 1, 1, tzinfo=UTC)


def _run(spec: ColdRoomSpec, n: int, seed: int = 7) -> list[float]:
    return [s.temperature_c for s in islice(simulate(spec, START, 10.0, seed), n)]


def test_same_seed_same_readings() -> None:
    assert _run(ColdRoomSpec(), 500) == _run(ColdRoomSpec(), 500)
    assert _run(ColdRoomSpec(), 500) != _run(ColdRoomSpec(), 500, seed=8)


def test_healthy_room_stays_near_setpoint() -> None:
    temps = _run(ColdRoomSpec(), 2000)
    assert max(temps) < 5.0 and min(temps) > 1.0


def test_compressor_failure_warms_the_room_and_repair_recovers() -> None:
    spec = ColdRoomSpec(failure_at_s=3000, failure_for_s=3000)
    temps = _run(spec, 1200)
    assert max(temps[300:600]) > 8.0  # warms past the chilled limit during the failure
    assert temps[-1] < 5.0  # and is pulled back down after the repair
