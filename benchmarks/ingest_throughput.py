"""Ingest throughput: MQTT (Mosquitto) -> ingest worker(s) -> Kafka (Tansu), end to end.

Starts its own Mosquitto and Tansu on free ports, runs N ingest workers as processes
(one shared subscription), publishes telemetry at QoS 1 from a separate process with a
bounded in-flight window, and times until every message is in Kafka.

    .venv/bin/python benchmarks/ingest_throughput.py --messages 20000 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from ganzhi.contracts import Channel, DeviceClass, KafkaTopic, Reading, Telemetry, mqtt_topic
from ganzhi.kafka import ensure_topics
from ganzhi.mqtt import make_client
from ganzhi.settings import MqttSettings
from ganzhi.stack.infra import free_port, start_mosquitto, start_tansu

T0 = datetime(2026, 1, 1, tzinfo=UTC)


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


async def wait_in_kafka(bootstrap: str, want: int, progress: bool = True) -> float:
    consumer = AIOKafkaConsumer(
        KafkaTopic.TELEMETRY.value, bootstrap_servers=bootstrap,
        auto_offset_reset="earliest", group_id="bench-check",
    )
    await consumer.start()
    seen = 0
    last = time.perf_counter()
    try:
        while seen < want:
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            seen += sum(len(v) for v in batch.values())
            if progress and time.perf_counter() - last > 2:
                print(f"  ... {seen}/{want} in Kafka", file=sys.stderr)
                last = time.perf_counter()
    finally:
        await consumer.stop()
    return time.perf_counter()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--readings", type=int, default=10, help="readings per message")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--window", type=int, default=1000, help="publisher in-flight bound")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ganzhi-bench-"))
    mosq = start_mosquitto(root / "mosquitto")
    tansu = start_tansu(root)
    bootstrap = f"{tansu.host}:{tansu.port}"
    asyncio.run(ensure_topics(bootstrap, 4))
    mq = MqttSettings(host=mosq.host, port=mosq.port)
    workers = []
    for i in range(args.workers):
        env = {**os.environ, "GANZHI_MQTT__PORT": str(mosq.port),
               "GANZHI_KAFKA__BOOTSTRAP": bootstrap, "GANZHI_INGEST__WORKER_ID": f"bench-{i}",
               "GANZHI_OPS__INGEST": str(free_port()), "GANZHI_LOG_LEVEL": "WARNING"}
        workers.append(subprocess.Popen([sys.executable, "-m", "ganzhi.cli", "ingest"], env=env))
    try:
        time.sleep(3)  # workers connect and subscribe
        items = payloads(args.messages, args.devices, args.readings)
        print(f"publishing {len(items)} messages x {args.readings} readings "
              f"to {args.workers} ingest worker(s)", file=sys.stderr)
        start = time.perf_counter()
        pub_s = publish_all(mq, items, args.window)
        end = asyncio.run(wait_in_kafka(bootstrap, len(items)))
        total = end - start
        n = len(items)
        print(f"ingest workers        {args.workers}")
        print(f"messages              {n}")
        print(f"readings per message  {args.readings}")
        print(f"publish (PUBACKed)    {pub_s:.2f} s  {n / pub_s:,.0f} msg/s")
        print(f"end to end in Kafka   {total:.2f} s  {n / total:,.0f} msg/s"
              f"  {n * args.readings / total:,.0f} readings/s")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
        tansu.stop()
        mosq.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
