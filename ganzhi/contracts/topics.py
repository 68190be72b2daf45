"""Topic names on MQTT and Kafka: the only place they are spelled out.

MQTT (device side), one tree per site and device::

    ganzhi/v1/{site_id}/{device_id}/{channel}

where ``channel`` is one of :class:`Channel`. A device publishes only under its own
``{site_id}/{device_id}``; ``status`` is retained and is also the device's last will.

Kafka (platform side): one topic per channel plus the dead-letter and alert topics,
keyed by ``{site_id}/{device_id}`` so each device's messages stay in order on one
partition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MQTT_ROOT = "ganzhi/v1"
ID_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"
_ID_RE = re.compile(f"^{ID_PATTERN}$")


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    DETECTION = "detection"
    EVIDENCE = "evidence"
    STATUS = "status"


class KafkaTopic(StrEnum):
    TELEMETRY = "ganzhi.telemetry.v1"
    EVENT = "ganzhi.event.v1"
    DETECTION = "ganzhi.detection.v1"
    EVIDENCE = "ganzhi.evidence.v1"
    STATUS = "ganzhi.status.v1"
    DEAD_LETTER = "ganzhi.deadletter.v1"
    ALERT_TRANSITIONS = "ganzhi.alert-transitions.v1"


KAFKA_TOPIC_FOR_CHANNEL: dict[Channel, KafkaTopic] = {
    Channel.TELEMETRY: KafkaTopic.TELEMETRY,
    Channel.EVENT: KafkaTopic.EVENT,
    Channel.DETECTION: KafkaTopic.DETECTION,
    Channel.EVIDENCE: KafkaTopic.EVIDENCE,
    Channel.STATUS: KafkaTopic.STATUS,
}


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


def mqtt_topic(site_id: str, device_id: str, channel: Channel) -> str:
    for value in (site_id, device_id):
        if not is_valid_id(value):
            raise ValueError(f"invalid id {value!r}: must match {ID_PATTERN}")
    return f"{MQTT_ROOT}/{site_id}/{device_id}/{channel.value}"


def mqtt_subscription(channel: Channel | None = None) -> str:
    """Filter matching every device's topics (one channel, or all of them)."""
    return f"{MQTT_ROOT}/+/+/{channel.value if channel else '+'}"


def shared_subscription(group: str, channel: Channel | None = None) -> str:
    return f"$share/{group}/{mqtt_subscription(channel)}"


@dataclass(frozen=True)
class DeviceTopic:
    site_id: str
    device_id: str
    channel: Channel


def parse_mqtt_topic(topic: str) -> DeviceTopic:
    """Split a device topic; raises ValueError with the reason when it is not one."""
    parts = topic.split("/")
    root = MQTT_ROOT.split("/")
    if len(parts) != len(root) + 3 or parts[: len(root)] != root:
        raise ValueError(f"topic {topic!r} is not {MQTT_ROOT}/<site>/<device>/<channel>")
    site_id, device_id, channel = parts[len(root) :]
    if not is_valid_id(site_id) or not is_valid_id(device_id):
        raise ValueError(f"topic {topic!r} has an invalid site or device id")
    try:
        return DeviceTopic(site_id, device_id, Channel(channel))
    except ValueError:
        raise ValueError(f"topic {topic!r} has unknown channel {channel!r}") from None


def kafka_key(site_id: str, device_id: str) -> bytes:
    return f"{site_id}/{device_id}".encode()
