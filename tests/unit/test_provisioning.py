"""Provisioning without I/O: roles and ACLs, the plugin's first file, the broker config,
the edge box's config snippet."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from edge.config import AgentConfig
from ganzhi.broker import dynsec
from ganzhi.contracts.topics import Channel
from ganzhi.mqtt_auth import verify_password
from ganzhi.provisioning import Issued, edge_config
from ganzhi.settings import MqttSettings
from ganzhi.stack.infra import DynsecPlugin, mosquitto_config


def test_device_role_allows_only_its_own_channels() -> None:
    acls = dynsec.device_acls("s1", "d1")
    assert {a["acltype"] for a in acls} == {"publishClientSend"}
    assert sorted(a["topic"] for a in acls) == sorted(f"ganzhi/v1/s1/d1/{c}" for c in Channel)
    assert all(a["allow"] is True for a in acls)
    assert dynsec.device_role("s1", "d1") == "device:s1/d1"


@pytest.mark.parametrize("bad", [("S1", "d1"), ("s1", "d/1"), ("s1", "+"), ("", "d1")])
def test_bad_ids_are_refused(bad: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="invalid id"):
        dynsec.device_acls(*bad)


def test_ingest_subscribes_only_through_a_share() -> None:
    acls = dynsec.ingest_acls()
    subscribe = [a["topic"] for a in acls if a["acltype"].startswith("subscribe")]
    assert subscribe == ["$share/+/ganzhi/v1/+/+/+"]
    assert not any(a["acltype"] == "publishClientSend" for a in acls)


def test_initial_config_denies_by_default_and_hashes_passwords() -> None:
    config = dynsec.initial_config(
        dynsec.Account("ganzhi-admin", "admin-pw", dynsec.ADMIN_ROLE),
        [dynsec.Account("svc-ingest", "ingest-pw", dynsec.INGEST_ROLE)])
    assert config["defaultACLAccess"] == {"publishClientSend": False,
                                          "publishClientReceive": False,
                                          "subscribe": False, "unsubscribe": True}
    admin = config["clients"][0]
    assert "admin-pw" not in json.dumps(config)
    encoded = f"$7${admin['iterations']}${admin['salt']}${admin['password']}"
    assert verify_password("admin-pw", encoded)
    assert [r["rolename"] for r in admin["roles"]] == [dynsec.ADMIN_ROLE]


def test_initial_config_refuses_unknown_roles_and_bad_names() -> None:
    admin = dynsec.Account("ganzhi-admin", "pw", dynsec.ADMIN_ROLE)
    with pytest.raises(ValueError, match="unknown role"):
        dynsec.initial_config(admin, [dynsec.Account("svc", "pw", "root")])
    with pytest.raises(ValueError, match="invalid service account"):
        dynsec.initial_config(dynsec.Account("s1/d1", "pw", dynsec.ADMIN_ROLE))


def test_initial_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "dynsec.json"
    admin = dynsec.Account("ganzhi-admin", "pw", dynsec.ADMIN_ROLE)
    dynsec.write_initial_config(path, admin)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(dynsec.DynsecError, match="exists"):
        dynsec.write_initial_config(path, admin)


def test_mosquitto_config_loads_the_plugin(tmp_path: Path) -> None:
    plugin = DynsecPlugin(tmp_path / "d.json", Path("/x/mosquitto_dynamic_security.so"))
    text = mosquitto_config(tmp_path, "127.0.0.1", 1883, dynsec=plugin)
    assert "plugin /x/mosquitto_dynamic_security.so\n" in text
    assert f"plugin_opt_config_file {tmp_path / 'd.json'}\n" in text
    assert "allow_anonymous false" in text and "password_file" not in text
    with pytest.raises(ValueError, match="replaces"):
        mosquitto_config(tmp_path, "127.0.0.1", 1883, dynsec=plugin,
                         password_file=tmp_path / "passwd")


@pytest.mark.parametrize("tls", [True, False])
def test_edge_config_is_a_valid_box_config(tls: bool) -> None:
    settings = MqttSettings(edge_host="mqtt.example.internal", edge_tls=tls)
    text = edge_config(settings, "s1", "d1", "cold_store")
    config = yaml.safe_load(text)
    parsed = AgentConfig.model_validate(config)
    device = parsed.devices[0]
    assert device.username == "s1/d1" and device.password is None
    assert str(device.password_file) == "/etc/ganzhi-edge/secrets/d1"
    assert parsed.broker.host == "mqtt.example.internal" and parsed.broker.port == 8883
    assert parsed.broker.tls is tls and (parsed.broker.ca_file is not None) is tls
    assert text.startswith("# ganzhi edge config for s1/d1")


def test_edge_config_defaults_to_the_broker_host() -> None:
    config = yaml.safe_load(edge_config(MqttSettings(host="10.0.0.5"), "s1", "d1", "elevator"))
    assert config["broker"]["host"] == "10.0.0.5"


def test_issued_never_shows_its_password() -> None:
    issued = Issued("s1", "d1", "s1/d1", "very-secret", "", datetime.now(UTC), False)
    assert "very-secret" not in repr(issued) and "very-secret" not in str(issued)
