"""Device identity on a real Mosquitto: per-device passwords, the ACL, TLS.

One broker for the module, started with the password file and ACL that
``ganzhi.mqtt_auth`` writes and a TLS listener (test CA from trustme). Devices log in as
``{site_id}/{device_id}``; the ACL confines each to ``ganzhi/v1/{site}/{device}/<channel>``.
"""

from __future__ import annotations

import os
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import trustme
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from ganzhi.contracts.topics import Channel, mqtt_topic, shared_subscription
from ganzhi.mqtt_auth import (
    DEFAULT_INGEST_USER,
    DEFAULT_MONITOR_USER,
    DEFAULT_SHARE_GROUP,
    add_device,
    add_service,
    generate_share_group,
    remove_user,
    write_acl,
)
from ganzhi.stack.infra import Managed, TlsListener, start_mosquitto

pytestmark = pytest.mark.integration

DEVICES = [("s1", "d1"), ("s1", "d2"), ("s2", "d1")]


@dataclass
class SecureBroker:
    part: Managed
    root: Path
    passwd: Path
    secrets: Path
    ca_file: Path
    ca: trustme.CA

    @property
    def port(self) -> int:
        return self.part.port

    @property
    def tls_port(self) -> int:
        return int(self.part.extra["tls_port"])

    def secret(self, username: str) -> str:
        if "/" in username:
            site, device = username.split("/")
            path = self.secrets / "devices" / site / f"{device}.password"
        else:
            path = self.secrets / "services" / f"{username}.password"
        return path.read_text().strip()

    def reload(self) -> None:
        """SIGHUP: the broker re-reads its password file and ACL (callers wait for the
        effect they expect, as :func:`connect_code_becomes` does)."""
        assert self.part.proc is not None
        os.kill(self.part.proc.pid, signal.SIGHUP)


def connect_code_becomes(broker: SecureBroker, username: str, want: int) -> None:
    """Until a CONNECT as ``username`` is answered ``want`` (a reload has taken effect)."""
    codes: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = Probe(broker, username, broker.secret(username))
        try:
            codes.append(probe.connect().value)
        finally:
            probe.close()
        if codes[-1] == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"CONNECT as {username} answered {codes}, never {want}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("secure-mqtt")
    passwd, secrets, acl = root / "passwd", root / "secrets", root / "ganzhi.acl"
    for site, device in DEVICES:
        add_device(passwd, secrets, site, device)
    add_service(passwd, secrets, DEFAULT_INGEST_USER)
    add_service(passwd, secrets, DEFAULT_MONITOR_USER)
    write_acl(acl)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert, key = root / "ca.pem", root / "server.pem", root / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    tls = TlsListener(cert, key, ca_file, use_username_as_clientid=True)
    part = start_mosquitto(root / "mosquitto", password_file=passwd, acl_file=acl, tls=tls)
    yield SecureBroker(part, root, passwd, secrets, ca_file, ca)
    part.stop()


