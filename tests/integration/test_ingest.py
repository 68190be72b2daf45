"""Ingest against a real Mosquitto and a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from ganzhi.contracts import Channel, DeviceClass, KafkaTopic, Reading, Telemetry, new_id
from ganzhi.settings import IngestSettings, KafkaSettings, MqttSettings, Settings
from ganzhi.stack.infra import Managed, free_port
from ingest.bridge import Bridge

from mqtt_device import SHARE_GROUP, MqttDevice, service_mqtt
from waiting import healthz, wait_for

pytestmark = pytest.mark.integration
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _settings(mqtt: Managed, bootstrap: str, worker: str = "ingest-t") -> Settings:
    return Settings(
        mqtt=service_mqtt(mqtt.host, mqtt.port),
        kafka=KafkaSettings(bootstrap=bootstrap, partitions=2),
        ingest=IngestSettings(worker_id=worker),
    )


def _reading(device: str, i: int) -> Telemetry:
    return Telemetry(
        msg_id=new_id(), site_id="site-a", device_id=device,
        ts=T0 + timedelta(seconds=i),
        device_class=DeviceClass.COLD_STORE,
        readings=[Reading(metric="temperature", value=3.0 + i / 100, unit="celsius")],
    )


async def _consume(bootstrap: str, topic: str, want: int, wait_s: float = 30) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        group_id=f"t-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(wait_s):
            while len(got) < want:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    got.extend(r.value for r in records)
        # Anything beyond what we expect would be a duplicate: give it a moment to show.
        extra = await consumer.getmany(timeout_ms=1000)
        for records in extra.values():
            got.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return got


async def _consume_ids(bootstrap: str, topic: str, want: set[str], wait_s: float = 60
                       ) -> list[str]:
    """The ``msg_id`` of every record read until each of ``want`` has been seen (or
    ``wait_s`` passed), then a moment more for duplicates. Counting distinct ids, not
    records: a duplicate must not end the wait before the last message is read."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        group_id=f"t-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    got: list[str] = []
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + wait_s
        while not want <= set(got) and loop.time() < end:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(json.loads(r.value)["msg_id"] for r in records if r.value)
        for records in (await consumer.getmany(timeout_ms=1000)).values():
            got.extend(json.loads(r.value)["msg_id"] for r in records if r.value)
    finally:
        await consumer.stop()
    return got


@pytest.fixture
async def bridge(mqtt_broker: Managed, kafka_bootstrap: str) -> AsyncIterator[Bridge]:
    from ganzhi.kafka import ensure_topics

    settings = _settings(mqtt_broker, kafka_bootstrap)
    await ensure_topics(KafkaSettings(bootstrap=kafka_bootstrap, partitions=2))
    b = Bridge(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(b.run(stop))
    await asyncio.wait_for(b.wait_subscribed(), 10)  # SUBACK: the broker routes to us now
    yield b
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_valid_messages_reach_kafka_and_bad_ones_dead_letter(
    bridge: Bridge, mqtt_broker: Managed, kafka_bootstrap: str
) -> None:
    pub = MqttDevice(MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port),
                     "site-a", "fridge-1")
    assert pub.wait_connected()
    sent = [_reading("fridge-1", i) for i in range(20)]
    for i, msg in enumerate(sent):
        assert await asyncio.to_thread(pub.publish, Channel.TELEMETRY, msg)
        if i == 10:
            assert await asyncio.to_thread(pub.publish_raw, Channel.TELEMETRY, b"{not json")
            bad = json.loads(_reading("fridge-1", 99).model_dump_json())
            bad["readings"][0]["value"] = "hot"
            assert await asyncio.to_thread(
                pub.publish_raw, Channel.TELEMETRY, json.dumps(bad).encode()
            )
            spoof = _reading("fridge-2", 98)  # another device's payload on fridge-1's topic
            assert await asyncio.to_thread(pub.publish, Channel.TELEMETRY, spoof)
    pub.close()

    good = await _consume(kafka_bootstrap, KafkaTopic.TELEMETRY, 20)
    got_ids = [json.loads(v)["msg_id"] for v in good]
    assert got_ids == [str(m.msg_id) for m in sent]  # all, once, in order (one device key)

    dead = await _consume(kafka_bootstrap, KafkaTopic.DEAD_LETTER, 3)
    reasons = sorted(json.loads(v)["reason"] for v in dead)
    assert reasons == ["identity_mismatch", "invalid_json", "invalid_schema"]
    errors = " ".join(json.loads(v)["error"] for v in dead)
    assert "readings.0.value" in errors


def _ingest_proc(mqtt: Managed, bootstrap: str, ops_port: int, worker: str = "ingest-kill",
                 *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GANZHI_MQTT__HOST": mqtt.host,
        "GANZHI_MQTT__PORT": str(mqtt.port),
        "GANZHI_KAFKA__BOOTSTRAP": bootstrap,
        "GANZHI_KAFKA__PARTITIONS": "2",
        "GANZHI_INGEST__WORKER_ID": worker,
        "GANZHI_MQTT__SHARE_GROUP": SHARE_GROUP,
        "GANZHI_OPS__INGEST": str(ops_port),
    }
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "ganzhi.cli", "ingest", *args], env=env,
        stdout=out, stderr=subprocess.STDOUT,
    )


