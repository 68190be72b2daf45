"""The MQTT -> Kafka bridge.

paho's network thread hands each QoS 1 message to the asyncio loop; the loop produces a
batch to Kafka, waits until Kafka has every record, and only then acknowledges the batch
to the broker, in the order received. A crash before the acknowledgement means the
broker delivers the message again (persistent session), so nothing is lost; Kafka may
see a message twice, which every sink absorbs by ``msg_id``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaProducer
from paho.mqtt.reasoncodes import ReasonCode

from ganzhi.contracts import Evidence, EvidenceRef, KafkaTopic, shared_subscription
from ganzhi.evidence import make_store
from ganzhi.mqtt import make_client, session_properties
from ganzhi.observability import get_logger
from ganzhi.settings import Settings
from ingest import metrics
from ingest.validate import Accepted, route

log = get_logger("ingest")


@dataclass(frozen=True)
class Inbound:
    mid: int
    qos: int
    topic: str
    payload: bytes


class Bridge:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # paho's thread appends here and wakes the loop only when it may be asleep: one
        # wake-up per message cost a sixth of the worker's CPU. The broker's receive
        # maximum bounds how much can pile up (nothing here is acknowledged yet).
        self._inbox: deque[Inbound] = deque()
        self._inbox_lock = threading.Lock()
        self._wake_scheduled = False
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: AIOKafkaProducer | None = None
        self._evidence = make_store(settings.evidence)
        self._subscribed = asyncio.Event()
        self.connected = False
        self.client = make_client(
            settings.mqtt, f"ganzhi-{settings.ingest.worker_id}", manual_ack=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # --- paho callbacks (network thread) -----------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any = None
    ) -> None:
        if rc.is_failure:
            log.error("mqtt_connect_refused", reason=str(rc))
            return
        self.connected = True
        metrics.MQTT_CONNECTED.set(1)
        sub = shared_subscription(self._settings.mqtt.share_group)
        client.subscribe(sub, qos=1)
        log.info("mqtt_connected", subscription=sub)
        if self._loop:
            self._loop.call_soon_threadsafe(self._subscribed.set)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any = None
    ) -> None:
        self.connected = False
        metrics.MQTT_CONNECTED.set(0)
        log.warning("mqtt_disconnected", reason=str(rc))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        item = Inbound(msg.mid, msg.qos, msg.topic, bytes(msg.payload))
        with self._inbox_lock:
            self._inbox.append(item)
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._wake.set)

    # --- asyncio side -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        kafka = self._settings.kafka
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap,
            acks="all",
            linger_ms=kafka.linger_ms,
            enable_idempotence=False,  # Tansu cannot; sinks are idempotent instead
            request_timeout_ms=30000,
        )
        await self._producer.start()
        mq = self._settings.mqtt
        self.client.connect_async(
            mq.host, mq.port, keepalive=mq.keepalive_s, clean_start=False,
            properties=session_properties(mq.session_expiry_s, mq.receive_maximum),
        )
        self.client.loop_start()
        try:
            while not stop.is_set():
                batch = await self._next_batch(stop)
                if batch:
                    await self._forward(batch)
        finally:
            # Unacknowledged messages stay in the broker's session for the next start.
            self.client.disconnect()
            self.client.loop_stop()
            await self._producer.stop()
            metrics.MQTT_CONNECTED.set(0)

    async def wait_subscribed(self) -> None:
        await self._subscribed.wait()

    async def _next_batch(self, stop: asyncio.Event) -> list[Inbound]:
        while not stop.is_set():
            with self._inbox_lock:
                if self._inbox:
                    n = min(len(self._inbox), self._settings.ingest.batch_max)
                    return [self._inbox.popleft() for _ in range(n)]
                self._wake_scheduled = False
                self._wake.clear()
            waker = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waker, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            stopper.cancel()
        return []

    async def _forward(self, batch: list[Inbound]) -> None:
        assert self._producer is not None
        started = time.perf_counter()
        records: list[tuple[str, bytes, bytes]] = []
        for item in batch:
            metrics.RECEIVED.inc()
            decision = route(item.topic, item.payload)
            if isinstance(decision, Accepted):
                value = decision.value
                if decision.blob is not None:
                    value = await self._store_evidence(decision)
                records.append((decision.kafka_topic, decision.key, value))
                metrics.ACCEPTED.labels(channel=item.topic.rsplit("/", 1)[-1]).inc()
            else:
                dl = decision.dead_letter
                records.append(
                    (KafkaTopic.DEAD_LETTER.value, item.topic.encode(),
                     dl.model_dump_json().encode())
                )
                metrics.DEAD_LETTERED.labels(reason=dl.reason).inc()
                log.warning("dead_letter", topic=item.topic, reason=dl.reason, error=dl.error)
        await self._produce_all(records)
        for item in batch:  # in the order received, as MQTT requires
            self.client.ack(item.mid, item.qos)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.FORWARDED.inc(len(batch))

    async def _store_evidence(self, decision: Accepted) -> bytes:
        """Store the snapshot (retrying until it is stored: nothing is acknowledged before);
        the evidence topic gets a reference, not the bytes (Kafka's 1 MB message limit)."""
        msg, blob = decision.message, decision.blob
        assert isinstance(msg, Evidence) and blob is not None
        delay = 0.5
        while True:
            try:
                key = await asyncio.to_thread(self._evidence.put, msg.sha256, blob)
                break
            except OSError as exc:
                metrics.EVIDENCE_ERRORS.inc()
                log.error("evidence_store_failed", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        metrics.EVIDENCE_STORED.inc()
        metrics.EVIDENCE_BYTES.inc(len(blob))
        ref = EvidenceRef(msg_id=msg.msg_id, site_id=msg.site_id, device_id=msg.device_id,
                          ts=msg.ts, sha256=msg.sha256, size=len(blob), storage_key=key)
        return ref.model_dump_json().encode()

    async def _produce_all(self, records: list[tuple[str, bytes, bytes]]) -> None:
        """Keep trying until Kafka has every record: acknowledging earlier would lose them."""
        assert self._producer is not None
        delay = 0.5
        while True:
            try:
                futures = [
                    await self._producer.send(topic, value=value, key=key)
                    for topic, key, value in records
                ]
                await asyncio.gather(*futures)
                return
            except Exception as exc:
                metrics.KAFKA_ERRORS.inc()
                log.error("kafka_produce_failed", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
