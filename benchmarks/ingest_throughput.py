"""Ingest throughput: MQTT (Mosquitto) -> ingest worker(s) -> Kafka (Tansu), with both
ceilings measured in the same run.

Starts its own Mosquitto and Tansu on free ports and measures, on the same payloads:

1. broker pass-through: the publisher -> Mosquitto -> a subscriber process that does
   nothing but acknowledge (same shared subscription, QoS 1, manual acknowledgement and
   receive maximum as ingest), timed until it has every message;
2. ingest end to end: N ingest workers as processes; timed until every message can be
   read back from Kafka (with ``--before REF`` also the ingest code at git ``REF``, from a
   temporary worktree, on the same brokers);
3. Kafka produce: pre-built records (ingest's output for these payloads) produced by one
   aiokafka producer with ``acks=all`` in batches as ingest sends them.

Publishing is QoS 1 from a separate process with a bounded in-flight window.

    .venv/bin/python benchmarks/ingest_throughput.py --messages 20000 --workers 1
    .venv/bin/python benchmarks/ingest_throughput.py --messages 20000 --before HEAD~1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ganzhi.contracts import (
    Channel,
    DeviceClass,
    KafkaTopic,
    Reading,
    Telemetry,
    mqtt_topic,
    shared_subscription,
)
from ganzhi.kafka import ensure_topics
from ganzhi.mqtt import make_client, session_properties
from ganzhi.settings import IngestSettings, KafkaSettings, MqttSettings
from ganzhi.stack.infra import free_port, start_mosquitto, start_tansu
from ingest.validate import Accepted, route

ROOT = Path(__file__).resolve().parents[1]
GROUP = "bench-share-group-0123456789abcdef"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)  # inside ingest's window


def payloads(n: int, devices: int, readings: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        dev = f"dev-{i % devices:04d}"
        ts = T0 + timedelta(seconds=i // devices)
        msg = Telemetry(
            msg_id=f"00000000-0000-4000-8000-{i:012d}", site_id="bench", device_id=dev, ts=ts,
            device_class=DeviceClass.COLD_STORE,
            readings=[Reading(metric=f"probe_{k}", value=3.0 + k, unit="celsius")
                      for k in range(readings)],
        )
        out.append((mqtt_topic("bench", dev, Channel.TELEMETRY), msg.model_dump_json().encode()))
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def publish_all(mq: MqttSettings, items: list[tuple[str, bytes]], window: int) -> float:
    client = make_client(mq, "bench-publisher")
    slots = threading.BoundedSemaphore(window)
    done = threading.Event()
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        slots.release()
        if acked == len(items):
            done.set()

    client.on_publish = on_publish
    client.connect(mq.host, mq.port)
    client.loop_start()
    start = time.perf_counter()
    for topic, payload in items:
        slots.acquire()
        client.publish(topic, payload, qos=1)
    done.wait(600)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return elapsed


# --- 1. pass-through: a subscriber that only acknowledges -------------------------------

def null_subscriber(port: int, want: int) -> int:
    """Run as a process: subscribe like ingest, acknowledge each message at once, print
    the wall-clock time the last one arrived."""
    mq = MqttSettings(host="127.0.0.1", port=port)
    client = make_client(mq, "bench-null-subscriber", manual_ack=True)
    subscribed, done = threading.Event(), threading.Event()
    seen = 0
    last = 0.0

    def on_message(c: Any, _u: Any, msg: Any) -> None:
        nonlocal seen, last
        c.ack(msg.mid, msg.qos)
        seen += 1
        if seen == want:
            last = time.time()
            done.set()

    client.on_connect = lambda c, *_: c.subscribe(shared_subscription(GROUP), qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    # The receive maximum as ingest's; session expiry 0: no queue left behind for later runs.
    client.connect(mq.host, mq.port, clean_start=True,
                   properties=session_properties(0, mq.receive_maximum))
    client.loop_start()
    subscribed.wait(30)
    print("ready", flush=True)
    done.wait(600)
    print(f"{last:.6f} {seen}", flush=True)
    client.disconnect()
    client.loop_stop()
    return 0


def pass_through(mq: MqttSettings, items: list[tuple[str, bytes]], window: int) -> dict[str, Any]:
    sub = subprocess.Popen(
        [sys.executable, __file__, "--null-subscriber", str(mq.port), str(len(items))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout is not None
        assert sub.stdout.readline().strip() == "ready"
        cpu0 = cpu_s(sub.pid)
        brokers0 = sum(cpu_s(p) for p in BROKER_PIDS)
        start = time.time()
        pub_s = publish_all(mq, items, window)
        last, _ = sub.stdout.readline().split()
        cpu = cpu_s(sub.pid) - cpu0
        brokers = sum(cpu_s(p) for p in BROKER_PIDS) - brokers0
        sub.wait(30)
    finally:
        if sub.poll() is None:
            sub.kill()
    total = float(last) - start
    return {"total": total, "pub": pub_s, "cpu": cpu, "brokers": brokers}


# --- 2. ingest end to end ----------------------------------------------------------------

async def kafka_positions(bootstrap: str) -> tuple[AIOKafkaConsumer, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    parts = [TopicPartition(KafkaTopic.TELEMETRY.value, p)
             for p in sorted(consumer.partitions_for_topic(KafkaTopic.TELEMETRY.value) or [])]
    if not parts:
        await consumer.stop()
        raise RuntimeError("telemetry topic has no partitions")
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:
        await consumer.position(tp)
    return consumer, 0


async def count_in_kafka(consumer: AIOKafkaConsumer, want: int) -> float:
    seen = 0
    last = time.perf_counter()
    try:
        while seen < want:
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            seen += sum(len(v) for v in batch.values())
            if time.perf_counter() - last > 5:
                print(f"  ... {seen}/{want} in Kafka", file=sys.stderr)
                last = time.perf_counter()
    finally:
        await consumer.stop()
    return time.perf_counter()


BROKER_PIDS: list[int] = []  # Mosquitto's and Tansu's: their CPU is counted too


def ingest_run(mq: MqttSettings, bootstrap: str, items: list[tuple[str, bytes]],
               a: argparse.Namespace, tree: Path) -> dict[str, Any]:
    workers = []
    for i in range(a.workers):
        env = {**os.environ, "GANZHI_MQTT__PORT": str(mq.port),
               "GANZHI_MQTT__SHARE_GROUP": GROUP,
               "GANZHI_KAFKA__BOOTSTRAP": bootstrap, "GANZHI_INGEST__WORKER_ID": f"bench-{i}",
               "GANZHI_OPS__INGEST": str(free_port()), "GANZHI_LOG_LEVEL": "WARNING",
               "PYTHONPATH": str(tree)}
        workers.append(subprocess.Popen([sys.executable, "-m", "ganzhi.cli", "ingest"],
                                        env=env, cwd=tree))
    try:
        time.sleep(4)  # workers connect and subscribe
        loop = asyncio.new_event_loop()
        consumer, _ = loop.run_until_complete(kafka_positions(bootstrap))
        cpu0 = [cpu_s(w.pid) for w in workers]
        brokers0 = sum(cpu_s(p) for p in BROKER_PIDS)
        spy = None
        if a.profile and tree == ROOT:  # py-spy on the first worker, this tree only
            spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record",
                                    "-p", str(workers[0].pid), "-f", "raw", "-r", "200",
                                    "-o", a.profile, "--threads", "--nonblocking"])
            time.sleep(1)
        start = time.perf_counter()
        pub_s = publish_all(mq, items, a.window)
        end = loop.run_until_complete(count_in_kafka(consumer, len(items)))
        loop.close()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        cpu = sum(cpu_s(w.pid) - c for w, c in zip(workers, cpu0, strict=True))
        brokers = sum(cpu_s(p) for p in BROKER_PIDS) - brokers0
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
        for i in range(a.workers):
            drop_session(mq, f"ganzhi-bench-{i}")
    return {"total": end - start, "pub": pub_s, "cpu": cpu, "brokers": brokers}


def drop_session(mq: MqttSettings, client_id: str) -> None:
    """End a worker's persistent session: else the broker keeps queueing for it (its share
    of the shared subscription) while the next measurement runs."""
    client = make_client(mq, client_id)
    client.connect(mq.host, mq.port, clean_start=True, properties=session_properties(0))
    client.loop_start()
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()


# --- 3. Kafka produce ceiling ------------------------------------------------------------

async def produce_ceiling(bootstrap: str, items: list[tuple[str, bytes]],
                          linger_ms: int) -> dict[str, Any]:
    records = []
    for topic, payload in items:
        d = route(topic, payload)
        assert isinstance(d, Accepted), d
        records.append((d.kafka_topic, d.key, d.value))
    batch_max = IngestSettings().batch_max
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                linger_ms=linger_ms, enable_idempotence=False)
    await producer.start()
    cpu0 = time.process_time()
    start = time.perf_counter()
    try:
        for i in range(0, len(records), batch_max):  # as ingest: a batch, then its acks
            futures = [await producer.send(t, value=v, key=k)
                       for t, k, v in records[i:i + batch_max]]
            await asyncio.gather(*futures)
        total = time.perf_counter() - start
    finally:
        await producer.stop()
    return {"total": total, "cpu": time.process_time() - cpu0}


def validation_costs(items: list[tuple[str, bytes]]) -> None:
    """Per-message cost of ingest's validation and of the alternatives (one core)."""
    import json

    from ganzhi.contracts import device_message_adapter
    from ingest.validate import parse_json

    raws = [json.loads(p) for _, p in items]
    models = [device_message_adapter.validate_python(r) for r in raws]
    cases: list[tuple[str, Any, list[Any]]] = [
        ("route() (all checks, as ingest)", lambda x: route(*x), items),
        ("json.loads + duplicate-key hook", lambda x: parse_json(x[1]), items),
        ("json.loads, no hook", lambda x: json.loads(x[1]), items),
        ("validate_python (parsed dict)", device_message_adapter.validate_python, raws),
        ("validate_json (bytes, model_validate_json)",
         lambda x: device_message_adapter.validate_json(x[1]), items),
        ("model_dump_json (Kafka value)", lambda m: m.model_dump_json(), models),
    ]
    try:
        import orjson  # type: ignore[import-not-found, unused-ignore]

        cases.append(("orjson.loads (not a dependency)", lambda x: orjson.loads(x[1]), items))
    except ImportError:
        pass
    for name, f, xs in cases:
        best = min(_timed(f, xs) for _ in range(3))
        print(f"{name:45s} {best / len(xs) * 1e6:6.1f} us/message")


