"""Memory soak: the whole stack at a steady rate for ``--minutes``, sampling memory and lag.

Starts the real stack on loopback (own Mosquitto, Tansu, PostgreSQL on free ports; the
alerts, stream and ingest services) and a publisher process sending cold-store
telemetry (``--readings`` readings per message, QoS 1) at ``--rate`` msg/s; without
``--rate``, half the most the scaling run stored with one ingest and one stream worker
(``--scaling-json``, default var/bench/scaling.json), else 500 msg/s.

Every ``--interval`` seconds (default 30) it samples the RSS (and PSS) of every service
and broker, their CPU (% of one core since the sample before) and the machine's, the
stream group's consumer lag and the rows stored, and prints a line. At
the end, per process, the slope of a straight line fitted to the second half of the
samples, in MB per 10 minutes ("flat": rising less than ``--flat-mb``; a falling line is
memory handed back after the warm-up, not a leak), and the lag's trend: not
growing when the fit over the second half rises less than 1 % of the messages offered
in 10 minutes or the last lag is under 2 s of input. The CPU of each process is
averaged per quarter of the run: when the lag grows, the quarter where a process took
more says which one the others lost the cores to.

Tansu keeps every record in memory (the embedded broker's storage is memory only), so
its memory grows with the data it holds: that is reported, not judged as a leak.

    .venv/bin/python benchmarks/soak.py --minutes 30 --json var/bench/soak.json
    .venv/bin/python benchmarks/soak.py --minutes 4 --interval 20 --rate 400
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
    ProcSample,
    cpu_between,
    kafka_offsets,
    machine_busy_pct,
    metric,
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

GROUP = "ganzhi-stream"
TELEMETRY = KafkaTopic.TELEMETRY.value
GROWS_WITH_DATA = {"tansu": "memory-only storage: holds every record"}
NOTES = {"postgres": "PSS: grows while the shared buffers (128 MB by default) are first "
                     "touched, then levels off"}


# --- pure -----------------------------------------------------------------------------------


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points (None with fewer than 2 distinct x)."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def verdict(samples: list[dict[str, Any]], rate: float, flat_mb: float) -> dict[str, Any]:
    """Per process: MB per 10 min over the second half of the samples and flat or not;
    the lag's trend likewise."""
    half = samples[len(samples) // 2:] if len(samples) >= 4 else samples
    out: dict[str, Any] = {"fit_samples": len(half), "memory": {}, "flat_mb_per_10min": flat_mb}
    names = sorted({k for s in half for k in s.get("mem_mb", {})})
    for name in names:
        pts = [(s["t"], s["mem_mb"][name]) for s in half if name in s.get("mem_mb", {})]
        k = slope(pts)
        per10 = None if k is None else round(k * 600, 2)
        out["memory"][name] = {
            "first_mb": pts[0][1] if pts else None, "last_mb": pts[-1][1] if pts else None,
            "mb_per_10min": per10,
            "flat": None if per10 is None else per10 < flat_mb,
            "note": GROWS_WITH_DATA.get(name.split("-")[0], NOTES.get(name, "")),
        }
    lags = [(s["t"], float(s["lag_msgs"])) for s in half if s.get("lag_msgs") is not None]
    k = slope(lags)
    per10 = None if k is None else k * 600
    last = lags[-1][1] if lags else None
    growing = None
    if per10 is not None and last is not None:
        growing = per10 > 0.01 * rate * 600 and last > 2 * rate
    out["lag"] = {"msgs_per_10min": None if per10 is None else round(per10, 1),
                  "last_msgs": last, "growing": growing}
    judged = [m["flat"] for n, m in out["memory"].items()
              if n.split("-")[0] not in GROWS_WITH_DATA and m["flat"] is not None]
    out["memory_flat"] = all(judged) if judged else None
    out["ok"] = bool(out["memory_flat"]) and growing is False
    return out


def cpu_by_quarter(samples: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Per process (and ``machine``): mean CPU % of one core in each quarter of the run
    (samples without CPU figures, such as the first, left out)."""
    timed = [s for s in samples if s.get("cpu_pct")]
    if not timed:
        return {}
    span = max(s["t"] for s in timed) - min(s["t"] for s in timed)
    t0 = min(s["t"] for s in timed)
    names = [*sorted({k for s in timed for k in s["cpu_pct"]}), "machine"]
    out: dict[str, list[float | None]] = {}
    for name in names:
        quarters: list[list[float]] = [[], [], [], []]
        for s in timed:
            v = s.get("machine_busy_pct") if name == "machine" else s["cpu_pct"].get(name)
            if v is None:
                continue
            q = min(3, int(4 * (s["t"] - t0) / span)) if span > 0 else 0
            quarters[q].append(float(v))
        out[name] = [round(sum(q) / len(q), 1) if q else None for q in quarters]
    return out


# --- the run --------------------------------------------------------------------------------


def default_rate(path: Path) -> tuple[float, str]:
    try:
        data = json.loads(path.read_text())
        best = max((p.get("stored_msg_s") or 0) for p in data["points"]
                   if p.get("ingest_workers") == 1 and p.get("stream_workers") == 1)
        if best > 0:
            return round(best / 2), f"half of {best:,.0f} msg/s stored (1x1) in {path}"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return 500.0, "default (no scaling figures)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=30.0, help="s between samples")
    ap.add_argument("--rate", type=float, default=None, help="msg/s offered")
    ap.add_argument("--scaling-json", type=Path, default=Path("var/bench/scaling.json"))
    ap.add_argument("--readings", type=int, default=10, help="readings per message")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--flat-mb", type=float, default=3.0,
                    help="flat: rising less than this many MB per 10 min")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    rate, why = (a.rate, "--rate") if a.rate else default_rate(a.scaling_json)

    root = Path(tempfile.mkdtemp(prefix="ganzhi-soak-"))
    rules = root / "rules.yaml"
    rules.write_text("cold_store: {defaults: {variant: chilled}}\n")
    env = {"GANZHI_STREAM__RULES_FILE": str(rules)}
    env.update(dict(e.split("=", 1) for e in a.env))
    stack = Stack(root, Ports.choose(), Secrets.generate(), extra_env=env)
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    result: dict[str, Any] = {"cpus": os.cpu_count(), "rate_msg_s": rate, "rate_from": why,
                              "readings_per_msg": a.readings, "minutes": a.minutes,
                              "interval_s": a.interval, "settings": env,
                              "load_before": uptime(), "samples": []}
    say(f"soak: {rate:,.0f} msg/s x {a.readings} readings ({why}) for {a.minutes:g} min, "
        f"a sample every {a.interval:g} s; {os.cpu_count()} CPU cores for everything")
    pub = None
    code = 0
    try:
        say(f"starting the stack in {root}")
        stack.start_infrastructure()
        migrate(stack.dsn)
        asyncio.run(ensure_topics(KafkaSettings(bootstrap=stack.bootstrap, partitions=4)))
        for name in ("alerts", "stream", "ingest"):
            stack.start_service(name)
        stats = root / "publisher.txt"
        pub = start_publisher(stack.ports.mqtt, rate, a.readings, a.devices, stats)
        t0 = time.monotonic()
        end = t0 + a.minutes * 60
        next_sample = t0 + min(a.interval, 10.0)  # a first sample soon after the start
        prev: ProcSample | None = None
        while time.monotonic() < end and not stop:
            if time.monotonic() < next_sample:
                time.sleep(0.25)
                continue
            next_sample += a.interval
            if pub.poll() is not None:
                raise RuntimeError(f"the publisher exited ({pub.returncode})")
            proc = sample_processes({**stack_parts(stack), "publisher": pub.pid})
            cpu = {k: v["cpu_pct"] for k, v in cpu_between(prev, proc).items()} \
                if prev is not None else {}
            busy = machine_busy_pct(prev, proc) if prev is not None else None
            prev = proc
            end_off, committed = kafka_offsets(stack.bootstrap, TELEMETRY, GROUP)
            stored = metric(stack.ports.ops_stream, "ganzhi_stream_readings_written_total")
            ps = publisher_stats(stats)
            t = time.monotonic() - t0
            mem = {k: round(v / 1024, 1) for k, v in proc.rss_kb.items() if k != "publisher"}
            pss = {k: round(v / 1024, 1) for k, v in proc.pss_kb.items() if k != "publisher"}
            # PostgreSQL's backends share their buffers: PSS is its honest total.
            mem_fit = {**mem, "postgres": pss.get("postgres", mem.get("postgres", 0.0))}
            lag = end_off - committed if end_off is not None and committed is not None else None
            sample = {"t": round(t, 1), "rss_mb": mem, "pss_mb": pss, "mem_mb": mem_fit,
                      "lag_msgs": lag, "kafka_end": end_off, "stored_readings": stored,
                      "acked": ps[1] if ps else None, "sent": ps[2] if ps else None,
                      "cpu_pct": cpu, "machine_busy_pct": busy, "load": uptime()}
            result["samples"].append(sample)
            say(f"  {t / 60:5.1f} min: stored {stored or 0:,.0f} readings "
                f"({(stored or 0) / max(t, 1) / a.readings:,.0f} msg/s avg), lag {lag}, MB "
                + " ".join(f"{k} {v:,.0f}" for k, v in mem_fit.items())
                + ("; CPU % " + " ".join(f"{k} {v:.0f}" for k, v in cpu.items())
                   + f" (machine {busy:.0f})" if cpu and busy is not None else "")
                + f"; load {sample['load']}")
    except Exception as exc:
        say(f"soak failed: {exc!r}")
        result["error"] = repr(exc)
        code = 1
    finally:
        stop_process(pub)
        stack.stop()
    tidy(root, code)
    if stop:
        say("interrupted: verdict on the samples so far")
        result["interrupted"] = True
        code = 128 + stop[0]
    result["load_after"] = uptime()
    result["verdict"] = verdict(result["samples"], rate, a.flat_mb)
    result["cpu_by_quarter"] = cpu_by_quarter(result["samples"])
    print_verdict(result)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
        say(f"wrote {a.json}")
    return code


def print_verdict(result: dict[str, Any]) -> None:
    v = result["verdict"]
    s = result["samples"]
    took = s[-1]["t"] / 60 if s else 0
    print(f"\nMemory soak: {result['rate_msg_s']:,.0f} msg/s x {result['readings_per_msg']} "
          f"readings for {took:.1f} min ({len(s)} samples; fit over the last "
          f"{v['fit_samples']}); {result['cpus']} CPU cores; load average "
          f"{result['load_before']} before, {result['load_after']} after.\n")
    print("| process | MB at fit start | MB at end | MB / 10 min | flat? |")
    print("|---|---|---|---|---|")
    for name, m in v["memory"].items():
        flat = "–" if m["flat"] is None else ("yes" if m["flat"] else "**no**")
        note = f" ({m['note']})" if m["note"] else ""
        print(f"| {name} | {m['first_mb']} | {m['last_mb']} | {m['mb_per_10min']} "
              f"| {flat}{note} |")
    lag = v["lag"]
    print(f"\nlag: last {lag['last_msgs']} messages, trend {lag['msgs_per_10min']} per 10 min: "
          + ("growing" if lag["growing"] else "not growing" if lag["growing"] is False
             else "unknown"))
    quarters = result.get("cpu_by_quarter") or {}
    if quarters:
        print("\n| CPU % of one core, mean per quarter of the run | 1st | 2nd | 3rd | 4th |")
        print("|---|---|---|---|---|")
        for name, qs in quarters.items():
            print(f"| {name} | " + " | ".join("–" if q is None else f"{q:g}" for q in qs)
                  + " |")
    print(f"verdict: memory {'flat' if v['memory_flat'] else 'NOT flat'} "
          f"(rising < {v['flat_mb_per_10min']} MB / 10 min; PostgreSQL as PSS); "
          f"{'OK' if v['ok'] else 'NOT OK'}")


if __name__ == "__main__":
    sys.exit(main())
