"""Kafka over mutual TLS, with the clients the services build (``ganzhi.kafka``).

The embedded broker (Tansu 0.6.0) cannot serve TLS itself (its ``--cert`` and ``--key``
options refuse each other), so TLS is terminated by a proxy in front of it, as a load
balancer or a sidecar would: the broker advertises the proxy's address, and every
connection of the clients, bootstrap and partition leaders alike, is TLS with the
proxy's certificate checked against the platform's CA and the client's certificate
required. The stream worker (Faust, its admin and producer) runs over it end to end;
clients without the right CA, without a certificate or without TLS are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import trustme
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from ganzhi.contracts import DeviceClass, KafkaTopic, Reading, Telemetry, kafka_key
from ganzhi.kafka import client_options, ensure_topics
from ganzhi.settings import KafkaSettings
from ganzhi.stack.infra import Managed, free_port, start_tansu

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class TlsProxy:
    """TLS in front of a plain TCP port, requiring a client certificate from ``ca``; in a
    thread of its own (its event loop keeps serving while a test blocks)."""

    def __init__(self, target: int, port: int, server_ctx: ssl.SSLContext) -> None:
        self.target, self.port, self._ctx = target, port, server_ctx
        self.accepted = 0
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TlsProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self._ctx,
            ssl_handshake_timeout=5))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, ssl.SSLError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            with contextlib.suppress(OSError, RuntimeError):
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class TlsKafka:
    bootstrap: str  # the proxy
    ca: Path
    cert: Path  # a client certificate of the platform's CA
    key: Path
    dir: Path

    def settings(self, **kw: object) -> KafkaSettings:
        base: dict[str, object] = {
            "bootstrap": self.bootstrap, "partitions": 2, "security_protocol": "SSL",
            "ssl_cafile": self.ca, "ssl_certfile": self.cert, "ssl_keyfile": self.key}
        base.update(kw)
        return KafkaSettings.model_validate(base)


@pytest.fixture
def tls_kafka(tmp_path: Path) -> Iterator[TlsKafka]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("ganzhi-stream")
    d = tmp_path / "tls"
    d.mkdir()
    ca.cert_pem.write_to_path(str(d / "ca.crt"))
    client.cert_chain_pems[0].write_to_path(str(d / "client.crt"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(ctx)
    ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    proxy_port = free_port()
    broker: Managed = start_tansu(tmp_path, advertised=f"127.0.0.1:{proxy_port}")
    proxy = TlsProxy(broker.port, proxy_port, ctx).start()
    try:
        yield TlsKafka(f"127.0.0.1:{proxy_port}", d / "ca.crt", d / "client.crt",
                       d / "client.key", d)
    finally:
        proxy.stop()
        broker.stop()


async def roundtrip(k: KafkaSettings, topic: str) -> bytes:
    producer = AIOKafkaProducer(**client_options(k), acks="all", request_timeout_ms=10000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over tls", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**client_options(k), auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        async with asyncio.timeout(20):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    return bytes(records[0].value or b"")
    finally:
        await consumer.stop()


async def test_the_services_clients_work_over_mutual_tls(tls_kafka: TlsKafka) -> None:
    k = tls_kafka.settings()
    await ensure_topics(k)  # the admin client, over TLS
    assert await roundtrip(k, KafkaTopic.DEAD_LETTER.value) == b"over tls"


async def refused(k: KafkaSettings) -> None:
    producer = AIOKafkaProducer(**client_options(k), request_timeout_ms=3000)
    try:
        with pytest.raises(KafkaConnectionError):
            async with asyncio.timeout(30):
                await producer.start()
    finally:
        await producer.stop()


async def test_clients_without_the_platforms_credentials_are_refused(
        tls_kafka: TlsKafka) -> None:
    # No client certificate: the proxy (the broker's TLS) refuses the handshake.
    await refused(tls_kafka.settings(ssl_certfile=None, ssl_keyfile=None))
    # A broker certificate from another CA: the client refuses it.
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tls_kafka.dir / "other-ca.crt"))
    await refused(tls_kafka.settings(ssl_cafile=tls_kafka.dir / "other-ca.crt"))
    # A client certificate from another CA: refused too.
    stranger = other.issue_cert("intruder")
    stranger.cert_chain_pems[0].write_to_path(str(tls_kafka.dir / "intruder.crt"))
    stranger.private_key_pem.write_to_path(str(tls_kafka.dir / "intruder.key"))
    await refused(tls_kafka.settings(ssl_certfile=tls_kafka.dir / "intruder.crt",
                                     ssl_keyfile=tls_kafka.dir / "intruder.key"))
    # Plain Kafka protocol on the TLS port.
    await refused(KafkaSettings(bootstrap=tls_kafka.bootstrap))


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "stream.main"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def test_the_stream_worker_runs_over_mutual_tls(tls_kafka: TlsKafka, pg_dsn: str,
                                                      tmp_path: Path) -> None:
    """Faust's consumer and producer, the worker's admin calls and topic set-up: readings
    stored and a transition sent with the settings a deployment would set."""
    k = tls_kafka.settings()
    await ensure_topics(k)
    rules = tmp_path / "rules.yaml"
    rules.write_text("cold_store: {defaults: {variant: chilled}}\n")
    ops = free_port()
    env = {key: v for key, v in os.environ.items() if not key.startswith("GANZHI_")}
    env.update({
        "GANZHI_KAFKA__BOOTSTRAP": tls_kafka.bootstrap,
        "GANZHI_KAFKA__PARTITIONS": "2",
        "GANZHI_KAFKA__SECURITY_PROTOCOL": "SSL",
        "GANZHI_KAFKA__SSL_CAFILE": str(tls_kafka.ca),
        "GANZHI_KAFKA__SSL_CERTFILE": str(tls_kafka.cert),
        "GANZHI_KAFKA__SSL_KEYFILE": str(tls_kafka.key),
        "GANZHI_DB__DSN": pg_dsn,
        "GANZHI_STREAM__APP_ID": f"stream-{uuid.uuid4().hex[:6]}",
        "GANZHI_STREAM__DATA_DIR": str(tmp_path / "stream"),
        "GANZHI_STREAM__WEB_PORT": str(free_port()),
        "GANZHI_STREAM__BATCH_WITHIN_S": "0.2",
        "GANZHI_STREAM__RULES_FILE": str(rules),
        "GANZHI_STREAM__COLD_CHAIN__DURATION_S": "60",
        "GANZHI_OPS__STREAM": str(ops),
    })
    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    msgs = [Telemetry(msg_id=uuid.uuid4(), site_id="site-a", device_id="cs-tls",
                      ts=t0 + timedelta(seconds=s), device_class=DeviceClass.COLD_STORE,
                      readings=[Reading(metric="temperature", value=11.0, unit="celsius")])
            for s in range(0, 181, 30)]
    log = tmp_path / "worker.log"
    proc = start_worker(env, log)
    try:
        producer = AIOKafkaProducer(**client_options(k))
        await producer.start()
        try:
            for m in msgs:
                await producer.send(KafkaTopic.TELEMETRY.value, m.model_dump_json().encode(),
                                    key=kafka_key(m.site_id, m.device_id))
            await producer.flush()
        finally:
            await producer.stop()
        async with asyncio.timeout(90):
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                with psycopg.connect(pg_dsn) as conn:
                    row = conn.execute("SELECT count(*) FROM readings WHERE device_id = "
                                       "'cs-tls'").fetchone()
                if row and row[0] == len(msgs):
                    break
                await asyncio.sleep(0.5)
        consumer = AIOKafkaConsumer(KafkaTopic.ALERT_TRANSITIONS.value, **client_options(k),
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        try:
            fired: list[str] = []
            async with asyncio.timeout(30):
                while not fired:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        fired += [r.value.decode() for r in records if r.value
                                  and b"cold_chain.temperature_high" in r.value]
        finally:
            await consumer.stop()
        assert '"kind":"firing"' in fired[0]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()[-3000:]
