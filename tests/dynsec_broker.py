"""A real Mosquitto with the dynamic-security plugin for the provisioning tests, and a
paho v5 probe that records what the broker answered (CONNACK, SUBACK, PUBACK codes,
DISCONNECT reason, messages)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from ganzhi.broker.dynsec import (
    INGEST_ROLE,
    MONITOR_ROLE,
    Account,
    plugin_path,
    write_initial_config,
)
from ganzhi.mqtt_auth import generate_password
from ganzhi.settings import MqttSettings
from ganzhi.stack.infra import DynsecPlugin, Managed, start_mosquitto

ADMIN_USER = "ganzhi-admin"
INGEST_USER = "svc-ingest"
MONITOR_USER = "ganzhi-monitor"


@dataclass
class DynsecBroker:
    part: Managed
    config_file: Path
    passwords: dict[str, str]

    @property
    def port(self) -> int:
        return self.part.port

    def admin_settings(self) -> MqttSettings:
        return MqttSettings(host=self.part.host, port=self.port, admin_username=ADMIN_USER,
                            admin_password=SecretStr(self.passwords[ADMIN_USER]),
                            edge_host="mqtt.example.internal")

    def stop(self) -> None:
        self.part.stop()


def start_dynsec_broker(root: Path) -> DynsecBroker:
    """A broker with an admin, an ingest and a monitoring account, and no device."""
    passwords = {user: generate_password() for user in (ADMIN_USER, INGEST_USER, MONITOR_USER)}
    config = root / "dynamic-security.json"
    write_initial_config(
        config, Account(ADMIN_USER, passwords[ADMIN_USER], "ganzhi-admin"),
        [Account(INGEST_USER, passwords[INGEST_USER], INGEST_ROLE),
         Account(MONITOR_USER, passwords[MONITOR_USER], MONITOR_ROLE)])
    part = start_mosquitto(root / "mosquitto", dynsec=DynsecPlugin(config, plugin_path()))
    return DynsecBroker(part, config, passwords)


class Probe:
    """One MQTT v5 connection; ``connect`` returns the CONNACK reason code."""

    def __init__(self, port: int, username: str, password: str, *,
                 client_id: str | None = None, will: tuple[str, bytes] | None = None) -> None:
        self.port = port
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.disconnect_reason: ReasonCode | None = None
        self.disconnected_at: float | None = None
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: list[list[ReasonCode]] = []
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _note(self, fn: object) -> None:
        with self.cond:
            assert callable(fn)
            fn()
            self.cond.notify_all()

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode,
                    _p: object = None) -> None:
        self._note(lambda: setattr(self, "connack", rc))

    def _on_disconnect(self, _c: object, _u: object, _f: object, rc: ReasonCode,
                       _p: object = None) -> None:
        def note() -> None:
            if self.disconnected_at is None:
                self.disconnect_reason, self.disconnected_at = rc, time.monotonic()
        self._note(note)

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode,
                    _p: object) -> None:
        self._note(lambda: self.acks.__setitem__(mid, rc))

    def _on_subscribe(self, _c: object, _u: object, _mid: int, rcs: list[ReasonCode],
                      _p: object) -> None:
        self._note(lambda: self.subacks.append(rcs))

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._note(lambda: self.messages.append((msg.topic, bytes(msg.payload))))

    def connect(self, timeout: float = 5.0) -> ReasonCode:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        with self.cond:
            assert self.cond.wait_for(lambda: self.connack is not None, timeout), "no CONNACK"
        assert self.connack is not None
        if self.connack.is_failure:
            self.client.loop_stop()  # no reconnect attempts behind the test's back
        return self.connack

    def subscribe(self, topic: str, timeout: float = 3.0) -> ReasonCode:
        before = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.subacks) > before, timeout), "no SUBACK"
            return self.subacks[before][0]

    def publish(self, topic: str, payload: bytes, timeout: float = 3.0) -> ReasonCode | None:
        """QoS 1; the PUBACK's reason code, or None when the connection dropped first."""
        info = self.client.publish(topic, payload, qos=1)
        with self.cond:
            self.cond.wait_for(
                lambda: info.mid in self.acks or self.disconnected_at is not None, timeout)
            return self.acks.get(info.mid)

    def wait_disconnected(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.disconnected_at is not None, timeout)

    def wait_for(self, payload: bytes, timeout: float = 3.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.received(payload), timeout)

    def received(self, payload: bytes) -> bool:
        return any(p == payload for _, p in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def accepted(rc: ReasonCode | None) -> bool:
    return rc is not None and not rc.is_failure


def marker() -> bytes:
    return uuid.uuid4().hex.encode()
