"""The stream worker as a real process: Tansu in, PostgreSQL and alert transitions out."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ganzhi.contracts import (
    AlertTransition,
    Detection,
    DeviceClass,
    DeviceEvent,
    DeviceStatus,
    KafkaTopic,
    Reading,
    Severity,
    Telemetry,
    TransitionKind,
    kafka_key,
)
from ganzhi.kafka import ensure_topics
from ganzhi.settings import KafkaSettings
from ganzhi.stack.infra import free_port

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.ops_port = int(env["GANZHI_OPS__STREAM"])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.main"], cwd=ROOT, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        return self

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.ops_port}/metrics"
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            return -1.0
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_metric(self, name: str, at_least: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            if self.metric(name) >= at_least:
                return
            time.sleep(0.2)
        raise AssertionError(f"{name} < {at_least} after {timeout}s\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def chilled_rules(folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text("cold_store: {defaults: {variant: chilled}}\n")
    return path


@pytest.fixture
async def worker_env(pg_dsn: str, kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    # Topics first: a producer racing the worker would auto-create them with the
    # broker's default partition count.
    await ensure_topics(KafkaSettings(bootstrap=kafka_bootstrap, partitions=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANZHI_")}
    env.update({
        "GANZHI_KAFKA__BOOTSTRAP": kafka_bootstrap,
        "GANZHI_KAFKA__PARTITIONS": "2",
        "GANZHI_DB__DSN": pg_dsn,
        "GANZHI_STREAM__APP_ID": f"stream-{uuid.uuid4().hex[:6]}",
        "GANZHI_STREAM__DATA_DIR": str(tmp_path / "stream"),
        "GANZHI_STREAM__WEB_PORT": str(free_port()),
        "GANZHI_STREAM__BATCH_WITHIN_S": "0.2",
        # The test's rooms are chilled: a variant is never guessed (docs/rules.md).
        "GANZHI_STREAM__RULES_FILE": str(chilled_rules(tmp_path)),
        "GANZHI_STREAM__COLD_CHAIN__DURATION_S": "300",
        "GANZHI_STREAM__COLD_CHAIN__ALLOWED_LATENESS_S": "60",
        "GANZHI_OPS__STREAM": str(free_port()),
        "GANZHI_LOG_LEVEL": "INFO",
        # A killed worker leaves the group after the session timeout (Faust default 60 s).
        "GANZHI_FAUST_BROKER_SESSION_TIMEOUT": "6",
        "GANZHI_FAUST_BROKER_HEARTBEAT_INTERVAL": "1",
        "GANZHI_FAUST_BROKER_REBALANCE_TIMEOUT": "10",
    })
    return env


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    w = Worker(worker_env, tmp_path / "worker.log").start()
    yield w
    w.kill()


def telemetry(device: str, second: int, value: float) -> Telemetry:
    return Telemetry(
        msg_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{device}/{second}"), site_id="site-a",
        device_id=device, ts=T0 + timedelta(seconds=second),
        device_class=DeviceClass.COLD_STORE,
        readings=[Reading(metric="temperature", value=value, unit="celsius"),
                  Reading(metric="humidity", value=60.0, unit="percent")],
    )


async def produce(bootstrap: str, messages: list[Telemetry]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for m in messages:
            await producer.send(KafkaTopic.TELEMETRY.value, m.model_dump_json().encode(),
                                key=kafka_key(m.site_id, m.device_id))
        await producer.flush()
    finally:
        await producer.stop()


async def transitions(bootstrap: str, rule_prefix: str = "cold_chain.") -> list[AlertTransition]:
    """Every record of the transitions topic so far (up to its end offsets; no consumer
    group: no join to wait for), of some rules: cold-chain ones by default
    (device.offline depends on how long a test runs). Call it once the worker has
    committed the input: it sends a batch's transitions before committing the batch."""
    topic = KafkaTopic.ALERT_TRANSITIONS.value
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: list[AlertTransition] = []
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert parts, "transitions topic unknown to the consumer"
        consumer.assign(parts)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(parts)
        async with asyncio.timeout(30):
            while [await consumer.position(tp) for tp in parts] < [ends[tp] for tp in parts]:
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    got.extend(AlertTransition.model_validate_json(r.value) for r in records)
    finally:
        await consumer.stop()
    return [t for t in got if t.rule_id.startswith(rule_prefix)]