class Probe:
    """A paho v5 client that records what the broker answered."""

    def __init__(
        self,
        broker: SecureBroker,
        username: str | None,
        password: str | None = None,
        *,
        client_id: str | None = None,
        tls: bool = False,
        ca_file: Path | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    ) -> None:
        self.port = broker.tls_port if tls else broker.port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(
                ca_certs=str(ca_file) if ca_file else None, tls_version=ssl.PROTOCOL_TLS_CLIENT
            )
        self.connack: ReasonCode | None = None
        self.answered = threading.Event()
        self.disconnected = threading.Event()
        self.acks: dict[int, ReasonCode] = {}
        self.acked = threading.Condition()
        self.messages: list[tuple[str, bytes]] = []
        self.got = threading.Condition()
        self.subacks: list[list[ReasonCode]] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode,
                    _p: object = None) -> None:
        self.connack = rc
        self.answered.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, _rc: ReasonCode,
                       _p: object = None) -> None:
        self.disconnected.set()
        with self.acked:
            self.acked.notify_all()

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode,
                    _p: object) -> None:
        with self.acked:
            self.acks[mid] = rc
            self.acked.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.got:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.got.notify_all()

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, rcs: list[ReasonCode],
                      _p: object) -> None:
        self.subacks.append(rcs)

    def connect(self, timeout: float = 5.0) -> ReasonCode:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        assert self.answered.wait(timeout), "no CONNACK"
        assert self.connack is not None
        return self.connack

    def subscribe(self, topic: str) -> None:
        before = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + 3
        while len(self.subacks) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.subacks) > before, f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes, timeout: float = 3.0) -> ReasonCode | None:
        """QoS 1 publish; the PUBACK's reason code, or None if the connection dropped first."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            self.acked.wait_for(
                lambda: info.mid in self.acks or self.disconnected.is_set(), timeout
            )
            return self.acks.get(info.mid)

    def wait_for(self, payload: bytes, timeout: float = 3.0) -> bool:
        with self.got:
            return self.got.wait_for(lambda: any(p == payload for _, p in self.messages), timeout)

    def received(self, payload: bytes) -> bool:
        with self.got:
            return any(p == payload for _, p in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# Production keeps the share group name secret (see test_device_in_ingest_share_group_...).
SECRET_GROUP = generate_share_group()


@pytest.fixture
def ingest(broker: SecureBroker) -> Iterator[Probe]:
    """The ingest service account on its shared subscription."""
    probe = Probe(broker, DEFAULT_INGEST_USER, broker.secret(DEFAULT_INGEST_USER))
    assert probe.connect().value == 0
    probe.subscribe(shared_subscription(SECRET_GROUP))
    yield probe
    probe.close()


def device(broker: SecureBroker, site: str, dev: str, **kwargs: object) -> Probe:
    username = f"{site}/{dev}"
    probe = Probe(broker, username, broker.secret(username), **kwargs)  # type: ignore[arg-type]
    rc = probe.connect()
    assert rc.value == 0, f"{username} refused: {rc}"
    return probe


def accepted(rc: ReasonCode | None) -> bool:
    return rc is not None and not rc.is_failure


def marker() -> bytes:
    return uuid.uuid4().hex.encode()


# --- (a) a device publishes under its own topics; ingest gets it ------------------------


def test_device_publishes_every_channel_of_its_own(broker: SecureBroker, ingest: Probe) -> None:
    dev = device(broker, "s1", "d1")
    try:
        sent = []
        for channel in Channel:
            payload = marker()
            rc = dev.publish(mqtt_topic("s1", "d1", channel), payload)
            assert rc is not None and not rc.is_failure, f"{channel}: {rc}"
            sent.append((mqtt_topic("s1", "d1", channel), payload))
        for _topic, payload in sent:
            assert ingest.wait_for(payload)
        assert all(item in ingest.messages for item in sent)
    finally:
        dev.close()


# --- (b) ... but not under another device's or another site's ---------------------------


FORBIDDEN = [
    mqtt_topic("s1", "d2", Channel.TELEMETRY),  # same site, other device
    mqtt_topic("s2", "d1", Channel.TELEMETRY),  # other site, same device id
    mqtt_topic("s2", "d9", Channel.EVENT),  # other site, unknown device
    "ganzhi/v1/s1/d1/command",  # own tree, not a device channel
    "ganzhi/v1/s1/d1/telemetry/extra",  # below its own channel
    "ganzhi/v1/s1/telemetry",  # a level short
    "$SYS/broker/uptime",
]


@pytest.mark.parametrize("topic", FORBIDDEN)
def test_device_cannot_publish_elsewhere(
    broker: SecureBroker, ingest: Probe, topic: str
) -> None:
    dev = device(broker, "s1", "d1")
    spy = Probe(broker, DEFAULT_INGEST_USER, broker.secret(DEFAULT_INGEST_USER))
    try:
        assert spy.connect().value == 0
        spy.subscribe("ganzhi/v1/#")
        payload = marker()
        rc = dev.publish(topic, payload)
        # Mosquitto 2.0.11 answers an MQTT v5 QoS 1 publish it denies with PUBACK reason
        # 135 "Not authorized" and keeps the connection; a broker that drops the
        # connection instead (rc None) is refusing too.
        assert rc is None or rc.is_failure, f"{topic} accepted: {rc}"
        if rc is not None:
            assert rc.value == 135
        # Ordering: one publisher's messages reach a subscriber in order, so once a later,
        # allowed message has arrived the denied one would have arrived before it.
        if dev.disconnected.is_set():
            dev.close()
            dev = device(broker, "s1", "d1")
        sentinel = marker()
        ok = dev.publish(mqtt_topic("s1", "d1", Channel.TELEMETRY), sentinel)
        assert ok is not None and not ok.is_failure
        assert ingest.wait_for(sentinel) and spy.wait_for(sentinel)
        assert not ingest.received(payload) and not spy.received(payload)
    finally:
        dev.close()
        spy.close()


def test_mqtt311_device_is_refused_silently(broker: SecureBroker, ingest: Probe) -> None:
    """MQTT 3.1.1 has no PUBACK reason code: the denied message is dropped, unnoticed."""
    dev = device(broker, "s1", "d1", protocol=mqtt.MQTTv311)
    try:
        payload, sentinel = marker(), marker()
        dev.publish(mqtt_topic("s1", "d2", Channel.TELEMETRY), payload)
        dev.publish(mqtt_topic("s1", "d1", Channel.TELEMETRY), sentinel)
        assert ingest.wait_for(sentinel)
        assert not ingest.received(payload)
    finally:
        dev.close()


def test_will_on_another_devices_topic_is_not_published(
    broker: SecureBroker, ingest: Probe
) -> None:
    """A device cannot fake another device's ``offline`` status through its last will."""
    payload = marker()
    probe = Probe(broker, "s1/d1", broker.secret("s1/d1"))
    probe.client.will_set(mqtt_topic("s1", "d2", Channel.STATUS), payload, qos=1)
    rc = probe.connect()
    if rc.value == 0:
        # Make the broker send the will: drop the socket without a DISCONNECT.
        probe.client.loop_stop()
        sock = probe.client.socket()
        assert sock is not None
        sock.close()
    else:
        probe.client.loop_stop()
    sentinel = marker()
    other = device(broker, "s1", "d2")
    try:
        assert other.publish(mqtt_topic("s1", "d2", Channel.TELEMETRY), sentinel) is not None
        assert ingest.wait_for(sentinel)
        time.sleep(0.3)
        assert not ingest.received(payload)
    finally:
        other.close()


