"""Parts of the stream's batch path timed alone: reading telemetry, the rule steps.

Per call, in a small heap (the worker's own heap makes each part slower, see
``rules_engine.py`` for the whole path): telemetry of each mix read by the contract's
model and by the stream's decoder (``ganzhi.contracts.telemetry_decoder``), and the
elevator and cold-room rule steps over their scenarios' samples (normal service and a
fault). Best of ``--repeat`` passes. With ``--before REF`` the same runs against the code
at git commit ``REF`` (a temporary worktree) and the working tree, each in a fresh
interpreter, alternated ``--rounds`` times (best kept per part: on a shared machine a slow
spell then hits both sides), and the table gives both and the ratio::

    .venv/bin/python benchmarks/rules_parts.py --before 5073399 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = [  # (part, scenario, rule module)
    ("elevator step, normal service", "elevator/normal.yaml", "elevator"),
    ("elevator step, trapped passenger", "elevator/trapped-at-level.yaml", "elevator"),
    ("cold-room step, normal", "cold_room/chilled-normal.yaml", "cold_chain"),
    ("cold-room step, door left open", "cold_room/chilled-door-left-open.yaml", "cold_chain"),
]


def best_us(fn: Callable[[], int], repeat: int) -> float:
    """The fastest pass of ``fn`` (which returns how many calls it made), µs per call."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best


def measure(repeat: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import rules_engine  # (the messages of its mixes)

    from edge.simulators.scenario import iter_samples, load_scenario
    from ganzhi.contracts import Telemetry
    from stream.rules import cold_chain, elevator
    from stream.rules.excursion import to_us

    try:
        from ganzhi.contracts.telemetry_decoder import decode_telemetry
    except ImportError:  # (before the decoder: the stream read telemetry by the model)
        decode_telemetry = Telemetry.model_validate_json  # type: ignore[assignment]
    out: dict[str, float] = {}
    for mix in ("cold2", "cold6", "elevator"):
        raws = [b for batch in rules_engine.messages(mix, 50, 4) for b in batch]

        def read(decode: Callable[[bytes], Any], raws: list[bytes] = raws) -> int:
            for raw in raws:
                decode(raw)
            return len(raws)

        out[f"telemetry {mix}: model"] = best_us(
            partial(read, Telemetry.model_validate_json), repeat)
        out[f"telemetry {mix}: stream decoder"] = best_us(partial(read, decode_telemetry),
                                                          repeat)
    for part, scenario, module in STEPS:
        sc = load_scenario(ROOT / "scenarios" / scenario)
        samples = [(to_us(s.ts), {v.metric: float(v.value) for v in s.values})
                   for s in iter_samples(sc)]
        if module == "elevator":
            step: Callable[..., Any] = elevator.step_us
            params: Any = elevator.ElevatorParams(rated_speed_mps=1.75, top_landing_m=36.0)
            state0: Any = elevator.ElevatorState()
        else:
            step = cold_chain.snapshot_step
            params, state0 = cold_chain.default_params("chilled"), cold_chain.ColdChainState()

        def run(step: Callable[..., Any] = step, params: Any = params, state0: Any = state0,
                samples: list[tuple[int, dict[str, float]]] = samples) -> int:
            st = state0
            for t, values in samples:
                st, _ = step(st, params, "site", "device", t, values)
            return len(samples)

        out[part] = best_us(run, repeat)
    return out


def child(tree: Path, repeat: int) -> dict[str, float]:
    res = subprocess.run([sys.executable, __file__, "--impl", str(tree), "--json",
                          "--repeat", str(repeat)], check=True, stdout=subprocess.PIPE,
                         text=True)
    result: dict[str, float] = json.loads(res.stdout)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="passes per part (best kept)")
    ap.add_argument("--before", metavar="REF", help="also measure the code at git REF")
    ap.add_argument("--rounds", type=int, default=3,
                    help="with --before: alternated runs of each side (best kept)")
    ap.add_argument("--impl", help=argparse.SUPPRESS)  # import the code from this tree
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.path.insert(0, a.impl or str(ROOT))
    if a.json:
        print(json.dumps(measure(a.repeat)))
        return
    if not a.before:
        print("| part | µs per call |\n|---|---|")
        for part, us in child(ROOT, a.repeat).items():
            print(f"| {part} | {us:.1f} |")
        return
    with tempfile.TemporaryDirectory(prefix="ganzhi-bench-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(tree), a.before], check=True)
        old: dict[str, float] = {}
        new: dict[str, float] = {}
        try:
            for r in range(a.rounds):
                for side, where in ((old, tree), (new, ROOT)):
                    for part, us in child(where, a.repeat).items():
                        side[part] = min(us, side.get(part, us))
                print(f"  round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], check=False)
    print(f"| part | before ({a.before}) µs | after µs | speed-up |\n|---|---|---|---|")
    for part, us in new.items():
        print(f"| {part} | {old[part]:.1f} | {us:.1f} | {old[part] / us:.2f}× |")


if __name__ == "__main__":
    main()
