"""One device's MQTT connection: drains its spooled messages to the broker, in order.

Each device connects with its own credentials (client id = device id), a retained
``offline`` status as its last will, and publishes a retained ``online`` status on every
connect. Spooled messages go out at QoS 1 in ``seq`` order through a bounded in-flight
window; a PUBACK deletes the message from the spool. A lost connection forgets what was
in flight and, after reconnecting (exponential backoff with full jitter, so a site's
devices do not reconnect in lockstep), publishes everything still in the spool again
from the oldest: a message whose PUBACK was lost may arrive twice, and consumers drop
the repeat by ``msg_id``. ``clean_start`` is used so the broker and paho never resend on
their own: the spool is the one source of truth.

Runs in its own thread with paho's ``loop()`` driven by hand, so callbacks, publishing
and acknowledging all happen in that thread.
"""

from __future__ import annotations

import random
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge import metrics
from edge.spool import Spool
from ganzhi.contracts import Channel, DeviceStatus, mqtt_topic, new_id, utcnow
from ganzhi.observability import get_logger

log = get_logger("edge.uplink")


@dataclass(frozen=True)
class BrokerEndpoint:
    host: str
    port: int
    keepalive_s: int = 30
    tls: bool = False
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.5
    max_s: float = 60.0

    def delay(self, attempt: int, rand: float) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        return float(rand * min(self.max_s, self.base_s * 2.0 ** min(attempt, 30)))


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
        backoff: Backoff | None = None,
    ) -> None:
        self.spool = spool
        self.broker = broker
        self.site_id, self.device_id = site_id, device_id
        self.window = window
        self.backoff = backoff or Backoff()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, int] = {}  # mid -> spool seq
        self._last_sent = 0
        self._thread = threading.Thread(target=self._run, name=f"uplink-{device_id}", daemon=True)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
        )
        if username:
            self.client.username_pw_set(username, password)
        if broker.tls:
            self.client.tls_set(
                ca_certs=str(broker.ca_file) if broker.ca_file else None,
                certfile=str(broker.client_cert) if broker.client_cert else None,
                keyfile=str(broker.client_key) if broker.client_key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.client.max_inflight_messages_set(window)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> DeviceUplink:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _status(self, state: str) -> bytes:
        return DeviceStatus(
            msg_id=new_id(), site_id=self.site_id, device_id=self.device_id,
            ts=utcnow(), state="online" if state == "online" else "offline",
        ).model_dump_json().encode()

    @property
    def status_topic(self) -> str:
        return mqtt_topic(self.site_id, self.device_id, Channel.STATUS)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if self._connect_once():
                attempt = 0
                self._serve()
                if self._stop.is_set():
                    break
            metrics.RECONNECTS.labels(device=self.device_id).inc()
            wait = self.backoff.delay(attempt, random.random())
            attempt += 1
            log.info("reconnecting", device=self.device_id, in_s=round(wait, 2))
            self._stop.wait(wait)

    def _connect_once(self) -> bool:
        self.client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        try:
            self.client.connect(
                self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s,
                clean_start=True,
            )
        except (OSError, ssl.SSLError) as exc:
            log.warning("connect_failed", device=self.device_id, error=str(exc))
            return False
        return True

    def _serve(self) -> None:
        """Drive paho and the spool until the connection ends or stop is asked."""
        while True:
            rc = self.client.loop(timeout=0.05)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if self._stop.is_set():
                self._drain_briefly()
                # A clean DISCONNECT: the broker does not publish the will, so say it.
                self.client.publish(self.status_topic, self._status("offline"), 1, retain=True)
                for _ in range(20):
                    self.client.loop(timeout=0.05)
                self.client.disconnect()
                self.client.loop(timeout=0.1)
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
            if self.client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return

    def _lost(self) -> None:
        if self.connected.is_set():
            log.warning("connection_lost", device=self.device_id, in_flight=len(self._inflight))
        self.connected.clear()
        metrics.CONNECTED.labels(device=self.device_id).set(0)
        self._inflight.clear()
        self._last_sent = 0  # resend every pending message, oldest first

    # --- publishing -----------------------------------------------------------------------

    def _pump(self) -> None:
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

    # --- paho callbacks (this thread) -----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            log.error("connect_refused", device=self.device_id, reason=str(rc))
            client.disconnect()
            return
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
            log.error("publish_refused", device=self.device_id, reason=str(rc))
            return  # stays in the spool; sent again after the next reconnect
        self.spool.ack(seq)
        metrics.ACKED.labels(device=self.device_id).inc()
