"""SimulatedSource: a scenario played back through the DeviceSource port."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.simulators.scenario import iter_samples, load_scenario
from edge.sources.base import SourceError
from edge.sources.simulated import SimulatedSource, SimulatorSourceConfig

ROOT = Path(__file__).resolve().parents[2]
ALARM = ROOT / "scenarios/elevator/alarm-button.yaml"


def _cfg(**kw: object) -> SimulatorSourceConfig:
    return SimulatorSourceConfig.model_validate({"type": "simulator", **kw})


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_replay_uses_the_scenarios_clock_one_sample_per_read() -> None:
    src = SimulatedSource(_cfg(scenario=ALARM, realtime=False))
    sc = load_scenario(ALARM)
    want = list(iter_samples(sc))
    got = [await src.read() for _ in range(310)]
    assert [s.ts for s in got] == [w.ts for w in want[:310]]
    assert got[0].ts == datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    assert [e.event for s in got for e in s.events] == ["alarm_button_pressed"]


async def test_realtime_starts_now_and_skips_to_the_sample_due_keeping_events() -> None:
    clock = FakeClock()
    src = SimulatedSource(_cfg(scenario=ALARM, speed=10.0), clock=clock)
    before = datetime.now(UTC) - timedelta(seconds=1)
    first = await src.read()
    assert before <= first.ts <= datetime.now(UTC)
    clock.t += 35.0  # 350 scenario seconds later: the alarm at 300 s was skipped over
    later = await src.read()
    assert (later.ts - first.ts).total_seconds() == 350
    assert [e.event for e in later.events] == ["alarm_button_pressed"]
    again = await src.read()  # no time passed: the same sample, no events again
    assert again.ts == later.ts and again.events == []


async def test_at_end_loop_or_stop() -> None:
    src = SimulatedSource(_cfg(scenario=ALARM, realtime=False, at_end="loop"))
    samples = [await src.read() for _ in range(601)]
    assert (samples[600].ts - samples[0].ts).total_seconds() == 600
    assert samples[600].values == samples[0].values  # the same day again
    stop = SimulatedSource(_cfg(scenario=ALARM, realtime=False, at_end="stop"))
    for _ in range(600):
        await stop.read()
    with pytest.raises(SourceError, match="scenario_ended"):
        await stop.read()


async def test_seed_override_and_the_older_in_place_form() -> None:
    normal = ROOT / "scenarios/elevator/normal.yaml"
    a = SimulatedSource(_cfg(scenario=normal, realtime=False))
    b = SimulatedSource(_cfg(scenario=normal, realtime=False, seed=5))
    va = [(await a.read()).values for _ in range(300)]
    vb = [(await b.read()).values for _ in range(300)]
    assert va != vb
    legacy = SimulatedSource(_cfg(spec={"failure_at_s": 60}, step_s=10, realtime=False))
    s = await legacy.read()
    assert {v.metric for v in s.values} >= {"temperature", "compressor_on", "door_open"}
    lift = SimulatedSource(_cfg(kind="elevator", step_s=1, realtime=False))
    assert {v.metric for v in (await lift.read()).values} >= {"floor", "door_state"}
