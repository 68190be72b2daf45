"""Alert latency: publish of the confirming message -> signed webhook at a receiver.

Starts the whole system with :mod:`ganzhi.stack` on its own infrastructure (Mosquitto,
Tansu, PostgreSQL on free ports; never a server it finds running), with a receiver in
this process that verifies each signed webhook and timestamps its arrival. Each trial is
a distinct simulated elevator whose ``alarm_button_pressed`` event opens the
``elevator.alarm_button`` alert on that one message, so the confirming message and its
publish time are exact; latency = webhook arrival - publish (both ``time.time()`` on
this machine). Trials are spaced at random, so they fall at every phase of the
services' batch and poll timers.

Two phases: idle, then under background load (a separate publisher process sending
cold-store telemetry at ``--rate`` messages/s x ``--readings`` readings; default 1,000
msg/s x 10 = 10k readings/s). The achieved load is reported as measured: messages the
broker acknowledged and readings the stream stored per second during the trials.

Per trial, the stored timestamps give the stages: publish -> ingest (the Kafka record
timestamp of the event: the producer's CreateTime, set when ingest sends it) ->
transition applied (``alert_events.received_at``) -> outbox row
(``clue_outbox.created_at``) -> receiver arrival. ``delivered_at`` is kept in the JSON;
it is written after the receiver answered.

    .venv/bin/python benchmarks/alert_latency.py --trials 30
    .venv/bin/python benchmarks/alert_latency.py --trials 30 \\
        --env GANZHI_WEBHOOK__POLL_INTERVAL_S=0.5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from alerts.receiver import ClueReceiver
from ganzhi.contracts import (
    Channel,
    DeviceEvent,
    KafkaTopic,
    Severity,
    mqtt_topic,
)
from ganzhi.db.migrate import migrate
from ganzhi.kafka import ensure_topics
from ganzhi.mqtt import make_client
from ganzhi.settings import KafkaSettings, MqttSettings
from ganzhi.stack.system import Ports, Secrets, Stack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import publisher

SITE = "bench-latency"
BG_SITE = "bench-load"
# In time order; delivered_at is stored after the receiver answered, so it is kept in
# the JSON but is not a stage.
STAGES = ("ingest", "rules", "transition", "outbox", "arrival")
STAGE_NAMES = {
    "ingest": "publish -> ingest produces it (Kafka record CreateTime)",
    "rules": "-> stream produces the transition (Kafka, stream batch, rules)",
    "transition": "-> alerts service applied it (Kafka, alerts consumer)",
    "outbox": "transition applied -> outbox row",
    "arrival": "outbox row -> receiver arrival (dispatcher wake-up, claim, POST)",
}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- background load (a separate process): benchmarks/_stack.py's publisher -------------


# --- the receiver --------------------------------------------------------------------------


class TimedReceiver(ClueReceiver):
    """The reference receiver (signatures verified), noting when each new event arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: dict[tuple[str, str], float] = {}  # (device_id, event) -> time
        self.arrived = threading.Condition()

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        arrival = time.time()
        status, answer = super().handle(headers, body)
        if status == 200 and answer.get("accepted") and not answer.get("duplicate"):
            clue = json.loads(body)
            with self.arrived:
                self.arrivals.setdefault((str(clue.get("device_id")),
                                          str(clue.get("event"))), arrival)
                self.arrived.notify_all()
        return status, answer

    def wait(self, device: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while (device, "created") not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.arrived.wait(left)
            return self.arrivals[(device, "created")]


# --- measuring ------------------------------------------------------------------------------


def metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))


