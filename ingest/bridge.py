"""The MQTT -> Kafka bridge.

paho's network thread hands each QoS 1 message to the asyncio loop; the loop produces a
batch to Kafka, waits until Kafka has every record, and only then acknowledges the batch
to the broker, in the order received. A crash before the acknowledgement means the
broker delivers the message again (persistent session), so nothing is lost; Kafka may
see a message twice, which every sink absorbs by ``msg_id``.

Scaling down (``leave``): the broker keeps assigning a share of the shared subscription
to a worker's session while the worker is stopped, and queues it there until the worker
comes back (so a restart loses nothing). A worker that is to go for good is stopped and
then run once with ``leave``: it takes its session over, unsubscribes (no new share),
forwards what was queued for it, and ends the session once nothing more arrives.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaProducer
from paho.mqtt.reasoncodes import ReasonCode

from ganzhi.contracts import (
    DeadLetter,
    Evidence,
    EvidenceRef,
    KafkaTopic,
    shared_subscription,
    utcnow,
)
from ganzhi.contracts.dead_letters import make_dead_letter
from ganzhi.evidence import make_store
from ganzhi.failures import (
    RetryPolicy,
    Stopped,
    close_within,
    is_record_too_large,
    retry_transient,
    unless_stopped,
)
from ganzhi.kafka import client_options
from ganzhi.mqtt import end_session_properties, make_client, session_properties
from ganzhi.observability import get_logger
from ganzhi.settings import Settings, share_group
from ingest import metrics
from ingest.validate import Accepted, Limits, Rejected, route

log = get_logger("ingest")
RETRY = RetryPolicy(base_s=0.5, max_s=10.0)


@dataclass(slots=True)  # one per message, made on paho's thread: kept cheap (not frozen)
class Inbound:
    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    value: bytes


class Bridge:
    def __init__(self, settings: Settings, *, leave: bool = False,
                 leave_idle_s: float = 2.0) -> None:
        self._settings = settings
        self._leave = leave
        self._leave_idle_s = leave_idle_s
        self._unsubscribed = asyncio.Event()
        self.forwarded = 0  # messages acknowledged to the broker
        self._share_group = share_group(settings.mqtt)  # refuses a missing or default one
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
        self._stop: asyncio.Event | None = None
        t = settings.event_time
        self._limits = Limits(max_ts_age=timedelta(seconds=t.max_age_s),
                              max_ts_ahead=timedelta(seconds=t.max_ahead_s),
                              max_record_bytes=settings.kafka.max_record_bytes)
        self.connected = False
        self.subscribed = False
        self.client = make_client(
            settings.mqtt, f"ganzhi-{settings.ingest.worker_id}", manual_ack=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe

    # --- paho callbacks (network thread) -----------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any = None
    ) -> None:
        if rc.is_failure:
            log.error("mqtt_connect_refused", reason=str(rc))
            return
        self.connected = True
        metrics.MQTT_CONNECTED.set(1)
        client.subscribe(shared_subscription(self._share_group), qos=1)
        log.info("mqtt_connected")

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode],
                      _p: Any = None) -> None:
        if any(rc.is_failure for rc in codes):
            log.error("mqtt_subscribe_refused", reasons=[str(rc) for rc in codes])
            return
        self.subscribed = True  # the broker keeps messages for this session from here
        log.info("mqtt_subscribed")
        if self._loop:
            self._loop.call_soon_threadsafe(self._subscribed.set)
        if self._leave:  # no new share from here; what is queued still comes
            self.client.unsubscribe(shared_subscription(self._share_group))

    def _on_unsubscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode],
                        _p: Any = None) -> None:
        log.info("mqtt_unsubscribed", reasons=[str(rc) for rc in codes])
        if self._loop:
            self._loop.call_soon_threadsafe(self._unsubscribed.set)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any = None
    ) -> None:
        self.connected = self.subscribed = False
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
        """Forward until ``stop``; the batch in hand is finished or, while Kafka is down,
        left unacknowledged in the broker's session."""
        self._loop = asyncio.get_running_loop()
        self._stop = stop
        kafka = self._settings.kafka
        self._producer = AIOKafkaProducer(
            **client_options(kafka),
            acks="all",
            # Not kafka.linger_ms: a batch is handed over whole and then awaited, so
            # lingering only delays it, and cost 60% more CPU per record here
            # (docs/performance.md, "Ingest").
            linger_ms=0,
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
        left = False
        try:
            while not stop.is_set():
                batch = await self._next_batch(stop, self._leave_idle_s if self._leave
                                               else None)
                if batch:
                    await self._forward(batch)
                elif self._leave and self._unsubscribed.is_set() and not stop.is_set():
                    left = True  # nothing more queued for this session
                    break
        except Stopped:
            log.warning("stopped_with_batch_unacknowledged",
                        detail="the broker delivers it again at the next start")
        finally:
            if left:
                # Everything queued was forwarded: end the session (expiry 0), so the
                # broker keeps nothing more for this worker id.
                self.client.disconnect(properties=end_session_properties())
                log.info("ingest_left", worker=self._settings.ingest.worker_id,
                         forwarded=self.forwarded)
            else:
                # Unacknowledged messages stay in the broker's session for the next start.
                self.client.disconnect()
            self.client.loop_stop()
            # Bounded: with Kafka down, a flush would wait for its request timeout, and
            # nothing unacknowledged needs it (the broker keeps those messages).
            await close_within(5.0, self._producer.stop)
            metrics.MQTT_CONNECTED.set(0)

    async def wait_subscribed(self) -> None:
        await self._subscribed.wait()

    async def _next_batch(self, stop: asyncio.Event, idle_s: float | None = None
                          ) -> list[Inbound]:
        """The next messages received; [] when stopped or after ``idle_s`` without any."""
        while not stop.is_set():
            with self._inbox_lock:
                if self._inbox:
                    n = min(len(self._inbox), self._settings.ingest.batch_max)
                    return [self._inbox.popleft() for _ in range(n)]
                self._wake_scheduled = False
                self._wake.clear()
            waker = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({waker, stopper}, timeout=idle_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            stopper.cancel()
            if not done:
                return []  # idle_s passed without a message
        return []

    async def _forward(self, batch: list[Inbound]) -> None:
        """Route, produce and then acknowledge one batch. Raises :class:`Stopped` (nothing
        acknowledged) when asked to stop while Kafka or the evidence store is down."""
        assert self._producer is not None
        started = time.perf_counter()
        records: list[Record] = []
        received_at = utcnow()
        accepted: Counter[str] = Counter()
        metrics.RECEIVED.inc(len(batch))
        for item in batch:
            decision = route(item.topic, item.payload, received_at=received_at,
                             limits=self._limits)
            if isinstance(decision, Accepted) and decision.blob is not None:
                decision = await self._store_evidence(decision, item)
            if isinstance(decision, Accepted):
                records.append(Record(decision.kafka_topic, decision.key, decision.value))
                accepted[item.topic.rsplit("/", 1)[-1]] += 1
            else:
                records.append(self._dead_letter_record(item.topic, decision.dead_letter))
        await self._produce_all(records)
        for channel, n in accepted.items():  # counted once Kafka has them
            metrics.ACCEPTED.labels(channel=channel).inc(n)
        for item in batch:  # in the order received, as MQTT requires
            self.client.ack(item.mid, item.qos)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.FORWARDED.inc(len(batch))
        self.forwarded += len(batch)

    @staticmethod
    def _dead_letter_record(topic: str, dl: DeadLetter) -> Record:
        metrics.DEAD_LETTERED.labels(reason=dl.reason).inc()
        log.warning("dead_letter", topic=topic[:200], reason=dl.reason, error=dl.error[:300])
        return Record(KafkaTopic.DEAD_LETTER.value, topic.encode(),
                      dl.model_dump_json().encode())

    async def _store_evidence(self, decision: Accepted, item: Inbound) -> Accepted | Rejected:
        """Store the snapshot (retrying while the store is down: nothing is acknowledged
        before); the evidence topic gets a reference, not the bytes (Kafka's 1 MB limit)."""
        msg, blob = decision.message, decision.blob
        assert isinstance(msg, Evidence) and blob is not None

        def failed(exc: BaseException, attempt: int, delay: float) -> None:
            metrics.EVIDENCE_ERRORS.inc()
            log.error("evidence_store_failed", error=repr(exc)[:300], attempt=attempt,
                      retry_in_s=round(delay, 2))

        try:
            key = await retry_transient(
                lambda: asyncio.to_thread(self._evidence.put, msg.sha256, blob),
                policy=RETRY, stop=self._stop, on_retry=failed)
        except (Stopped, asyncio.CancelledError):
            raise
        except Exception as exc:  # permanent: the store refuses these bytes
            return Rejected(make_dead_letter(item.topic, item.payload, "invalid_evidence",
                                        f"evidence store refused it: {exc}"))
        metrics.EVIDENCE_STORED.inc()
        metrics.EVIDENCE_BYTES.inc(len(blob))
        ref = EvidenceRef(msg_id=msg.msg_id, site_id=msg.site_id, device_id=msg.device_id,
                          ts=msg.ts, sha256=msg.sha256, size=len(blob), storage_key=key)
        return replace(decision, value=ref.model_dump_json().encode(), blob=None)

    async def _produce_all(self, records: list[Record]) -> None:
        """Until Kafka has every record (acknowledging earlier would lose them). A record
        Kafka refuses for its size is replaced by its dead letter; on any transient error
        the whole batch is sent again, in order (duplicates are absorbed by ``msg_id``)."""
        assert self._producer is not None
        producer = self._producer

        async def send(i: int) -> Any:  # the delivery future
            r = records[i]
            try:
                return await producer.send(r.topic, value=r.value, key=r.key)
            except Exception as exc:  # aiokafka checks the size before sending
                if not is_record_too_large(exc):
                    raise
                records[i] = r = self._too_large(r, exc)
                return await producer.send(r.topic, value=r.value, key=r.key)

        async def once() -> None:
            futures = [await send(i) for i in range(len(records))]
            results = await unless_stopped(
                asyncio.gather(*futures, return_exceptions=True), self._stop)
            for i, res in enumerate(results):
                if isinstance(res, BaseException) and is_record_too_large(res):
                    records[i] = self._too_large(records[i], res)  # the broker's own limit
                    await (await send(i))
            for res in results:
                if isinstance(res, BaseException) and not is_record_too_large(res):
                    raise res

        def failed(exc: BaseException, attempt: int, delay: float) -> None:
            metrics.KAFKA_ERRORS.inc()
            log.error("kafka_produce_failed", error=repr(exc)[:300], attempt=attempt,
                      retry_in_s=round(delay, 2))

        await retry_transient(once, policy=RETRY, stop=self._stop, on_retry=failed)

    def _too_large(self, r: Record, exc: BaseException) -> Record:
        dl = make_dead_letter(r.key.decode(errors="replace"), r.value, "too_large_for_kafka",
                         f"{r.topic}: {type(exc).__name__}: {exc}")
        return self._dead_letter_record(r.topic, dl)
