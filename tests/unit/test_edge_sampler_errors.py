"""A failing device source is counted and reported once per outage, never a crash."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from edge.config import DeviceConfig
from edge.sampler import DeviceSampler
from edge.sources.base import MetricValue, SourceError, SourceSample
from edge.spool import Spool


class ScriptedSource:
    """Reads follow a script: a float is a good read of metric ``x``, a str a failure."""

    def __init__(self, script: list[float | str], open_fails: bool = False) -> None:
        self.script = list(script)
        self.open_fails = open_fails
        self.closed = False

    async def open(self) -> None:
        if self.open_fails:
            raise SourceError("modbus_unreachable", "10.0.0.9:502")

    async def read(self) -> SourceSample:
        step = self.script.pop(0) if self.script else "exhausted"
        if isinstance(step, str):
            raise SourceError(step, "scripted")
        return SourceSample(datetime.now(UTC), [MetricValue("x", step, "u")])

    async def close(self) -> None:
        self.closed = True


def _dev() -> DeviceConfig:
    return DeviceConfig.model_validate({
        "device_id": "d1", "device_class": "elevator", "sample_interval_s": 0.001,
        "report": {"on_change": True, "period_s": 3600},
        "source": {"type": "simulator"},
    })


def _events(spool: Spool) -> list[tuple[str, dict[str, object]]]:
    out = []
    for m in spool.pending("d1", limit=1000):
        body = json.loads(m.payload)
        if m.topic.endswith("/event"):
            out.append((body["event"], body["detail"]))
    return out


async def test_an_outage_gives_one_error_event_and_one_recovery(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    source = ScriptedSource([1.0, "modbus_timeout", "modbus_timeout", "modbus_timeout",
                             2.0, 3.0, "modbus_unreachable", 4.0])
    sampler = DeviceSampler("s1", _dev(), source, spool)
    for _ in range(8):
        await sampler.sample_once()
    events = _events(spool)
    assert [e for e, _ in events] == [
        "source_error", "source_recovered", "source_error", "source_recovered"]
    assert events[0][1]["reason"] == "modbus_timeout"
    assert events[2][1]["reason"] == "modbus_unreachable"
    telemetry = [json.loads(m.payload) for m in spool.pending("d1", limit=1000)
                 if m.topic.endswith("/telemetry")]
    assert [t["readings"][0]["value"] for t in telemetry] == [1.0, 2.0, 3.0, 4.0]


async def test_a_source_that_cannot_open_does_not_stop_the_sampler(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    sampler = DeviceSampler("s1", _dev(), ScriptedSource([], open_fails=True), spool)
    stop = asyncio.Event()
    task = asyncio.create_task(sampler.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 2)  # must end quietly, not raise
    assert [e for e, _ in _events(spool)] == ["source_error"]


class BuggySource(ScriptedSource):
    async def read(self) -> SourceSample:
        if self.script and self.script[0] == "bug":
            self.script.pop(0)
            raise ZeroDivisionError("division by zero")
        return await super().read()


async def test_a_bug_in_a_source_is_a_failed_read_not_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    sampler = DeviceSampler("s1", _dev(), BuggySource(["bug", 5.0]), spool)
    await sampler.sample_once()
    await sampler.sample_once()
    events = _events(spool)
    assert [e for e, _ in events] == ["source_error", "source_recovered"]
    assert events[0][1]["reason"] == "source_crashed"
