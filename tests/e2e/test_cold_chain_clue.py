"""The walking skeleton end to end, on real parts started by the fixtures.

A simulated fridge publishes over MQTT (Mosquitto) -> ingest -> Kafka (Tansu) -> Faust
stream -> PostgreSQL + alert transitions -> alerts -> signed webhook to a receiver
standing in for the task system. The services run as real subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from alerts.feedback_reporter import FeedbackReporter
from alerts.receiver import ClueReceiver
from ganzhi import apikeys
from ganzhi.contracts import Channel, DeviceClass, KafkaTopic, Reading, Telemetry, new_id
from ganzhi.settings import MqttSettings
from ganzhi.stack.infra import Managed, free_port, port_open

from mqtt_device import SHARE_GROUP, MqttDevice
from waiting import wait_for

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret-0123456789abcdef"
SITE, FRIDGE = "site-e2e", "fridge-01"
# Recent (ingest refuses event times weeks old), on a minute boundary (the rollups).
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
STEP_S = 10
LIMIT_C = 8.0


@dataclass
class Stack:
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]
    api_url: str
    dsn: str
    bootstrap: str
    receiver: ClueReceiver
    mqtt: MqttSettings
    reader: dict[str, str]  # headers of an export key: the API needs a caller

    def get(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(f"{self.api_url}{path}", params=params, headers=self.reader)


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    wait_for(predicate, timeout, what, interval=0.25)


async def _keys(dsn: str) -> tuple[str, str]:
    """The task system's feedback key and a read-only export key."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        _, feedback = await apikeys.create(conn, "e2e-task-system", ["feedback"])
        _, export = await apikeys.create(conn, "e2e-reader", ["export"])
    return feedback, export


@pytest.fixture
def stack(
    mqtt_broker: Managed, kafka_bootstrap: str, pg_dsn: str, tmp_path: Path
) -> Iterator[Stack]:
    ports = {name: free_port() for name in ("ingest", "stream", "alerts", "api", "web")}
    # The stand-in task system reports back on each clue, with its own API key.
    token, export = asyncio.run(_keys(pg_dsn))
    # The fridge is chilled: a cold room's variant is never guessed (docs/rules.md).
    rules = tmp_path / "rules.yaml"
    rules.write_text("cold_store: {defaults: {variant: chilled}}\n")
    feedback = FeedbackReporter(f"http://127.0.0.1:{ports['api']}", token).start()
    receiver = ClueReceiver(SECRET.encode(), feedback=feedback).start()
    env = {
        **os.environ,
        "GANZHI_LOG_JSON": "true",
        "GANZHI_MQTT__HOST": mqtt_broker.host,
        "GANZHI_MQTT__PORT": str(mqtt_broker.port),
        "GANZHI_MQTT__SHARE_GROUP": SHARE_GROUP,
        "GANZHI_KAFKA__BOOTSTRAP": kafka_bootstrap,
        "GANZHI_KAFKA__PARTITIONS": "2",
        "GANZHI_DB__DSN": pg_dsn,
        "GANZHI_WEBHOOK__URL": receiver.url,
        "GANZHI_WEBHOOK__SECRET": SECRET,
        "GANZHI_AUTH__JWT_SECRET": "e2e-jwt-signing-key-0123456789abcdefgh",
        "GANZHI_WEBHOOK__BACKOFF_BASE_S": "0.2",
        "GANZHI_OPS__INGEST": str(ports["ingest"]),
        "GANZHI_OPS__STREAM": str(ports["stream"]),
        "GANZHI_OPS__ALERTS": str(ports["alerts"]),
        "GANZHI_API__PORT": str(ports["api"]),
        "GANZHI_STREAM__WEB_PORT": str(ports["web"]),
        "GANZHI_STREAM__DATA_DIR": str(tmp_path / "stream"),
        "GANZHI_STREAM__RULES_FILE": str(rules),
        "GANZHI_STREAM__COLD_CHAIN__LIMIT_C": str(LIMIT_C),
        "GANZHI_STREAM__COLD_CHAIN__DURATION_S": "120",
        "GANZHI_STREAM__COLD_CHAIN__CLEAR_DURATION_S": "60",
        "GANZHI_STREAM__COLD_CHAIN__ALLOWED_LATENESS_S": "30",
        "GANZHI_STREAM__BATCH_WITHIN_S": "0.2",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("alerts", "stream", "ingest", "api"):
        with (logs / f"{name}.log").open("wb") as out:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "ganzhi.cli", name], env=env,
                stdout=out, stderr=subprocess.STDOUT,
            )
    try:
        for name in ("alerts", "stream", "ingest", "api"):
            _wait(lambda n=name: port_open("127.0.0.1", ports[n]) or procs[n].poll() is not None,
                  60, f"{name} to listen")
            assert procs[name].poll() is None, (logs / f"{name}.log").read_text()[-3000:]
        yield Stack(env, procs, f"http://127.0.0.1:{ports['api']}", pg_dsn, kafka_bootstrap,
                    receiver, MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port),
                    {"Authorization": f"Bearer {export}"})
    finally:
        codes: dict[str, int | str] = {}
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                codes[name] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = "killed"
        receiver.stop()
        feedback.stop()
        for name in procs:
            print(f"--- {name} (exit {codes[name]}) ---")
            print((logs / f"{name}.log").read_text()[-2000:])
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


