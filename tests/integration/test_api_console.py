"""The console's API (issue 12) against real PostgreSQL: who am I, incident search, the
overview, risk and trend figures on known data, the live stream (a real ``ganzhi api``
process: scope of each stream, Last-Event-ID replay, resync, the LISTEN connection
lost and regained, metrics, SIGTERM with streams open), and the console's static files.
Every figure is checked for scope: district B sees nothing of district A."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import AsyncConnection

from alerts import actions, overview
from alerts.repository import apply_transition
from alerts.risk import RiskIncident, site_risk
from api.routes.live import APPLICATION_NAME, RESYNC, HistoryEvent, Subscriber
from api.static import CSP
from ganzhi import apikeys
from ganzhi.access import Scope
from ganzhi.contracts import Severity, utcnow
from ganzhi.stack.infra import free_port

from access_fixtures import (
    JWT_SECRET,
    UNREGISTERED_SITE,
    People,
    anonymous,
    api_client,
    login,
    seed_people,
    settings,
)
from alerting import FIRING, policy, tr

pytestmark = pytest.mark.integration


# --- known data --------------------------------------------------------------------------


def at(day: date, hour: float) -> datetime:
    return datetime.combine(day, dtime(), tzinfo=UTC) + timedelta(hours=hour)


@dataclass(frozen=True)
class Row:
    site: str
    severity: str
    family: str  # the type when there is no primary alert
    opened: datetime
    resolved: datetime | None = None
    fp: bool = False
    notified: datetime | None = None
    acked: datetime | None = None
    closed: datetime | None = None


def known_rows(now: datetime) -> list[Row]:
    d1 = now.date() - timedelta(days=3)
    d2 = d1 - timedelta(days=1)
    return [
        # district A, day d1: open (non-info, not false positive) 00-02 and 10-15: 7 h
        Row("site-a1", "critical", "cold_chain", at(d1, 10), at(d1, 13), notified=at(d1, 10),
            acked=at(d1, 10 + 10 / 60), closed=at(d1, 12)),
        Row("site-a1", "major", "vision", at(d1, 12), at(d1, 15), notified=at(d1, 12),
            acked=at(d1, 12.5)),
        Row("site-a2", "info", "elevator", at(d1, 0), at(d1, 23)),  # info: no open hours
        Row("site-a2", "major", "cold_chain", at(d1, 16), at(d1, 18), fp=True,
            notified=at(d1, 16)),  # a false positive: no open hours
        Row("site-a2", "minor", "elevator", at(d2, 22), at(d1, 2)),  # across midnight
        Row("site-a1", "critical", "device", now - timedelta(hours=2)),  # open now
        # district B
        Row("site-b1", "critical", "cold_chain", now - timedelta(hours=1)),
        Row("site-b1", "major", "vision", at(d1, 8), at(d1, 20)),
        # a site the registry does not know: only who sees everything
        Row(UNREGISTERED_SITE, "major", "custom", now - timedelta(minutes=30)),
    ]


async def insert(conn: AsyncConnection[Any], rows: list[Row]) -> None:
    for n, r in enumerate(rows):
        await conn.execute(
            "INSERT INTO incidents (group_key, family, site_id, status, severity, clue_id,"
            " opened_at, resolved_at, false_positive, notify_state, notified_at,"
            " acknowledged_at, closed_at) VALUES (%s, %s, %s, %s, %s, gen_random_uuid(),"
            " %s, %s, %s, %s, %s, %s, %s)",
            (f"known:{n}", r.family, r.site, "open" if r.resolved is None else "resolved",
             r.severity, r.opened, r.resolved, r.fp,
             "notified" if r.notified else "held", r.notified, r.acked, r.closed))


@pytest.fixture
async def people(pg_dsn: str) -> AsyncIterator[People]:
    user_ids, keys = await seed_people(pg_dsn)
    async with api_client(settings(pg_dsn)) as client:
        yield People(client, pg_dsn, user_ids, keys)


@pytest.fixture
async def known(people: People) -> datetime:
    now = utcnow()
    async with await AsyncConnection.connect(people.dsn, autocommit=True) as conn:
        await insert(conn, known_rows(now))
    return now


async def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


# --- /auth/me ----------------------------------------------------------------------------


async def test_me_says_who_the_caller_is(people: People) -> None:
    me = await ok(await people.get("a-staff", "/api/v1/auth/me"))
    assert me == {"kind": "user", "username": "a-staff", "display_name": "",
                  "role": "staff", "jurisdiction_id": "district-a",
                  "jurisdiction_path": "/city/district-a/", "site_ids": None,
                  "sees_everything": False, "permissions": ["read", "work_incidents"]}
    admin = await ok(await people.get("city-admin", "/api/v1/auth/me"))
    assert admin["sees_everything"] and admin["jurisdiction_path"] == "/city/"
    assert "manage_accounts" in admin["permissions"]
    key = await ok(await people.get("export-a1", "/api/v1/auth/me"))
    assert key == {"kind": "key", "username": "export-a1", "display_name": None,
                   "role": None, "jurisdiction_id": None, "jurisdiction_path": None,
                   "site_ids": ["site-a1"], "sees_everything": False,
                   "permissions": ["read"]}
    node_key = await ok(await people.get("export-a", "/api/v1/auth/me"))
    assert node_key["jurisdiction_id"] == "district-a" and node_key["site_ids"] is None
    # any valid caller may ask, a key without read too
    feedback = await ok(await people.get("feedback-all", "/api/v1/auth/me"))
    assert feedback["permissions"] == ["feedback"] and feedback["sees_everything"]
    assert (await anonymous(people.client, "GET", "/api/v1/auth/me")).status_code == 401
    bad = await people.client.get("/api/v1/auth/me",
                                  headers={"Authorization": "Bearer gzk_nope"})
    assert bad.status_code == 401


# --- incident search ---------------------------------------------------------------------


async def test_incident_search_by_text_in_scope(people: People) -> None:
    t0 = utcnow() - timedelta(hours=1)
    async with await AsyncConnection.connect(people.dsn, autocommit=True) as conn:
        await conn.execute("UPDATE sites SET name = 'Golden Dragon Kitchen'"
                           " WHERE id = 'site-a2'")
        for site, device, rule, summary in [
            ("site-a1", "freezer-3", "cold_chain.frozen", "Freezer 3 too warm (100%)"),
            ("site-a2", "cam-1", "vision.no_mask", "kitchen staff without a mask"),
            ("site-b1", "freezer-9", "cold_chain.frozen", "Freezer 9 too warm"),
        ]:
            t = tr(FIRING, rule, start=t0, device=device, site=site, summary=summary)
            await apply_transition(conn, t, policy(), now=t.at)

    async def found(who: str, q: str) -> list[str]:
        body = await ok(await people.get(who, "/api/v1/incidents", q=q))
        return sorted(f"{i['site_id']}/{i['device_id']}" for i in body["items"])

    assert await found("city-admin", "FREEZER") == ["site-a1/freezer-3", "site-b1/freezer-9"]
    assert await found("a-staff", "freezer") == ["site-a1/freezer-3"]  # scope still applies
    assert await found("b-staff", "freezer") == ["site-b1/freezer-9"]
    assert await found("a-staff", "dragon") == ["site-a2/cam-1"]  # the site's name
    assert await found("a-staff", "no_mask") == ["site-a2/cam-1"]  # the rule id
    assert await found("a-staff", "cam-1") == ["site-a2/cam-1"]  # the device id
    assert await found("a-staff", "site-a1") == ["site-a1/freezer-3"]  # the site id
    # the text is text, not a pattern: % and _ match themselves only
    assert await found("city-admin", "100%") == ["site-a1/freezer-3"]
    assert await found("city-admin", "%") == ["site-a1/freezer-3"]
    assert await found("city-admin", "freezer_3") == []  # _ is no wildcard
    assert await found("city-admin", "chain_frozen") == []
    assert await found("a-staff", "b1") == []
    # with the other filters
    body = await ok(await people.get("city-admin", "/api/v1/incidents", q="freezer",
                                     site_id="site-b1"))
    assert [i["site_id"] for i in body["items"]] == ["site-b1"]
    for bad in ("", "x" * 101, "a\x00b"):
        response = await people.get("a-staff", "/api/v1/incidents", q=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", "q"]


# The search as it was before 0013: ILIKE on each field. incidents.search_text must give
# the same rows.
_OLD_SEARCH = (
    "SELECT i.id FROM incidents i LEFT JOIN alerts a ON a.id = i.primary_alert_id"
    " WHERE a.summary ILIKE %s OR a.rule_id ILIKE %s OR i.site_id ILIKE %s"
    " OR i.device_id ILIKE %s OR i.site_id IN (SELECT sn.id FROM sites sn"
    " WHERE sn.name ILIKE %s) ORDER BY i.id DESC")


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def test_search_text_follows_the_primary_alert_and_the_site_name(
        people: People) -> None:
    t0 = utcnow() - timedelta(hours=1)
    async with await AsyncConnection.connect(people.dsn, autocommit=True) as conn:
        t = tr(FIRING, "cold_chain.frozen", start=t0, device="room-7", site="site-a1",
               summary="Freezer too warm")
        result = await apply_transition(conn, t, policy(), now=t.at)
        incident = result.incident_id
        other = tr(FIRING, "elevator.trapped_at_level", start=t0, device="lift-2",
                   site="site-a2", summary="Passenger trapped")
        other_result = await apply_transition(conn, other, policy(), now=other.at)

        async def found(q: str) -> list[int]:
            body = await ok(await people.get("city-admin", "/api/v1/incidents", q=q))
            return [i["id"] for i in body["items"]]

        async def row() -> tuple[Any, ...]:
            cur = await conn.execute(
                "SELECT rule_id, search_text FROM incidents WHERE id = %s", (incident,))
            r = await cur.fetchone()
            assert r is not None
            return tuple(r)

        assert await found("freezer too") == [incident]
        assert (await row())[0] == "cold_chain.frozen"
        # the primary alert's summary and rule change (whoever writes them)
        await conn.execute("UPDATE alerts SET summary = 'Compressor stopped',"
                           " rule_id = 'cold_chain.compressor' WHERE id = %s",
                           (result.alert_id,))
        assert await found("freezer too") == []
        assert await found("compressor stopped") == [incident]
        assert (await row())[0] == "cold_chain.compressor"
        body = await ok(await people.get("city-admin", "/api/v1/incidents",
                                         rule_id="cold_chain.compressor"))
        assert [i["id"] for i in body["items"]] == [incident]
        assert body["items"][0]["rule_id"] == "cold_chain.compressor"
        # another alert becomes the primary
        await conn.execute("UPDATE incidents SET primary_alert_id = %s WHERE id = %s",
                           (other_result.alert_id, incident))
        assert await found("compressor") == []
        assert await found("passenger trapped") == sorted(
            [incident, other_result.incident_id], reverse=True)
        assert (await row())[0] == "elevator.trapped_at_level"
        # the site is renamed
        await conn.execute("UPDATE sites SET name = '阳光冷库 1号' WHERE id = 'site-a1'")
        assert await found("阳光冷库") == [incident]
        assert await found("光冷库 1") == [incident]
        await conn.execute("UPDATE sites SET name = 'Harbour Kitchen' WHERE id = 'site-a1'")
        assert await found("阳光冷库") == []
        assert await found("harbour KITCHEN") == [incident]
        # every incident's search_text is what the triggers would write from scratch
        cur = await conn.execute(
            "SELECT count(*) FROM incidents i LEFT JOIN alerts a ON a.id = i.primary_alert_id"
            " LEFT JOIN sites s ON s.id = i.site_id"
            " WHERE i.search_text IS DISTINCT FROM ganzhi_incident_search_text(a.summary,"
            " a.rule_id, i.site_id, i.device_id, s.name)"
            " OR i.rule_id IS DISTINCT FROM a.rule_id")
        assert await cur.fetchone() == (0,)


async def test_search_returns_the_rows_of_the_old_ilike(people: People) -> None:
    """1-2 characters (no trigram: the walk), rare and common terms, Chinese text, the
    wildcards as text: the API's rows are the old per-field ILIKE's, with the planner's
    choice and with the trigram index forced."""
    t0 = utcnow() - timedelta(hours=2)
    async with await AsyncConnection.connect(people.dsn, autocommit=True) as conn:
        await conn.execute("UPDATE sites SET name = '阳光冷库 1号' WHERE id = 'site-a1'")
        await conn.execute("UPDATE sites SET name = '海港餐厅 12号' WHERE id = 'site-a2'")
        n = 0
        for site in ("site-a1", "site-a2", "site-b1"):
            for device, rule, summary in [
                ("cold-1", "cold_chain.temperature_high", "冷库温度过高 (9.5 °C)"),
                ("cold-2", "cold_chain.door_open", "Door open 12 min"),
                ("cam-1", "vision.no_mask", "No mask 100% sure"),
                ("cam-2", "vision.smoking", "Smoking_in kitchen"),
            ]:
                n += 1
                t = tr(FIRING, rule, start=t0 + timedelta(minutes=n), device=device,
                       site=site, summary=summary)
                await apply_transition(conn, t, policy(), now=t.at)
        terms = ["x", "k", "1", "冷", "12", "cam", "冷库", "阳光冷库 1号", "港餐", "cold-2",
                 "site-b1", "SMOKING_IN", "12_min", "100%", "%", "_", "9.5 °c", "nothing-here",
                 "门", "a\x1fb"]
        matched: dict[str, int] = {}
        for q in terms:
            cur = await conn.execute(_OLD_SEARCH, [_like(q)] * 5)
            expected = [r[0] for r in await cur.fetchall()]
            matched[q] = len(expected)
            body = await ok(await people.get("city-admin", "/api/v1/incidents", q=q,
                                             limit=500))
            assert [i["id"] for i in body["items"]] == expected, q
            async with conn.transaction():
                await conn.execute("SET LOCAL enable_seqscan = off")
                await conn.execute("SET LOCAL enable_indexscan = off")
                cur = await conn.execute(
                    "SELECT id FROM incidents WHERE search_text LIKE ganzhi_search_fold(%s)"
                    " ORDER BY id DESC", [_like(q)])
                assert [r[0] for r in await cur.fetchall()] == expected, q
        # the terms mean something on this data
        assert all(matched[q] for q in ("k", "1", "冷", "cam", "冷库", "阳光冷库 1号", "港餐",
                                        "cold-2", "site-b1", "SMOKING_IN", "100%", "9.5 °c"))
        assert not any(matched[q] for q in ("12_min", "nothing-here", "门", "a\x1fb"))


# --- overview ----------------------------------------------------------------------------


async def test_overview_counts_of_the_callers_scope(people: People, known: datetime) -> None:
    a = await ok(await people.get("a-staff", "/api/v1/stats/overview"))
    assert (a["open_total"], a["open_critical_total"]) == (1, 1)
    assert (a["opened_24h"], a["resolved_24h"]) == (1, 0)
    assert a["by_jurisdiction"] == [{"jurisdiction_id": "station-a", "name": "Station-A",
                                     "path": "/city/district-a/station-a/", "open": 1,
                                     "critical": 1, "opened_24h": 1}]
    types = {t["type"]: (t["open"], t["critical"], t["opened_24h"]) for t in a["by_type"]}
    assert types == {"cold_chain": (0, 0, 0), "elevator": (0, 0, 0), "vision": (0, 0, 0),
                     "device": (1, 1, 1), "other": (0, 0, 0)}
    assert [(i["site_id"], i["severity"]) for i in a["open_critical"]] == [
        ("site-a1", "critical")]
    # handling, last 30 days: three clues out, acknowledged after 600 s and 1800 s,
    # one closed after 7200 s, one false positive
    assert a["handling"] == {"ack_median_s": 1200.0, "ack_p90_s": 1680.0,
                             "close_median_s": 7200.0, "close_p90_s": 7200.0,
                             "incidents": 3, "false_positives": 1}

    b = await ok(await people.get("b-staff", "/api/v1/stats/overview"))
    assert (b["open_total"], b["open_critical_total"], b["opened_24h"]) == (1, 1, 1)
    assert [n["jurisdiction_id"] for n in b["by_jurisdiction"]] == ["station-b"]
    assert [i["site_id"] for i in b["open_critical"]] == ["site-b1"]
    assert b["handling"] == {"ack_median_s": None, "ack_p90_s": None,
                             "close_median_s": None, "close_p90_s": None,
                             "incidents": 0, "false_positives": 0}

    city = await ok(await people.get("city-admin", "/api/v1/stats/overview"))
    assert (city["open_total"], city["open_critical_total"]) == (3, 2)  # site-x too
    assert [(n["jurisdiction_id"], n["open"], n["critical"]) for n in
            city["by_jurisdiction"]] == [("district-a", 1, 1), ("district-b", 1, 1)]
    types = {t["type"]: t["open"] for t in city["by_type"]}
    assert types == {"cold_chain": 1, "elevator": 0, "vision": 0, "device": 1, "other": 1}
    assert [i["site_id"] for i in city["open_critical"]] == ["site-b1", "site-a1"]

    # a leaf node's caller: the node itself; a key limited to a site: its site only
    sa = await ok(await people.get("sa-staff", "/api/v1/stats/overview"))
    assert [(n["jurisdiction_id"], n["open"]) for n in sa["by_jurisdiction"]] == [
        ("station-a", 1)]
    a1 = await ok(await people.get("export-a1", "/api/v1/stats/overview"))
    assert a1["open_total"] == 1 and a1["handling"]["incidents"] == 2


# --- risk --------------------------------------------------------------------------------


def expected_risk(rows: list[Row], site: str, now: datetime) -> float:
    return site_risk([RiskIncident(r.severity, r.opened, r.resolved, r.fp)
                      for r in rows if r.site == site], now).score


async def test_risk_table_of_the_callers_sites(people: People, known: datetime) -> None:
    rows = known_rows(known)
    a = await ok(await people.get("a-staff", "/api/v1/stats/risk"))
    assert a["formula"].startswith("risk-v1")
    until = datetime.fromisoformat(a["until"])
    assert until - datetime.fromisoformat(a["since"]) == timedelta(days=30)
    assert [i["site_id"] for i in a["items"]] == ["site-a1", "site-a2"]
    a1, a2 = a["items"]
    assert a1 == {"site_id": "site-a1", "name": "site-a1", "jurisdiction_id": "station-a",
                  "score": expected_risk(rows, "site-a1", until), "incidents": 3,
                  "critical": 2, "open": 1,
                  "unresolved_hours": pytest.approx(8.0, abs=0.1),
                  "false_positives": 0}
    assert (a2["incidents"], a2["critical"], a2["open"], a2["false_positives"]) == (
        3, 0, 0, 1)
    assert a2["score"] == expected_risk(rows, "site-a2", until)
    assert a2["unresolved_hours"] == 27.0  # info 23 h + minor 4 h; the false positive not
    assert 0 < a2["score"] < a1["score"] <= 100

    b = await ok(await people.get("b-staff", "/api/v1/stats/risk"))
    assert [i["site_id"] for i in b["items"]] == ["site-b1"]
    city = await ok(await people.get("city-admin", "/api/v1/stats/risk", limit=2))
    assert len(city["items"]) == 2
    assert [i["score"] for i in city["items"]] == sorted(
        (i["score"] for i in city["items"]), reverse=True)
    everything = await ok(await people.get("city-admin", "/api/v1/stats/risk"))
    unregistered = next(i for i in everything["items"] if i["site_id"] == UNREGISTERED_SITE)
    assert unregistered["name"] is None and unregistered["jurisdiction_id"] is None
    # a jurisdiction narrows it; one outside the caller's subtree does not exist for it
    by_node = await ok(await people.get("city-admin", "/api/v1/stats/risk",
                                        jurisdiction="district-b"))
    assert [i["site_id"] for i in by_node["items"]] == ["site-b1"]
    station = await ok(await people.get("a-staff", "/api/v1/stats/risk",
                                        jurisdiction="station-a"))
    assert [i["site_id"] for i in station["items"]] == ["site-a1", "site-a2"]
    for node in ("district-b", "nowhere"):
        response = await people.get("a-staff", "/api/v1/stats/risk", jurisdiction=node)
        assert response.status_code == 404, response.text
        assert response.json() == {"detail": f"jurisdiction {node} not found"}
    # a short window: only what opened in it
    day = await ok(await people.get("a-staff", "/api/v1/stats/risk", days=1))
    assert [(i["site_id"], i["incidents"]) for i in day["items"]] == [("site-a1", 1)]


async def test_risk_summed_in_sql_is_the_pure_formula(people: People, known: datetime
                                                       ) -> None:
    """The risk table sums the formula per site in SQL (overview.site_risks); the pure
    alerts.risk.site_risk is its specification: on the same incidents, read back from
    the database, both give the same score and counts, so the two cannot drift."""
    until = known + timedelta(minutes=7, seconds=3.25)  # not a round age
    for days in (30, 4, 1):
        since = until - timedelta(days=days)
        async with await AsyncConnection.connect(people.dsn, autocommit=True) as conn:
            summed = await overview.site_risks(conn, since, until)
            read_back = await overview.risk_incidents(conn, since, until)
            scoped = await overview.site_risks(conn, since, until,
                                               Scope(path="/city/district-b/"))
        assert len(read_back) >= 3 and {s.site_id for s in summed} == {
            s.site_id for s in read_back}
        by_site = {s.site_id: s for s in summed}
        for site in read_back:
            spec = site_risk(site.incidents, until)
            got = by_site[site.site_id]
            assert (got.name, got.jurisdiction_id) == (site.name, site.jurisdiction_id)
            assert got.risk.raw == pytest.approx(spec.raw, rel=1e-12, abs=1e-12)
            assert got.risk == replace(spec, raw=got.risk.raw)
        assert [s.site_id for s in scoped] == ["site-b1"]


# --- trend -------------------------------------------------------------------------------


async def test_trend_per_utc_day_with_open_hours(people: People, known: datetime) -> None:
    d1 = (known.date() - timedelta(days=3)).isoformat()
    d2 = (known.date() - timedelta(days=4)).isoformat()
    a = await ok(await people.get("a-staff", "/api/v1/stats/trend", days=7))
    assert a["site_id"] is None
    days = [d["day"] for d in a["days"]]
    assert len(days) == 7 and days == sorted(days) and days[-1] == utcnow().date().isoformat()
    assert datetime.fromisoformat(a["since"]) == at(date.fromisoformat(days[0]), 0)
    by_day = {d["day"]: d for d in a["days"]}
    assert by_day[d1] == {
        "day": d1, "opened": 4, "critical": 1,
        "by_type": {"cold_chain": 2, "elevator": 1, "vision": 1, "device": 0, "other": 0},
        # 00-02 (the minor one from the day before) and 10-15 (two overlapping)
        "open_hours": 7.0, "compliance": round(1 - 7 / 24, 4)}
    assert (by_day[d2]["opened"], by_day[d2]["open_hours"]) == (1, 2.0)
    assert sum(d["opened"] for d in a["days"]) == 6
    quiet = [d for d in a["days"] if d["day"] not in (d1, d2, days[-1], days[-2])]
    assert all(d["opened"] == 0 and d["open_hours"] == 0 and d["compliance"] == 1.0
               for d in quiet)  # zero days are there

    one = await ok(await people.get("a-staff", "/api/v1/stats/trend", site_id="site-a2",
                                    days=7))
    one_day = {d["day"]: d for d in one["days"]}[d1]
    assert (one["site_id"], one_day["opened"], one_day["open_hours"]) == ("site-a2", 2, 2.0)

    b = await ok(await people.get("b-staff", "/api/v1/stats/trend", days=7))
    b_day = {d["day"]: d for d in b["days"]}[d1]
    assert (b_day["opened"], b_day["open_hours"], b_day["by_type"]["vision"]) == (1, 12.0, 1)
    assert sum(d["opened"] for d in b["days"]) == 2  # nothing of district A

    default = await ok(await people.get("a-staff", "/api/v1/stats/trend"))
    assert len(default["days"]) == 30
    response = await people.get("a-staff", "/api/v1/stats/trend", site_id="site-b1")
    assert response.status_code == 404
    assert response.json() == {"detail": "site site-b1 not found"}


async def test_the_open_hours_of_today_run_up_to_now(people: People) -> None:
    now = utcnow()
    start = max(at(now.date(), 0), now - timedelta(hours=3))
    async with await AsyncConnection.connect(people.dsn, autocommit=True) as conn:
        await insert(conn, [Row("site-a1", "major", "cold_chain", start)])
    a = await ok(await people.get("a-staff", "/api/v1/stats/trend", days=1))
    [today] = a["days"]
    expected = (datetime.fromisoformat(a["until"]) - start).total_seconds() / 3600
    assert today["open_hours"] == pytest.approx(expected, abs=0.011)
    assert today["opened"] == 1


@pytest.mark.parametrize(("url", "params", "loc"), [
    ("/api/v1/stats/trend", {"days": 0}, ["query", "days"]),
    ("/api/v1/stats/trend", {"days": 10000}, ["query", "days"]),
    ("/api/v1/stats/trend", {"days": "x"}, ["query", "days"]),
    ("/api/v1/stats/trend", {"site_id": "Bad Site"}, ["query", "site_id"]),
    ("/api/v1/stats/risk", {"days": 0}, ["query", "days"]),
    ("/api/v1/stats/risk", {"days": 367}, ["query", "days"]),
    ("/api/v1/stats/risk", {"limit": 0}, ["query", "limit"]),
    ("/api/v1/stats/risk", {"jurisdiction": "Bad/Node"}, ["query", "jurisdiction"]),
])
async def test_bad_figures_input_is_422_with_the_reason(
        people: People, url: str, params: dict[str, Any], loc: list[str]) -> None:
    response = await people.get("a-staff", url, **params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


async def test_figures_need_a_reader(people: People) -> None:
    for url in ("/api/v1/stats/overview", "/api/v1/stats/risk", "/api/v1/stats/trend"):
        assert (await anonymous(people.client, "GET", url)).status_code == 401
        response = await people.get("feedback-all", url)
        assert response.status_code == 403, response.text


# --- live stream -------------------------------------------------------------------------


@dataclass
class Api:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def api_process(pg_dsn: str, tmp_path: Path) -> Iterator[Api]:
    """``ganzhi api`` as deployed: its own process, uvicorn, signals."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANZHI_")}
    env.update({"GANZHI_DB__DSN": pg_dsn, "GANZHI_AUTH__JWT_SECRET": JWT_SECRET,
                "GANZHI_API__PORT": str(port), "GANZHI_API__HOST": "127.0.0.1",
                "GANZHI_API__CONSOLE_DIR": str(tmp_path / "no-console")})
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ganzhi.cli", "api"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Api(url, proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@dataclass
class Event:
    event: str
    id: str | None
    data: Any