# --- (c) a device reads nothing --------------------------------------------------------


def test_device_subscriptions_deliver_nothing(broker: SecureBroker, ingest: Probe) -> None:
    reader = device(broker, "s1", "d1")
    writer = device(broker, "s2", "d1")
    try:
        for topic in ("ganzhi/v1/#", "ganzhi/v1/s2/+/+", "ganzhi/v1/s1/d1/+", "#", "$SYS/#"):
            reader.subscribe(topic)
        payloads = [marker() for _ in range(3)]
        for payload in payloads:
            assert accepted(writer.publish(mqtt_topic("s2", "d1", Channel.TELEMETRY), payload))
        own = marker()
        assert accepted(reader.publish(mqtt_topic("s1", "d1", Channel.STATUS), own))
        for payload in [*payloads, own]:
            assert ingest.wait_for(payload)
        time.sleep(0.3)
        assert reader.messages == []
    finally:
        reader.close()
        writer.close()


# --- shared subscriptions: the group name is the only guard ----------------------------


def _share_counts(broker: SecureBroker, group: str, thief_group: str) -> tuple[int, int]:
    """(messages ingest got, messages a device in ``thief_group`` got) out of 20."""
    worker = Probe(broker, DEFAULT_INGEST_USER, broker.secret(DEFAULT_INGEST_USER))
    thief = device(broker, "s2", "d1")
    dev = device(broker, "s1", "d1")
    try:
        assert worker.connect().value == 0
        worker.subscribe(shared_subscription(group))
        # A plain subscription beside it: a sentinel there, published after the 20, comes
        # after every one of them the worker was given (one connection, in order).
        worker.subscribe(mqtt_topic("s1", "d1", Channel.EVENT))
        thief.subscribe(shared_subscription(thief_group))
        payloads = [marker() for _ in range(20)]
        for payload in payloads:
            assert accepted(dev.publish(mqtt_topic("s1", "d1", Channel.TELEMETRY), payload))
        sentinel = marker()
        assert accepted(dev.publish(mqtt_topic("s1", "d1", Channel.EVENT), sentinel))
        assert worker.wait_for(sentinel, timeout=5.0)
        return sum(worker.received(p) for p in payloads), len(thief.messages)
    finally:
        for probe in (worker, thief, dev):
            probe.close()