async def committed(bootstrap: str, group: str, want: int, wait_s: float = 30) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(KafkaTopic.TELEMETRY.value, p)
                 for p in consumer.partitions_for_topic(KafkaTopic.TELEMETRY.value) or ()]
        assert parts, "telemetry topic unknown to the consumer"
        total = 0
        async with asyncio.timeout(wait_s):
            while total < want:
                total = sum([await consumer.committed(tp) or 0 for tp in parts])
                await asyncio.sleep(0.3)
    finally:
        await consumer.stop()


def snapshot(dsn: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with psycopg.connect(dsn) as conn:
        readings = conn.execute(
            "SELECT time, device_id, metric, value, msg_id FROM readings"
            " ORDER BY device_id, metric, time").fetchall()
        rollups = conn.execute(
            "SELECT bucket, device_id, metric, count, min, max, mean, last, last_time"
            " FROM rollups_1m_live ORDER BY device_id, metric, bucket").fetchall()
    return readings, rollups


def excursion(device: str, seconds: range, value: float = 10.0) -> list[Telemetry]:
    return [telemetry(device, s, value) for s in seconds]


async def test_pipeline_fires_once_and_replays_change_nothing(
    worker: Worker, kafka_bootstrap: str, pg_dsn: str
) -> None:
    hot = excursion("cs-hot", range(0, 421, 30))  # above 8 °C for 420 s (> 300 s)
    ok = excursion("cs-ok", range(0, 421, 30), 3.0)
    await produce(kafka_bootstrap, hot + ok)
    n_readings = 2 * len(hot + ok)
    await asyncio.to_thread(worker.wait_metric, "ganzhi_stream_readings_written_total",
                            n_readings, 90)
    app_id = worker.env["GANZHI_STREAM__APP_ID"]
    await committed(kafka_bootstrap, app_id, len(hot + ok))

    readings, rollups = snapshot(pg_dsn)
    assert len(readings) == n_readings
    hot_temp = [r for r in rollups if r[1] == "cs-hot" and r[2] == "temperature"]
    assert len(hot_temp) == 8 and all(r[3] == 2 for r in hot_temp[:-1])  # 2 samples/minute
    assert hot_temp[0][4:8] == (10.0, 10.0, 10.0, 10.0)

    got = await transitions(kafka_bootstrap)
    assert [(t.kind, t.device_id) for t in got] == [(TransitionKind.FIRING, "cs-hot")]
    assert got[0].started_at == T0 and got[0].at == T0 + timedelta(seconds=300)

    # Replay everything: nothing new in the database, no second transition.
    await produce(kafka_bootstrap, hot + ok)
    await asyncio.to_thread(worker.wait_metric, "ganzhi_stream_readings_duplicate_total",
                            n_readings, 60)
    await committed(kafka_bootstrap, app_id, 2 * len(hot + ok))
    assert snapshot(pg_dsn) == (readings, rollups)
    assert [t.transition_id for t in await transitions(kafka_bootstrap)] == [
        got[0].transition_id]

    health = json.loads(await asyncio.to_thread(
        lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{worker.ops_port}/healthz", timeout=2).read()))
    assert health["ok"] is True
    assert await asyncio.to_thread(worker.terminate) == 0


@pytest.mark.timeout(420)
async def test_rule_state_survives_kill_9(
    worker_env: dict[str, str], tmp_path: Path, kafka_bootstrap: str
) -> None:
    first = Worker(worker_env, tmp_path / "worker-1.log").start()
    try:
        await produce(kafka_bootstrap, excursion("cs-hot", range(0, 241, 30)))  # pending
        await asyncio.to_thread(first.wait_metric, "ganzhi_stream_readings_written_total",
                                18, 90)
        # Wait until the worker committed past all 9 messages, so what the second worker
        # knows of the pending excursion can only come from the table's changelog.
        await committed(kafka_bootstrap, worker_env["GANZHI_STREAM__APP_ID"], 9)
    finally:
        first.kill()
    assert await transitions(kafka_bootstrap) == []

    second = Worker(worker_env, tmp_path / "worker-2.log").start()
    try:
        await produce(kafka_bootstrap, excursion("cs-hot", range(270, 421, 30)))
        # Rejoining the group after a kill -9 usually takes seconds on Tansu; once, under a
        # loaded machine, it took about 90 s. Wait long enough for that too.
        await asyncio.to_thread(second.wait_metric, "ganzhi_stream_readings_written_total",
                                12, 200)
        await committed(kafka_bootstrap, worker_env["GANZHI_STREAM__APP_ID"], 9 + 6, 60)
        got = await transitions(kafka_bootstrap)
        # Fired at 300 s from the run that began before the crash: state was recovered.
        assert [(t.kind, t.started_at, t.at) for t in got] == [
            (TransitionKind.FIRING, T0, T0 + timedelta(seconds=300))]
        assert await asyncio.to_thread(second.terminate) == 0
    finally:
        second.kill()


async def produce_raw(bootstrap: str, topic: KafkaTopic,
                      messages: list[DeviceStatus] | list[Detection] | list[DeviceEvent]
                      ) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for m in messages:
            await producer.send_and_wait(topic.value, m.model_dump_json().encode(),
                                         key=kafka_key(m.site_id, m.device_id))
    finally:
        await producer.stop()


def set_rules(dsn: str, device_class: str, scope: str, key: str, params: dict[str, object]
              ) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO rule_config (device_class, scope, scope_key, params) VALUES"
            " (%s, %s, %s, %s) ON CONFLICT (device_class, scope, scope_key) DO UPDATE"
            " SET params = EXCLUDED.params, updated_at = now()",
            (device_class, scope, key, json.dumps(params)))


async def wait_for(bootstrap: str, want: Callable[[list[AlertTransition]], bool],
                   wait_s: float, worker: Worker) -> list[AlertTransition]:
    deadline = time.monotonic() + wait_s
    got: list[AlertTransition] = []
    while time.monotonic() < deadline:
        got = await transitions(bootstrap, rule_prefix="")
        if want(got):
            return got
        await asyncio.sleep(0.3)
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
    raise AssertionError(f"not seen in {wait_s}s: {got}\n{worker.tail()}")


def offline(got: list[AlertTransition], device: str) -> list[AlertTransition]:
    return [t for t in got if t.rule_id == "device.offline" and t.device_id == device]


@pytest.mark.timeout(300)
async def test_offline_last_will_camera_findings_and_rules_from_the_database(
    worker_env: dict[str, str], tmp_path: Path, kafka_bootstrap: str, pg_dsn: str
) -> None:
    # A device listed in the rules table that never sends anything.
    await asyncio.to_thread(set_rules, pg_dsn, "device_health", "device", "site-a/ghost",
                            {"expected_interval_s": 2})
    env = {**worker_env, "GANZHI_STREAM__HEALTH_TICK_S": "0.5",
           "GANZHI_STREAM__RULES_POLL_S": "0.5"}
    w = Worker(env, tmp_path / "worker.log").start()
    try:
        got = await wait_for(kafka_bootstrap, lambda g: bool(offline(g, "ghost")), 120, w)
        (fire,) = offline(got, "ghost")
        assert fire.kind is TransitionKind.FIRING and fire.values["reason"] == "silent"

        # Added while running: the worker picks the change up from the table.
        await asyncio.to_thread(set_rules, pg_dsn, "device_health", "device",
                                "site-a/ghost-2", {"expected_interval_s": 1})
        await wait_for(kafka_bootstrap, lambda g: bool(offline(g, "ghost-2")), 60, w)

        # A device that talks, then its last will arrives through the status topic.
        await produce(kafka_bootstrap, [telemetry("cs-will", 0, 3.0)])
        will = DeviceStatus(msg_id=uuid.uuid4(), site_id="site-a", device_id="cs-will",
                            ts=datetime.now(UTC) - timedelta(hours=1), state="offline")
        await asyncio.to_thread(w.wait_metric, "ganzhi_stream_readings_written_total", 2)
        await produce_raw(kafka_bootstrap, KafkaTopic.STATUS, [will])
        got = await wait_for(kafka_bootstrap, lambda g: bool(offline(g, "cs-will")), 60, w)
        (fire,) = offline(got, "cs-will")
        assert fire.values["reason"] == "last_will"

        # A camera finding, raised then cleared, through the detection topic.
        await produce_raw(kafka_bootstrap, KafkaTopic.DETECTION, [
            Detection(msg_id=uuid.uuid4(), site_id="site-a", device_id="cam-1",
                      ts=T0 + timedelta(seconds=s), violation="no_mask", state=state,
                      score=0.9, snapshot_sha256=sha * 64)
            for s, state, sha in ((0, "raised", "a"), (60, "cleared", "b"))])
        got = await wait_for(
            kafka_bootstrap, lambda g: len([t for t in g if t.device_id == "cam-1"]) == 2, 60, w)
        fire, res = [t for t in got if t.device_id == "cam-1"]
        assert (fire.rule_id, fire.kind, res.kind) == (
            "vision.no_mask", TransitionKind.FIRING, TransitionKind.RESOLVED)
        assert res.values["snapshot_sha256"] == "b" * 64

        # Data from the ghost clears its alert.
        await produce(kafka_bootstrap, [telemetry("ghost", 0, 3.0)])
        got = await wait_for(
            kafka_bootstrap,
            lambda g: [t.kind for t in offline(g, "ghost")] == [
                TransitionKind.FIRING, TransitionKind.RESOLVED], 60, w)
        assert await asyncio.to_thread(w.terminate) == 0
    finally:
        w.kill()


def device_event(name: str, second: int, severity: Severity = Severity.INFO,
                 detail: dict[str, object] | None = None) -> DeviceEvent:
    return DeviceEvent(msg_id=uuid.uuid5(uuid.NAMESPACE_URL, f"el-ev/{name}/{second}"),
                       site_id="site-a", device_id="el-ev", ts=T0 + timedelta(seconds=second),
                       event=name, severity=severity, detail=detail or {})


@pytest.mark.timeout(300)
async def test_device_events_become_alerts_and_bad_ones_are_dead_lettered(
    worker: Worker, kafka_bootstrap: str
) -> None:
    def of(got: list[AlertTransition]) -> list[tuple[str, TransitionKind]]:
        return [(t.rule_id, t.kind) for t in got if t.device_id == "el-ev"]

    events = [
        device_event("power_lost", 0, Severity.CRITICAL),
        device_event("alarm_button_pressed", 1, Severity.MAJOR),
        device_event("source_error", 2, Severity.MINOR, {"reason": "modbus_timeout"}),
        device_event("door_forced", 3, Severity.CRITICAL),  # no rule reads it
        device_event("alarm_button_pressed", 20, Severity.MAJOR),  # same alarm episode
        device_event("power_restored", 30),
        device_event("source_recovered", 31, detail={"after": "modbus_timeout"}),
    ]
    await produce_raw(kafka_bootstrap, KafkaTopic.EVENT, events)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(KafkaTopic.EVENT.value, b"{not json",
                                     key=kafka_key("site-a", "el-ev"))
    finally:
        await producer.stop()
    want = [
        ("device.power_lost", TransitionKind.FIRING),
        ("elevator.alarm_button", TransitionKind.FIRING),
        ("device.source_error", TransitionKind.FIRING),
        ("device.power_lost", TransitionKind.RESOLVED),
        ("device.source_error", TransitionKind.RESOLVED),
    ]
    got = await wait_for(kafka_bootstrap, lambda g: len(of(g)) >= len(want), 90, worker)
    assert of(got) == want
    await asyncio.to_thread(worker.wait_metric, "ganzhi_stream_dead_lettered_total", 1, 30)
    await asyncio.to_thread(worker.wait_metric, "ganzhi_stream_events_total", len(events), 30)

    # Telemetry of the elevator past the quiet period (300 s after the last press) ends
    # the alarm episode, at last press + quiet.
    await produce(kafka_bootstrap, [telemetry("el-ev", 400, 3.0)])
    got = await wait_for(kafka_bootstrap, lambda g: len(of(g)) > len(want), 60, worker)
    assert of(got) == [*want, ("elevator.alarm_button", TransitionKind.RESOLVED)]
    (resolved,) = [t for t in got if t.device_id == "el-ev" and
                   t.rule_id == "elevator.alarm_button" and t.kind is TransitionKind.RESOLVED]
    assert resolved.started_at == T0 + timedelta(seconds=1)
    assert resolved.at == T0 + timedelta(seconds=320)
    assert resolved.values["presses"] == 2
    assert await asyncio.to_thread(worker.terminate) == 0


@pytest.mark.timeout(300)
async def test_sigterm_stops_promptly_while_the_database_is_down_and_nothing_is_lost(
    worker_env: dict[str, str], tmp_path: Path, kafka_bootstrap: str
) -> None:
    """The database goes away under a running worker: the worker retries, a SIGTERM stops
    it within seconds anyway, and a new worker stores the batch it left once the
    database is back."""
    from ganzhi.db.migrate import migrate
    from ganzhi.stack.infra import start_postgres

    pg = start_postgres(tmp_path / "pg", fast_unsafe=True)
    migrate(pg.extra["dsn"])
    env = {**worker_env, "GANZHI_DB__DSN": pg.extra["dsn"]}
    first = Worker(env, tmp_path / "worker-1.log").start()
    second: Worker | None = None
    try:
        await produce(kafka_bootstrap, excursion("cs-db", range(0, 61, 30), 3.0))
        await asyncio.to_thread(first.wait_metric, "ganzhi_stream_readings_written_total", 6)
        pg.stop()
        await produce(kafka_bootstrap, excursion("cs-db", range(90, 151, 30), 3.0))
        await asyncio.to_thread(first.wait_metric, "ganzhi_stream_db_errors_total", 1)
        started = time.monotonic()
        assert await asyncio.to_thread(first.terminate, 20) == 0
        assert time.monotonic() - started < 15, "SIGTERM took too long while retrying"
        assert "stopped_with_batch_unacknowledged" in first.log.read_text()

        pg = start_postgres(tmp_path / "pg", port=pg.port, fast_unsafe=True)
        second = Worker(env, tmp_path / "worker-2.log").start()
        await asyncio.to_thread(second.wait_metric, "ganzhi_stream_readings_written_total", 6,
                                120)
        with psycopg.connect(pg.extra["dsn"]) as conn:
            row = conn.execute("SELECT count(*) FROM readings").fetchone()
        assert row is not None and row[0] == 12
        assert await asyncio.to_thread(second.terminate) == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
        pg.stop()


def claims(worker: Worker) -> list[dict[str, object]]:
    """The worker's ``rule_state_claimed`` log records, oldest first."""
    out = []
    for line in worker.log.read_text(errors="replace").splitlines():
        if '"rule_state_claimed"' in line:
            try:
                out.append(json.loads(line[line.index("{"):]))
            except ValueError:
                continue
    return out


def wait_until(what: str, check: Callable[[], bool], timeout: float, *workers: Worker) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout}s: {what}\n"
                         + "\n".join(w.tail()[-2000:] for w in workers))


