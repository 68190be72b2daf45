"""The alerts service killed with kill -9 between commit and delivery still delivers once.

The transition is consumed and committed (incident and clue event in the outbox, offset
committed); the process dies while its POST is in flight: the receiver took the clue but
the outbox never heard back. After a restart the claim's lease runs out, the event is
sent again under the same Idempotency-Key, and the receiver absorbs the repeat.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from alerts.receiver import ClueReceiver
from ganzhi.contracts import AlertTransition, KafkaTopic, Severity, kafka_key

from alerting import FIRING, SECRET, T0, tr

pytestmark = pytest.mark.integration


def until(cond: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def produce_transitions(bootstrap: str, transitions: list[AlertTransition]) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for t in transitions:
                await producer.send_and_wait(KafkaTopic.ALERT_TRANSITIONS.value,
                                             t.model_dump_json().encode(),
                                             key=kafka_key(t.site_id, t.device_id))
        finally:
            await producer.stop()

    asyncio.run(go())


def outbox(dsn: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(dsn) as conn:
        return [(r[0], r[1], int(r[2])) for r in conn.execute(
            "SELECT idempotency_key, status, attempts FROM clue_outbox ORDER BY id")]


def test_kill_9_between_commit_and_delivery_still_delivers_once(
        pg_dsn: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    receiver = ClueReceiver(SECRET.encode()).start()
    receiver.reply_delay_s = 30.0  # takes the clue, answers too late for the first process
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANZHI_")}
    env.update({"GANZHI_DB__DSN": pg_dsn, "GANZHI_KAFKA__BOOTSTRAP": kafka_bootstrap,
                "GANZHI_WEBHOOK__SECRET": SECRET, "GANZHI_WEBHOOK__URL": receiver.url,
                "GANZHI_WEBHOOK__TIMEOUT_S": "2", "GANZHI_WEBHOOK__BACKOFF_MAX_S": "1",
                "GANZHI_OPS__ALERTS": "0", "GANZHI_ALERTS__INSTANCE_ID": ""})

    def start(name: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{name}.log").open("wb") as out:
            return subprocess.Popen([sys.executable, "-m", "ganzhi.cli", "alerts"], env=env,
                                    stdout=out, stderr=subprocess.STDOUT)

    first = start("first")
    second: subprocess.Popen[bytes] | None = None
    try:
        produce_transitions(kafka_bootstrap, [
            tr(FIRING, "elevator.trapped_not_at_level", start=T0, device="lift-1",
               severity=Severity.CRITICAL)])
        until(lambda: receiver.deliveries == 1, "the first process posted the clue")
        [(key, status, attempts)] = outbox(pg_dsn)
        assert (status, attempts) == ("pending", 1)  # committed, sent, not marked
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        receiver.reply_delay_s = 0.0
        second = start("second")
        until(lambda: outbox(pg_dsn)[0][1] == "delivered", "redelivered after the lease")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        receiver.stop()
    assert list(receiver.accepted) == [key]  # once, by key
    assert receiver.deliveries == 2  # the repeat was absorbed
    assert outbox(pg_dsn) == [(key, "delivered", 2)]