def test_device_in_ingest_share_group_makes_messages_vanish(broker: SecureBroker) -> None:
    """Characterises Mosquitto 2.0.11: why the share group name must be a secret.

    The acl_file cannot refuse a SUBSCRIBE, so a device may join ingest's group. The broker
    then hands it its turn of the messages, the read ACL refuses delivery, and the message
    is gone: the publisher had its PUBACK, ingest never sees it.
    """
    got, thief_got = _share_counts(broker, DEFAULT_SHARE_GROUP, DEFAULT_SHARE_GROUP)
    assert thief_got == 0
    assert got > 0, "ingest received nothing at all: the test proves nothing"
    assert got < 20, "Mosquitto now protects shared groups: revisit the notes"


def test_secret_share_group_is_not_disturbed_by_devices(broker: SecureBroker) -> None:
    group = generate_share_group()
    got, thief_got = _share_counts(broker, group, DEFAULT_SHARE_GROUP)
    assert (got, thief_got) == (20, 0)


# --- (d) wrong or missing credentials are refused at CONNECT ----------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [("s1/d1", "wrong"), ("s1/d1", None), ("s9/d9", "anything"), (None, None),
     ("s1/d2", "use-d1s"), (DEFAULT_INGEST_USER, "")],
)
def test_bad_credentials_refused(
    broker: SecureBroker, username: str | None, password: str | None
) -> None:
    if password == "use-d1s":
        password = broker.secret("s1/d1")  # a real password, but another device's
    probe = Probe(broker, username, password)
    try:
        rc = probe.connect()
        assert rc.is_failure
        assert rc.value == 135  # Not authorized
    finally:
        probe.client.loop_stop()


def test_added_device_works_after_reload_and_removed_one_is_refused(
    broker: SecureBroker, ingest: Probe
) -> None:
    add_device(broker.passwd, broker.secrets, "s3", "new-1")
    broker.reload()
    connect_code_becomes(broker, "s3/new-1", 0)
    dev = device(broker, "s3", "new-1")
    try:
        payload = marker()
        assert accepted(dev.publish(mqtt_topic("s3", "new-1", Channel.TELEMETRY), payload))
        assert ingest.wait_for(payload)
    finally:
        dev.close()
    assert remove_user(broker.passwd, "s3/new-1")
    broker.reload()
    connect_code_becomes(broker, "s3/new-1", 135)


# --- (e) TLS ---------------------------------------------------------------------------


def test_tls_device_connects_and_publishes(broker: SecureBroker, ingest: Probe) -> None:
    dev = device(broker, "s2", "d1", tls=True, ca_file=broker.ca_file)
    try:
        payload = marker()
        rc = dev.publish(mqtt_topic("s2", "d1", Channel.DETECTION), payload)
        assert rc is not None and not rc.is_failure
        assert ingest.wait_for(payload)
    finally:
        dev.close()


def test_tls_without_the_ca_fails_verification(broker: SecureBroker) -> None:
    probe = Probe(broker, "s2/d1", broker.secret("s2/d1"), tls=True)  # system CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        probe.client.connect("127.0.0.1", broker.tls_port)


