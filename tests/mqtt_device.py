"""A device as the tests need one: publishes over MQTT v5 at QoS 1 and waits for each
PUBACK, with a retained ``online`` status and an ``offline`` last will. It can send
raw bytes on any of its topics (the poison tests) or on any topic at all.

The product's devices are the edge agent (``ganzhi edge``: spool, uplink); this is a
thin client for tests that script exact messages.
"""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt

from ganzhi.contracts import Channel, DeviceStatus, Envelope, mqtt_topic, new_id, utcnow
from ganzhi.mqtt import make_client
from ganzhi.settings import MqttSettings


class MqttDevice:
    def __init__(self, settings: MqttSettings, site_id: str, device_id: str,
                 *, status: bool = True) -> None:
        self.site_id, self.device_id = site_id, device_id
        self.client = make_client(settings, f"test-{site_id}/{device_id}-{new_id()[:8]}")
        self._connected = threading.Event()
        self._status = status
        if status:
            will = DeviceStatus(msg_id=new_id(), site_id=site_id, device_id=device_id,
                                ts=utcnow(), state="offline")
            self.client.will_set(self.topic(Channel.STATUS), will.model_dump_json(), qos=1,
                                 retain=True)
        self.client.on_connect = self._on_connect
        self.client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            return
        if self._status:
            status = DeviceStatus(msg_id=new_id(), site_id=self.site_id,
                                  device_id=self.device_id, ts=utcnow(), state="online")
            client.publish(self.topic(Channel.STATUS), status.model_dump_json(), 1, retain=True)
        self._connected.set()

    def topic(self, channel: Channel) -> str:
        return mqtt_topic(self.site_id, self.device_id, channel)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def publish(self, channel: Channel, message: Envelope, timeout: float = 10.0) -> bool:
        """Publish and wait for the broker's PUBACK; False if it did not come in time."""
        return self.publish_to(self.topic(channel), message.model_dump_json().encode(), timeout)

    def publish_raw(self, channel: Channel, payload: bytes, timeout: float = 10.0) -> bool:
        return self.publish_to(self.topic(channel), payload, timeout)

    def publish_to(self, topic: str, payload: bytes, timeout: float = 10.0) -> bool:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        return info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# The ingest share group of the tests: services refuse to start without a secret one.
SHARE_GROUP = "ingest-tests-0123456789abcdef"
WEBHOOK_SECRET = "tests-webhook-secret-0123456789abcdef"


def service_mqtt(host: str, port: int) -> MqttSettings:
    """MQTT settings of an ingest worker in the tests."""
    from pydantic import SecretStr

    return MqttSettings(host=host, port=port, share_group=SecretStr(SHARE_GROUP))
