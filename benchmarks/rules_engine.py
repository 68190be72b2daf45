"""Rule evaluation throughput of the stream worker's batch path, without I/O.

Feeds simulated cold rooms and elevators (the scenario simulators) through
``BatchProcessor`` with an in-memory state store and sink, in batches like the worker's,
and prints messages per second. The state store is the worker's
(``CheckpointedStates``); a checkpoint's serialisation of the changed states (its CPU
work, without the write) runs every ``--checkpoint-every`` batches, by default after
every batch: each device's state is serialised once per message it sends, as for
devices reporting every checkpoint interval (5 s) or less often, the usual case (a
device heard more often is serialised less than once per message). Every device sends
one message per batch; the first ``--warmup`` messages of each device are not timed
(new devices, lateness buffers filling).

Mixes (``--mix``, all by default):

* ``cold2`` - chilled cold rooms sending two metrics (air temperature, door contact);
* ``cold6`` - chilled cold rooms with all six metrics (probes, humidity, compressor,
  defrost);
* ``elevator`` - elevators, 13 metrics, normal service;
* ``mixed`` - a third of each; ``mixed-shuffled`` - the same with neighbouring samples
  of a device swapped (out of order within the allowed lateness);
* ``excursions`` - door left open, compressor failure, a trapped passenger: alerts
  fire and resolve.

With ``--before REF`` the same data runs against the code at git commit ``REF`` (a
temporary worktree, same interpreter) and the working tree, interleaved: per mix, before
then after, each in a fresh interpreter, ``--rounds`` times, keeping each side's best
round. The table gives messages per second of wall time and per CPU-second of the
process (less disturbed by other load on a shared machine), and the ratios:

    .venv/bin/python benchmarks/rules_engine.py --before 85c2197 --rounds 3
    .venv/bin/python benchmarks/rules_engine.py --devices 300 --per-device 30 --mix cold6
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

SCENARIOS = {
    "cold2": ["cold_room/chilled-normal.yaml"],
    "cold6": ["cold_room/chilled-normal.yaml"],
    "elevator": ["elevator/normal.yaml"],
    "mixed": ["cold_room/chilled-normal.yaml", "cold_room/chilled-normal.yaml",
              "elevator/normal.yaml"],
    "mixed-shuffled": ["cold_room/chilled-normal.yaml", "cold_room/chilled-normal.yaml",
                       "elevator/normal.yaml"],
    "excursions": ["cold_room/chilled-door-left-open.yaml",
                   "cold_room/chilled-compressor-failure.yaml",
                   "elevator/trapped-at-level.yaml"],
}
FAULT_AT = {  # sample index where the fault starts (at_s / interval_s)
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


def messages(mix: str, devices: int, per_device: int) -> list[list[bytes]]:
    """Batches: one message of every device in each, ``per_device`` batches."""
    from edge.simulators.scenario import iter_samples, load_scenario
    from ganzhi.contracts import DeviceClass, Reading, Telemetry

    paths = SCENARIOS[mix]
    series = []
    for p in paths:
        sc = load_scenario(ROOT / "scenarios" / p)
        samples = list(iter_samples(sc))
        cls = DeviceClass.ELEVATOR if p.startswith("elevator") else DeviceClass.COLD_STORE
        series.append((cls, samples))
    rng = random.Random(1)
    batches: list[list[bytes]] = [[] for _ in range(per_device)]
    for d in range(devices):
        cls, samples = series[d % len(series)]
        # Each device at another point of its scenario; excursions: around their fault.
        fault = FAULT_AT.get(paths[d % len(series)])
        start = rng.randrange(len(samples)) if fault is None else \
            fault - 10 + rng.randrange(30)
        for i in range(per_device):
            s = samples[(start + i) % len(samples)]
            values = s.values
            if mix == "cold2":
                values = [v for v in values if v.metric in TWO_METRICS]
            batches[i].append(Telemetry(
                msg_id=uuid.uuid4(), site_id="bench", device_id=f"{cls.value}-{d}",
                ts=s.ts, device_class=cls,
                readings=[Reading(metric=v.metric, value=v.value, unit=v.unit[:16] or "1")
                          for v in values]).model_dump_json().encode())
    if mix.endswith("shuffled"):  # a device's neighbouring samples swapped
        for i in range(0, per_device - 1, 2):
            for d in range(devices):
                if rng.random() < 0.5:
                    batches[i][d], batches[i + 1][d] = batches[i + 1][d], batches[i][d]
    return batches


async def run(mix: str, devices: int, per_device: int, warmup: int,
              checkpoint_every: int = 1) -> dict[str, Any]:
    from stream.engine import RuleEngine
    from stream.memory import MemoryAdapters
    from stream.processor import BatchProcessor, Incoming
    from stream.rules.model import Rules, RulesDoc

    batches = messages(mix, devices, per_device)
    mem = MemoryAdapters()
    rules = Rules(RulesDoc.model_validate(RULES))
    import stream.engine

    if hasattr(stream.engine, "StateCache"):  # (--before: JSON made in every batch)
        states: Any = mem
    else:  # state kept as objects, serialised for checkpoints
        from stream.checkpoints import CheckpointedStates
        states = CheckpointedStates()
    proc = BatchProcessor(RuleEngine(lambda: rules, lambda s, d: 0), mem, states, mem.send,
                          dead_letter=mem.dead_letter)
    timed = 0
    started = cpu = checkpoints = 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            started, cpu = time.perf_counter(), time.process_time()
        await proc.process([Incoming(0, v) for v in batch])
        if states is not mem and (i + 1) % checkpoint_every == 0:
            t = time.perf_counter()
            for cp in states.take({0}):
                for _, held in cp.states:
                    held.json()
            if i >= warmup:
                checkpoints += time.perf_counter() - t
        if i >= warmup:
            timed += len(batch)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    if mem.dead:
        raise SystemExit(f"benchmark data refused: {mem.dead[0].error}")
    return {"msg_s": timed / elapsed, "msg_cpu_s": timed / cpu, "messages": timed,
            "transitions": len(mem.transitions),
            "checkpoint_us": checkpoints / timed * 1e6,
            "batch_us": (elapsed - checkpoints) / timed * 1e6}


def measure(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    import asyncio

    from ganzhi.observability import configure_logging

    configure_logging("ERROR", json_lines=True)
    import stream.engine

    tune = getattr(stream.engine, "tune_gc", None)  # as the worker does (not before it)
    if tune is not None:
        tune()
    out = {}
    for mix in a.mix:
        out[mix] = asyncio.run(run(mix, a.devices, a.per_device, a.warmup,
                                   a.checkpoint_every))
        print(f"  {mix}: {out[mix]['msg_s']:.0f} msg/s", file=sys.stderr, flush=True)
    return out


def child(a: argparse.Namespace, tree: Path, mix: str) -> dict[str, Any]:
    """One mix measured in a fresh interpreter on the code of ``tree``."""
    cmd = [sys.executable, __file__, "--impl", str(tree), "--json",
           "--devices", str(a.devices), "--per-device", str(a.per_device),
           "--warmup", str(a.warmup), "--mix", mix,
           "--checkpoint-every", str(a.checkpoint_every)]
    res = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] = json.loads(res.stdout)[mix]
    return result


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of the rounds (the least disturbed by other load), by CPU time."""
    return max(runs, key=lambda r: r["msg_cpu_s"])


