"""Publish device messages over MQTT v5 at QoS 1, with a retained status and last will.

This is the plain path used by the simulators; the store-and-forward agent (local
spool, replay after outages) builds on it.
"""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt

from ganzhi.contracts import Channel, DeviceStatus, Envelope, mqtt_topic, new_id, utcnow
from ganzhi.mqtt import make_client
from ganzhi.settings import MqttSettings


class DevicePublisher:
    def __init__(self, settings: MqttSettings, site_id: str, device_id: str) -> None:
        self.site_id, self.device_id = site_id, device_id
        self.client = make_client(settings, f"dev-{site_id}-{device_id}")
        self._connected = threading.Event()
        will = DeviceStatus(
            msg_id=new_id(), site_id=site_id, device_id=device_id, ts=utcnow(), state="offline"
        )
        self.client.will_set(self.topic(Channel.STATUS), will.model_dump_json(), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if not rc.is_failure:
            status = DeviceStatus(
                msg_id=new_id(), site_id=self.site_id, device_id=self.device_id,
                ts=utcnow(), state="online",
            )
            client.publish(self.topic(Channel.STATUS), status.model_dump_json(), 1, retain=True)
            self._connected.set()

    def topic(self, channel: Channel) -> str:
        return mqtt_topic(self.site_id, self.device_id, channel)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def publish(self, channel: Channel, message: Envelope, timeout: float = 10.0) -> bool:
        """Publish and wait for the broker's PUBACK; False if it did not come in time."""
        info = self.client.publish(self.topic(channel), message.model_dump_json(), qos=1)
        info.wait_for_publish(timeout)
        return info.is_published()

    def publish_raw(self, channel: Channel, payload: bytes, timeout: float = 10.0) -> bool:
        info = self.client.publish(self.topic(channel), payload, qos=1)
        info.wait_for_publish(timeout)
        return info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
