"""The scaling curve: the whole pipeline under a sustained offered load, at 1x, 2x, 4x a
base rate and with 1 and 2 ingest and stream workers, saying which stage saturates.

Starts the real stack on loopback with :mod:`ganzhi.stack` (its own Mosquitto, Tansu,
PostgreSQL on free ports; never a server it finds running), the alerts, stream and
ingest services, and a publisher process sending cold-store telemetry (simulated
devices, ``--readings`` readings per message, QoS 1) at the point's rate. Rules are in
force (``cold_store: chilled``), so every reading is stored, rolled up and evaluated.

Per point, over a window of ``--seconds-per-point`` after a warm-up:

* offered: the rate asked of the publisher; sent: what it managed to publish;
* acked: messages the broker acknowledged (PUBACK);
* into Kafka: the telemetry topic's end offsets (one record per message);
* stored: readings the stream workers wrote to PostgreSQL (their counters), per second
  and as messages/s;
* lag at the end: the stream group's committed offsets behind the end offsets;
* CPU % of one core per process (``/proc``: ticks over the window; PostgreSQL is the
  postmaster with all its backends), RSS (and PSS) per process at the end.

The stage that saturates is the first, in pipeline order (publisher, Mosquitto, ingest,
Tansu, stream, PostgreSQL), whose output falls more than 5 % below its input or one of
whose processes used 90 % of a core or more. Everything runs on this machine's cores
(2 here), the publisher included: a stage can also be starved by the others.

Between points the publisher stops and the stream drains its backlog (bounded), so
each point starts from an empty queue.

    .venv/bin/python benchmarks/pipeline_scaling.py                  # ~7 min
    .venv/bin/python benchmarks/pipeline_scaling.py --quick --json var/bench/scaling.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (
    add_worker,
    cpu_between,
    kafka_offsets,
    leave_ingest,
    machine_busy_pct,
    metric,
    ops_port,
    publisher_stats,
    sample_processes,
    say,
    stack_parts,
    start_publisher,
    stop_process,
    tidy,
    uptime,
)

from ganzhi.contracts import KafkaTopic
from ganzhi.db.migrate import migrate
from ganzhi.kafka import ensure_topics
from ganzhi.settings import KafkaSettings
from ganzhi.stack.system import Ports, Secrets, Stack

GROUP = "ganzhi-stream"  # StreamSettings.app_id: the stream workers' consumer group
TELEMETRY = KafkaTopic.TELEMETRY.value
PARTITIONS = 4
FLOW_TOLERANCE = 0.05  # output more than 5 % below input: the stage saturates
CPU_SATURATED = 90.0  # % of one core
# Pipeline order: (stage, input figure, output figure, the processes of the stage).
STAGES: tuple[tuple[str, str | None, str | None, tuple[str, ...]], ...] = (
    ("publisher (load generator)", "offered_msg_s", "sent_msg_s", ("publisher",)),
    ("mosquitto", "sent_msg_s", "acked_msg_s", ("mosquitto",)),
    ("ingest", "acked_msg_s", "ingested_msg_s", ("ingest", "ingest-2")),
    ("tansu", None, None, ("tansu",)),
    ("stream", "ingested_msg_s", "stored_msg_s", ("stream", "stream-2")),
    ("postgres", None, None, ("postgres",)),
)


class Interrupted(Exception):
    pass


# --- pure: the plan and the verdict ---------------------------------------------------------


def plan(multiples: list[float], workers: list[tuple[int, int]], full_grid: bool = False,
         points: int | None = None) -> list[tuple[int, int, float]]:
    """(ingest workers, stream workers, multiple of the base rate) per point: every rate
    with the first worker set, then the top rate with each other set (every rate with
    each set if ``full_grid``); at most ``points``."""
    out: list[tuple[int, int, float]] = []
    for i, (ing, st) in enumerate(workers):
        for m in multiples if (i == 0 or full_grid) else multiples[-1:]:
            out.append((ing, st, m))
    return out[:points] if points else out


def saturation(point: dict[str, Any]) -> tuple[str | None, str]:
    """The first stage (pipeline order) whose output is more than 5 % below its input, or
    one of whose processes used ≥ 90 % of a core; and why."""
    cpu = point.get("cpu") or {}
    busy = point.get("machine_busy_pct")
    starved = (f"; all CPUs {busy:.0f}% busy (the stages compete for {point.get('cpus', 2)} "
               "cores)" if busy is not None and busy >= 95 else "")
    for stage, inp, outp, procs in STAGES:
        reasons = []
        a, b = point.get(inp or ""), point.get(outp or "")
        if inp and outp and a and b is not None and b < (1 - FLOW_TOLERANCE) * a:
            reasons.append(f"{b:,.0f} out of {a:,.0f} msg/s in ({b / a:.0%})")
        hot = [f"{p} {cpu[p]['max_process_cpu_pct']:.0f}% of a core" for p in procs
               if p in cpu and cpu[p]["max_process_cpu_pct"] >= CPU_SATURATED]
        reasons.extend(hot)
        if reasons:
            return stage, "; ".join(reasons) + starved
    if starved:
        return "machine (all cores)", starved[2:]
    return None, "every stage kept up"


# --- the run --------------------------------------------------------------------------------


def stored_readings(stack: Stack) -> float | None:
    total, seen = 0.0, False
    for name in ("stream", "stream-2"):
        svc = stack.services.get(name)
        if svc is None or not svc.alive():
            continue
        v = metric(svc.health_port or 0, "ganzhi_stream_readings_written_total")
        if v is not None:
            total, seen = total + v, True
    return total if seen else None


def ingest_acked(stack: Stack) -> float | None:
    vals = [metric(ops_port(stack, n) or 0, "ganzhi_ingest_acked_total")
            for n in ("ingest", "ingest-2")
            if n in stack.services and stack.services[n].alive()]
    got = [v for v in vals if v is not None]
    return sum(got) if got else None


def stream_logs(stack: Stack) -> dict[str, int]:
    """Each live stream worker's log size: where to look for what it logs next."""
    out = {}
    for name in ("stream", "stream-2"):
        svc = stack.services.get(name)
        if svc is not None and svc.alive():
            out[name] = svc.log_path.stat().st_size if svc.log_path.exists() else 0
    return out