def test_tls_with_another_ca_fails_verification(broker: SecureBroker, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    probe = Probe(broker, "s2/d1", broker.secret("s2/d1"), tls=True, ca_file=other)
    with pytest.raises(ssl.SSLCertVerificationError):
        probe.client.connect("127.0.0.1", broker.tls_port)


def test_tls_listener_ignores_chosen_client_ids(broker: SecureBroker, ingest: Probe) -> None:
    """use_username_as_clientid: a device reusing another's client id cannot kick it off."""
    victim = device(broker, "s1", "d2", tls=True, ca_file=broker.ca_file, client_id="shared")
    intruder = device(broker, "s1", "d1", tls=True, ca_file=broker.ca_file, client_id="shared")
    try:
        time.sleep(0.3)
        assert not victim.disconnected.is_set()
        payload = marker()
        assert accepted(victim.publish(mqtt_topic("s1", "d2", Channel.TELEMETRY), payload))
        assert ingest.wait_for(payload)
    finally:
        victim.close()
        intruder.close()


def test_edge_uplink_logs_in_with_device_username_over_tls(
    broker: SecureBroker, ingest: Probe, tmp_path: Path
) -> None:
    """The edge agent's own uplink works with this scheme (online status reaches ingest)."""
    from edge.spool import Spool
    from edge.uplink import BrokerEndpoint, DeviceUplink

    spool = Spool(tmp_path / "spool.db")
    endpoint = BrokerEndpoint("127.0.0.1", broker.tls_port, tls=True, ca_file=broker.ca_file)
    uplink = DeviceUplink(spool, endpoint, "s2", "d1", "s2/d1", broker.secret("s2/d1")).start()
    try:
        assert uplink.connected.wait(5)
        topic = mqtt_topic("s2", "d1", Channel.STATUS)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(t == topic for t, _ in ingest.messages):
            time.sleep(0.02)
        assert any(t == topic and b"online" in p for t, p in ingest.messages)
    finally:
        uplink.stop()
        spool.close()


# --- monitoring account ----------------------------------------------------------------


def test_monitor_reads_status_and_sys_but_not_telemetry(broker: SecureBroker) -> None:
    mon = Probe(broker, DEFAULT_MONITOR_USER, broker.secret(DEFAULT_MONITOR_USER))
    dev = device(broker, "s1", "d1")
    try:
        assert mon.connect().value == 0
        mon.subscribe("ganzhi/v1/#")
        mon.subscribe("$SYS/broker/uptime")
        telemetry, status = marker(), marker()
        assert accepted(dev.publish(mqtt_topic("s1", "d1", Channel.TELEMETRY), telemetry))
        assert accepted(dev.publish(mqtt_topic("s1", "d1", Channel.STATUS), status))
        assert mon.wait_for(status)
        assert not mon.received(telemetry)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(t.startswith("$SYS/") for t, _ in
                                                      mon.messages):
            time.sleep(0.02)
        assert any(t.startswith("$SYS/") for t, _ in mon.messages)
        assert not accepted(mon.publish(mqtt_topic("s1", "d1", Channel.STATUS), marker()))
    finally:
        mon.close()
        dev.close()


# --- the production config --------------------------------------------------------------


@pytest.mark.parametrize("optional_blocks", [False, True])
def test_deploy_config_starts_and_serves_tls(
    broker: SecureBroker, tmp_path: Path, optional_blocks: bool
) -> None:
    """deploy/mosquitto/ganzhi.conf, with paths and ports moved here, runs on this Mosquitto.

    ``optional_blocks`` also switches on its commented client-certificate lines.
    """
    import re
    import subprocess

    from ganzhi.stack.infra import free_port, wait_port

    text = (Path(__file__).parents[2] / "deploy" / "mosquitto" / "ganzhi.conf").read_text()
    if optional_blocks:
        text = re.sub(r"(?m)^#(?=[a-z_]+ )", "", text)
    ports = {1883: free_port(), 8883: free_port(), 8884: free_port()}
    certs = broker.root
    replacements = {
        "/etc/mosquitto/ganzhi.passwd": str(broker.passwd),
        "/etc/mosquitto/ganzhi.acl": str(Path(__file__).parents[2] / "deploy/mosquitto/ganzhi.acl"),
        "/etc/mosquitto/certs/server.crt": str(certs / "server.pem"),
        "/etc/mosquitto/certs/server.key": str(certs / "server.key"),
        "/etc/mosquitto/certs/device-ca.crt": str(broker.ca_file),
        "/etc/mosquitto/certs/services-ca.crt": str(broker.ca_file),
        "/var/lib/mosquitto/": f"{tmp_path}/",
        "log_dest syslog": "log_dest stderr",
    }
    for old, new in replacements.items():
        assert old in text or (old.endswith("-ca.crt") and not optional_blocks), old
        text = text.replace(old, new)
    for old_port, new_port in ports.items():
        text = re.sub(rf"(?m)^listener {old_port}\b", f"listener {new_port}", text)
    if os.geteuid() == 0:
        text += "user root\n"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    part = Managed("mosquitto", "127.0.0.1", ports[8883], proc, tmp_path / "log")
    try:
        wait_port(part, timeout=10)
        if optional_blocks:
            assert proc.poll() is None
            return  # device listener now wants a client certificate: syntax is what we check
        probe = Probe(broker, "s1/d1", broker.secret("s1/d1"), tls=True, ca_file=broker.ca_file)
        probe.port = ports[8883]
        try:
            assert probe.connect().value == 0
            assert accepted(probe.publish(mqtt_topic("s1", "d1", Channel.TELEMETRY), b"x"))
            assert not accepted(probe.publish(mqtt_topic("s1", "d2", Channel.TELEMETRY), b"x"))
        finally:
            probe.close()
    finally:
        part.stop()
        log.close()