class Trials:
    def __init__(self, stack: Stack, receiver: TimedReceiver) -> None:
        self.stack = stack
        self.receiver = receiver
        mq = MqttSettings(host="127.0.0.1", port=stack.ports.mqtt)
        self.client = make_client(mq, f"bench-elevators-{uuid.uuid4().hex[:8]}")
        self.client.connect(mq.host, mq.port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def press(self, device: str) -> tuple[str, float]:
        """The confirming message: one alarm press. Returns (msg_id, publish time)."""
        event = DeviceEvent(msg_id=str(uuid.uuid4()), site_id=SITE, device_id=device,
                            ts=datetime.now(UTC),
                            event="alarm_button_pressed", severity=Severity.MAJOR)
        payload = event.model_dump_json().encode()
        topic = mqtt_topic(SITE, device, Channel.EVENT)
        published = time.time()
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        return str(event.msg_id), published

    def run(self, phase: str, n: int, timeout: float, deadline: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(n):
            if time.monotonic() > deadline:
                say(f"  [{phase}] time bound reached after {i} trials")
                break
            device = f"elev-{phase}-{i:03d}"
            msg_id, published = self.press(device)
            arrival = self.receiver.wait(device, timeout)
            latency = None if arrival is None else arrival - published
            out.append({"device": device, "msg_id": msg_id, "published": published,
                        "arrival": arrival, "latency_s": latency})
            shown = "timeout" if latency is None else f"{latency * 1000:7.1f} ms"
            say(f"  [{phase}] trial {i + 1:3d}/{n}: {shown}")
            time.sleep(random.uniform(0.3, 1.2))  # every phase of the timers
        return out


async def kafka_times(bootstrap: str, want: set[str], topic: str, field: str,
                      wait_s: float = 20) -> dict[str, float]:
    """``field`` of each record of ``topic`` -> its earliest Kafka record timestamp (s)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    await consumer.topics()  # fetches the metadata
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    found: dict[str, float] = {}
    try:
        end = time.monotonic() + wait_s
        while want - found.keys() and time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for r in records:
                    try:
                        key = str(json.loads(r.value)[field])
                        found[key] = min(found.get(key, r.timestamp / 1000.0),
                                         r.timestamp / 1000.0)
                    except (ValueError, KeyError, TypeError) as exc:
                        say(f"  unreadable event record: {exc!r} {r.timestamp!r}")
    finally:
        await consumer.stop()
    if want - found.keys():
        say(f"  Kafka record times of {topic}: {len(want - found.keys())} not found "
            f"(partitions {[p.partition for p in parts]})")
    return found


def stage_times(dsn: str, bootstrap: str, trials: list[dict[str, Any]]) -> None:
    """Fill each trial's stage timestamps from Kafka and the database."""
    kafka = asyncio.run(kafka_times(bootstrap, {t["msg_id"] for t in trials},
                                    KafkaTopic.EVENT.value, "msg_id"))
    produced = asyncio.run(kafka_times(bootstrap, {t["device"] for t in trials},
                                       KafkaTopic.ALERT_TRANSITIONS.value, "device_id"))
    with psycopg.connect(dsn) as conn:
        for t in trials:
            row = conn.execute(
                "SELECT (SELECT min(extract(epoch FROM e.received_at)) FROM alert_events e"
                "        WHERE e.alert_id = a.id),"
                "       extract(epoch FROM o.created_at), extract(epoch FROM o.delivered_at)"
                " FROM alerts a LEFT JOIN clue_outbox o ON o.alert_id = a.id"
                " AND o.event = 'created'"
                " WHERE a.site_id = %s AND a.device_id = %s ORDER BY a.id LIMIT 1",
                (SITE, t["device"])).fetchone()
            t["ingest"] = kafka.get(t["msg_id"])
            t["rules"] = produced.get(t["device"])
            t["transition"], t["outbox"], t["delivered"] = (
                (float(v) if v is not None else None for v in row) if row else (None,) * 3)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))  # nearest rank
    return s[k]


def summarise(trials: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [t["latency_s"] for t in trials if t["latency_s"] is not None]
    out: dict[str, Any] = {"trials": len(trials), "delivered": len(lat),
                           "timeouts": len(trials) - len(lat)}
    if lat:
        out.update({f"p{q}_ms": round(pct(lat, q) * 1000, 1) for q in (50, 95, 99)})
        out["max_ms"] = round(max(lat) * 1000, 1)
        out["mean_ms"] = round(statistics.fmean(lat) * 1000, 1)
    stages: dict[str, Any] = {}
    for i, stage in enumerate(STAGES):
        d = []
        for t in trials:  # from the last stage with a timestamp
            prev = next((p for p in reversed(("published", *STAGES[:i]))
                         if t.get(p) is not None), None)
            if t.get(stage) is not None and prev is not None:
                d.append(t[stage] - t[prev])
        if d:
            stages[stage] = {"p50_ms": round(pct(d, 50) * 1000, 1),
                             "p99_ms": round(pct(d, 99) * 1000, 1),
                             "max_ms": round(max(d) * 1000, 1),
                             "mean_ms": round(statistics.fmean(d) * 1000, 1)}
    out["stages"] = stages
    if stages:
        out["slowest_stage"] = max(stages, key=lambda s: stages[s]["mean_ms"])
    return out


def load_figures(stats_path: Path, t0: float, t1: float) -> dict[str, float]:
    rows = []
    if stats_path.exists():
        for line in stats_path.read_text().split("\n"):
            parts = line.split()
            if len(parts) == 3:
                rows.append((float(parts[0]), int(parts[1]), int(parts[2])))
    inside = [r for r in rows if t0 <= r[0] <= t1]
    if len(inside) < 2:
        return {"acked_msg_s": 0.0, "sent_msg_s": 0.0}
    dt = inside[-1][0] - inside[0][0]
    return {"acked_msg_s": round((inside[-1][1] - inside[0][1]) / dt, 1),
            "sent_msg_s": round((inside[-1][2] - inside[0][2]) / dt, 1)}


def uptime() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" 1/")[0].rsplit(" ", 2)[0].strip()
    except OSError:
        return "?"