def before_after(a: argparse.Namespace
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Each mix against the code of ``a.before`` (a git worktree) and this tree,
    interleaved (before, after, per mix and round), each in a fresh interpreter."""
    old: dict[str, list[dict[str, Any]]] = {m: [] for m in a.mix}
    new: dict[str, list[dict[str, Any]]] = {m: [] for m in a.mix}
    with tempfile.TemporaryDirectory(prefix="ganzhi-bench-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(tree), a.before], check=True)
        try:
            for r in range(a.rounds):
                for mix in a.mix:
                    old[mix].append(child(a, tree, mix))
                    new[mix].append(child(a, ROOT, mix))
                    o, n = old[mix][-1], new[mix][-1]
                    print(f"  round {r + 1} {mix}: before {o['msg_s']:.0f} msg/s "
                          f"{o['msg_cpu_s']:.0f} msg/CPU-s, after {n['msg_s']:.0f} msg/s "
                          f"{n['msg_cpu_s']:.0f} msg/CPU-s", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], check=False)
    return ({m: best(v) for m, v in old.items()}, {m: best(v) for m, v in new.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--devices", type=int, default=1500)
    ap.add_argument("--per-device", type=int, default=40, help="messages (= batches)")
    ap.add_argument("--warmup", type=int, default=15, help="first batches not timed")
    ap.add_argument("--mix", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    ap.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                    help="serialise the changed states every N batches (default: each)")
    ap.add_argument("--before", metavar="REF", help="also measure the code at git REF")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --before: rounds of before/after per mix (best kept)")
    ap.add_argument("--impl", help=argparse.SUPPRESS)  # import the code from this tree
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.impl:
        sys.path.insert(0, a.impl)
    else:
        sys.path.insert(0, str(ROOT))
    if a.json:
        print(json.dumps(measure(a)))
        return
    print(f"{a.devices} devices, one message each per batch (batches of {a.devices}), "
          f"{a.per_device - a.warmup} batches timed after {a.warmup}")
    if not a.before:
        new = measure(a)
        print("| mix | transitions | msg/s | msg per CPU-s | µs/msg batch path "
              "| µs/msg checkpoint JSON |")
        print("|---|---|---|---|---|---|")
        for mix, r in new.items():
            print(f"| {mix} | {r['transitions']} | {r['msg_s']:,.0f} | "
                  f"{r['msg_cpu_s']:,.0f} | {r['batch_us']:.1f} | "
                  f"{r['checkpoint_us']:.1f} |")
        return
    print(f"before ({a.before}) and after (working tree), interleaved, {a.rounds} "
          f"round(s), best kept:", file=sys.stderr)
    old, new = before_after(a)
    print("| mix | transitions | before msg/s | after msg/s | ratio | before msg/CPU-s "
          "| after msg/CPU-s | ratio (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for mix, r in new.items():
        o = old[mix]
        same = "" if o["transitions"] == r["transitions"] else \
            f" (before: {o['transitions']})"
        print(f"| {mix} | {r['transitions']}{same} | {o['msg_s']:,.0f} | "
              f"{r['msg_s']:,.0f} | {r['msg_s'] / o['msg_s']:.2f} | "
              f"{o['msg_cpu_s']:,.0f} | {r['msg_cpu_s']:,.0f} | "
              f"{r['msg_cpu_s'] / o['msg_cpu_s']:.2f} |")


if __name__ == "__main__":
    main()
