"""Device provisioning on a real Mosquitto 2.0 with the dynamic-security plugin.

What a provisioned device may do (publish on its own five channels), what it may not
(publish elsewhere, read anything, join ingest's share group), and how fast a revoked or
rotated credential is cut off, with a connection already open. Plus the fact that
decided between the plugin and the password file: both cut off a connected client on a
change, only the plugin can refuse a SUBSCRIBE.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dynsec_broker import (
    INGEST_USER,
    DynsecBroker,
    Probe,
    accepted,
    marker,
    start_dynsec_broker,
)
from pydantic import SecretStr

from ganzhi.broker import dynsec
from ganzhi.contracts.topics import Channel, mqtt_topic, shared_subscription
from ganzhi.mqtt_auth import add_device, generate_password, generate_share_group, remove_user
from ganzhi.mqtt_auth import main as credentials_main
from ganzhi.provisioning import broker_issue, broker_remove
from ganzhi.settings import MqttSettings
from ganzhi.stack.infra import DynsecPlugin, start_mosquitto

pytestmark = pytest.mark.integration

GROUP = generate_share_group()
NOT_AUTHORIZED = 135
ADMINISTRATIVE_ACTION = 152


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynsecBroker]:
    part = start_dynsec_broker(tmp_path_factory.mktemp("dynsec"))
    yield part
    part.stop()


@pytest.fixture
def ingest(broker: DynsecBroker) -> Iterator[Probe]:
    probe = Probe(broker.port, INGEST_USER, broker.passwords[INGEST_USER])
    assert probe.connect().value == 0
    assert probe.subscribe(shared_subscription(GROUP)).value == 1  # granted QoS 1
    yield probe
    probe.close()


class Devices:
    """Provisions devices on the module's broker; removes them afterwards."""

    def __init__(self, broker: DynsecBroker) -> None:
        self.broker, self.settings = broker, broker.admin_settings()
        self.passwords: dict[tuple[str, str], str] = {}
        self.probes: list[Probe] = []

    def provision(self, site: str, device: str) -> str:
        password = generate_password()
        broker_issue(self.settings, site, device, password)
        self.passwords[(site, device)] = password
        return password

    def probe(self, site: str, device: str, *, password: str | None = None,
              client_id: str | None = None, will: bool = False) -> Probe:
        username = f"{site}/{device}"
        probe = Probe(self.broker.port, username, password or self.passwords[(site, device)],
                      client_id=client_id or username,
                      will=(mqtt_topic(site, device, Channel.STATUS), b"offline") if will
                      else None)
        self.probes.append(probe)
        return probe

    def connected(self, site: str, device: str, **kwargs: object) -> Probe:
        probe = self.probe(site, device, **kwargs)  # type: ignore[arg-type]
        rc = probe.connect()
        assert rc.value == 0, f"{site}/{device} refused: {rc}"
        return probe

    def cleanup(self) -> None:
        for probe in self.probes:
            probe.close()
        for site, device in self.passwords:
            broker_remove(self.settings, site, device)


@pytest.fixture
def devices(broker: DynsecBroker) -> Iterator[Devices]:
    made = Devices(broker)
    yield made
    made.cleanup()


# --- a provisioned device publishes; ingest receives -----------------------------------


def test_provisioned_device_publishes_every_channel(devices: Devices, ingest: Probe) -> None:
    devices.provision("s1", "d1")
    dev = devices.connected("s1", "d1", will=True)
    sent = []
    for channel in Channel:
        payload = marker()
        rc = dev.publish(mqtt_topic("s1", "d1", channel), payload)
        assert accepted(rc), f"{channel}: {rc}"
        sent.append(payload)
    for payload in sent:
        assert ingest.wait_for(payload)


FORBIDDEN = [
    mqtt_topic("s1", "d2", Channel.TELEMETRY),  # same site, other device
    mqtt_topic("s2", "d1", Channel.TELEMETRY),  # other site, same device id
    "ganzhi/v1/s1/d1/command",  # own tree, not a device channel
    "ganzhi/v1/s1/d1/telemetry/extra",
    "ganzhi/v1/s1/telemetry",
    "$CONTROL/dynamic-security/v1",  # the admin's control topic
    "$SYS/broker/uptime",
]


@pytest.mark.parametrize("topic", FORBIDDEN)
def test_device_cannot_publish_elsewhere(devices: Devices, ingest: Probe, topic: str) -> None:
    devices.provision("s1", "d1")
    dev = devices.connected("s1", "d1")
    payload = marker()
    rc = dev.publish(topic, payload)
    assert rc is not None and rc.value == NOT_AUTHORIZED, f"{topic}: {rc}"
    sentinel = marker()  # one publisher's messages arrive in order
    assert accepted(dev.publish(mqtt_topic("s1", "d1", Channel.TELEMETRY), sentinel))
    assert ingest.wait_for(sentinel)
    assert not ingest.received(payload)