def fridge_day() -> list[Telemetry]:
    """10 minutes at 10 s: normal, 4 minutes at 12 °C, normal again (device time)."""
    out = []
    for i in range(60):
        temp = 12.0 if 12 <= i < 36 else 3.0
        out.append(
            Telemetry(
                msg_id=new_id(), site_id=SITE, device_id=FRIDGE,
                ts=T0 + timedelta(seconds=STEP_S * i), device_class=DeviceClass.COLD_STORE,
                readings=[
                    Reading(metric="temperature", value=temp, unit="celsius"),
                    Reading(metric="door_open", value=0.0, unit="bool"),
                ],
            )
        )
    return out


def _publish(stack: Stack, messages: list[Telemetry], raw: tuple[bytes, ...] = ()) -> None:
    pub = MqttDevice(stack.mqtt, SITE, FRIDGE)
    assert pub.wait_connected()
    try:
        for m in messages:
            assert pub.publish(Channel.TELEMETRY, m)
        for payload in raw:
            assert pub.publish_raw(Channel.TELEMETRY, payload)
    finally:
        pub.close()


def _scalar(dsn: str, query: str, *args: object) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, args).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None


async def _dead_letters(bootstrap: str, want: int) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(
        KafkaTopic.DEAD_LETTER.value, bootstrap_servers=bootstrap,
        auto_offset_reset="earliest", group_id=f"e2e-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    got: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < want:
                batch = await consumer.getmany(timeout_ms=500)
                got.extend(json.loads(r.value) for rs in batch.values() for r in rs)
        return got
    finally:
        await consumer.stop()


async def _caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """Consumer group ``group`` has committed every record of ``topic`` sent so far."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(parts)
        committed = [await consumer.committed(tp) or 0 for tp in parts]
        return bool(parts) and all(c >= ends[tp] for c, tp in zip(committed, parts, strict=True))
    finally:
        await consumer.stop()


def test_excursion_becomes_one_signed_clue_and_replays_change_nothing(stack: Stack) -> None:
    day = fridge_day()
    malformed = b'{"kind": "telemetry", "msg_id": "not-a-uuid"}'
    _publish(stack, day[:30], raw=(malformed,))
    _publish(stack, day[30:])
    n_rows = 2 * len(day)

    _wait(lambda: len(stack.receiver.accepted) >= 1, 90, "the clue at the task system")
    _wait(
        lambda: _scalar(stack.dsn, "SELECT count(*) FROM alerts WHERE status='resolved'") == 1,
        60, "the alert to resolve",
    )
    _wait(lambda: len(stack.receiver.accepted) == 2, 30, "the clue's resolution")
    _wait(lambda: _scalar(stack.dsn, "SELECT count(*) FROM readings") == n_rows, 30, "readings")

    # One alert, started at the first reading above the limit (event time, not arrival).
    with psycopg.connect(stack.dsn) as conn:
        alerts = conn.execute(
            "SELECT id, rule_id, site_id, device_id, started_at, ended_at FROM alerts"
        ).fetchall()
    assert len(alerts) == 1
    alert_id, rule_id, site, device, started_at, ended_at = alerts[0]
    assert (site, device) == (SITE, FRIDGE)
    assert rule_id.startswith("cold_chain")
    assert started_at == T0 + timedelta(seconds=12 * STEP_S)
    assert ended_at is not None and ended_at > T0 + timedelta(seconds=36 * STEP_S)

    # One clue, signed, carrying that alert: created, then resolved (same clue id).
    clue, resolution = stack.receiver.accepted.values()
    assert clue["alert_id"] == alert_id and clue["device_id"] == FRIDGE
    assert (clue["event"], resolution["event"]) == ("created", "resolved")
    assert resolution["clue_id"] == clue["clue_id"] and resolution["ended_at"]
    assert stack.receiver.rejected == 0

    # Readings and one-minute rollups are stored.
    assert _scalar(
        stack.dsn, "SELECT count(*) FROM rollups_1m_live WHERE metric='temperature'") == 10
    peak_minute = T0 + timedelta(minutes=3)
    assert _scalar(
        stack.dsn,
        "SELECT mean FROM rollups_1m_live WHERE metric='temperature' AND bucket=%s",
        peak_minute,
    ) == pytest.approx(12.0)

    # The API shows it.
    body = stack.get("/api/v1/alerts", site_id=SITE).json()
    items = body["items"] if isinstance(body, dict) else body
    assert [a["id"] for a in items] == [alert_id]

    # The malformed message is in the dead-letter topic, with its reason.
    dead = asyncio.run(_dead_letters(stack.bootstrap, 1))
    assert [d["reason"] for d in dead] == ["invalid_schema"]
    assert "msg_id" in str(dead[0]["error"])

    # Publishing the same messages again changes nothing. A fresh reading sent after the
    # replay (same device, so same partition and order) tells when it has gone through.
    events_before = _scalar(stack.dsn, "SELECT count(*) FROM alert_events")
    sentinel = Telemetry(
        msg_id=new_id(), site_id=SITE, device_id=FRIDGE, ts=T0 + timedelta(minutes=11),
        device_class=DeviceClass.COLD_STORE,
        readings=[Reading(metric="temperature", value=3.0, unit="celsius")],
    )
    _publish(stack, [*day, sentinel])
    _wait(lambda: _scalar(stack.dsn, "SELECT count(*) FROM readings") == n_rows + 1, 60,
          "the sentinel reading")
    # Once the stream has committed every telemetry record (its transitions are sent
    # before that), the alerts service every transition, and the outbox is drained, any
    # (wrong) extra alert or delivery would show.
    _wait(lambda: asyncio.run(_caught_up(stack.bootstrap, "ganzhi-stream",
                                         KafkaTopic.TELEMETRY.value)), 60, "stream caught up")
    _wait(lambda: asyncio.run(_caught_up(stack.bootstrap, "ganzhi-alerts",
                                         KafkaTopic.ALERT_TRANSITIONS.value)), 60,
          "alerts caught up")
    _wait(lambda: _scalar(stack.dsn, "SELECT count(*) FROM clue_outbox WHERE status <> "
                                     "'delivered'") == 0, 30, "the outbox drained")
    assert _scalar(stack.dsn, "SELECT count(*) FROM alerts") == 1
    assert _scalar(stack.dsn, "SELECT count(*) FROM alert_events") == events_before
    assert _scalar(stack.dsn, "SELECT count(*) FROM clue_outbox") == 2
    assert len(stack.receiver.accepted) == 2
    assert stack.receiver.deliveries == 2

    # The task system reported back on its task: the incident's history shows it, and
    # the supervision office's figures count it.
    incident_id = clue["incident_id"]
    _wait(lambda: _scalar(stack.dsn, "SELECT task_status FROM incidents WHERE id = %s",
                          incident_id) == "closed", 30, "the task system's feedback")
    detail = stack.get(f"/api/v1/incidents/{incident_id}").json()
    feedback = [h for h in detail["history"] if h["action"].startswith("feedback.")]
    assert [h["action"] for h in feedback] == [
        "feedback.accepted", "feedback.dispatched", "feedback.rectified", "feedback.closed"]
    assert {h["actor"] for h in feedback} == {"key:e2e-task-system"}
    figures = stack.get("/api/v1/stats/handling", group_by="site").json()["items"]
    [row] = [r for r in figures if r["key"] == SITE]
    assert row["incidents"] == 1 and row["close_median_s"] is not None