def wait_ready(stack: Stack, since: dict[str, int], timeout: float,
               check: Any = None) -> tuple[float, bool]:
    """Until every live stream worker has logged ``rule_state_claimed`` after ``since``
    (its log sizes before the group changed): the rebalance is done and each worker has
    its partitions' rule state (kept, or loaded from the checkpoints in PostgreSQL).
    (seconds waited, whether all got there)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check is not None:
            check()
        waiting = []
        for name in ("stream", "stream-2"):
            svc = stack.services.get(name)
            if svc is None or not svc.alive():
                continue
            with svc.log_path.open("rb") as fh:
                fh.seek(since.get(name, 0))
                if b"rule_state_claimed" not in fh.read():
                    waiting.append(name)
        if not waiting:
            return time.monotonic() - t0, True
        time.sleep(0.5)
    return time.monotonic() - t0, False


class Run:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        rules = root / "rules.yaml"
        rules.write_text("cold_store: {defaults: {variant: chilled}}\n")
        env = {"GANZHI_STREAM__RULES_FILE": str(rules)}
        env.update(dict(e.split("=", 1) for e in args.env))
        self.env = env
        self.stack = Stack(root, Ports.choose(), Secrets.generate(), extra_env=env)
        self.pub: Any = None
        self.stop_signal: int | None = None

    def check(self) -> None:
        if self.stop_signal is not None:
            raise Interrupted

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check()
            time.sleep(min(0.25, max(0.0, end - time.monotonic())))

    def start(self) -> None:
        st = self.stack
        say(f"starting the stack in {self.root} (own Mosquitto, Tansu, PostgreSQL)")
        st.start_infrastructure()
        migrate(st.dsn)
        asyncio.run(ensure_topics(KafkaSettings(bootstrap=st.bootstrap, partitions=PARTITIONS)))
        for name in ("alerts", "stream", "ingest"):
            st.start_service(name)
        took, ok = wait_ready(st, {}, 120, self.check)
        say(f"  stream: ready after {took:.1f} s" + ("" if ok else " (not yet: going on)"))

    def set_workers(self, ingest: int, stream: int) -> dict[str, Any] | None:
        """Start or stop the second workers. When the stream group changed: how long
        the rebalance and the rule-state recovery took (None: it did not change)."""
        st, changed = self.stack, False
        since = stream_logs(st)
        t0 = time.monotonic()
        for kind, want in (("ingest", ingest), ("stream", stream)):
            name = f"{kind}-2"
            running = name in st.services and st.services[name].alive()
            if want >= 2 and not running:
                say(f"  starting {name}")
                add_worker(st, kind, 2)
                changed = changed or kind == "stream"
            elif want < 2 and running:
                say(f"  stopping {name}")
                st.services[name].stop()
                changed = changed or kind == "stream"
                if kind == "ingest":
                    leave_ingest(st, name)
        if not changed:
            return None
        _, lag = self.lag()
        took, ok = wait_ready(st, since, self.args.recovery_timeout, self.check)
        took = time.monotonic() - t0
        say(f"  stream group changed: rebalanced and state recovered in {took:.0f} s"
            + ("" if ok else f" (NOT within {self.args.recovery_timeout:.0f} s)")
            + f"; lag {lag}")
        return {"seconds": round(took, 1), "complete": ok, "lag_at_change_msgs": lag}

    def lag(self) -> tuple[int | None, int | None]:
        end, committed = kafka_offsets(self.stack.bootstrap, TELEMETRY, GROUP)
        return end, (end - committed if end is not None and committed is not None else None)

    def drain(self, bound: float) -> tuple[float, int | None]:
        t0 = time.monotonic()
        lag: int | None = None
        while time.monotonic() - t0 < bound:
            self.check()
            _, lag = self.lag()
            if lag is not None and lag <= 0:
                break
            time.sleep(1.0)
        return time.monotonic() - t0, lag

    def point(self, ingest: int, stream: int, multiple: float, n: int, of: int,
              ) -> dict[str, Any]:
        a = self.args
        rate = a.base_rate * multiple
        label = f"{ingest} ingest, {stream} stream, {multiple:g}× ({rate:,.0f} msg/s)"
        say(f"[{n}/{of}] {label}; load {uptime()}")
        rebalance = self.set_workers(ingest, stream)
        stats = self.root / f"publisher-{n}.txt"
        self.pub = start_publisher(self.stack.ports.mqtt, rate, a.readings, a.devices, stats)
        warm = a.warmup + (a.rebalance_warmup if rebalance else 0)
        self.sleep(warm)
        parts = {**stack_parts(self.stack), "publisher": self.pub.pid}
        p0 = sample_processes(parts)
        pub0 = publisher_stats(stats)
        end0, _ = kafka_offsets(self.stack.bootstrap, TELEMETRY)
        stored0 = stored_readings(self.stack)
        ing0 = ingest_acked(self.stack)
        t0 = time.monotonic()
        for left in range(int(a.seconds_per_point), 0, -5):
            self.sleep(min(5, left))
            done = time.monotonic() - t0
            last = publisher_stats(stats)
            say(f"  {done:4.0f}/{a.seconds_per_point:.0f} s: published "
                f"{(last[2] if last else 0):,}, stored "
                f"{(stored_readings(self.stack) or 0) - (stored0 or 0):,.0f} readings")
        p1 = sample_processes(parts)
        pub1 = publisher_stats(stats)
        end1, lag_end = self.lag()
        stored1 = stored_readings(self.stack)
        ing1 = ingest_acked(self.stack)
        t1 = time.monotonic()
        dt = t1 - t0
        stop_process(self.pub)
        self.pub = None
        point: dict[str, Any] = {
            "label": label, "ingest_workers": ingest, "stream_workers": stream,
            "cpus": os.cpu_count(),
            "multiple": multiple, "offered_msg_s": rate, "readings_per_msg": a.readings,
            "window_s": round(dt, 1), "warmup_s": warm, "stream_rebalance": rebalance,
        }
        if pub0 and pub1 and pub1[0] > pub0[0]:
            pdt = pub1[0] - pub0[0]
            point["sent_msg_s"] = round((pub1[2] - pub0[2]) / pdt, 1)
            point["acked_msg_s"] = round((pub1[1] - pub0[1]) / pdt, 1)
        if end0 is not None and end1 is not None:
            point["ingested_msg_s"] = round((end1 - end0) / dt, 1)
        if ing0 is not None and ing1 is not None:
            point["ingest_acked_msg_s"] = round((ing1 - ing0) / dt, 1)
        if stored0 is not None and stored1 is not None:
            point["stored_readings_s"] = round((stored1 - stored0) / dt, 1)
            point["stored_msg_s"] = round(point["stored_readings_s"] / a.readings, 1)
        point["lag_end_msgs"] = lag_end
        point["cpu"] = cpu_between(p0, p1)
        point["machine_busy_pct"] = machine_busy_pct(p0, p1)
        point["rss_mb"] = {k: round(v / 1024, 1) for k, v in p1.rss_kb.items()}
        point["pss_mb"] = {k: round(v / 1024, 1) for k, v in p1.pss_kb.items()}
        point["uptime_load"] = uptime()
        point["saturates"], point["why"] = saturation(point)
        say(f"  -> sent {point.get('sent_msg_s', 0):,.0f}, acked "
            f"{point.get('acked_msg_s', 0):,.0f}, into Kafka "
            f"{point.get('ingested_msg_s', 0):,.0f}, stored "
            f"{point.get('stored_msg_s', 0):,.0f} msg/s; lag {lag_end}; "
            f"saturates: {point['saturates']} ({point['why']})")
        drained_s, lag_after = self.drain(a.drain)
        point["drain_s"], point["lag_after_drain_msgs"] = round(drained_s, 1), lag_after
        say(f"  drained in {drained_s:.0f} s (lag {lag_after})")
        return point

    def close(self) -> None:
        stop_process(self.pub)
        self.stack.stop()


def _fmt(v: Any) -> str:
    return "–" if v is None else (f"{v:,.0f}" if isinstance(v, (int, float)) else str(v))


def print_table(result: dict[str, Any]) -> None:
    print(f"\nPipeline scaling, {result['cpus']} CPU cores for everything (services, brokers, "
          f"PostgreSQL and the publisher); {result['readings_per_msg']} readings per message, "
          f"{result['devices']} devices; base rate {result['base_rate']:,.0f} msg/s; "
          f"{result['seconds_per_point']:.0f} s per point; load average "
          f"{result['load_before']} before, {result.get('load_after')} after.\n")
    print("| point | offered | sent | acked | into Kafka | stored msg/s (readings/s) "
          "| lag end | CPU % pub / mosq / ingest / tansu / stream / pg (machine) | saturates |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in result["points"]:
        cpu = p.get("cpu", {})

        def c(*names: str, cpu: dict[str, Any] = cpu) -> str:
            vals = [cpu[n]["cpu_pct"] for n in names if n in cpu]
            return "+".join(f"{v:.0f}" for v in vals) if vals else "–"

        print(f"| {p['label']} | {_fmt(p['offered_msg_s'])} | {_fmt(p.get('sent_msg_s'))} "
              f"| {_fmt(p.get('acked_msg_s'))} | {_fmt(p.get('ingested_msg_s'))} "
              f"| {_fmt(p.get('stored_msg_s'))} ({_fmt(p.get('stored_readings_s'))}) "
              f"| {_fmt(p.get('lag_end_msgs'))} "
              f"| {c('publisher')} / {c('mosquitto')} / {c('ingest', 'ingest-2')} / "
              f"{c('tansu')} / {c('stream', 'stream-2')} / {c('postgres')} "
              f"({_fmt(p.get('machine_busy_pct'))}% of {result['cpus']}) "
              f"| {p['saturates'] or 'none'}: {p['why']} |")
    for p in result["points"]:
        rb = p.get("stream_rebalance")
        if rb:
            print(f"\nBefore {p['label']}: the stream group changed; rebalance and rule-state "
                  f"claim (kept or loaded from checkpoints) took {rb['seconds']:,.0f} s"
                  + ("" if rb["complete"] else " and had not finished")
                  + f" (lag then {_fmt(rb.get('lag_at_change_msgs'))} messages); "
                  "no readings are stored meanwhile.")
    if result["points"]:
        last = result["points"][-1]
        print(f"\nMemory at the end of the last point ({last['label']}), MB: "
              + ", ".join(f"{k} RSS {v:,.0f} (PSS {last['pss_mb'].get(k, 0):,.0f})"
                          for k, v in last["rss_mb"].items()))
        best = max(result["points"], key=lambda p: p.get("stored_msg_s") or 0)
        print(f"Most stored: {best.get('stored_msg_s', 0):,.0f} msg/s = "
              f"{best.get('stored_readings_s', 0):,.0f} readings/s at {best['label']}.")


def parse_workers(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        ing, st = item.lower().split("x")
        if int(ing) not in (1, 2) or int(st) not in (1, 2):
            raise argparse.ArgumentTypeError("workers: 1 or 2 each, e.g. 1x1,2x2")
        out.append((int(ing), int(st)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-rate", type=float, default=500.0, help="msg/s at 1x")
    ap.add_argument("--multiples", default="1,2,4", help="of the base rate")
    ap.add_argument("--workers", type=parse_workers, default=None,
                    help="INGESTxSTREAM sets (default 1x1,2x1,2x2,1x2)")
    ap.add_argument("--full-grid", action="store_true",
                    help="every rate with every worker set (default: every rate with the "
                         "first set, the top rate with the others)")
    ap.add_argument("--points", type=int, default=None, help="run the first N points only")
    ap.add_argument("--seconds-per-point", type=float, default=None,
                    help="measured window per point (default 30; quick 15)")
    ap.add_argument("--warmup", type=float, default=None, help="s before each window")
    ap.add_argument("--rebalance-warmup", type=float, default=5.0,
                    help="extra s after the stream group changed (and recovered)")
    ap.add_argument("--recovery-timeout", type=float, default=240.0,
                    help="bound of the wait for a changed stream group to be ready")
    ap.add_argument("--drain", type=float, default=None,
                    help="bound of the wait for the backlog between points")
    ap.add_argument("--readings", type=int, default=10, help="readings per message")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--quick", action="store_true",
                    help="1x and 4x with 1x1, 4x with 2x2; 15 s per point (~2.5 min)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra service setting")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    a = ap.parse_args()
    if a.quick:
        a.multiples = a.multiples if a.multiples != "1,2,4" else "1,4"
        a.workers = a.workers or [(1, 1), (2, 2)]
    a.workers = a.workers or [(1, 1), (2, 1), (2, 2), (1, 2)]
    a.seconds_per_point = a.seconds_per_point or (15.0 if a.quick else 30.0)
    a.warmup = a.warmup if a.warmup is not None else (5.0 if a.quick else 8.0)
    a.drain = a.drain if a.drain is not None else (20.0 if a.quick else 40.0)
    multiples = [float(x) for x in a.multiples.split(",") if x]
    points = plan(multiples, a.workers, a.full_grid, a.points)

    root = Path(tempfile.mkdtemp(prefix="ganzhi-scaling-"))
    run = Run(a, root)

    def on_signal(signum: int, _frame: object) -> None:
        run.stop_signal = signum

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    result: dict[str, Any] = {
        "cpus": os.cpu_count(), "base_rate": a.base_rate, "readings_per_msg": a.readings,
        "devices": a.devices, "seconds_per_point": a.seconds_per_point,
        "settings": run.env, "load_before": uptime(), "points": [],
    }
    say(f"{len(points)} points: " + "; ".join(f"{i}i/{s}s {m:g}x" for i, s, m in points)
        + f" ({os.cpu_count()} CPU cores for everything)")
    code = 0
    try:
        run.start()
        for n, (ing, st, m) in enumerate(points, 1):
            result["points"].append(run.point(ing, st, m, n, len(points)))
    except Interrupted:
        say("interrupted: stopping the stack")
        result["interrupted"] = True
        code = 128 + (run.stop_signal or 2)
    finally:
        run.close()
    tidy(root, code)
    result["load_after"] = uptime()
    print_table(result)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
        say(f"wrote {a.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