# --- the run ------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30, help="per phase")
    ap.add_argument("--rate", type=float, default=1000.0, help="background msg/s")
    ap.add_argument("--readings", type=int, default=10, help="readings per background msg")
    ap.add_argument("--devices", type=int, default=1000, help="background devices")
    ap.add_argument("--warmup", type=float, default=15.0, help="s of load before trials")
    ap.add_argument("--timeout", type=float, default=30.0, help="s to wait for one webhook")
    ap.add_argument("--max-seconds", type=float, default=900.0, help="bound of the run")
    ap.add_argument("--phases", default="idle,loaded")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra service setting (e.g. GANZHI_WEBHOOK__POLL_INTERVAL_S=1)")
    ap.add_argument("--out", type=Path, default=Path("var/bench/alert_latency.json"))
    ap.add_argument("--publisher", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publisher:
        host, port, rate, readings, devices, stats = args.publisher
        return publisher(host, int(port), float(rate), int(readings), int(devices),
                         Path(stats))

    deadline = time.monotonic() + args.max_seconds
    root = Path(tempfile.mkdtemp(prefix="ganzhi-latency-"))
    rules = root / "rules.yaml"
    rules.write_text("cold_store: {defaults: {variant: chilled}}\n")
    env = {"GANZHI_STREAM__RULES_FILE": str(rules)}
    env.update(dict(e.split("=", 1) for e in args.env))
    stack = Stack(root, Ports.choose(), Secrets.generate(), extra_env=env)
    say(f"starting the stack in {root} (own Mosquitto, Tansu, PostgreSQL)")
    receiver = TimedReceiver(stack.secrets.webhook_secret.encode(), stack.ports.receiver)
    receiver.start()
    load: subprocess.Popen[bytes] | None = None
    trials: Trials | None = None
    result: dict[str, Any] = {"settings": env, "trials_per_phase": args.trials,
                              "phases": {}, "load_before": uptime()}
    phases = [p for p in args.phases.split(",") if p]
    try:
        stack.start_infrastructure()
        migrate(stack.dsn)
        asyncio.run(ensure_topics(KafkaSettings(bootstrap=stack.bootstrap, partitions=4)))
        for name in ("alerts", "stream", "ingest"):
            stack.start_service(name)
        trials = Trials(stack, receiver)
        # One untimed press first: every service's first message pays its warm-up.
        trials.run("warmup", 1, 60, deadline)
        for phase in phases:
            stats = root / f"load-{phase}.txt"
            if phase == "loaded":
                say(f"background load: {args.rate:.0f} msg/s x {args.readings} readings "
                    f"({args.devices} devices); {args.warmup:.0f} s warm-up")
                load = subprocess.Popen(
                    [sys.executable, __file__, "--publisher", "127.0.0.1",
                     str(stack.ports.mqtt), str(args.rate), str(args.readings),
                     str(args.devices), str(stats)],
                    env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
                time.sleep(args.warmup)
            written0 = metric(stack.ports.ops_stream, "ganzhi_stream_readings_written_total")
            t0 = time.time()
            got = trials.run(phase, args.trials, args.timeout, deadline)
            t1 = time.time()
            written1 = metric(stack.ports.ops_stream, "ganzhi_stream_readings_written_total")
            if load is not None:
                load.send_signal(signal.SIGTERM)
                load.wait(30)
                load = None
            stage_times(stack.dsn, stack.bootstrap, got)
            summary = summarise(got)
            summary["uptime_load"] = uptime()
            if phase == "loaded":
                figures = load_figures(stats, t0, t1)
                figures["requested_msg_s"] = args.rate
                figures["readings_per_msg"] = args.readings
                figures["acked_readings_s"] = round(figures["acked_msg_s"] * args.readings)
                if written0 is not None and written1 is not None:
                    figures["stored_readings_s"] = round((written1 - written0) / (t1 - t0))
                summary["load"] = figures
            result["phases"][phase] = {"summary": summary, "trials": got}
    finally:
        if load is not None:
            load.send_signal(signal.SIGTERM)
            load.wait(30)
        if trials is not None:
            trials.close()
        stack.stop()
        receiver.stop()

    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    say(f"wrote {args.out}")
    return 0


def print_table(result: dict[str, Any]) -> None:
    print("\n| phase | load (achieved) | trials | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for phase, data in result["phases"].items():
        s = data["summary"]
        ld = s.get("load")
        load = (f"{ld['acked_msg_s']:,.0f} msg/s acked = {ld['acked_readings_s']:,} rd/s; "
                f"stored {ld.get('stored_readings_s', 0):,} rd/s" if ld else "idle")
        print(f"| {phase} | {load} | {s['delivered']}/{s['trials']} | {s.get('p50_ms')} | "
              f"{s.get('p95_ms')} | {s.get('p99_ms')} | {s.get('max_ms')} |")
    print("\n| stage | " + " | ".join(f"{p} p50 / p99 / mean ms"
                                        for p in result["phases"]) + " |")
    print("|---|" + "---|" * len(result["phases"]))
    for stage in STAGES:
        cells = []
        for data in result["phases"].values():
            st = data["summary"]["stages"].get(stage)
            cells.append(f"{st['p50_ms']} / {st['p99_ms']} / {st['mean_ms']}" if st else "-")
        print(f"| {STAGE_NAMES[stage]} | " + " | ".join(cells) + " |")
    for phase, data in result["phases"].items():
        s = data["summary"]
        print(f"\n{phase}: slowest stage (mean): {s.get('slowest_stage')}; "
              f"load average {s.get('uptime_load')}")


if __name__ == "__main__":
    sys.exit(main())
