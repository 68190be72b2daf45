"""A paho-mqtt v5 client built from settings: credentials, TLS, session properties."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ganzhi.settings import MqttSettings


def make_client(
    settings: MqttSettings,
    client_id: str,
    *,
    manual_ack: bool = False,
    username: str | None = None,
    password: str | None = None,
) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    user = username or settings.username
    secret = password or (settings.password.get_secret_value() if settings.password else None)
    if user:
        client.username_pw_set(user, secret)
    if settings.tls:
        client.tls_set(
            ca_certs=str(settings.ca_file) if settings.ca_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def session_properties(session_expiry_s: int, receive_maximum: int | None = None) -> Properties:
    """CONNECT properties for a persistent session (use with ``clean_start=False``)."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def end_session_properties() -> Properties:
    """DISCONNECT properties that end a persistent session (MQTT v5: session expiry 0),
    so the broker keeps nothing more for the client id."""
    props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    return props