async def test_messages_wait_while_ingest_is_down_and_survive_kill(
    mqtt_broker: Managed, kafka_bootstrap: str
) -> None:
    """kill -9 mid-stream, publish while it is down, restart: every message arrives."""
    ops = free_port()
    proc = _ingest_proc(mqtt_broker, kafka_bootstrap, ops)
    pub = MqttDevice(MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port),
                     "site-a", "fridge-9")
    assert pub.wait_connected()
    # The worker's subscription is in the broker (its session persists from here).
    await asyncio.to_thread(wait_for, lambda: healthz(ops).get("subscribed"), 30,
                            "ingest to subscribe")
    sent = [_reading("fridge-9", i) for i in range(300)]
    for i, msg in enumerate(sent):
        if i == 100:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        if i == 200:
            proc = _ingest_proc(mqtt_broker, kafka_bootstrap, ops)
        assert await asyncio.to_thread(pub.publish, Channel.TELEMETRY, msg)
    pub.close()
    try:
        ids = await _consume_ids(kafka_bootstrap, KafkaTopic.TELEMETRY,
                                 {str(m.msg_id) for m in sent})
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    # At least once: none lost. Duplicates are allowed only for messages in flight at the kill.
    assert set(ids) == {str(m.msg_id) for m in sent}
    assert len(ids) - len(set(ids)) <= 100


async def test_sigterm_while_kafka_is_down_stops_promptly_and_loses_nothing(
    mqtt_broker: Managed, tmp_path: Path
) -> None:
    """Kafka goes away under ingest: the message in hand is retried, a SIGTERM still
    stops ingest within seconds, and the unacknowledged message waits in the broker for
    the next ingest."""
    from ganzhi.kafka import ensure_topics
    from ganzhi.stack.infra import start_tansu

    kafka = start_tansu(tmp_path)
    bootstrap = f"{kafka.host}:{kafka.port}"
    await ensure_topics(KafkaSettings(bootstrap=bootstrap, partitions=2))
    ops = free_port()
    proc = _ingest_proc(mqtt_broker, bootstrap, ops)
    pub = MqttDevice(MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port),
                     "site-a", "fridge-7")
    try:
        assert pub.wait_connected()
        await asyncio.to_thread(wait_for, lambda: healthz(ops).get("subscribed"), 30,
                                "ingest to subscribe")
        kafka.stop()
        msg = _reading("fridge-7", 1)
        assert await asyncio.to_thread(pub.publish, Channel.TELEMETRY, msg)
        await asyncio.sleep(1)  # ingest has it and is retrying the produce
        started = asyncio.get_running_loop().time()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        assert asyncio.get_running_loop().time() - started < 15

        kafka = start_tansu(tmp_path, port=kafka.port)
        await ensure_topics(KafkaSettings(bootstrap=bootstrap, partitions=2))
        proc = _ingest_proc(mqtt_broker, bootstrap, ops)
        values = await _consume(bootstrap, KafkaTopic.TELEMETRY, 1, wait_s=60)
        assert [json.loads(v)["msg_id"] for v in values] == [str(msg.msg_id)]
    finally:
        pub.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        kafka.stop()


async def test_scaling_down_a_worker_loses_nothing(
    mqtt_broker: Managed, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Two workers share the subscription. One is stopped for good: the broker keeps
    queueing its share for its session. ``ganzhi ingest --leave`` with its worker id
    forwards that share and ends the session; from then on the other worker gets it all."""
    ops_a, ops_b = free_port(), free_port()
    a = _ingest_proc(mqtt_broker, kafka_bootstrap, ops_a, "ingest-a")
    b = _ingest_proc(mqtt_broker, kafka_bootstrap, ops_b, "ingest-b")
    pub = MqttDevice(MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port),
                     "site-a", "fridge-7")
    assert pub.wait_connected()
    leaver: subprocess.Popen[bytes] | None = None
    try:
        for ops in (ops_a, ops_b):
            await asyncio.to_thread(wait_for, lambda o=ops: healthz(o).get("subscribed"), 30,
                                    "both workers to subscribe")
        sent = [_reading("fridge-7", i) for i in range(400)]
        for msg in sent[:100]:
            assert await asyncio.to_thread(pub.publish, Channel.TELEMETRY, msg)
        b.send_signal(signal.SIGTERM)  # scaled down: not started again
        assert b.wait(15) == 0
        for msg in sent[100:300]:
            assert await asyncio.to_thread(pub.publish, Channel.TELEMETRY, msg)
        # The stopped worker's share waits in its session: not in Kafka.
        early = await _consume_for(kafka_bootstrap, KafkaTopic.TELEMETRY, 4.0)
        assert 100 <= len({json.loads(v)["msg_id"] for v in early}) < 300
        log = tmp_path / "leave.log"
        leaver = _ingest_proc(mqtt_broker, kafka_bootstrap, free_port(), "ingest-b",
                              "--leave", log=log)
        assert await asyncio.to_thread(leaver.wait, 60) == 0, log.read_text()[-2000:]
        assert "ingest_left" in log.read_text()
        # From now on the remaining worker takes everything.
        for msg in sent[300:]:
            assert await asyncio.to_thread(pub.publish, Channel.TELEMETRY, msg)
        ids = await _consume_ids(kafka_bootstrap, KafkaTopic.TELEMETRY,
                                 {str(m.msg_id) for m in sent})
        assert set(ids) == {str(m.msg_id) for m in sent}  # nothing lost
        # At least once: a message can reach Kafka twice (an acknowledgement still on its
        # way at a stop, a publisher's retry); the sinks drop the copies by msg_id.
        assert len(ids) - len(set(ids)) <= 50
    finally:
        pub.close()
        for p in (a, b, leaver):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(15)


async def _consume_for(bootstrap: str, topic: str, seconds: float) -> list[bytes]:
    """Whatever the topic holds after ``seconds`` of reading from its start."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest",
                                group_id=f"t-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    got: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                got.extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return got
