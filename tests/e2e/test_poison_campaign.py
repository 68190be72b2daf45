"""A bad-input campaign on the running system: every poison class, mixed with a steady
stream of valid messages from other devices, through the real services on loopback.

Afterwards: every valid message is stored exactly once and its alert raised and
delivered, every bad one is in the dead-letter topic with the right reason (ingest's,
the stream worker's or the alerts service's), and no service exited. The counts are
printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ganzhi.contracts import (
    Channel,
    DeviceClass,
    KafkaTopic,
    Reading,
    Telemetry,
    kafka_key,
    mqtt_topic,
    new_id,
)
from ganzhi.db.migrate import migrate
from ganzhi.kafka import ensure_topics
from ganzhi.settings import KafkaSettings, MqttSettings
from ganzhi.stack.system import Ports, Secrets, Stack

from mqtt_device import MqttDevice
from waiting import wait_for

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW.replace(second=0) - timedelta(minutes=40)
GOOD = [("site-g", f"room-{i}") for i in range(1, 4)] + [("site-h", "room-1")]  # same id
STEP = timedelta(seconds=10)
PER_DEVICE = 150


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Stack]:
    # The rooms are chilled: a variant is never guessed (docs/rules.md).
    rules = tmp_path / "rules.yaml"
    rules.write_text("cold_store: {defaults: {variant: chilled}}\n")
    stack = Stack(tmp_path / "stack", Ports.choose(), Secrets.generate(), fast_unsafe=True,
                  extra_env={"GANZHI_STREAM__RULES_FILE": str(rules),
                             "GANZHI_STREAM__COLD_CHAIN__DURATION_S": "60",
                             "GANZHI_STREAM__COLD_CHAIN__CLEAR_DURATION_S": "60",
                             "GANZHI_STREAM__BATCH_WITHIN_S": "0.2",
                             "GANZHI_WEBHOOK__POLL_INTERVAL_S": "0.2"})
    try:
        stack.start_infrastructure()
        migrate(stack.dsn)
        asyncio.run(ensure_topics(KafkaSettings(bootstrap=stack.bootstrap, partitions=2)))
        for name in ("receiver", "api", "alerts", "stream", "ingest"):
            stack.start_service(name)
        yield stack
    finally:
        codes = stack.stop()
        for name in stack.services:
            print(f"--- {name} ---\n{stack.tail(name, 1500)}")
        assert all(code == 0 for code in codes.values()), f"unclean stop: {codes}"


def good_messages(site: str, device: str) -> list[Telemetry]:
    """Normal, then 3 minutes at 12 °C (one cold-chain alert), then normal again."""
    out = []
    for i in range(PER_DEVICE):
        temp = 12.0 if (site, device) == GOOD[0] and 40 <= i < 58 else 3.0 + (i % 5) / 10
        out.append(Telemetry(
            msg_id=new_id(), site_id=site, device_id=device, ts=T0 + STEP * i,
            device_class=DeviceClass.COLD_STORE,
            readings=[Reading(metric="temperature", value=temp, unit="celsius"),
                      Reading(metric="door_open", value=0, unit="bool")]))
    return out


def _envelope(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"msg_id": new_id(), "site_id": "site-p", "device_id": "bad-1",
                            "ts": NOW.isoformat(), "device_class": "cold_store",
                            "readings": [{"metric": "temperature", "value": 3.1,
                                          "unit": "celsius"}]}
    body.update(over)
    return body


def _j(body: Any) -> bytes:
    return json.dumps(body).encode()


def poison() -> list[tuple[str, bytes, str]]:
    """(MQTT topic, payload, the dead letter's reason) of one message per poison class."""
    tel = mqtt_topic("site-p", "bad-1", Channel.TELEMETRY)
    det = mqtt_topic("site-p", "bad-1", Channel.DETECTION)
    sts = mqtt_topic("site-p", "bad-1", Channel.STATUS)
    evt = mqtt_topic("site-p", "bad-1", Channel.EVENT)
    evi = mqtt_topic("site-p", "bad-1", Channel.EVIDENCE)
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 64
    base = {k: v for k, v in _envelope().items() if k in ("site_id", "device_id")}
    return [
        (tel, bytes(range(256)) * 4, "invalid_json"),  # binary garbage
        (tel, _j(_envelope())[:40], "invalid_json"),  # truncated
        (tel, b"[" * 100_000, "invalid_json"),  # deeper than any parser's stack
        (tel, b"1" * 5000, "invalid_json"),  # an integer of 5,000 digits
        (tel, json.dumps(_envelope()).encode("utf-16"), "invalid_json"),  # wrong encoding
        (tel, b'{"site_id": "site-p", "site_id": "site-g"}', "duplicate_key"),
        (tel, _j(_envelope(readings=[{"metric": "t", "value": 1, "unit": "c\u0000"}])),
         "invalid_schema"),  # NUL: PostgreSQL would refuse it
        (tel, _j(_envelope(readings=[{"metric": "t", "value": 1, "unit": "c",
                                      "ts": (NOW - timedelta(seconds=i)).isoformat()}
                                     for i in range(5000)])), "invalid_schema"),  # huge array
        (tel, _j(_envelope(schema_version=2)), "unsupported_schema_version"),
        (tel, _j(_envelope(site_id="site-g", device_id="room-1")), "identity_mismatch"),
        (tel, _j(_envelope(kind="status")), "kind_mismatch"),
        (tel, _j(_envelope(ts="0001-01-01T00:00:00+01:00")), "invalid_schema"),
        (tel, _j(_envelope(ts=(NOW + timedelta(days=3650)).isoformat())), "ts_in_future"),
        (tel, _j(_envelope(ts=(NOW - timedelta(days=400)).isoformat())), "ts_too_old"),
        (det, _j({**base, "msg_id": new_id(), "ts": NOW.isoformat(), "violation": "made_up",
                  "state": "raised", "score": 0.9}), "invalid_schema"),
        (sts, _j({**base, "msg_id": new_id(), "ts": NOW.isoformat(), "state": "online",
                  "report_period_s": 1e300}), "invalid_schema"),
        (evt, _j({**base, "msg_id": new_id(), "ts": NOW.isoformat(), "event": "power_lost",
                  "detail": {"blob": "x" * 2_000_000}}), "invalid_schema"),
        (evi, _j({**base, "msg_id": new_id(), "ts": NOW.isoformat(),
                  "sha256": hashlib.sha256(b"GIF89a").hexdigest(),
                  "data_b64": base64.b64encode(b"GIF89a").decode()}), "invalid_evidence"),
        (evi, _j({**base, "msg_id": new_id(), "ts": NOW.isoformat(), "sha256": "0" * 64,
                  "data_b64": base64.b64encode(jpeg).decode()}), "evidence_hash_mismatch"),
        (mqtt_topic("site-p", "bad-1", Channel.TELEMETRY).replace("telemetry", "nope"),
         _j(_envelope()), "bad_topic"),
        (tel, b"x" * (8 * 1024 * 1024 + 10), "too_large"),
    ]


def kafka_poison() -> list[tuple[str, bytes, str, str]]:
    """(Kafka topic, value, stage, reason): a producer that bypassed ingest."""
    future = Telemetry(msg_id=new_id(), site_id="site-p", device_id="bad-2",
                       ts=NOW + timedelta(days=30), device_class=DeviceClass.COLD_STORE,
                       readings=[Reading(metric="temperature", value=3, unit="celsius")])
    return [
        (KafkaTopic.TELEMETRY.value, b"\x00\x01 not json", "stream", "invalid_json"),
        (KafkaTopic.TELEMETRY.value, _j({"kind": "telemetry"}), "stream", "invalid_schema"),
        (KafkaTopic.TELEMETRY.value, future.model_dump_json().encode(), "stream",
         "ts_in_future"),
        (KafkaTopic.STATUS.value, b"{garbage", "stream", "invalid_json"),
        (KafkaTopic.DETECTION.value, _j({"violation": "made_up"}), "stream", "invalid_schema"),
        (KafkaTopic.ALERT_TRANSITIONS.value, b"{garbage", "alerts", "invalid_json"),
        (KafkaTopic.ALERT_TRANSITIONS.value, _j({"kind": "firing"}), "alerts",
         "invalid_schema"),
    ]


async def produce(bootstrap: str, records: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, value in records:
            await producer.send_and_wait(topic, value, key=kafka_key("site-p", "bad-2"))
    finally:
        await producer.stop()


async def dead_letters(bootstrap: str, want: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(KafkaTopic.DEAD_LETTER.value, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id=f"t-{uuid.uuid4().hex}",
                                fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    got: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(90):
            while len(got) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(json.loads(r.value) for r in records)
        for records in (await consumer.getmany(timeout_ms=1000)).values():  # any extra
            got.extend(json.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return got


def scalar(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query.encode()).fetchone()
        return row[0] if row else None


def test_poison_is_dead_lettered_and_valid_data_flows(system: Stack) -> None:
    mqtt = MqttSettings(host="127.0.0.1", port=system.ports.mqtt)
    good = {dev: good_messages(*dev) for dev in GOOD}
    bad, bypassing = poison(), kafka_poison()
    devices = {dev: MqttDevice(mqtt, *dev) for dev in GOOD}
    hostile = MqttDevice(mqtt, "site-p", "bad-1", status=False)
    try:
        for d in [*devices.values(), hostile]:
            assert d.wait_connected()
        for i in range(PER_DEVICE):  # valid traffic throughout, poison in between
            for dev, pub in devices.items():
                assert pub.publish(Channel.TELEMETRY, good[dev][i])
            if i % 6 == 0 and i // 6 < len(bad):
                topic, payload, _ = bad[i // 6]
                assert hostile.publish_to(topic, payload, timeout=30)
        asyncio.run(produce(system.bootstrap, [(t, v) for t, v, _, _ in bypassing]))
    finally:
        for d in [*devices.values(), hostile]:
            d.close()

    n_good = sum(len(m) for m in good.values())
    dsn = system.dsn
    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM readings") >= 2 * n_good, 120,
             "every valid reading stored")
    expected = [(reason, "ingest", payload) for _, payload, reason in bad] + [
        (reason, stage, value) for _, value, stage, reason in bypassing]
    dead = asyncio.run(dead_letters(system.bootstrap, len(expected)))

    # Every valid message stored exactly once; nothing of the poison stored.
    assert scalar(dsn, "SELECT count(*) FROM readings") == 2 * n_good
    assert scalar(dsn, "SELECT count(DISTINCT msg_id) FROM readings") == n_good
    assert scalar(dsn, "SELECT count(*) FROM readings WHERE site_id = 'site-p'") == 0
    # Two sites with the same device id keep apart.
    assert scalar(dsn, "SELECT count(DISTINCT (site_id, device_id)) FROM rollups_1m_live") == 4

    # Every bad one dead-lettered once, by the right service, for the right reason.
    got = Counter((d["reason"], d["stage"], base64.b64decode(d["payload_b64"])) for d in dead)
    want = Counter((r, s, p[:512 * 1024]) for r, s, p in expected)
    assert got == want, (got - want, want - got)

    # The valid device's excursion became one alert and one clue, created and resolved.
    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM clue_outbox WHERE status = 'delivered'")
             == 2, 60, "the clue delivered")
    assert scalar(dsn, "SELECT count(*) FROM alerts WHERE rule_id LIKE 'cold_chain%'") == 1
    assert scalar(dsn, "SELECT site_id || '/' || device_id FROM alerts") == "site-g/room-1"

    # No service restarted on the way (the fixture checks that each stops cleanly).
    assert all(svc.alive() and svc.restarts == 0 for svc in system.services.values())
    by_reason = Counter(f"{d['stage']}:{d['reason']}" for d in dead)
    print(f"\ncampaign: {n_good} valid messages stored once ({2 * n_good} readings), "
          f"{len(dead)} dead letters:")
    for key, count in sorted(by_reason.items()):
        print(f"  {key:<40} {count}")