def test_device_cannot_use_another_client_id(devices: Devices) -> None:
    """The client id is forced to the username: no device takes over another's session."""
    devices.provision("s1", "d1")
    devices.provision("s1", "d2")
    victim = devices.connected("s1", "d2")
    thief = devices.probe("s1", "d1", client_id="s1/d2")
    assert thief.connect().is_failure
    assert not victim.wait_disconnected(0.5)


# --- a device reads nothing and cannot join the share group ----------------------------


def test_device_subscriptions_are_refused(devices: Devices, ingest: Probe) -> None:
    devices.provision("s1", "d1")
    devices.provision("s2", "d1")
    reader = devices.connected("s1", "d1")
    writer = devices.connected("s2", "d1")
    for topic in ("ganzhi/v1/#", "ganzhi/v1/s2/+/+", "ganzhi/v1/s1/d1/+", "#", "$SYS/#",
                  "$CONTROL/dynamic-security/#"):
        assert reader.subscribe(topic).value == NOT_AUTHORIZED, topic
    payload = marker()
    assert accepted(writer.publish(mqtt_topic("s2", "d1", Channel.TELEMETRY), payload))
    assert ingest.wait_for(payload)
    time.sleep(0.3)
    assert reader.messages == []


@pytest.mark.parametrize("filter_", ["ganzhi/v1/+/+/+", "ganzhi/v1/#"])
def test_device_cannot_join_ingest_share_group(devices: Devices, ingest: Probe,
                                               filter_: str) -> None:
    """The hole the acl_file left open (a device in the group made half the messages
    vanish) is closed: SUBACK 135, no share taken, ingest gets every message."""
    devices.provision("s1", "d1")
    devices.provision("s2", "d1")
    thief = devices.connected("s2", "d1")
    assert thief.subscribe(f"$share/{GROUP}/{filter_}").value == NOT_AUTHORIZED
    dev = devices.connected("s1", "d1")
    payloads = [marker() for _ in range(20)]
    for payload in payloads:
        assert accepted(dev.publish(mqtt_topic("s1", "d1", Channel.TELEMETRY), payload))
    for payload in payloads:
        assert ingest.wait_for(payload), "ingest missed a message"
    assert thief.messages == []


def test_ingest_may_only_use_a_shared_subscription(broker: DynsecBroker) -> None:
    probe = Probe(broker.port, INGEST_USER, broker.passwords[INGEST_USER])
    try:
        assert probe.connect().value == 0
        assert probe.subscribe("ganzhi/v1/+/+/+").value == NOT_AUTHORIZED
        assert probe.subscribe("#").value == NOT_AUTHORIZED
        rc = probe.publish(mqtt_topic("s1", "d1", Channel.TELEMETRY), b"{}")
        assert rc is not None and rc.value == NOT_AUTHORIZED
    finally:
        probe.close()


# --- revocation and rotation cut off open connections ----------------------------------


def test_revoke_disconnects_at_once_and_refuses_reconnect(devices: Devices,
                                                          ingest: Probe) -> None:
    password = devices.provision("s1", "d1")
    dev = devices.connected("s1", "d1")
    assert accepted(dev.publish(mqtt_topic("s1", "d1", Channel.TELEMETRY), marker()))
    started = time.monotonic()
    assert broker_remove(devices.settings, "s1", "d1") is True
    assert dev.wait_disconnected(3.0), "revoked device still connected"
    assert dev.disconnected_at is not None and dev.disconnected_at - started < 1.0
    assert dev.disconnect_reason is not None
    assert dev.disconnect_reason.value == ADMINISTRATIVE_ACTION
    again = devices.probe("s1", "d1", password=password)
    assert again.connect().value == NOT_AUTHORIZED
    assert broker_remove(devices.settings, "s1", "d1") is False  # idempotent


def test_rotate_disconnects_old_sessions_and_old_password(devices: Devices,
                                                         ingest: Probe) -> None:
    old = devices.provision("s1", "d1")
    dev = devices.connected("s1", "d1")
    new = devices.provision("s1", "d1")  # the account exists: reset in place
    assert dev.wait_disconnected(3.0)
    assert devices.probe("s1", "d1", password=old).connect().value == NOT_AUTHORIZED
    fresh = devices.connected("s1", "d1", password=new)
    payload = marker()
    assert accepted(fresh.publish(mqtt_topic("s1", "d1", Channel.EVENT), payload))
    assert ingest.wait_for(payload)


