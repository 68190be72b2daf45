"""Golden runs of the rule path (shared by ``test_rules_golden.py`` and the script that
wrote its fixture from the code before the rule-path rewrite of issue 13).

Deterministic telemetry from the scenario simulators (the mixes of
``benchmarks/rules_engine.py``) goes through ``BatchProcessor`` with the in-memory
adapters; the transitions (every field) and the final state store (the JSON strings, as
a checkpoint holds them) are digested. A run can restart half-way: a new processor
over the store read back from its JSON (what a restarted worker loads), or one whose
store was written by another code version (``seed_store``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

SCENARIOS = {
    "cold2": ["cold_room/chilled-normal.yaml"],
    "cold6": ["cold_room/chilled-normal.yaml"],
    "elevator": ["elevator/normal.yaml"],
    "mixed-shuffled": ["cold_room/chilled-normal.yaml", "cold_room/chilled-normal.yaml",
                       "elevator/normal.yaml"],
    "excursions": ["cold_room/chilled-door-left-open.yaml",
                   "cold_room/chilled-compressor-failure.yaml",
                   "elevator/trapped-at-level.yaml"],
    "excursions-shuffled": ["cold_room/chilled-door-left-open.yaml",
                            "cold_room/chilled-compressor-failure.yaml",
                            "elevator/trapped-at-level.yaml"],
}
FAULT_AT = {
    "cold_room/chilled-door-left-open.yaml": 180,
    "cold_room/chilled-compressor-failure.yaml": 180,
    "elevator/trapped-at-level.yaml": 300,
}
TWO_METRICS = {"temperature", "door_open"}
RULES = {
    "cold_store": {"defaults": {"variant": "chilled"}},
    "elevator": {"defaults": {"rated_speed_mps": 1.75, "top_landing_m": 36.0,
                              "bottom_landing_m": 0.0}},
}
DEVICES = 18
PER_DEVICE = 160


def batches(mix: str, devices: int = DEVICES, per_device: int = PER_DEVICE
            ) -> list[list[tuple[bytes, datetime]]]:
    from edge.simulators.scenario import iter_samples, load_scenario
    from ganzhi.contracts import DeviceClass, Reading, Telemetry

    paths = SCENARIOS[mix]
    series = []
    for p in paths:
        sc = load_scenario(ROOT / "scenarios" / p)
        cls = DeviceClass.ELEVATOR if p.startswith("elevator") else DeviceClass.COLD_STORE
        series.append((cls, list(iter_samples(sc))))
    rng = random.Random(7)
    out: list[list[tuple[bytes, datetime]]] = [[] for _ in range(per_device)]
    for d in range(devices):
        cls, samples = series[d % len(series)]
        fault = FAULT_AT.get(paths[d % len(series)])
        start = rng.randrange(len(samples)) if fault is None else \
            fault - 60 + rng.randrange(30)
        for i in range(per_device):
            s = samples[(start + i) % len(samples)]
            values = s.values
            if mix == "cold2":
                values = [v for v in values if v.metric in TWO_METRICS]
            out[i].append((Telemetry(
                msg_id=uuid.UUID(int=rng.getrandbits(128)), site_id="golden",
                device_id=f"{cls.value}-{d}", ts=s.ts, device_class=cls,
                readings=[Reading(metric=v.metric, value=v.value, unit=v.unit[:16] or "1")
                          for v in values]).model_dump_json().encode(),
                s.ts + timedelta(seconds=2)))  # received
    if mix.endswith("shuffled"):
        for i in range(0, per_device - 2, 3):
            for d in range(devices):
                r = rng.random()
                if r < 0.3:
                    out[i][d], out[i + 1][d] = out[i + 1][d], out[i][d]
                elif r < 0.4:
                    out[i][d], out[i + 2][d] = out[i + 2][d], out[i][d]
                elif r < 0.45:  # a replay
                    out[i + 1][d] = out[i][d]
    return out


def run(mix: str, restart_at: int | None = None,
        seed_store: dict[str, tuple[str, int]] | None = None,
        start: int = 0, stop: int | None = None) -> dict[str, Any]:
    """Batches ``start:stop`` of ``mix``; returns the transitions and the store."""
    from stream.engine import RuleEngine
    from stream.memory import MemoryAdapters
    from stream.processor import BatchProcessor, Incoming
    from stream.rules.model import Rules, RulesDoc
    from stream.state import Held

    all_batches = batches(mix)[start:stop]
    mem = MemoryAdapters()
    if seed_store is not None:
        mem.states.update({k: Held.of_json(v, p) for k, (v, p) in seed_store.items()})
    rules = Rules(RulesDoc.model_validate(RULES))

    def make() -> BatchProcessor:
        return BatchProcessor(RuleEngine(lambda: rules, lambda s, d: 0), mem, mem, mem.send,
                              dead_letter=mem.dead_letter)

    proc = make()

    async def go() -> None:
        nonlocal proc
        for i, b in enumerate(all_batches):
            if i == restart_at:
                # A restarted worker: nothing in memory but what its checkpoint holds.
                mem.states = {k: Held.of_json(h.json(), h.partition)
                              for k, h in mem.states.items()}
                proc = make()
            await proc.process([Incoming(0, v, received_at=r) for v, r in b])

    asyncio.run(go())
    assert not mem.dead, mem.dead[0].error
    return {"transitions": [t.model_dump_json() for t in mem.transitions],
            "states": {k: (h.json(), h.partition) for k, h in mem.states.items()}}


def digest(result: dict[str, Any]) -> dict[str, Any]:
    h_t = hashlib.sha256("\n".join(result["transitions"]).encode()).hexdigest()
    h_s = hashlib.sha256(json.dumps(sorted(result["states"].items())).encode()).hexdigest()
    return {"transitions": len(result["transitions"]), "transitions_sha256": h_t,
            "states": len(result["states"]), "states_sha256": h_s}


CASES = {f"{mix}{'' if r is None else '-restart'}": (mix, r)
         for mix in SCENARIOS for r in (None, 70)}


def golden() -> dict[str, Any]:
    out = {name: digest(run(mix, r)) for name, (mix, r) in CASES.items()}
    # State written by this code half-way (the store a newer worker starts from).
    half = run("excursions-shuffled", stop=80)
    out["_store_excursions_shuffled_80"] = half["states"]
    out["_after_store"] = digest(run("excursions-shuffled", seed_store=half["states"],
                                     start=80))
    return out


if __name__ == "__main__":
    import sys
    sys.path.insert(0, str(ROOT))
    from ganzhi.observability import configure_logging
    configure_logging("ERROR", json_lines=True)
    Path(sys.argv[1]).write_text(json.dumps(golden(), indent=1, sort_keys=True) + "\n")
