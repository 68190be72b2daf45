"""Scope isolation: a district's staff see no row of the sibling district in any list,
detail, readings, evidence, figures or silences endpoint, and act on none of its
incidents (404, as if they did not exist). Against real PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from alerts import actions
from alerts.repository import apply_transition
from ganzhi.contracts import AlertTransition, Severity, TransitionKind, utcnow
from ganzhi.evidence import FileEvidenceStore
from ganzhi.settings import EvidenceSettings

from access_fixtures import UNREGISTERED_SITE, People, api_client, seed_people, settings
from alerting import policy

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
SITES = ("site-a1", "site-b1", UNREGISTERED_SITE)


def snapshot(site: str) -> bytes:
    return f"jpeg of {site}".encode()


def sha(site: str) -> str:
    return hashlib.sha256(snapshot(site)).hexdigest()


def firing(site: str) -> AlertTransition:
    return AlertTransition(
        transition_id=f"{site}:fire", kind=TransitionKind.FIRING,
        fingerprint=f"{site}/cam/no_mask", rule_id="vision.no_mask", severity=Severity.MINOR,
        site_id=site, device_id="cam", started_at=T0, at=T0 + timedelta(minutes=1),
        summary=f"{site}: no mask", values={"snapshot_sha256": sha(site), "model": "m"})


async def seed_activity(dsn: str, evidence: Path) -> dict[str, int]:
    """Per site: an alert (its incident notified) naming a stored snapshot, readings, a
    silence on the site; and a silence of no site. Returns incident ids by site."""
    store = FileEvidenceStore(evidence)
    incidents = {}
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        for site in SITES:
            store.put(sha(site), snapshot(site))
            t = firing(site)
            result = await apply_transition(conn, t, policy(), now=t.at)
            assert result.incident_id is not None
            incidents[site] = result.incident_id
            await actions.create_silence(conn, "silence", {"site_id": site}, None,
                                         utcnow() + timedelta(hours=1), "test", "works")
        await actions.create_silence(conn, "silence", {"rule_id": "vision.*"}, None,
                                     utcnow() + timedelta(hours=1), "test", "everywhere")
        await conn.execute("SELECT ganzhi_ensure_reading_partitions(%s, %s)", (T0, T0))
        for site in SITES:
            await conn.execute(
                "INSERT INTO readings (time, site_id, device_id, metric, value, unit, msg_id)"
                " VALUES (%s, %s, 'fridge', 'temperature', 3, 'celsius', gen_random_uuid())",
                (T0, site))
    return incidents


@pytest.fixture
async def world(pg_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[People, dict[str, int]]]:
    user_ids, keys = await seed_people(pg_dsn)
    incidents = await seed_activity(pg_dsn, tmp_path / "evidence")
    app_settings = settings(pg_dsn, evidence=EvidenceSettings(dir=tmp_path / "evidence"))
    async with api_client(app_settings) as client:
        yield People(client, pg_dsn, user_ids, keys), incidents


async def sites_seen(p: People, who: str) -> dict[str, set[str]]:
    """Which sites ``who`` sees rows of, per read endpoint."""
    out: dict[str, set[str]] = {}

    async def items(url: str, **params: Any) -> Any:
        r = await p.get(who, url, **params)
        assert r.status_code == 200, (who, url, r.text)
        return r.json()

    out["alerts"] = {a["site_id"] for a in (await items("/api/v1/alerts"))["items"]}
    out["incidents"] = {i["site_id"] for i in (await items("/api/v1/incidents"))["items"]}
    period = {"since": "2024-12-31T00:00:00Z", "until": "2025-01-02T00:00:00Z"}
    out["stats"] = {r["key"] for r in (await items("/api/v1/stats/handling", **period))["items"]}
    fps = await items("/api/v1/stats/false-positives", **period)
    assert fps["items"] == []
    out["silences"] = {s["matchers"].get("site_id", "*") for s in
                       await items("/api/v1/silences")}
    out["alert_detail"], out["incident_detail"] = set(), set()
    out["readings"], out["evidence"] = set(), set()
    for site in SITES:
        alert = (await p.get("export-all", "/api/v1/alerts", site_id=site)).json()["items"][0]
        if (await p.get(who, f"/api/v1/alerts/{alert['id']}")).status_code == 200:
            out["alert_detail"].add(site)
        if (await p.get(who, f"/api/v1/incidents/{alert['incident_id']}")).status_code == 200:
            out["incident_detail"].add(site)
        r = await p.get(who, f"/api/v1/devices/{site}/fridge/readings",
                        **{"from": "2025-01-01T07:00:00Z", "to": "2025-01-01T09:00:00Z"})
        if r.status_code == 200:
            assert len(r.json()["points"]) == 1
            out["readings"].add(site)
        else:
            assert r.status_code == 404
        ev = await p.get(who, f"/api/v1/evidence/{sha(site)}")
        if ev.status_code == 200:
            assert ev.content == snapshot(site)
            out["evidence"].add(site)
        else:
            assert ev.status_code == 404 and ev.json() == {"detail": f"no evidence {sha(site)}"}
    return out


async def test_a_district_sees_nothing_of_its_sibling(
        world: tuple[People, dict[str, int]]) -> None:
    p, _ = world
    for who in ("a-staff", "a-viewer", "sa-staff", "export-a", "staff-a"):
        seen = await sites_seen(p, who)
        for endpoint, sites in seen.items():
            expected = {"site-a1"}
            assert sites == expected, (who, endpoint, sites)
    seen = await sites_seen(p, "export-a1")  # a key for one site
    assert all(sites == {"site-a1"} for sites in seen.values()), seen
    for who in ("b-staff",):
        seen = await sites_seen(p, who)
        assert all(sites == {"site-b1"} for sites in seen.values()), seen


async def test_the_root_sees_everything_registered_or_not(
        world: tuple[People, dict[str, int]]) -> None:
    p, _ = world
    for who in ("city-viewer", "export-all"):
        seen = await sites_seen(p, who)
        for endpoint, sites in seen.items():
            want = {*SITES, "*"} if endpoint == "silences" else set(SITES)
            assert sites == want, (who, endpoint, sites)


async def test_actions_on_the_siblings_incidents_are_404(
        world: tuple[People, dict[str, int]]) -> None:
    p, incidents = world
    theirs, mine = incidents["site-b1"], incidents["site-a1"]
    for who in ("a-staff", "staff-a"):
        for action, body in (("ack", {}), ("assign", {"assignee": "x"}),
                             ("comments", {"text": "x"}), ("resolve", {"reason": "x"})):
            r = await p.post(who, f"/api/v1/incidents/{theirs}/{action}", body)
            assert r.status_code == 404, (who, action)
            assert r.json() == {"detail": f"incident {theirs} not found"}
        r = await p.post(who, f"/api/v1/incidents/{incidents[UNREGISTERED_SITE]}/ack")
        assert r.status_code == 404
    assert (await p.post("a-staff", f"/api/v1/incidents/{mine}/ack")).status_code == 200
    with psycopg.connect(p.dsn) as conn:
        actors = {r[0] for r in conn.execute(
            "SELECT actor FROM incident_history WHERE incident_id = %s", (theirs,))}
    assert actors == {"system"}  # nothing of the refused calls happened

    # Feedback: a key of district A knows no clue of district B.
    clue = (await p.get("export-all", f"/api/v1/incidents/{theirs}")).json()["clue_id"]
    url = f"/api/v1/clues/{clue}/feedback"
    assert (await p.post("feedback-a", url, {"status": "accepted"})).status_code == 404
    assert (await p.post("feedback-all", url, {"status": "accepted"})).status_code == 200


async def test_silences_stay_within_scope(world: tuple[People, dict[str, int]]) -> None:
    p, _ = world
    body: dict[str, Any] = {"reason": "works",
                            "ends_at": (utcnow() + timedelta(hours=2)).isoformat()}
    for matchers in ({"site_id": "site-b1"}, {"site_id": "site-*"}, {"rule_id": "*"},
                     {"site_id": UNREGISTERED_SITE}):
        for who in ("a-super", "silences-a"):
            r = await p.post(who, "/api/v1/silences", {**body, "matchers": matchers})
            assert r.status_code == 403, (who, matchers)
    own = await p.post("a-super", "/api/v1/silences",
                       {**body, "matchers": {"site_id": "site-a2"}})
    assert own.status_code == 201
    listed = await p.get("silences-all", "/api/v1/silences")
    theirs = [s["id"] for s in listed.json() if s["matchers"].get("site_id") == "site-b1"]
    assert (await p.delete("a-super", f"/api/v1/silences/{theirs[0]}")).status_code == 404
    assert (await p.delete("b-admin", f"/api/v1/silences/{theirs[0]}")).status_code == 200


async def test_receivers_need_everything(world: tuple[People, dict[str, int]]) -> None:
    p, _ = world
    for who, code in (("operator-a", 403), ("a-admin", 403), ("operator-all", 200),
                      ("city-admin", 200), ("city-viewer", 403)):
        assert (await p.get(who, "/api/v1/receivers")).status_code == code, who
        r = await p.post(who, "/api/v1/receivers/task-system/requeue", {"ids": [1]})
        assert r.status_code == code, who