def test_admin_with_wrong_password_is_refused(broker: DynsecBroker) -> None:
    settings = broker.admin_settings().model_copy(
        update={"admin_password": SecretStr("wrong")})
    with pytest.raises(dynsec.DynsecError, match="refused the admin"):
        broker_issue(settings, "s1", "d9", generate_password())


def test_admin_is_required() -> None:
    with pytest.raises(dynsec.DynsecError, match="ADMIN_USERNAME"):
        dynsec.DynsecAdmin(MqttSettings())


def test_unknown_command_error_is_raised(broker: DynsecBroker) -> None:
    with dynsec.DynsecAdmin(broker.admin_settings()) as admin, \
            pytest.raises(dynsec.DynsecCommandError):
        admin.check([dynsec.delete_client("nobody/here")])


def test_credentials_survive_a_broker_restart(tmp_path: Path) -> None:
    """The plugin keeps its clients in its JSON file: a restart keeps them."""
    broker = start_dynsec_broker(tmp_path)
    try:
        password = generate_password()
        broker_issue(broker.admin_settings(), "s1", "d1", password)
        broker.stop()
        broker.part = start_mosquitto(
            tmp_path / "mosquitto", dynsec=DynsecPlugin(broker.config_file, dynsec.plugin_path()))
        probe = Probe(broker.port, "s1/d1", password, client_id="s1/d1")
        try:
            assert probe.connect().value == 0
        finally:
            probe.close()
        assert "s1/d1" in broker.config_file.read_text()
        assert password not in broker.config_file.read_text()
    finally:
        broker.stop()


# --- the comparison that chose the plugin ----------------------------------------------


def test_password_file_reload_also_disconnects_a_removed_user(tmp_path: Path) -> None:
    """Mosquitto 2.0.11: after SIGHUP a connected client whose password was removed is
    disconnected too (within ~0.1 s), so both schemes cut a device off within seconds.
    What only the plugin does is refuse a SUBSCRIBE (the share group hole)."""
    passwd, secrets = tmp_path / "passwd", tmp_path / "secrets"
    add_device(passwd, secrets, "s1", "d1")
    add_device(passwd, secrets, "s1", "d2")
    part = start_mosquitto(tmp_path / "mosquitto", password_file=passwd)
    secret = {d: (secrets / "devices" / "s1" / f"{d}.password").read_text().strip()
              for d in ("d1", "d2")}
    gone = Probe(part.port, "s1/d1", secret["d1"])
    kept = Probe(part.port, "s1/d2", secret["d2"])
    try:
        assert gone.connect().value == 0 and kept.connect().value == 0
        assert remove_user(passwd, "s1/d1")
        assert part.proc is not None
        os.kill(part.proc.pid, signal.SIGHUP)
        assert gone.wait_disconnected(5.0)
        assert not kept.wait_disconnected(0.5)
        # ... and the acl_file scheme grants any SUBSCRIBE, the share group included:
        assert kept.subscribe(f"$share/{GROUP}/ganzhi/v1/+/+/+").value == 1
    finally:
        gone.close()
        kept.close()
        part.stop()


def test_dynsec_init_makes_a_working_broker(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``ganzhi credentials dynsec-init``: the production bootstrap, secrets in files."""
    out, secrets = tmp_path / "dynamic-security.json", tmp_path / "secrets"
    assert credentials_main(["dynsec-init", "--out", str(out),
                             "--secrets-dir", str(secrets)]) == 0
    printed = capsys.readouterr().out
    secret = {u: (secrets / "services" / f"{u}.password").read_text().strip()
              for u in ("ganzhi-admin", "ganzhi-ingest", "ganzhi-monitor")}
    assert all(p not in printed and p not in out.read_text() for p in secret.values())
    assert credentials_main(["dynsec-init", "--out", str(out),
                             "--secrets-dir", str(secrets)]) == 2  # never overwritten
    part = start_mosquitto(tmp_path / "mosquitto",
                           dynsec=DynsecPlugin(out, dynsec.plugin_path()))
    try:
        settings = MqttSettings(port=part.port, admin_username="ganzhi-admin",
                                admin_password=SecretStr(secret["ganzhi-admin"]))
        broker_issue(settings, "s1", "d1", generate_password())
        probe = Probe(part.port, "ganzhi-ingest", secret["ganzhi-ingest"])
        try:
            assert probe.connect().value == 0
            assert probe.subscribe(shared_subscription(GROUP)).value == 1
        finally:
            probe.close()
    finally:
        part.stop()
