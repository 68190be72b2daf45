"""The alerts service end to end on real Tansu (Kafka protocol), PostgreSQL and a receiver."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr

from alerts.consumer import GROUP_ID
from alerts.main import serve
from alerts.receiver import ClueReceiver
from ganzhi.contracts import AlertTransition, KafkaTopic, Severity, TransitionKind, kafka_key
from ganzhi.settings import DatabaseSettings, KafkaSettings, Settings, WebhookSettings

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
SECRET = "service-test-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def transition(kind: TransitionKind, at: datetime) -> AlertTransition:
    return AlertTransition(
        transition_id=f"fp:{kind.value}:{at.isoformat()}",
        kind=kind,
        fingerprint="site-1/fridge-1/cold",
        rule_id="cold_chain.chilled",
        severity=Severity.MAJOR,
        site_id="site-1",
        device_id="fridge-1",
        started_at=T0,
        at=at,
        summary="too warm",
    )


def scalar(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query.encode()).fetchone()
    return row[0] if row else None


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode())


async def dead_letters(bootstrap: str, want: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(KafkaTopic.DEAD_LETTER.value, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id=f"t-{uuid.uuid4().hex}")
    await consumer.start()
    got: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(20):
            while len(got) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(json.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return got


async def committed_total(bootstrap: str) -> int:
    """Sum of the offsets group ganzhi-alerts committed on the transitions topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP_ID)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(KafkaTopic.ALERT_TRANSITIONS.value) or set()
        total = 0
        for p in partitions:
            offset = await consumer.committed(TopicPartition(KafkaTopic.ALERT_TRANSITIONS.value, p))
            total += offset or 0
        return total
    finally:
        await consumer.stop()


async def wait_for(check: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    async with asyncio.timeout(limit_s):
        while not check():  # noqa: ASYNC110 - polls outside state
            await asyncio.sleep(0.1)
    assert check(), what


async def produce(bootstrap: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(
                KafkaTopic.ALERT_TRANSITIONS.value, value, key=kafka_key("site-1", "fridge-1")
            )
    finally:
        await producer.stop()


async def test_consumes_applies_commits_and_delivers(pg_dsn: str, kafka_bootstrap: str) -> None:
    receiver = ClueReceiver(SECRET.encode()).start()
    receiver.fail_next = 1  # one retry on the way
    settings = Settings(
        db=DatabaseSettings(dsn=SecretStr(pg_dsn), pool_max=3),
        kafka=KafkaSettings(bootstrap=kafka_bootstrap, partitions=1),
        webhook=WebhookSettings(
            url=receiver.url,
            secret=SecretStr(SECRET),
            backoff_base_s=0.05,
            backoff_max_s=0.1,
            poll_interval_s=0.05,
        ),
    )
    firing = transition(TransitionKind.FIRING, T0 + timedelta(minutes=10)).model_dump_json()
    resolved = transition(TransitionKind.RESOLVED, T0 + timedelta(minutes=40)).model_dump_json()
    ops_port = free_port()
    try:
        stop = asyncio.Event()
        service = asyncio.create_task(serve(settings, stop, ops_port=ops_port))
        await produce(
            kafka_bootstrap,
            [firing.encode(), b"{broken", firing.encode(), b'{"kind": "firing"}'],
        )
        await wait_for(lambda: len(receiver.accepted) == 1, "the clue delivered")
        health = json.loads(await asyncio.to_thread(fetch, ops_port, "/healthz"))
        assert health["consumer_running"] is True
        metrics = await asyncio.to_thread(fetch, ops_port, "/metrics")
        assert 'ganzhi_alerts_dead_lettered_total{reason="invalid_json"} 1.0' in metrics
        assert 'ganzhi_alerts_dead_lettered_total{reason="invalid_schema"} 1.0' in metrics
        dead = await dead_letters(kafka_bootstrap, 2)
        assert sorted(d["reason"] for d in dead) == ["invalid_json", "invalid_schema"]
        assert {d["stage"] for d in dead} == {"alerts"}
        assert base64.b64decode(dead[0]["payload_b64"]) in (b"{broken", b'{"kind": "firing"}')
        assert ('ganzhi_alerts_clue_deliveries_total{outcome="delivered",receiver="task-system"}'
                in metrics)
        await produce(kafka_bootstrap, [resolved.encode()])
        await wait_for(
            lambda: scalar(pg_dsn, "SELECT count(*) FROM alerts WHERE status='resolved'") == 1,
            "the alert resolved",
        )
        # The task system then hears the clue's second event, under its own key.
        await wait_for(lambda: len(receiver.accepted) == 2, "the resolution delivered")
        # Everything read: no transition waits (ganzhi_alerts_lag_records, per partition).
        metrics = await asyncio.to_thread(fetch, ops_port, "/metrics")
        assert 'ganzhi_alerts_lag_records{partition="0"} 0.0' in metrics
        stop.set()
        await asyncio.wait_for(service, 30)

        assert receiver.deliveries == 3 and receiver.rejected == 0
        created, resolution = receiver.accepted.values()
        assert list(receiver.accepted) == [created["clue_id"],
                                           f"{created['clue_id']}:resolved:1"]
        assert (created["event"], resolution["event"]) == ("created", "resolved")
        assert resolution["clue_id"] == created["clue_id"] and resolution["ended_at"]
        assert scalar(pg_dsn, "SELECT count(*) FROM alerts") == 1
        assert scalar(pg_dsn, "SELECT count(*) FROM alert_events") == 2
        assert scalar(pg_dsn, "SELECT count(*) FROM clue_outbox WHERE status <> 'delivered'"
                      ) == 0

        # Everything consumed was committed: a restart begins after it, nothing re-applied.
        assert await committed_total(kafka_bootstrap) == 5
    finally:
        receiver.stop()


def test_sigterm_while_kafka_is_down_stops_promptly(pg_dsn: str, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from ganzhi.stack.infra import port_open, start_tansu

    kafka = start_tansu(tmp_path)
    ops = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANZHI_")}
    env.update({"GANZHI_DB__DSN": pg_dsn, "GANZHI_KAFKA__BOOTSTRAP": f"{kafka.host}:{kafka.port}",
                "GANZHI_WEBHOOK__SECRET": SECRET, "GANZHI_OPS__ALERTS": str(ops)})
    log = tmp_path / "alerts.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ganzhi.cli", "alerts"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "consumer_started" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
        assert port_open("127.0.0.1", ops)
        kafka.stop()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
        kafka.stop()
