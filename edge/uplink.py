"""One device's MQTT connection: drains its spooled messages to the broker, in order.

Each device connects with its own credentials (client id = ``{site}/{device}``), a retained
``offline`` status as its last will, and publishes a retained ``online`` status on every
connect. Spooled messages go out at QoS 1 in ``seq`` order through a bounded in-flight
window; a PUBACK deletes the message from the spool. A lost connection forgets what was
in flight and, after reconnecting (exponential backoff with full jitter, so a site's
devices do not reconnect in lockstep), publishes everything still in the spool again
from the oldest: a message whose PUBACK was lost may arrive twice, and consumers drop
the repeat by ``msg_id``. A PUBACK saying "no matching subscribers" is not a delivery:
nobody took the message (Mosquitto does not restore the platform's shared subscription
after a restart until ingest reconnects), so it stays in the spool, and once every
message in flight has its answer and a backoff has passed, sending starts again from
the oldest. Each connection is a fresh paho client with ``clean_start``, so
neither the broker nor paho resends anything on its own (a reused paho client resends
its unacknowledged QoS 1 messages after reconnecting, whatever ``clean_start`` says):
the spool is the one source of truth.

The backoff starts over only after the broker accepted the login (CONNACK), so a refused
password or a broker that accepts TCP and then fails backs off like an unreachable one.

Runs in its own thread with paho's ``loop()`` driven by hand, so callbacks, publishing
and acknowledging all happen in that thread. PUBACKs of one loop turn are deleted from
the spool in one transaction.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge import metrics
from edge.spool import Spool
from ganzhi.contracts import Channel, DeviceStatus, mqtt_topic, new_id, utcnow
from ganzhi.failures import RetryPolicy
from ganzhi.observability import get_logger

log = get_logger("edge.uplink")
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT v5 PUBACK reason code


@dataclass(frozen=True)
class BrokerEndpoint:
    host: str
    port: int
    keepalive_s: int = 30
    tls: bool = False
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


class DeviceUplink:
    def __init__(
        self,
        spool: Spool,
        broker: BrokerEndpoint,
        site_id: str,
        device_id: str,
        username: str | None,
        password: str | None,
        *,
        window: int = 100,
        backoff: RetryPolicy | None = None,
        report_period_s: float | None = None,
    ) -> None:
        self.spool = spool
        self.broker = broker
        self.site_id, self.device_id = site_id, device_id
        self.username, self._password = username, password
        self.window = window
        self.report_period_s = report_period_s
        self.backoff = backoff or RetryPolicy(base_s=0.5, max_s=60.0)
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, int] = {}  # mid -> spool seq
        self._acked: list[int] = []  # spool seqs acknowledged in this loop turn
        self._last_sent = 0
        self._rewind_at: float | None = None  # after "no matching subscribers": resend then
        self._unrouted = 0  # such answers in a row (the backoff grows with them)
        self._accepted = False  # the broker accepted this connection (CONNACK success)
        self._thread = threading.Thread(target=self._run, name=f"uplink-{device_id}", daemon=True)
        self.client = self._new_client()

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            # site and device: two sites may use the same device id on one broker.
            CallbackAPIVersion.VERSION2, client_id=f"{self.site_id}/{self.device_id}",
            protocol=mqtt.MQTTv5
        )
        if self.username:
            client.username_pw_set(self.username, self._password)
        b = self.broker
        if b.tls:
            client.tls_set(
                ca_certs=str(b.ca_file) if b.ca_file else None,
                certfile=str(b.client_cert) if b.client_cert else None,
                keyfile=str(b.client_key) if b.client_key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.max_inflight_messages_set(self.window)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        return client

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> DeviceUplink:
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the thread to drain briefly, say ``offline`` and disconnect; don't wait."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _status(self, state: str) -> bytes:
        return DeviceStatus(
            msg_id=new_id(), site_id=self.site_id, device_id=self.device_id,
            ts=utcnow(), state="online" if state == "online" else "offline",
            report_period_s=self.report_period_s,
        ).model_dump_json().encode()

    @property
    def status_topic(self) -> str:
        return mqtt_topic(self.site_id, self.device_id, Channel.STATUS)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self._accepted = False
            try:
                if self._connect_once():
                    self._serve()
            except Exception:  # a bug or a disk error must not end this device's uplink
                log.exception("uplink_failed", device=self.device_id)
                self._acked = []  # not acked: sent again, deduped upstream
                self._lost()
            if self._stop.is_set():
                break
            if self._accepted:
                attempt = 0
            metrics.RECONNECTS.labels(device=self.device_id).inc()
            wait = self.backoff.delay(attempt + 1)
            attempt += 1
            log.info("reconnecting", device=self.device_id, in_s=round(wait, 2))
            self._stop.wait(wait)

    def _connect_once(self) -> bool:
        self.client = self._new_client()
        try:
            self.client.connect(
                self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s,
                clean_start=True,
            )
        except (OSError, ssl.SSLError) as exc:
            log.warning("connect_failed", device=self.device_id, error=str(exc))
            return False
        return True

    def _loop(self, timeout: float) -> MQTTErrorCode:
        rc = self.client.loop(timeout=timeout)
        self._flush_acks()
        return rc

    def _serve(self) -> None:
        """Drive paho and the spool until the connection ends or stop is asked."""
        while True:
            rc = self._loop(0.05)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if self._stop.is_set():
                self._drain_briefly()
                # A clean DISCONNECT: the broker does not publish the will, so say it.
                info = self.client.publish(
                    self.status_topic, self._status("offline"), 1, retain=True
                )
                for _ in range(20):
                    if info.is_published():
                        break
                    self._loop(0.05)
                self.client.disconnect()
                self._loop(0.1)
                break
            if self.connected.is_set():
                self._pump()
        self._lost()

    def _drain_briefly(self, seconds: float = 3.0) -> None:
        """On stop: send what the spool still holds, for a bounded time; the rest waits
        in the spool for the next start."""
        for _ in range(int(seconds / 0.05)):
            if not self.connected.is_set():
                return
            self._pump()
            if not self._inflight and not self.spool.pending(self.device_id, 0, 1):
                return
            if self._loop(0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return

    def _lost(self) -> None:
        if self.connected.is_set():
            log.warning("connection_lost", device=self.device_id, in_flight=len(self._inflight))
        self.connected.clear()
        metrics.CONNECTED.labels(device=self.device_id).set(0)
        self._flush_acks()
        self._inflight.clear()
        self._last_sent = 0  # resend every pending message, oldest first

    # --- publishing -----------------------------------------------------------------------

    def _pump(self) -> None:
        if self._rewind_at is not None:
            if self._inflight or time.monotonic() < self._rewind_at:
                return
            self._rewind_at = None
            self._last_sent = 0  # the unrouted ones are the oldest still in the spool
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        for msg in self.spool.pending(self.device_id, self._last_sent, room):
            info = self.client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return  # connection went away; _serve notices on the next loop
            self._inflight[info.mid] = msg.seq
            self._last_sent = msg.seq
            metrics.SENT.labels(device=self.device_id).inc()

    def _flush_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self.spool.ack_many(acked)
            metrics.ACKED.labels(device=self.device_id).inc(len(acked))

    # --- paho callbacks (this thread) -----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            log.error("connect_refused", device=self.device_id, reason=str(rc))
            client.disconnect()
            return
        self._accepted = True
        self._inflight.clear()
        self._last_sent = 0
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        self.connected.set()
        metrics.CONNECTED.labels(device=self.device_id).set(1)
        log.info("connected", device=self.device_id, pending=self.spool.depth())

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None
    ) -> None:
        self.connected.clear()
        metrics.CONNECTED.labels(device=self.device_id).set(0)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return  # a status message, not from the spool
        if rc is not None and getattr(rc, "is_failure", False):
            metrics.PUBLISH_REFUSED.labels(device=self.device_id).inc()
            log.error("publish_refused", device=self.device_id, seq=seq, reason=str(rc))
            return  # stays in the spool; sent again after the next reconnect
        if rc is not None and getattr(rc, "value", 0) == NO_MATCHING_SUBSCRIBERS:
            # Nobody took it (the platform's subscription is not there: a broker that
            # restarted before ingest came back). Keep it; send again from the oldest
            # once every message in flight has its answer, after a backoff.
            metrics.PUBLISH_UNROUTED.labels(device=self.device_id).inc()
            if self._rewind_at is None:
                self._unrouted += 1
                self._rewind_at = time.monotonic() + self.backoff.delay(self._unrouted)
                log.warning("publish_unrouted", device=self.device_id, seq=seq,
                            retry_in_s=round(self._rewind_at - time.monotonic(), 2))
            return
        self._unrouted = 0
        self._acked.append(seq)