def _timed(f: Any, xs: list[Any]) -> float:
    start = time.perf_counter()
    for x in xs:
        f(x)
    return time.perf_counter() - start


def _median(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median ratio to its round's pass-through (time, CPU with it)."""
    return sorted(rs, key=lambda r: r.get("ratio", 0.0))[len(rs) // 2]


def before_tree(ref: str) -> Path:
    tree = Path(tempfile.mkdtemp(prefix="ganzhi-ingest-before-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                    str(tree), ref], check=True)
    return tree


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--readings", type=int, default=10, help="readings per message")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--window", type=int, default=1000, help="publisher in-flight bound")
    ap.add_argument("--before", metavar="REF", help="also measure ingest at git REF")
    ap.add_argument("--profile", metavar="FILE",
                    help="py-spy (raw) profile of the first ingest worker under load")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of pass-through/before/ingest; the median is shown")
    ap.add_argument("--validation", action="store_true",
                    help="only time validation and its alternatives per message")
    ap.add_argument("--null-subscriber", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, metavar="PATH",
                    help="also write the table's figures to PATH as JSON")
    a = ap.parse_args()
    if a.null_subscriber:
        return null_subscriber(*a.null_subscriber)
    if a.validation:
        validation_costs(payloads(min(a.messages, 5000), a.devices, a.readings))
        return 0

    # A timeout's SIGTERM still runs the clean-up below (brokers, worktree).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="ganzhi-bench-"))
    mosq = start_mosquitto(root / "mosquitto")
    tansu = start_tansu(root)
    bootstrap = f"{tansu.host}:{tansu.port}"
    asyncio.run(ensure_topics(KafkaSettings(bootstrap=bootstrap, partitions=4)))
    mq = MqttSettings(host=mosq.host, port=mosq.port)
    BROKER_PIDS.extend(m.proc.pid for m in (mosq, tansu) if m.proc is not None)
    items = payloads(a.messages, a.devices, a.readings)
    n = len(items)
    rows: list[tuple[str, dict[str, Any]]] = []
    tree: Path | None = None
    print(f"{n} messages x {a.readings} readings, {a.workers} ingest worker(s); "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        if a.before:
            tree = before_tree(a.before)
        for rnd in range(a.repeat):  # interleaved, so that load from elsewhere hits each
            print(f"round {rnd + 1}/{a.repeat}: pass-through ...", file=sys.stderr)
            runs.setdefault("broker pass-through (null subscriber)", []).append(
                pass_through(mq, items, a.window))
            if tree is not None:
                print(f"ingest at {a.before} ...", file=sys.stderr)
                runs.setdefault(f"ingest before ({a.before})", []).append(
                    ingest_run(mq, bootstrap, items, a, tree))
            print("ingest ...", file=sys.stderr)
            runs.setdefault("ingest (this tree)", []).append(
                ingest_run(mq, bootstrap, items, a, ROOT))
        pt = runs["broker pass-through (null subscriber)"]
        for rs in runs.values():  # each round against its own pass-through
            for i, r in enumerate(rs):
                r["ratio"] = pt[i]["total"] / r["total"]
        rows = [(name, _median(rs)) for name, rs in runs.items()]
        print("kafka produce ...", file=sys.stderr)
        rows.append(("Kafka produce (aiokafka, acks=all, linger 0 as ingest)",
                     asyncio.run(produce_ceiling(bootstrap, items, 0))))
        linger = KafkaSettings().linger_ms
        rows.append((f"Kafka produce (aiokafka, acks=all, linger {linger} ms)",
                     asyncio.run(produce_ceiling(bootstrap, items, linger))))
    finally:
        tansu.stop()
        mosq.stop()
        if tree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], check=False)
        shutil.rmtree(root, ignore_errors=True)
    ceiling = n / rows[0][1]["total"]
    print(f"messages {n}, readings/message {a.readings}, workers {a.workers}, "
          f"rounds {a.repeat} (median), "
          f"load after {os.getloadavg()[0]:.2f}")
    print("| path | msg/s | × pass-through | publish (PUBACKed) | CPU µs/message "
          "| brokers' CPU µs/message |")
    print("|---|---|---|---|---|---|")
    figures: list[dict[str, Any]] = []
    for name, r in rows:
        rate = n / r["total"]
        ratio = r["ratio"] if "ratio" in r else rate / ceiling
        pub = f"{n / r['pub']:,.0f} msg/s" if "pub" in r else "–"
        brokers = f"{r['brokers'] / n * 1e6:.0f}" if "brokers" in r else "–"
        print(f"| {name} | {rate:,.0f} | {ratio:.2f} | {pub} | {r['cpu'] / n * 1e6:.0f} "
              f"| {brokers} |")
        figures.append({"path": name, "msg_s": rate, "ratio_to_pass_through": ratio,
                        "publish_msg_s": n / r["pub"] if "pub" in r else None,
                        "cpu_us_per_msg": r["cpu"] / n * 1e6,
                        "brokers_cpu_us_per_msg": (r["brokers"] / n * 1e6
                                                   if "brokers" in r else None)})
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "messages": n, "readings_per_message": a.readings, "workers": a.workers,
            "rounds": a.repeat, "load_after": os.getloadavg()[0], "rows": figures},
            indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
