"""Rule evaluation throughput of the stream worker's batch path, without I/O.

Feeds simulated cold rooms and elevators (the scenario simulators) through
``BatchProcessor`` with an in-memory state store and sink, in batches like the worker's,
in order and shuffled within the allowed lateness, and prints messages per second. The
state store round-trips every value through JSON as the Faust table does.

    .venv/bin/python benchmarks/rules_engine.py --devices 50 --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from pathlib import Path

from edge.simulators.scenario import iter_samples, load_scenario
from ganzhi.contracts import DeviceClass, Reading, Telemetry
from ganzhi.observability import configure_logging
from stream.engine import RuleEngine
from stream.memory import MemoryAdapters
from stream.processor import BatchProcessor, Incoming
from stream.rules.model import Rules, RulesDoc

ROOT = Path(__file__).resolve().parents[1]


def messages(kind: str, devices: int, total: int, shuffle: bool) -> list[bytes]:
    path = ROOT / ("scenarios/cold_room/chilled-door-left-open.yaml" if kind == "cold_store"
                   else "scenarios/elevator/trapped-at-level.yaml")
    samples = list(iter_samples(load_scenario(path)))
    per_device = max(1, total // devices)
    cls = DeviceClass(kind)
    out: list[Telemetry] = []
    for i in range(per_device):
        s = samples[i % len(samples)]
        for d in range(devices):
            out.append(Telemetry(
                msg_id=uuid.uuid4(), site_id="bench", device_id=f"{kind}-{d}", ts=s.ts,
                device_class=cls,
                readings=[Reading(metric=v.metric, value=v.value, unit=v.unit[:16] or "1")
                          for v in s.values]))
        if i + 1 >= len(samples):
            break
    if shuffle:  # neighbours (same device, one sample apart) swapped
        rng = random.Random(1)
        for i in range(0, len(out) - 2 * devices, 2 * devices):
            if rng.random() < 0.5:
                j = i + rng.randrange(devices)
                out[j], out[j + devices] = out[j + devices], out[j]
    return [m.model_dump_json().encode() for m in out]


async def run(kind: str, devices: int, total: int, batch: int, shuffle: bool) -> float:
    data = messages(kind, devices, total, shuffle)
    mem = MemoryAdapters()
    rules = Rules(RulesDoc.model_validate(
        {"elevator": {"defaults": {"rated_speed_mps": 2.5, "top_landing_m": 30.0}}}))
    proc = BatchProcessor(RuleEngine(lambda: rules, lambda s, d: 0), mem, mem, mem.send,
                          dead_letter=mem.dead_letter)
    started = time.perf_counter()
    for i in range(0, len(data), batch):
        await proc.process([Incoming(0, v) for v in data[i:i + batch]])
        done = min(i + batch, len(data))
        if done % (batch * 10) == 0 or done == len(data):
            print(f"\r  {kind:<10} {'shuffled' if shuffle else 'in order'}: "
                  f"{done}/{len(data)}", end="", file=sys.stderr, flush=True)
    if mem.dead:
        raise SystemExit(f"benchmark data refused: {mem.dead[0].error}")
    print(file=sys.stderr)
    return len(data) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=2000)
    a = ap.parse_args()
    configure_logging("WARNING", json_lines=True)
    print(f"{a.messages} messages over {a.devices} devices, batches of {a.batch}")
    for kind in ("cold_store", "elevator"):
        ordered = asyncio.run(run(kind, a.devices, a.messages, a.batch, False))
        shuffled = asyncio.run(run(kind, a.devices, a.messages, a.batch, True))
        print(f"{kind:<10} in order {ordered:8.0f} msg/s   shuffled {shuffled:8.0f} msg/s"
              f"   ratio {shuffled / ordered:.2f}")


if __name__ == "__main__":
    main()
