"""The HTTP API against real PostgreSQL (ASGI in process, lifespan included)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection
from pydantic import SecretStr

from alerts.repository import apply_transition
from api.main import create_app
from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from ganzhi.settings import (
    AuthSettings,
    DatabaseSettings,
    InsecureSettingError,
    Settings,
    jwt_secret,
)

from access_fixtures import JWT_SECRET, anonymous, api_client, root_reader_token, settings
from alerting import policy

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
POLICY = policy()


def transition(
    kind: TransitionKind, device: str, started_at: datetime, site: str = "site-1"
) -> AlertTransition:
    at = started_at + timedelta(minutes=10 if kind is TransitionKind.FIRING else 30)
    return AlertTransition(
        transition_id=f"{site}/{device}:{kind.value}:{started_at.isoformat()}",
        kind=kind,
        fingerprint=f"{site}/{device}/cold",
        rule_id="cold_chain.chilled",
        severity=Severity.MAJOR,
        site_id=site,
        device_id=device,
        started_at=started_at,
        at=at,
        summary=f"{device} too warm",
        values={"max": 11.5},
    )


async def seed(dsn: str) -> None:
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        for i in range(5):  # alerts 1..5 on fridge-0..4; 1 and 2 resolved
            t = transition(TransitionKind.FIRING, f"fridge-{i}", T0 + timedelta(hours=i))
            await apply_transition(conn, t, POLICY)
        for i in range(2):
            t = transition(TransitionKind.RESOLVED, f"fridge-{i}", T0 + timedelta(hours=i))
            await apply_transition(conn, t, POLICY)
        await apply_transition(
            conn, transition(TransitionKind.FIRING, "fridge-9", T0, site="site-2"), POLICY
        )
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT ganzhi_ensure_reading_partitions(%s, %s)", (T0, T0))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id)"
                " VALUES (%s, 'site-1', 'fridge-0', %s, %s, %s, gen_random_uuid())",
                [
                    (T0 + timedelta(seconds=30 * n), metric, float(n), unit)
                    for n in range(10)
                    for metric, unit in (("temperature", "celsius"), ("humidity", "percent"))
                ],
            )
            cur.executemany(
                "INSERT INTO rollups_1m (bucket, site_id, device_id, metric, count, min, max,"
                " mean, last, last_time) VALUES (%s, 'site-1', 'fridge-0', 'temperature',"
                " 2, %s, %s, %s, %s, %s)",
                [
                    (
                        T0 + timedelta(minutes=m),
                        2 * m,
                        2 * m + 1,
                        2 * m + 0.5,
                        2 * m + 1,
                        T0 + timedelta(minutes=m, seconds=30),
                    )
                    for m in range(5)
                ],
            )
            cur.execute(
                "INSERT INTO rollups_1h (bucket, site_id, device_id, metric, count, min, max,"
                " mean, last, last_time) VALUES (%s, 'site-1', 'fridge-0', 'temperature',"
                " 10, 0, 9, 4.5, 9, %s)",
                (T0, T0 + timedelta(minutes=4, seconds=30)),
            )


@pytest.fixture
async def client(pg_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API, called with an export key valid for every site."""
    await seed(pg_dsn)
    async with api_client(settings(pg_dsn), await root_reader_token(pg_dsn)) as c:
        yield c


async def test_every_read_needs_a_caller(client: httpx.AsyncClient) -> None:
    for url in ("/api/v1/alerts", "/api/v1/alerts/1", "/api/v1/incidents",
                "/api/v1/devices/site-1/fridge-0/readings", "/api/v1/silences",
                "/api/v1/stats/handling", "/api/v1/receivers", "/api/v1/evidence/" + "a" * 64,
                "/api/v1/audit", "/api/v1/users"):
        response = await anonymous(client, "GET", url)
        assert response.status_code == 401, url
        assert response.headers["www-authenticate"] == "Bearer"
    for url in ("/healthz", "/metrics", "/openapi.json", "/docs"):
        assert (await anonymous(client, "GET", url)).status_code == 200, url


def test_the_api_refuses_to_start_without_a_signing_key() -> None:
    for value in (None, "short", "change-me"):
        auth = AuthSettings(jwt_secret=SecretStr(value) if value else None)
        with pytest.raises(InsecureSettingError, match="GANZHI_AUTH__JWT_SECRET"):
            create_app(Settings(auth=auth))
    assert jwt_secret(AuthSettings(jwt_secret=SecretStr(JWT_SECRET))) == JWT_SECRET


