"""Device provisioning through the API and the CLI: real PostgreSQL (registry, audit log)
and a real Mosquitto with the dynamic-security plugin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from dynsec_broker import (
    INGEST_USER,
    DynsecBroker,
    Probe,
    accepted,
    marker,
    start_dynsec_broker,
)
from psycopg import AsyncConnection
from pydantic import SecretStr

from api.main import create_app
from edge.config import AgentConfig
from ganzhi import apikeys
from ganzhi.cli import main
from ganzhi.contracts.topics import Channel, mqtt_topic, shared_subscription
from ganzhi.mqtt_auth import generate_share_group
from ganzhi.settings import AuthSettings, DatabaseSettings, MqttSettings, Settings, get_settings

from access_fixtures import api_dsn

pytestmark = pytest.mark.integration

GROUP = generate_share_group()
JWT_SECRET = "tests-jwt-secret-0123456789abcdef-0123456789"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynsecBroker]:
    part = start_dynsec_broker(tmp_path_factory.mktemp("dynsec-api"))
    yield part
    part.stop()


def seed(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO jurisdictions (id, parent_id, name, level, path) VALUES"
                     " ('sz', NULL, 'Shenzhen', 'city', '/sz/'),"
                     " ('ft', 'sz', 'Futian', 'district', '/sz/ft/')")
        conn.execute("INSERT INTO sites (id, jurisdiction_id, name, category) VALUES"
                     " ('s1', 'ft', 'Canteen 1', 'canteen'),"
                     " ('s2', 'sz', 'Cold store 2', 'cold_store')")
        conn.execute("INSERT INTO devices (site_id, device_id, device_class) VALUES"
                     " ('s1', 'd1', 'cold_store'), ('s1', 'cam1', 'kitchen_camera'),"
                     " ('s2', 'd1', 'cold_store')")


def make_key(dsn: str, scopes: list[str], sites: list[str] | None = None) -> str:
    async def go() -> str:
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            _key, token = await apikeys.create(conn, f"k-{'-'.join(scopes)}", scopes, sites)
            return token

    return asyncio.run(go())


@pytest.fixture
def db(pg_dsn: str) -> str:
    seed(pg_dsn)
    return pg_dsn


@pytest.fixture
def tokens(db: str) -> dict[str, str]:
    return {"admin": make_key(db, ["provisioning"]),
            "s2-only": make_key(db, ["provisioning"], ["s2"]),
            "reader": make_key(db, ["export"])}


def app_settings(dsn: str, mqtt: MqttSettings) -> Settings:
    return Settings(db=DatabaseSettings(dsn=SecretStr(api_dsn(dsn)), pool_max=2), mqtt=mqtt,
                    auth=AuthSettings(jwt_secret=SecretStr(JWT_SECRET)))


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            yield c


@pytest.fixture
async def client(db: str, broker: DynsecBroker) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(app_settings(db, broker.admin_settings())):
        yield c


@pytest.fixture
def ingest(broker: DynsecBroker) -> Iterator[Probe]:
    probe = Probe(broker.port, INGEST_USER, broker.passwords[INGEST_USER])
    assert probe.connect().value == 0
    assert probe.subscribe(shared_subscription(GROUP)).value == 1
    yield probe
    probe.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def url(site: str, device: str, action: str) -> str:
    return f"/api/v1/sites/{site}/devices/{device}/{action}"


def device_row(dsn: str, site: str, device: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT mqtt_username, provisioned_at, revoked_at FROM devices"
                    " WHERE site_id = %s AND device_id = %s", (site, device))
        row = cur.fetchone()
        assert row is not None
        return row


def audit_rows(dsn: str) -> list[tuple[str, str, str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT actor, action, entity_id, coalesce(before::text, '') ||"
                            " coalesce(after::text, '') FROM audit_log"
                            " WHERE entity = 'device' ORDER BY id").fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]


def connected_device(broker: DynsecBroker, username: str, password: str) -> Probe:
    probe = Probe(broker.port, username, password, client_id=username)
    assert probe.connect().value == 0
    return probe


async def test_provision_publish_rotate_revoke(client: httpx.AsyncClient, db: str,
                                               broker: DynsecBroker, ingest: Probe,
                                               tokens: dict[str, str]) -> None:
    key = auth(tokens["admin"])
    response = await client.post(url("s1", "d1", "provision"), headers=key)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["username"] == "s1/d1" and body["rotated"] is False
    password = body["password"]
    assert len(password) >= 40
    config = yaml.safe_load(body["edge_config"])
    assert config["broker"]["host"] == "mqtt.example.internal"
    assert config["devices"][0]["username"] == "s1/d1"
    row = device_row(db, "s1", "d1")
    assert row["mqtt_username"] == "s1/d1" and row["provisioned_at"] is not None
    assert row["revoked_at"] is None

    dev = await asyncio.to_thread(connected_device, broker, "s1/d1", password)
    payload = marker()
    assert accepted(await asyncio.to_thread(
        dev.publish, mqtt_topic("s1", "d1", Channel.TELEMETRY), payload))
    assert await asyncio.to_thread(ingest.wait_for, payload)

    again = await client.post(url("s1", "d1", "provision"), headers=key)
    assert again.status_code == 409 and "rotate" in again.json()["detail"]

    rotated = await client.post(url("s1", "d1", "provision"), params={"rotate": "true"},
                                headers=key)
    assert rotated.status_code == 201 and rotated.json()["rotated"] is True
    assert rotated.json()["password"] != password
    assert await asyncio.to_thread(dev.wait_disconnected, 3.0), "old session still open"
    dev.close()
    dev = await asyncio.to_thread(connected_device, broker, "s1/d1",
                                  rotated.json()["password"])

    revoked = await client.post(url("s1", "d1", "revoke"), headers=key)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["username"] == "s1/d1"
    assert await asyncio.to_thread(dev.wait_disconnected, 3.0), "revoked device connected"
    dev.close()
    refused = Probe(broker.port, "s1/d1", rotated.json()["password"], client_id="s1/d1")
    assert (await asyncio.to_thread(refused.connect)).value == 135
    assert device_row(db, "s1", "d1")["revoked_at"] is not None
    assert (await client.post(url("s1", "d1", "revoke"), headers=key)).status_code == 409

    # A revoked device may be provisioned again.
    back = await client.post(url("s1", "d1", "provision"), headers=key)
    assert back.status_code == 201 and device_row(db, "s1", "d1")["revoked_at"] is None

    rows = audit_rows(db)
    assert [r[1] for r in rows] == ["device.provision", "device.rotate", "device.revoke",
                                    "device.provision"]
    assert all(r[0] == "key:k-provisioning" and r[2] == "s1/d1" for r in rows)
    for secret in (password, rotated.json()["password"], back.json()["password"]):
        assert all(secret not in r[3] for r in rows)
    await asyncio.to_thread(dev.close)


async def test_camera_gets_a_camera_entry(client: httpx.AsyncClient,
                                          tokens: dict[str, str]) -> None:
    response = await client.post(url("s1", "cam1", "provision"),
                                 headers=auth(tokens["admin"]))
    assert response.status_code == 201, response.text
    config = yaml.safe_load(response.json()["edge_config"])
    AgentConfig.model_validate(config)
    assert config["cameras"][0]["device_id"] == "cam1"


async def test_refusals(client: httpx.AsyncClient, db: str,
                        tokens: dict[str, str]) -> None:
    post = client.post
    assert (await post(url("s1", "d1", "provision"))).status_code == 401
    no_right = await post(url("s1", "d1", "provision"), headers=auth(tokens["reader"]))
    assert no_right.status_code == 403 and "provision" in no_right.json()["detail"]
    unknown = await post(url("s1", "nope", "provision"), headers=auth(tokens["admin"]))
    assert unknown.status_code == 404
    # Outside the key's sites: answered like an unknown device, and nothing happens.
    other = await post(url("s1", "d1", "provision"), headers=auth(tokens["s2-only"]))
    assert other.status_code == 404
    assert (await post(url("s1", "d1", "revoke"), headers=auth(tokens["s2-only"]))
            ).status_code == 404
    bad = await post(url("s1", "D%201", "provision"), headers=auth(tokens["admin"]))
    assert bad.status_code == 422
    never = await post(url("s2", "d1", "revoke"), headers=auth(tokens["s2-only"]))
    assert never.status_code == 409
    assert device_row(db, "s1", "d1")["provisioned_at"] is None
    assert audit_rows(db) == []


async def test_broker_trouble_is_503_and_changes_nothing(db: str,
                                                         tokens: dict[str, str]) -> None:
    unconfigured = app_settings(db, MqttSettings())
    async for c in _client(unconfigured):
        response = await c.post(url("s1", "d1", "provision"), headers=auth(tokens["admin"]))
        assert response.status_code == 503
        assert "ADMIN_USERNAME" in response.json()["detail"]
    assert device_row(db, "s1", "d1")["provisioned_at"] is None
    assert audit_rows(db) == []


# --- the CLI ----------------------------------------------------------------------------


@pytest.fixture
def cli_env(db: str, broker: DynsecBroker, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("GANZHI_DB__DSN", db)
    monkeypatch.setenv("GANZHI_MQTT__HOST", "127.0.0.1")
    monkeypatch.setenv("GANZHI_MQTT__PORT", str(broker.port))
    monkeypatch.setenv("GANZHI_MQTT__ADMIN_USERNAME", "ganzhi-admin")
    monkeypatch.setenv("GANZHI_MQTT__ADMIN_PASSWORD", broker.passwords["ganzhi-admin"])
    get_settings.cache_clear()
    yield db
    get_settings.cache_clear()


def test_cli_provision_and_revoke(cli_env: str, broker: DynsecBroker, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "d1.password"
    assert main(["devices", "provision", "s2", "d1", "--password-file", str(secret)]) == 0
    out, _err = capsys.readouterr()
    assert "provisioned s2/d1" in out and "password:" not in out
    assert secret.stat().st_mode & 0o777 == 0o600
    password = secret.read_text().strip()
    assert password not in out
    assert yaml.safe_load(out.split("\n", 2)[2])["devices"][0]["username"] == "s2/d1"
    dev = connected_device(broker, "s2/d1", password)
    try:
        assert main(["devices", "provision", "s2", "d1"]) == 1
        assert "already provisioned" in capsys.readouterr().err
        assert main(["devices", "revoke", "s2", "d1"]) == 0
        assert "revoked s2/d1" in capsys.readouterr().out
        assert dev.wait_disconnected(3.0)
    finally:
        dev.close()
    assert main(["devices", "provision", "s2", "d1"]) == 0
    out, err = capsys.readouterr()
    assert "shown only this once" in err and "password: " in out
    assert main(["devices", "revoke", "s9", "d1"]) == 1
    assert "no device s9/d1" in capsys.readouterr().err