class Stream:
    """One open ``GET /api/v1/live``, read event by event."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, within_s: float = 10.0) -> Event:
        return await asyncio.wait_for(self._next(), within_s)

    async def _next(self) -> Event:
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if "data" in fields:
                    return Event(fields.get("event", "message"), fields.get("id"),
                                 json.loads(fields["data"]))
                fields.clear()
                continue
            if line.startswith(":"):
                continue  # a comment (ping)
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        raise EOFError("the stream ended")


class LiveClients:
    def __init__(self, api: Api, dsn: str) -> None:
        self.api = api
        self.dsn = dsn
        self.client = httpx.AsyncClient(base_url=api.url, timeout=httpx.Timeout(10, read=60))
        self.tokens: dict[str, str] = {}

    async def token(self, who: str) -> str:
        if who not in self.tokens:
            self.tokens[who] = await login(self.client, who)
        return self.tokens[who]

    async def open(self, who: str, last_event_id: int | None = None) -> Stream:
        headers = {"Authorization": f"Bearer {await self.token(who)}",
                   "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        request = self.client.build_request("GET", "/api/v1/live", headers=headers)
        response = await self.client.send(request, stream=True)
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        return Stream(response)


@pytest.fixture
async def live(api_process: Api, pg_dsn: str) -> AsyncIterator[LiveClients]:
    await seed_people(pg_dsn)
    clients = LiveClients(api_process, pg_dsn)
    try:
        yield clients
    finally:
        await clients.client.aclose()


async def open_incidents(dsn: str) -> dict[str, int]:
    out = {}
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        for site in ("site-a1", "site-b1"):
            t = tr(FIRING, "cold_chain.frozen", start=utcnow() - timedelta(minutes=5),
                   site=site, device="fridge", severity=Severity.CRITICAL,
                   summary=f"{site} too warm")
            result = await apply_transition(conn, t, policy(), now=t.at)
            assert result.incident_id is not None
            out[site] = result.incident_id
    return out


async def comment(dsn: str, incident_id: int, text: str) -> int:
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await actions.comment(conn, incident_id, "user:a-staff", text)
        cur = await conn.execute("SELECT max(id) FROM incident_history WHERE incident_id = %s",
                                 (incident_id,))
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def metric(client: httpx.AsyncClient, name: str) -> float:
    text = (await client.get("/metrics")).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name + " ") or line.startswith(name + "{")]
    return sum(values)


async def test_live_stream_scope_replay_reconnect_and_sigterm(live: LiveClients) -> None:
    incidents = await open_incidents(live.dsn)
    a, b = await live.open("a-staff"), await live.open("b-staff")
    assert await metric(live.client, "ganzhi_api_live_streams") == 2

    # A row of site-a1: the district-A stream gets it with the incident's summary ...
    a_row = await comment(live.dsn, incidents["site-a1"], "on my way")
    got = await a.next()
    assert (got.event, got.id) == ("incident", str(a_row))
    assert got.data["history_id"] == a_row and got.data["action"] == "commented"
    assert got.data["actor"] == "user:a-staff"
    assert got.data["incident_id"] == incidents["site-a1"]
    assert got.data["incident"]["site_id"] == "site-a1"
    assert got.data["incident"]["summary"] == "site-a1 too warm"
    assert got.data["incident"]["status"] == "open"
    listed = (await live.client.get(
        "/api/v1/incidents", params={"site_id": "site-a1"},
        headers={"Authorization": f"Bearer {await live.token('a-staff')}"})).json()
    assert got.data["incident"] == listed["items"][0]  # exactly as the list shows it
    # ... the district-B stream does not: its next event is site-b1's
    b_row = await comment(live.dsn, incidents["site-b1"], "checking")
    got_b = await b.next()
    assert (got_b.id, got_b.data["incident"]["site_id"]) == (str(b_row), "site-b1")
    assert await metric(live.client, "ganzhi_api_live_events_total") >= 2

    # Reconnecting with Last-Event-ID: the caller's rows after it, in order, then live.
    first_id = a_row - 1
    replay = await live.open("a-staff", last_event_id=first_id)
    got = await replay.next()
    assert got.id == str(a_row)  # b_row (site-b1) is not the district's
    live_row = await comment(live.dsn, incidents["site-a1"], "after the replay")
    assert (await replay.next()).id == str(live_row)
    assert (await a.next()).id == str(live_row)

    # PostgreSQL drops the LISTEN connection: the hub reconnects and catches up.
    with psycopg.connect(live.dsn, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (APPLICATION_NAME,)).fetchall()
    assert killed
    missed = await comment(live.dsn, incidents["site-a1"], "while nobody listened")
    assert (await a.next(within_s=30)).id == str(missed)
    assert "live_listen_lost" in live.api.log.read_text()

    # More than 500 rows missed: resync, not a flood.
    async with await AsyncConnection.connect(live.dsn, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO incident_history (incident_id, actor, action)"
            " SELECT %s, 'system', 'notified' FROM generate_series(1, 501)",
            (incidents["site-a1"],))
    flooded = await live.open("a-staff", last_event_id=missed)
    assert (await flooded.next()).event == "resync"

    # SIGTERM with streams open: the process ends them and exits 0, promptly.
    started = time.monotonic()
    live.api.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(live.api.proc.wait, 15)
    assert code == 0, live.api.log.read_text()
    assert time.monotonic() - started < 10


async def test_live_stream_refuses_without_a_reader(live: LiveClients) -> None:
    response = await live.client.get("/api/v1/live")
    assert response.status_code == 401
    async with await AsyncConnection.connect(live.dsn, autocommit=True) as conn:
        _, token = await apikeys.create(conn, "fb", ["feedback"])
    response = await live.client.get("/api/v1/live",
                                     headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    response = await live.client.get(
        "/api/v1/live", headers={"Authorization": f"Bearer {await live.token('a-staff')}",
                                 "Last-Event-ID": "not a number"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "last-event-id"]


def test_a_slow_subscriber_gets_resync_not_an_endless_backlog() -> None:
    async def run() -> None:
        sub = Subscriber(Scope(path="/city/district-a/"), maxsize=3)
        event = HistoryEvent(1, "site-a1", "/city/district-a/station-a/", "{}")
        other = HistoryEvent(2, "site-b1", "/city/district-b/station-b/", "{}")
        for _ in range(3):
            sub.offer(event)
        sub.offer(other)  # not its scope: not even queued
        assert sub.queue.qsize() == 3
        sub.offer(event)  # one too many
        assert sub.queue.qsize() == 1 and sub.queue.get_nowait() is RESYNC
        sub.offer(event)
        assert sub.queue.get_nowait() is event

    asyncio.run(run())


# --- the console's files -----------------------------------------------------------------


async def test_console_not_built_is_503_with_what_to_do(pg_dsn: str, tmp_path: Path
                                                        ) -> None:
    app_settings = settings(pg_dsn)
    app_settings = app_settings.model_copy(update={"api": app_settings.api.model_copy(
        update={"console_dir": tmp_path / "missing"})})
    async with api_client(app_settings) as client:
        response = await client.get("/console/")
        assert response.status_code == 503
        assert response.text == "console not built: run ./dev setup"
        assert response.headers["content-security-policy"] == CSP
        root = await client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/console/"


async def test_console_files_index_fallback_cache_and_no_way_out(
        pg_dsn: str, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>console</title>")
    (dist / "assets" / "app-1a2b3c.js").write_text("console.log(1)")
    (dist / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("not for you")
    (dist / "link.txt").symlink_to(tmp_path / "secret.txt")
    app_settings = settings(pg_dsn)
    app_settings = app_settings.model_copy(update={"api": app_settings.api.model_copy(
        update={"console_dir": dist})})
    async with api_client(app_settings) as client:
        index = await client.get("/console/")
        assert index.status_code == 200 and "console" in index.text
        assert index.headers["cache-control"] == "no-cache"
        assert index.headers["content-type"].startswith("text/html")
        assert index.headers["content-security-policy"] == CSP
        assert "connect-src 'self'" in CSP and "img-src 'self' blob: data:" in CSP
        assert index.headers["x-content-type-options"] == "nosniff"
        # a client-side route: the app
        route = await client.get("/console/incidents/12")
        assert (route.status_code, route.text) == (200, index.text)
        asset = await client.get("/console/assets/app-1a2b3c.js")
        assert asset.status_code == 200 and asset.text == "console.log(1)"
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        icon = await client.get("/console/favicon.svg")
        assert icon.status_code == 200 and icon.headers["cache-control"] == "no-cache"
        missing = await client.get("/console/assets/gone.js")
        assert missing.status_code == 404
        head = await client.head("/console/")
        assert head.status_code == 200
        bare = await client.get("/console")
        assert bare.status_code == 307 and bare.headers["location"] == "/console/"
        # nothing outside the build: dot-dots (encoded or not), links, absolute paths
        for path in ("/console/..%2fsecret.txt", "/console/%2e%2e/secret.txt",
                     "/console/assets/..%2f..%2fsecret.txt", "/console/link.txt",
                     f"/console/{tmp_path}/secret.txt", "/console//etc/passwd",
                     "/console/..%5csecret.txt"):
            response = await client.get(path)
            assert "not for you" not in response.text, path
            assert "root:" not in response.text, path
            assert response.status_code in (200, 404), (path, response.status_code)
        # the API is still the API
        assert (await client.get("/healthz")).status_code in (200, 503)