async def ids(client: httpx.AsyncClient, **params: Any) -> list[int]:
    response = await client.get("/api/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["items"]]


async def test_list_filters_newest_first(client: httpx.AsyncClient) -> None:
    assert await ids(client) == [6, 5, 4, 3, 2, 1]
    assert await ids(client, status="open") == [6, 5, 4, 3]
    assert await ids(client, status="resolved") == [2, 1]
    assert await ids(client, site_id="site-2") == [6]
    assert await ids(client, site_id="site-1", device_id="fridge-3") == [4]
    first = (await client.get("/api/v1/alerts")).json()["items"][-1]
    assert first["status"] == "resolved" and first["ended_at"] == "2025-01-01T08:30:00Z"
    assert set(first) >= {"id", "rule_id", "severity", "site_id", "device_id", "summary"}


async def test_keyset_pagination(client: httpx.AsyncClient) -> None:
    page = (await client.get("/api/v1/alerts", params={"limit": 4})).json()
    assert [a["id"] for a in page["items"]] == [6, 5, 4, 3]
    assert page["next_before_id"] == 3
    page = (await client.get("/api/v1/alerts", params={"limit": 4, "before_id": 3})).json()
    assert [a["id"] for a in page["items"]] == [2, 1]
    assert page["next_before_id"] is None


async def test_bad_list_params_are_422_with_reason(client: httpx.AsyncClient) -> None:
    for params in ({"status": "closed"}, {"limit": 0}, {"limit": 501}, {"site_id": "BAD ID"}):
        response = await client.get("/api/v1/alerts", params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["msg"]


async def test_alert_detail_has_timeline_and_clue(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/alerts/1")).json()
    assert body["status"] == "resolved"
    assert [e["kind"] for e in body["events"]] == ["firing", "resolved"]
    assert body["events"][0]["summary"] == "fridge-0 too warm"
    clue, resolution = body["clue"], body["clue_resolution"]
    assert clue["status"] == "pending" and clue["attempts"] == 0
    assert clue["next_attempt_at"] is not None
    # Alert 1 resolved: its clue has a second event, the same clue id.
    assert resolution["clue_id"] == clue["clue_id"] and resolution["status"] == "pending"
    open_alert = (await client.get("/api/v1/alerts/3")).json()
    assert open_alert["clue"] is not None and open_alert["clue_resolution"] is None


async def test_unknown_alert_is_404_with_reason(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/alerts/999")
    assert response.status_code == 404
    assert response.json() == {"detail": "alert 999 not found"}


async def test_raw_readings(client: httpx.AsyncClient) -> None:
    params = {
        "metric": "temperature",
        "from": T0.isoformat(),
        "to": (T0 + timedelta(minutes=3)).isoformat(),
    }
    response = await client.get("/api/v1/devices/site-1/fridge-0/readings", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resolution"] == "raw" and body["from"] == "2025-01-01T08:00:00Z"
    assert [p["value"] for p in body["points"]] == [0, 1, 2, 3, 4, 5]
    assert {p["unit"] for p in body["points"]} == {"celsius"}
    assert body["truncated"] is False

    both = await client.get(
        "/api/v1/devices/site-1/fridge-0/readings",
        params={"from": params["from"], "to": params["to"], "limit": 5},
    )
    assert len(both.json()["points"]) == 5 and both.json()["truncated"] is True


async def test_rollup_readings(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/devices/site-1/fridge-0/readings",
        params={"resolution": "1m", "from": "2025-01-01T08:00:00Z", "to": "2025-01-01T09:00:00Z"},
    )
    points = response.json()["points"]
    assert [p["value"] for p in points] == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert (points[1]["min"], points[1]["max"], points[1]["count"]) == (2.0, 3.0, 2)


async def test_hourly_readings(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/devices/site-1/fridge-0/readings",
        params={"resolution": "1h", "from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z"},
    )
    assert response.status_code == 200, response.text
    (point,) = response.json()["points"]
    assert (point["value"], point["min"], point["max"], point["count"]) == (4.5, 0.0, 9.0, 10)


async def test_bad_readings_params_are_422_with_reason(client: httpx.AsyncClient) -> None:
    url = "/api/v1/devices/site-1/fridge-0/readings"
    cases: list[dict[str, str | int]] = [
        {"resolution": "5m"},
        {"from": "yesterday"},
        {"from": "2025-01-01T08:00:00"},  # no time zone
        {"limit": 100_000},
        {"metric": "Temp!"},
    ]
    for params in cases:
        response = await client.get(url, params=params)
        assert response.status_code == 422, params
    response = await client.get(
        url, params={"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"}
    )
    assert response.status_code == 422
    assert "must be before" in response.json()["detail"][0]["msg"]
    assert (await client.get("/api/v1/devices/BAD/fridge-0/readings")).status_code == 422


async def test_readings_of_an_unknown_device_are_404(client: httpx.AsyncClient,
                                                     pg_dsn: str) -> None:
    unknown = await client.get("/api/v1/devices/site-1/no-such-fridge/readings")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "device site-1/no-such-fridge not found"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # registered, nothing sent yet
        conn.execute("INSERT INTO jurisdictions (id, name, level, path)"
                     " VALUES ('sz', 'Shenzhen', 'city', '/sz/')")
        conn.execute("INSERT INTO sites (id, jurisdiction_id, name, category)"
                     " VALUES ('site-1', 'sz', 'One', 'cold_store')")
        conn.execute("INSERT INTO devices (site_id, device_id, device_class)"
                     " VALUES ('site-1', 'new-fridge', 'cold_store')")
    quiet = await client.get("/api/v1/devices/site-1/new-fridge/readings")
    assert quiet.status_code == 200 and quiet.json()["points"] == []


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"ok": True, "db": "ok"}
    await client.get("/api/v1/alerts/999")
    metrics = (await client.get("/metrics")).text
    assert (
        'ganzhi_api_requests_total{method="GET",route="/api/v1/alerts/{alert_id}",status="404"}'
        in metrics
    )
    assert "ganzhi_api_request_seconds_bucket" in metrics


async def test_health_is_503_when_db_is_down() -> None:
    dsn = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    app = create_app(Settings(db=DatabaseSettings(dsn=SecretStr(dsn), pool_min=0),
                              auth=AuthSettings(jwt_secret=SecretStr(JWT_SECRET))))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            response = await c.get("/healthz")
    assert response.status_code == 503
    assert response.json()["ok"] is False


async def test_console_filters_on_alerts_and_incidents(client: httpx.AsyncClient,
                                                       pg_dsn: str) -> None:
    """Severity, rule (exact or prefix), jurisdiction subtree and time window."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO jurisdictions (id, name, level, path) VALUES"
                     " ('sz', 'Shenzhen', 'city', '/sz/')")
        conn.execute("INSERT INTO jurisdictions (id, parent_id, name, level, path) VALUES"
                     " ('sz_ft', 'sz', 'Futian', 'district', '/sz/sz_ft/'),"
                     " ('szxft', 'sz', 'Other', 'district', '/sz/szxft/')")
        conn.execute("INSERT INTO sites (id, jurisdiction_id, name, category) VALUES"
                     " ('site-2', 'sz_ft', 'Two', 'cold_store')")
    assert await ids(client, severity="major") == [6, 5, 4, 3, 2, 1]
    assert await ids(client, severity=["critical", "info"]) == []
    assert await ids(client, rule_id="cold_chain.*") == [6, 5, 4, 3, 2, 1]
    assert await ids(client, rule_id="cold_chain.chilled") == [6, 5, 4, 3, 2, 1]
    assert await ids(client, rule_id="elevator.*") == []
    assert await ids(client, jurisdiction="sz") == [6]  # only site-2 is registered
    assert await ids(client, jurisdiction="szxft") == []  # '_' is not a wildcard
    window = {"since": (T0 + timedelta(hours=1)).isoformat(),
              "until": (T0 + timedelta(hours=3)).isoformat()}
    assert await ids(client, **window) == [3, 2]
    incidents = await client.get("/api/v1/incidents", params={**window, "severity": "major"})
    assert incidents.status_code == 200
    assert {i["opened_at"] for i in incidents.json()["items"]} == {
        "2025-01-01T09:00:00Z", "2025-01-01T10:00:00Z"}
    for bad in ({"severity": "huge"}, {"rule_id": "Cold Chain"}, {"jurisdiction": "../x"},
                {"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
                {"since": "0.5"}):
        response = await client.get("/api/v1/alerts", params=bad)
        assert response.status_code == 422, (bad, response.text)
        assert isinstance(response.json()["detail"], list)


async def test_readings_choose_their_resolution_and_cap_the_span(
        client: httpx.AsyncClient) -> None:
    url = "/api/v1/devices/site-1/fridge-0/readings"

    async def resolution(hours: float, **params: str) -> Any:
        response = await client.get(url, params={
            "from": T0.isoformat(), "to": (T0 + timedelta(hours=hours)).isoformat(),
            **params})
        return response.json()["resolution"] if response.status_code == 200 else (
            response.status_code)

    assert await resolution(1) == "raw"
    assert await resolution(24) == "1m"
    assert await resolution(24 * 30) == "1h"
    assert await resolution(24 * 3, resolution="raw") == 422  # raw spans 2 days at most
    assert await resolution(24 * 500) == 422  # beyond retention
    response = await client.get(url, params={"to": "0.5"})
    assert response.status_code == 422
