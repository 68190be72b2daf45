"""Incidents, clue feedback, silences, receivers and handling figures over the HTTP API,
against real PostgreSQL (ASGI in process, lifespan included)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import AsyncConnection
from pydantic import SecretStr

from alerts import actions
from alerts.figures import Latency, false_positive_counts, handling_figures
from alerts.repository import Conflict, Policy, apply_transition
from api.main import create_app
from ganzhi import apikeys
from ganzhi.access import Scope
from ganzhi.cli import main
from ganzhi.contracts import AlertTransition, Severity, TransitionKind, utcnow
from ganzhi.settings import (
    AuthSettings,
    DatabaseSettings,
    Settings,
    WebhookSettings,
    get_settings,
)

from access_fixtures import JWT_SECRET, anonymous, api_client, api_dsn

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
COLD = "cold_chain.chilled"
MASK = "vision.no_mask"
FP_REASON = "false positive (task system)"


def settings(dsn: str, secret: str | None = "x" * 40) -> Settings:
    return Settings(
        db=DatabaseSettings(dsn=SecretStr(api_dsn(dsn)), pool_max=2),
        auth=AuthSettings(jwt_secret=SecretStr(JWT_SECRET)),
        webhook=WebhookSettings(url="http://127.0.0.1:9/clues",
                                secret=SecretStr(secret) if secret else None),
    )


def firing(site: str, device: str, started_at: datetime, rule: str = COLD,
           values: dict[str, Any] | None = None) -> AlertTransition:
    return AlertTransition(
        transition_id=f"{site}/{device}/{rule}:firing:{started_at.isoformat()}",
        kind=TransitionKind.FIRING,
        fingerprint=f"{site}/{device}/{rule}",
        rule_id=rule,
        severity=Severity.MAJOR,
        site_id=site,
        device_id=device,
        started_at=started_at,
        at=started_at + timedelta(minutes=10),
        summary=f"{device}: {rule}",
        values=values or {"max": 11.5},
    )


async def apply(dsn: str, *transitions: AlertTransition) -> list[int]:
    """Apply through the repository, as the alerts service does; returns incident ids."""
    policy = Policy.from_settings(settings(dsn))
    out = []
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        for t in transitions:
            result = await apply_transition(conn, t, policy, now=t.at)
            assert result.incident_id is not None, result
            out.append(result.incident_id)
    return out


@dataclass
class Env:
    client: httpx.AsyncClient
    dsn: str
    incidents: dict[str, int]  # fridge, camera, other (site-2)
    tokens: dict[str, str]  # staff, staff_s2, feedback, silences, silences_s2, operator,
    #                         operator_s2, revoked

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def post(self, url: str, who: str, body: dict[str, Any] | None = None
                   ) -> httpx.Response:
        return await self.client.post(url, json=body or {}, headers=self.auth(who))


KEYS: dict[str, tuple[list[str], list[str] | None]] = {
    "reader": (["export"], None),  # the client's default: reads every site
    "staff": (["staff"], None),
    "staff_s2": (["staff"], ["site-2"]),
    "feedback": (["feedback"], None),
    "silences": (["silences"], None),
    "silences_s2": (["silences"], ["site-2"]),
    "operator": (["operator"], None),
    "operator_s2": (["operator"], ["site-2"]),
    "revoked": (["staff", "feedback", "silences", "operator"], None),
}


async def make_keys(dsn: str) -> dict[str, str]:
    tokens = {}
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        for name, (scopes, sites) in KEYS.items():
            key, tokens[name] = await apikeys.create(conn, name, scopes, sites)
            if name == "revoked":
                assert await apikeys.revoke(conn, key.id)
    return tokens


@pytest.fixture
async def env(pg_dsn: str) -> AsyncIterator[Env]:
    fridge, camera, other = await apply(
        pg_dsn,
        firing("site-1", "fridge-1", T0),
        firing("site-1", "cam-1", T0 + timedelta(minutes=5), MASK,
               {"model": "yolo-kitchen-v2", "score": 0.91}),
        firing("site-2", "fridge-9", T0 + timedelta(minutes=7)),
    )
    tokens = await make_keys(pg_dsn)
    async with api_client(settings(pg_dsn), tokens["reader"]) as c:
        yield Env(c, pg_dsn, {"fridge": fridge, "camera": camera, "other": other}, tokens)


async def detail(env: Env, incident_id: int) -> dict[str, Any]:
    response = await env.client.get(f"/api/v1/incidents/{incident_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def actions_of(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(h["actor"], h["action"]) for h in body["history"]]


# --- reading ---------------------------------------------------------------------------


async def test_list_and_detail(env: Env) -> None:
    page = (await env.client.get("/api/v1/incidents")).json()
    ids = [i["id"] for i in page["items"]]
    assert ids == sorted(env.incidents.values(), reverse=True)
    first = page["items"][-1]
    assert first["rule_id"] == COLD and first["notify_state"] == "notified"
    assert first["status"] == "open" and first["task_status"] is None
    site2 = (await env.client.get("/api/v1/incidents", params={"site_id": "site-2"})).json()
    assert [i["id"] for i in site2["items"]] == [env.incidents["other"]]
    page = (await env.client.get("/api/v1/incidents", params={"limit": 2})).json()
    assert len(page["items"]) == 2 and page["next_before_id"] == page["items"][-1]["id"]
    rest = (await env.client.get(
        "/api/v1/incidents", params={"limit": 2, "before_id": page["next_before_id"]})).json()
    assert [i["id"] for i in rest["items"]] == [env.incidents["fridge"]]
    assert rest["next_before_id"] is None
    held = await env.client.get("/api/v1/incidents", params={"notify_state": "held"})
    assert held.json()["items"] == []
    for params in ({"status": "closed"}, {"notify_state": "x"}, {"limit": 0}):
        assert (await env.client.get("/api/v1/incidents", params=params)).status_code == 422

    body = await detail(env, env.incidents["camera"])
    assert [a["rule_id"] for a in body["alerts"]] == [MASK]
    assert body["alerts"][0]["incident_id"] == env.incidents["camera"]
    assert actions_of(body)[:2] == [("system", "opened"), ("system", "notified")]
    (delivery,) = body["deliveries"]
    assert (delivery["receiver"], delivery["event"], delivery["seq"], delivery["status"]) == (
        "task-system", "created", 0, "pending")
    missing = await env.client.get("/api/v1/incidents/9999")
    assert missing.status_code == 404 and missing.json() == {"detail": "incident 9999 not found"}


# --- staff actions ---------------------------------------------------------------------


async def test_ack_assign_comment_resolve_leave_history_with_actor(env: Env) -> None:
    url = f"/api/v1/incidents/{env.incidents['fridge']}"
    ack = await env.post(f"{url}/ack", "staff", {"note": "on my way"})
    assert ack.status_code == 200, ack.text
    assert ack.json()["acknowledged_by"] == "key:staff" and ack.json()["acknowledged_at"]
    again = await env.post(f"{url}/ack", "staff")
    assert again.status_code == 409 and "acknowledged by key:staff" in again.json()["detail"]

    assigned = await env.post(f"{url}/assign", "staff", {"assignee": "inspector.wang"})
    assert assigned.status_code == 200 and assigned.json()["assignee"] == "inspector.wang"
    same = await env.post(f"{url}/assign", "staff", {"assignee": "inspector.wang"})
    assert same.status_code == 200  # a retry changes nothing
    commented = await env.post(f"{url}/comments", "staff", {"text": "door seal broken"})
    assert commented.status_code == 200

    resolved = await env.post(f"{url}/resolve", "staff", {"reason": "seal replaced"})
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["status"], body["resolved_by"], body["resolve_reason"]) == (
        "resolved", "key:staff", "seal replaced")
    assert [a["status"] for a in body["alerts"]] == ["resolved"]
    assert actions_of(body)[2:] == [
        ("key:staff", "acknowledged"), ("key:staff", "assigned"), ("key:staff", "commented"),
        ("key:staff", "resolved")]
    details = {h["action"]: h["detail"] for h in body["history"]}
    assert details["acknowledged"] == {"note": "on my way"}
    assert details["assigned"] == {"assignee": "inspector.wang", "from": None}
    assert details["commented"] == {"text": "door seal broken"}
    assert details["resolved"]["reason"] == "seal replaced"
    events = [(d["event"], d["seq"]) for d in body["deliveries"]]
    assert events == [("created", 0), ("resolved", 1)]

    for action, payload in (("resolve", {"reason": "again"}), ("ack", {})):
        conflict = await env.post(f"{url}/{action}", "staff", payload)
        assert conflict.status_code == 409, action


async def test_ack_of_a_resolved_incident_is_409(env: Env) -> None:
    url = f"/api/v1/incidents/{env.incidents['camera']}"
    assert (await env.post(f"{url}/resolve", "staff", {"reason": "gone"})).status_code == 200
    conflict = await env.post(f"{url}/ack", "staff")
    assert conflict.status_code == 409 and "resolved" in conflict.json()["detail"]


async def test_auth_401_403_404(env: Env) -> None:
    url = f"/api/v1/incidents/{env.incidents['fridge']}/ack"
    nobody = await anonymous(env.client, "POST", url, json={})
    assert nobody.status_code == 401 and nobody.headers["www-authenticate"] == "Bearer"
    for headers in ({"Authorization": "Bearer nonsense"},
                    {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": f"Bearer {env.tokens['staff']}x"},
                    {"Authorization": "Bearer gzk_abcdefghijkl_" + "s" * 43},
                    {"Authorization": "Bearer a.b.c"},
                    env.auth("revoked")):
        response = await env.client.post(url, json={}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
    wrong = await env.post(url, "feedback")
    assert wrong.status_code == 403
    assert "'work_incidents' permission" in wrong.json()["detail"]
    reader = await env.post(url, "reader")
    assert reader.status_code == 403
    other_site = await env.post(url, "staff_s2")
    assert other_site.status_code == 404
    assert other_site.json() == {"detail": f"incident {env.incidents['fridge']} not found"}
    assert (await env.post("/api/v1/incidents/9999/ack", "staff")).status_code == 404
    own_site = await env.post(f"/api/v1/incidents/{env.incidents['other']}/ack", "staff_s2")
    assert own_site.status_code == 200 and own_site.json()["acknowledged_by"] == "key:staff_s2"
    body = await detail(env, env.incidents["fridge"])
    assert body["acknowledged_at"] is None  # nothing of the refused calls happened


async def test_bad_bodies_are_422(env: Env) -> None:
    url = f"/api/v1/incidents/{env.incidents['fridge']}"
    for action, body in (
        ("ack", {"note": "x", "extra": 1}),
        ("ack", {"note": "x" * 2001}),
        ("assign", {}),
        ("assign", {"assignee": "  "}),
        ("comments", {"text": ""}),
        ("comments", {"text": "x" * 2001}),
        ("resolve", {}),
        ("resolve", {"reason": "x" * 501}),
    ):
        response = await env.post(f"{url}/{action}", "staff", body)
        assert response.status_code == 422, (action, body)
    history = (await detail(env, env.incidents["fridge"]))["history"]
    assert {h["actor"] for h in history} == {"system"}


async def test_resolve_without_webhook_secret_is_503(pg_dsn: str) -> None:
    (incident,) = await apply(pg_dsn, firing("site-1", "fridge-1", T0))
    tokens = await make_keys(pg_dsn)
    app = create_app(settings(pg_dsn, secret=None))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            headers = {"Authorization": f"Bearer {tokens['staff']}"}
            url = f"/api/v1/incidents/{incident}"
            response = await c.post(f"{url}/resolve", json={"reason": "x"}, headers=headers)
            assert response.status_code == 503
            assert "GANZHI_WEBHOOK__SECRET" in response.json()["detail"]
            ack = await c.post(f"{url}/ack", json={}, headers=headers)
            assert ack.status_code == 200


async def test_concurrent_acks_one_wins(env: Env) -> None:
    incident = env.incidents["fridge"]
    conns = [await AsyncConnection.connect(env.dsn, autocommit=True) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(actions.acknowledge(c, incident, f"p{i}") for i, c in enumerate(conns)),
            return_exceptions=True)
    finally:
        for c in conns:
            await c.close()
    wins = [r for r in results if isinstance(r, datetime)]
    assert len(wins) == 1 and all(isinstance(r, Conflict) for r in results if r not in wins)
    acks = [h for h in (await detail(env, incident))["history"]
            if h["action"] == "acknowledged"]
    assert len(acks) == 1


# --- feedback of the task system ------------------------------------------------------


async def clue_of(env: Env, name: str) -> str:
    return str((await detail(env, env.incidents[name]))["clue_id"])


async def test_feedback_flow_is_idempotent(env: Env) -> None:
    clue = await clue_of(env, "fridge")
    url = f"/api/v1/clues/{clue}/feedback"
    at = {s: (T0 + timedelta(minutes=m)).isoformat().replace("+00:00", "Z")
          for s, m in (("accepted", 20), ("dispatched", 30), ("closed", 90))}
    for status in ("accepted", "dispatched", "closed"):
        body = {"status": status, "at": at[status], "task_id": "T-42"}
        first = await env.post(url, "feedback", body)
        assert first.status_code == 200 and first.json() == {"recorded": True}, first.text
        retry = await env.post(url, "feedback", body)
        assert retry.json() == {"recorded": False}
    late = await env.post(url, "feedback", {"status": "accepted", "at": at["accepted"]})
    assert late.json() == {"recorded": False}
    upper = await env.post(url.replace(clue, clue.upper()), "feedback", {"status": "closed"})
    assert upper.json() == {"recorded": False}  # the same clue, however it is spelt

    body = await detail(env, env.incidents["fridge"])
    assert body["task_status"] == "closed" and body["status"] == "open"
    assert (body["accepted_at"], body["dispatched_at"], body["closed_at"]) == (
        at["accepted"], at["dispatched"], at["closed"])
    assert body["rectified_at"] is None and body["false_positive"] is False
    feedback = [h for h in body["history"] if h["action"].startswith("feedback.")]
    assert [(h["actor"], h["action"]) for h in feedback] == [
        ("key:feedback", "feedback.accepted"), ("key:feedback", "feedback.dispatched"),
        ("key:feedback", "feedback.closed")]
    assert feedback[0]["detail"] == {"task_id": "T-42", "note": None,
                                     "at": "2025-01-01T08:20:00+00:00"}


async def test_feedback_refusals(env: Env) -> None:
    clue = await clue_of(env, "fridge")
    url = f"/api/v1/clues/{clue}/feedback"
    for status in ("done", "", None):
        assert (await env.post(url, "feedback", {"status": status})).status_code == 422
    no_tz = await env.post(url, "feedback", {"status": "accepted", "at": "2025-01-01T08:00:00"})
    assert no_tz.status_code == 422
    extra = await env.post(url, "feedback", {"status": "accepted", "by": "me"})
    assert extra.status_code == 422
    unknown = "00000000-0000-4000-8000-000000000000"
    for bad in (unknown, "not-a-uuid"):
        response = await env.post(f"/api/v1/clues/{bad}/feedback", "feedback",
                                  {"status": "accepted"})
        assert response.status_code == 404 and response.json() == {
            "detail": f"clue {bad} not found"}
    assert (await env.post(url, "staff", {"status": "accepted"})).status_code == 403
    assert (await anonymous(env.client, "POST", url, json={"status": "accepted"})
            ).status_code == 401


def fp_count(rule: str, model: str) -> float:
    value = REGISTRY.get_sample_value(
        "ganzhi_api_false_positives_total", {"rule_id": rule, "camera_model": model})
    return value or 0.0


async def test_rejected_is_a_false_positive_and_resolves(env: Env) -> None:
    before = fp_count(MASK, "yolo-kitchen-v2")
    clue = await clue_of(env, "camera")
    url = f"/api/v1/clues/{clue}/feedback"
    body = {"status": "rejected", "note": "a chef's hat, not a bare head"}
    assert (await env.post(url, "feedback", body)).json() == {"recorded": True}
    assert (await env.post(url, "feedback", body)).json() == {"recorded": False}
    assert fp_count(MASK, "yolo-kitchen-v2") == before + 1  # once, not per retry

    incident = await detail(env, env.incidents["camera"])
    assert (incident["status"], incident["resolve_reason"], incident["resolved_by"]) == (
        "resolved", FP_REASON, "key:feedback")
    assert incident["false_positive"] is True and incident["task_status"] == "rejected"
    assert incident["rejected_at"] is not None
    assert actions_of(incident)[-2:] == [("key:feedback", "feedback.rejected"),
                                         ("key:feedback", "resolved")]
    assert [d["event"] for d in incident["deliveries"]] == ["created", "resolved"]

    stats = await env.client.get("/api/v1/stats/false-positives", params={
        "since": "2025-01-01T00:00:00Z", "until": "2025-01-02T00:00:00Z"})
    assert stats.status_code == 200, stats.text
    assert stats.json()["items"] == [
        {"rule_id": MASK, "camera_model": "yolo-kitchen-v2", "count": 1}]


async def test_rejected_after_resolution_counts_without_resolving_again(env: Env) -> None:
    url = f"/api/v1/incidents/{env.incidents['fridge']}/resolve"
    assert (await env.post(url, "staff", {"reason": "fixed"})).status_code == 200
    before = fp_count(COLD, "unknown")
    clue = await clue_of(env, "fridge")
    response = await env.post(f"/api/v1/clues/{clue}/feedback", "feedback",
                              {"status": "rejected"})
    assert response.json() == {"recorded": True}
    assert fp_count(COLD, "unknown") == before + 1
    incident = await detail(env, env.incidents["fridge"])
    assert incident["resolve_reason"] == "fixed" and incident["false_positive"] is True


# --- handling figures -------------------------------------------------------------------


async def seed_figures(dsn: str) -> None:
    """Five notified incidents in the period (one held, one earlier: left out)."""
    ids = await apply(
        dsn,
        firing("site-1", "fridge-1", T0),
        firing("site-1", "fridge-2", T0 + timedelta(minutes=1)),
        firing("site-1", "cam-1", T0 + timedelta(minutes=2), MASK, {"model": "m1"}),
        firing("site-2", "fridge-9", T0 + timedelta(minutes=3)),
        firing("site-1", "fridge-5", T0 + timedelta(minutes=4)),
        firing("site-1", "fridge-6", T0 - timedelta(days=2)),
    )
    # seconds after the clue: acknowledged, dispatched, closed; false positive
    times: list[tuple[int | None, int | None, int | None, bool]] = [
        (60, 600, 3600, False), (120, None, None, False), (None, None, None, True),
        (300, 900, 7200, False), (5, 5, 5, True), (5, 5, 5, True)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for incident, (ack, dispatch, close, fp) in zip(ids, times, strict=True):
            conn.execute(
                "UPDATE incidents SET notified_at = %s,"
                " acknowledged_at = %s::timestamptz + make_interval(secs => %s),"
                " dispatched_at = %s::timestamptz + make_interval(secs => %s),"
                " closed_at = %s::timestamptz + make_interval(secs => %s),"
                " false_positive = %s WHERE id = %s",
                (T0, T0, ack, T0, dispatch, T0, close, fp, incident))
        conn.execute("UPDATE incidents SET notified_at = NULL, notify_state = 'held'"
                     " WHERE id = %s", (ids[4],))


async def test_handling_figures_by_site_and_rule(pg_dsn: str) -> None:
    await seed_figures(pg_dsn)
    since, until = T0 - timedelta(hours=1), T0 + timedelta(days=1)
    async with await AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        by_site = {f.key: f for f in await handling_figures(conn, since, until, "site")}
        by_rule = {f.key: f for f in await handling_figures(conn, since, until, "rule")}
        only_s2 = await handling_figures(conn, since, until, "site",
                                         Scope(site_ids=frozenset({"site-2"})))
        fps = await false_positive_counts(conn, since, until)
        with pytest.raises(ValueError):
            await handling_figures(conn, since, until, "device")  # type: ignore[arg-type]

    s1, s2 = by_site["site-1"], by_site["site-2"]
    assert (s1.incidents, s1.acknowledged, s1.false_positives) == (3, 2, 1)
    assert s1.to_acknowledge == Latency(90.0, 114.0)  # 60, 120: p90 = 60 + 0.9 * 60
    assert s1.to_dispatch == Latency(600.0, 600.0) and s1.to_close == Latency(3600.0, 3600.0)
    assert (s2.incidents, s2.acknowledged, s2.to_acknowledge) == (1, 1, Latency(300.0, 300.0))
    assert only_s2 == [s2]

    cold, mask = by_rule[COLD], by_rule[MASK]
    assert (cold.incidents, cold.acknowledged, cold.false_positives) == (3, 3, 0)
    # 60, 120, 300: p90 at rank 1.8 = 120 + 0.8 * 180
    assert cold.to_acknowledge.median_s == 120.0
    assert cold.to_acknowledge.p90_s == pytest.approx(264.0)
    assert cold.to_dispatch == Latency(750.0, 870.0)  # 600, 900
    assert cold.to_close == Latency(5400.0, 6840.0)  # 3600, 7200
    assert (mask.incidents, mask.acknowledged, mask.false_positives) == (1, 0, 1)
    assert mask.to_acknowledge == Latency(None, None) == mask.to_close
    assert [(f.rule_id, f.camera_model, f.count) for f in fps] == [(MASK, "m1", 1)]


async def test_handling_figures_over_http(pg_dsn: str) -> None:
    await seed_figures(pg_dsn)
    async with await AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        _, token = await apikeys.create(conn, "reader", ["export"])
    async with api_client(settings(pg_dsn), token) as c:
        params = {"since": "2025-01-01T07:00:00Z", "until": "2025-01-02T08:00:00+08:00",
                  "group_by": "rule"}
        response = await c.get("/api/v1/stats/handling", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        bad = [{"group_by": "device"}, {"since": "yesterday"},
               {"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"}]
        codes = [(await c.get("/api/v1/stats/handling", params=p)).status_code
                 for p in bad]
    assert codes == [422, 422, 422]
    assert body["group_by"] == "rule" and [r["key"] for r in body["items"]] == [COLD, MASK]
    cold = body["items"][0]
    assert cold == {"key": COLD, "incidents": 3, "acknowledged": 3, "ack_median_s": 120.0,
                    "ack_p90_s": pytest.approx(264.0), "dispatch_median_s": 750.0,
                    "dispatch_p90_s": 870.0, "close_median_s": 5400.0, "close_p90_s": 6840.0,
                    "false_positives": 0}


# --- silences ---------------------------------------------------------------------------


def window(hours: float = 2, start: datetime | None = None) -> dict[str, str]:
    start = start or utcnow()
    return {"starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=hours)).isoformat()}


async def test_silences_create_list_end(env: Env) -> None:
    body = {"kind": "maintenance", "matchers": {"site_id": "site-1", "rule_id": "cold_chain.*"},
            "reason": "compressor service", **window()}
    created = await env.post("/api/v1/silences", "silences", body)
    assert created.status_code == 201, created.text
    silence = created.json()
    assert silence["created_by"] == "key:silences" and silence["kind"] == "maintenance"
    listed = (await env.client.get("/api/v1/silences")).json()
    assert [s["id"] for s in listed] == [silence["id"]]

    # It holds the clue of a matching alert that opens now.
    (held,) = await apply(env.dsn, firing("site-1", "fridge-3", utcnow()))
    incident = await detail(env, held)
    assert incident["notify_state"] == "held"
    assert incident["held_reason"] == f"silenced:{silence['id']}"

    url = f"/api/v1/silences/{silence['id']}"
    assert (await env.client.delete(url, headers=env.auth("staff"))).status_code == 403
    ended = await env.client.delete(url, headers=env.auth("silences"))
    assert ended.status_code == 200 and ended.json()["ended_by"] == "key:silences"
    again = await env.client.delete(url, headers=env.auth("silences"))
    assert again.status_code == 409
    assert (await env.client.get("/api/v1/silences")).json() == []
    everything = await env.client.get("/api/v1/silences", params={"active": "false"})
    assert [s["id"] for s in everything.json()] == [silence["id"]]
    missing = await env.client.delete("/api/v1/silences/9999", headers=env.auth("silences"))
    assert missing.status_code == 404


async def test_bad_silences_are_422(env: Env) -> None:
    good: dict[str, Any] = {"matchers": {"site_id": "site-1"}, "reason": "works", **window()}
    past = utcnow() - timedelta(days=2)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"matchers": {}}, "at least one"),
        ({"matchers": {"camera": "x"}}, "Extra inputs are not permitted"),
        ({"matchers": {"rule_id": ""}}, "at least 1 character"),
        ({"matchers": {"rule_id": "x" * 201}}, "at most 200 characters"),
        ({"matchers": {"rule_id": " \t "}}, "at least 1 character"),
        ({"kind": "forever"}, ""),
        ({"reason": ""}, ""),
        ({"unknown": 1}, ""),
        ({"ends_at": "2030-01-01T00:00:00"}, ""),  # no time zone
        (window(-1), "after starts_at"),
        (window(31 * 24), "at most 30 days"),
        (window(1, past), "in the future"),
    ]
    for change, why in cases:
        response = await env.post("/api/v1/silences", "silences", {**good, **change})
        assert response.status_code == 422, change
        assert why in str(response.json()["detail"]), (change, response.json())
    assert (await env.client.get("/api/v1/silences")).json() == []


async def test_site_limited_silences(env: Env) -> None:
    body: dict[str, Any] = {"reason": "works", **window()}
    for matchers in ({"rule_id": "*"}, {"site_id": "site-*"}, {"site_id": "site-1"}):
        response = await env.post("/api/v1/silences", "silences_s2",
                                  {**body, "matchers": matchers})
        assert response.status_code == 403, matchers
    own = await env.post("/api/v1/silences", "silences_s2",
                         {**body, "matchers": {"site_id": "site-2"}})
    assert own.status_code == 201
    other = await env.post("/api/v1/silences", "silences",
                           {**body, "matchers": {"site_id": "site-1"}})
    url = f"/api/v1/silences/{other.json()['id']}"
    denied = await env.client.delete(url, headers=env.auth("silences_s2"))
    assert denied.status_code == 404


# --- receivers --------------------------------------------------------------------------


async def test_receivers_figures_drop_and_requeue(env: Env) -> None:
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        rows = [r[0] for r in conn.execute("SELECT id FROM clue_outbox ORDER BY id")]
        assert len(rows) == 3
        conn.execute("UPDATE clue_outbox SET status = 'dead', last_status = 422"
                     " WHERE id = ANY(%s)", (rows[:2],))
        conn.execute("INSERT INTO clue_deliveries (outbox_id, receiver, attempt, status_code,"
                     " outcome, latency_ms, error) VALUES (%s, 'task-system', 1, 422, 'dead',"
                     " 12.5, 'unprocessable')", (rows[0],))

    assert (await env.client.get("/api/v1/receivers")).status_code == 403  # a reader
    listed = await env.client.get("/api/v1/receivers", headers=env.auth("operator_s2"))
    assert listed.status_code == 403  # not every site
    (receiver,) = (await env.client.get("/api/v1/receivers", headers=env.auth("operator"))
                   ).json()
    assert (receiver["name"], receiver["configured"], receiver["pending"], receiver["dead"]) == (
        "task-system", True, 1, 2)
    (attempt,) = receiver["last_attempts"]
    assert (attempt["outbox_id"], attempt["status_code"], attempt["outcome"],
            attempt["event"]) == (rows[0], 422, "dead", "created")

    url = "/api/v1/receivers/task-system"
    for who in ("staff", "operator_s2"):
        assert (await env.post(f"{url}/requeue", who)).status_code == 403, who
    assert (await env.post("/api/v1/receivers/nobody/drop", "operator")).status_code == 404
    assert (await env.post(f"{url}/drop", "operator", {"ids": []})).status_code == 422
    assert (await env.post(f"{url}/drop", "operator", {"all": True})).status_code == 422

    requeued = await env.post(f"{url}/requeue", "operator", {"ids": [rows[0]]})
    assert requeued.json() == {"receiver": "task-system", "rows": 1}
    dropped = await env.post(f"{url}/drop", "operator", {"ids": [rows[1]]})
    assert dropped.json() == {"receiver": "task-system", "rows": 1}
    none_yet = await env.post(f"{url}/drop", "operator", {"before": "2000-01-01T00:00:00Z"})
    assert none_yet.json()["rows"] == 0
    rest = await env.post(f"{url}/drop", "operator",
                          {"before": (utcnow() + timedelta(minutes=1)).isoformat()})
    assert rest.json()["rows"] == 2  # the re-queued one and the one never dead

    (receiver,) = (await env.client.get("/api/v1/receivers", headers=env.auth("operator"))
                   ).json()
    assert (receiver["pending"], receiver["dead"]) == (0, 0)
    with psycopg.connect(env.dsn) as conn:
        by = conn.execute("SELECT DISTINCT dropped_by FROM clue_outbox").fetchall()
    assert by == [("key:operator",)]
    incident = await detail(env, env.incidents["fridge"])
    assert incident["deliveries"][0]["status"] == "dropped"


# --- the CLI (plain tests: it runs its own event loop) -----------------------------------


@pytest.fixture
def cli_dsn(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("GANZHI_DB__DSN", pg_dsn)
    get_settings.cache_clear()
    yield pg_dsn
    get_settings.cache_clear()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_silences(cli_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "silences", "add", "--match", "rule_id=elevator.*",
                         "--match", "site_id=s1", "--hours", "2", "--reason", "annual check",
                         "--by", "li", "--kind", "maintenance")
    assert code == 0, err
    assert out.startswith("silence 1 until ")
    code, out, _ = cli(capsys, "silences", "list")
    (row,) = [line.split("\t") for line in out.strip().splitlines()[1:]]
    assert row[:3] == ["1", "maintenance", '{"rule_id": "elevator.*", "site_id": "s1"}']
    assert row[5:] == ["li", "annual check", "-"]
    for argv, why in (
        (["--match", "camera=x", "--hours", "1"], "unknown matcher keys"),
        (["--match", "rule_id", "--hours", "1"], "KEY=GLOB"),
        (["--match", "site_id=s1", "--hours", "1000"], "at most 30 days"),
        (["--match", "site_id=s1", "--hours", "-1"], "after starts_at"),
    ):
        code, _, err = cli(capsys, "silences", "add", *argv, "--reason", "r", "--by", "li")
        assert code == 1 and why in err, (argv, err)
    code, out, _ = cli(capsys, "silences", "end", "1", "--by", "wang")
    assert code == 0 and out.startswith("silence 1 ended at ")
    code, _, err = cli(capsys, "silences", "end", "1", "--by", "wang")
    assert code == 1 and "was ended by wang" in err
    code, _, err = cli(capsys, "silences", "end", "7", "--by", "wang")
    assert code == 1 and "silence 7 not found" in err
    assert cli(capsys, "silences", "list")[1].strip().count("\n") == 0  # the header only
    assert "wang" in cli(capsys, "silences", "list", "--all")[1]


def test_cli_clues(cli_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(apply(cli_dsn, firing("site-1", "fridge-1", T0),
                      firing("site-1", "fridge-2", T0), firing("site-2", "fridge-9", T0)))
    with psycopg.connect(cli_dsn, autocommit=True) as conn:
        rows = [r[0] for r in conn.execute("SELECT id FROM clue_outbox ORDER BY id")]
        conn.execute("UPDATE clue_outbox SET status = 'dead' WHERE id = ANY(%s)", (rows[:2],))
    code, out, _ = cli(capsys, "clues", "status")
    assert code == 0
    assert out.splitlines()[1].split("\t")[:4] == ["task-system", "1", "0", "2"]
    code, out, _ = cli(capsys, "clues", "requeue", "--receiver", "task-system",
                       "--id", str(rows[0]), "--by", "ops")
    assert (code, out.strip()) == (0, "re-queued 1 clue events of task-system")
    code, out, _ = cli(capsys, "clues", "drop", "--receiver", "task-system",
                       "--id", str(rows[1]), str(rows[2]))
    assert (code, out.strip()) == (0, "dropped 2 clue events of task-system")
    code, _, err = cli(capsys, "clues", "drop", "--receiver", "task-system",
                       "--before", "2025-01-01T00:00:00")
    assert code == 1 and "time zone" in err
    code, out, _ = cli(capsys, "clues", "drop", "--receiver", "task-system",
                       "--before", "2000-01-01T00:00:00+08:00")
    assert out.strip() == "dropped 0 clue events of task-system"
    code, out, _ = cli(capsys, "clues", "status")
    assert out.splitlines()[1].split("\t")[:4] == ["task-system", "1", "0", "0"]
    with psycopg.connect(cli_dsn) as conn:
        by = [r[0] for r in conn.execute("SELECT dropped_by FROM clue_outbox ORDER BY id")]
    assert by[0] is None and by[1] == by[2] and str(by[1]).startswith("cli:")


async def test_nul_bytes_are_422_never_500(env: Env) -> None:
    """PostgreSQL refuses NUL in text: the API refuses it first, with a reason."""
    iid = env.incidents["fridge"]
    for url, body in ((f"/api/v1/incidents/{iid}/comments", {"text": "a\x00b"}),
                      (f"/api/v1/incidents/{iid}/assign", {"assignee": "li\x00"}),
                      (f"/api/v1/incidents/{iid}/ack", {"note": "\x00"}),
                      (f"/api/v1/incidents/{iid}/resolve", {"reason": "x\x00"})):
        response = await env.post(url, "staff", body)
        assert response.status_code == 422, (url, response.text)
    feedback = await env.post("/api/v1/clues/00000000-0000-0000-0000-000000000000/feedback",
                              "feedback", {"status": "accepted", "note": "\x00"})
    assert feedback.status_code == 422