def device_on(partition: int, prefix: str) -> str:
    from ganzhi.kafka import partition_for

    return next(d for i in range(1000) if partition_for(
        kafka_key("site-a", d := f"{prefix}-{i}"), 2) == partition)


@pytest.mark.timeout(420)
async def test_two_workers_share_the_partitions_and_a_killed_one_hands_over(
    worker_env: dict[str, str], tmp_path: Path, kafka_bootstrap: str, pg_dsn: str
) -> None:
    env = {**worker_env, "GANZHI_STREAM__CHECKPOINT_S": "1"}
    second_env = {**env, "GANZHI_OPS__STREAM": str(free_port()),
                  "GANZHI_STREAM__WEB_PORT": str(free_port()),
                  "GANZHI_STREAM__DATA_DIR": str(tmp_path / "stream-2")}
    a = Worker(env, tmp_path / "a.log").start()
    b = Worker(second_env, tmp_path / "b.log").start()
    hot0, hot1 = device_on(0, "hot"), device_on(1, "hot")
    try:
        wait_until("each worker holds one partition",
                   lambda: all(c and len(c[-1]["partitions"]) == 1  # type: ignore[arg-type]
                               for c in (claims(a), claims(b))), 120, a, b)
        # Both excursions begin (pending: 300 s needed), one on each worker's partition.
        first = excursion(hot0, range(0, 181, 30)) + excursion(hot1, range(0, 181, 30))
        await produce(kafka_bootstrap, first)

        def positions() -> dict[int, int]:
            with psycopg.connect(pg_dsn) as conn:
                rows = conn.execute(
                    "SELECT partition, (offsets->>%s)::int FROM stream_partitions"
                    " WHERE app_id = %s", (KafkaTopic.TELEMETRY.value,
                                           env["GANZHI_STREAM__APP_ID"])).fetchall()
            return {p: o for p, o in rows if o is not None}

        wait_until("both partitions checkpointed past the first messages",
                   lambda: sum(positions().values()) >= len(first), 60, a, b)
        victim, survivor = (a, b) if 0 in claims(a)[-1]["partitions"] else (b, a)  # type: ignore[operator]
        victim.kill()  # kill -9: no revocation, no last checkpoint

        second = excursion(hot0, range(210, 421, 30)) + excursion(hot1, range(210, 421, 30))
        await produce(kafka_bootstrap, second)
        wait_until("the survivor took both partitions and loaded the victim's state",
                   lambda: any(len(c["partitions"]) == 2  # type: ignore[arg-type]
                               and c["states_loaded"] > 0 for c in claims(survivor)),
                   120, survivor)
        n = 2 * len(first + second)  # two readings per message

        def stored() -> int:
            with psycopg.connect(pg_dsn) as conn:
                row = conn.execute("SELECT count(*) FROM readings").fetchone()
            return int(row[0]) if row else 0

        wait_until("every reading stored", lambda: stored() >= n, 120, survivor)
        await committed(kafka_bootstrap, env["GANZHI_STREAM__APP_ID"], len(first + second), 60)
        readings, _ = snapshot(pg_dsn)
        assert len(readings) == n  # none lost, none stored twice
        assert len({(r[1], r[2], r[0]) for r in readings}) == n
        got = await transitions(kafka_bootstrap)
        # Each fired once, at 300 s from the start before the kill: the state of the
        # killed worker's device came from its checkpoint and the records after it.
        assert sorted((t.device_id, t.kind, t.started_at, t.at) for t in got) == sorted(
            (d, TransitionKind.FIRING, T0, T0 + timedelta(seconds=300)) for d in (hot0, hot1))
        assert await asyncio.to_thread(survivor.terminate) == 0
    finally:
        a.kill()
        b.kill()
