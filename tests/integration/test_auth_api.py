"""Staff sign-in, tokens, throttling, roles, accounts and the audit log over the HTTP API,
against real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from alerts.repository import apply_transition
from ganzhi.access import Role
from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from ganzhi.settings import AuthSettings

from access_fixtures import (
    JWT_SECRET,
    PASSWORD,
    People,
    anonymous,
    api_client,
    seed_people,
    settings,
)
from alerting import policy

pytestmark = pytest.mark.integration

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"


async def open_incident(dsn: str, site: str) -> int:
    t0 = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    t = AlertTransition(
        transition_id=f"{site}:fire", kind=TransitionKind.FIRING,
        fingerprint=f"{site}/fridge/cold", rule_id="cold_chain.chilled",
        severity=Severity.MAJOR, site_id=site, device_id="fridge", started_at=t0,
        at=t0 + timedelta(minutes=10), summary="too warm", values={"max": 11.0})
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        result = await apply_transition(conn, t, policy(), now=t.at)
    assert result.incident_id is not None
    return result.incident_id


@pytest.fixture
async def people(pg_dsn: str) -> AsyncIterator[People]:
    user_ids, keys = await seed_people(pg_dsn)
    auth = AuthSettings(jwt_secret=settings(pg_dsn).auth.jwt_secret,
                        max_failures_per_ip=8)
    async with api_client(settings(pg_dsn, auth=auth)) as client:
        yield People(client, pg_dsn, user_ids, keys)


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD
                ) -> httpx.Response:
    return await client.post(LOGIN, json={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- sign-in and tokens -----------------------------------------------------------------


async def test_login_refresh_rotation_reuse_and_logout(people: People) -> None:
    c = people.client
    signed = await login(c, "  A-Staff ")  # names are case- and space-insensitive
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert (body["username"], body["role"], body["jurisdiction_path"], body["expires_in"]) == (
        "a-staff", "staff", "/city/district-a/", 900)
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"],
                        issuer="ganzhi")
    assert claims["sub"] == str(people.user_ids["a-staff"]) and claims["role"] == "staff"
    assert claims["jur"] == "/city/district-a/" and claims["exp"] - claims["iat"] == 900
    assert (await c.get("/api/v1/alerts", headers=bearer(body["access_token"]))
            ).status_code == 200

    first = body["refresh_token"]
    second = (await c.post(REFRESH, json={"refresh_token": first})).json()
    assert second["refresh_token"] != first and second["access_token"]
    third = (await c.post(REFRESH, json={"refresh_token": second["refresh_token"]})).json()
    # The first token again: a stolen copy. The whole sign-in's chain is revoked.
    reused = await c.post(REFRESH, json={"refresh_token": first})
    assert reused.status_code == 401 and "reused" in reused.json()["detail"]
    assert (await c.post(REFRESH, json={"refresh_token": third["refresh_token"]})
            ).status_code == 401

    other = (await login(c, "a-staff")).json()
    assert (await c.get("/api/v1/alerts", headers=bearer(other["access_token"]))
            ).status_code == 200
    assert (await c.post(LOGOUT, json={"refresh_token": other["refresh_token"]})
            ).status_code == 204
    # Signed out: that sign-in's access token is refused at once, not at its expiry; the
    # first sign-in's revoked chain took its access tokens with it too.
    for access in (other["access_token"], third["access_token"]):
        ended = await c.get("/api/v1/alerts", headers=bearer(access))
        assert ended.status_code == 401 and "sign-in has ended" in ended.json()["detail"]
    assert (await c.post(REFRESH, json={"refresh_token": other["refresh_token"]})
            ).status_code == 401
    assert (await c.post(LOGOUT, json={"refresh_token": "gzr_unknown"})).status_code == 401
    with psycopg.connect(people.dsn) as conn:
        rows = conn.execute("SELECT action, actor FROM audit_log WHERE entity = 'user'"
                            " AND action LIKE 'user.%%' AND action <> 'user.create'"
                            " ORDER BY id").fetchall()
        stored = conn.execute("SELECT token_hash FROM refresh_tokens").fetchall()
    assert rows == [("user.login", "user:a-staff"), ("user.refresh_reuse", "system"),
                    ("user.login", "user:a-staff")]
    assert first not in {r[0] for r in stored}  # only hashes are kept


async def test_wrong_password_unknown_user_and_disabled_look_alike(people: People) -> None:
    c = people.client
    wrong = await login(c, "a-staff", "not the password")
    unknown = await login(c, "nobody-here", "not the password")
    for r in (wrong, unknown):
        assert r.status_code == 401 and r.json() == {"detail": "invalid username or password"}
        assert r.headers["www-authenticate"] == "Bearer"
    for body in ({"username": "a-staff"}, {"username": "a", "password": "x", "more": 1}):
        assert (await c.post(LOGIN, json=body)).status_code == 422


async def test_throttling_per_username_and_per_address(people: People) -> None:
    c = people.client
    for _ in range(5):
        assert (await login(c, "a-viewer", "wrong password!")).status_code == 401
    locked = await login(c, "a-viewer")  # even the right password now
    assert locked.status_code == 429
    assert 800 < int(locked.headers["retry-after"]) <= 901
    assert (await login(c, "a-staff")).status_code == 200  # another name is not locked
    with psycopg.connect(people.dsn) as conn:
        (count,) = conn.execute("SELECT count(*) FROM login_failures"
                                " WHERE username = 'a-viewer'").fetchone() or (0,)
    assert count == 5  # the refused attempt was not even tried
    # This address: 8 failures in all (limit set by the fixture), then 429 for any name.
    for name in ("x1", "x2", "x3"):
        assert (await login(c, name, "wrong password!")).status_code == 401
    assert (await login(c, "a-super")).status_code == 429


async def test_expired_forged_and_disabled_tokens_are_401(people: People) -> None:
    c = people.client
    now = datetime.now(UTC)
    claims: dict[str, Any] = {"sub": str(people.user_ids["city-admin"]), "iss": "ganzhi",
                              "iat": now - timedelta(hours=1), "jti": "x"}
    expired = jwt.encode({**claims, "exp": now - timedelta(minutes=1)}, JWT_SECRET)
    forged = jwt.encode({**claims, "exp": now + timedelta(minutes=5)}, "another-key" * 4)
    unsigned = jwt.encode({**claims, "exp": now + timedelta(minutes=5)}, None,
                          algorithm="none")
    for token in (expired, forged, unsigned):
        r = await c.get("/api/v1/alerts", headers=bearer(token))
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", token

    session = (await login(c, "b-staff")).json()
    admin = bearer(await people.token("city-admin"))
    url = f"/api/v1/users/{people.user_ids['b-staff']}"
    assert (await c.patch(url, json={"disabled": True}, headers=admin)).status_code == 200
    r = await c.get("/api/v1/alerts", headers=bearer(session["access_token"]))
    assert r.status_code == 401 and "disabled" in r.json()["detail"]
    assert (await c.post(REFRESH, json={"refresh_token": session["refresh_token"]})
            ).status_code == 401
    assert (await login(c, "b-staff")).status_code == 401
    assert (await c.patch(url, json={"disabled": False}, headers=admin)).status_code == 200
    assert (await login(c, "b-staff")).status_code == 200


async def test_expired_and_revoked_keys_are_401(people: People) -> None:
    with psycopg.connect(people.dsn, autocommit=True) as conn:
        conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 s'"
                     " WHERE name = 'export-a'")
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'export-a1'")
    for who in ("export-a", "export-a1"):
        r = await people.get(who, "/api/v1/alerts")
        assert r.status_code == 401, who
    assert (await people.get("export-all", "/api/v1/alerts")).status_code == 200


# --- roles ------------------------------------------------------------------------------


async def test_role_permissions(people: People) -> None:
    incident = await open_incident(people.dsn, "site-a1")
    ack = f"/api/v1/incidents/{incident}/ack"
    denied = await people.post("a-viewer", ack)
    assert denied.status_code == 403 and "'work_incidents'" in denied.json()["detail"]
    done = await people.post("a-staff", ack)
    assert done.status_code == 200 and done.json()["acknowledged_by"] == "user:a-staff"

    silence = {"matchers": {"site_id": "site-a1"}, "reason": "defrost",
               "ends_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    assert (await people.post("a-staff", "/api/v1/silences", silence)).status_code == 403
    assert (await people.post("a-super", "/api/v1/silences", silence)).status_code == 201

    for who, code in (("a-staff", 403), ("a-super", 200), ("a-admin", 200),
                      ("export-all", 403)):
        assert (await people.get(who, "/api/v1/audit")).status_code == code, who
    for who, code in (("a-super", 403), ("a-admin", 200), ("staff-all", 403)):
        assert (await people.get(who, "/api/v1/users")).status_code == code, who
    for who, code in (("city-admin", 200), ("a-admin", 403), ("operator-all", 200),
                      ("city-viewer", 403)):
        assert (await people.get(who, "/api/v1/receivers")).status_code == code, who


# --- accounts ---------------------------------------------------------------------------


def new_user(name: str, node: str, role: str = "staff") -> dict[str, Any]:
    return {"username": name, "password": "a long enough password", "role": role,
            "jurisdiction_id": node, "display_name": name.title()}


async def test_administrators_manage_their_subtree_only(people: People) -> None:
    made = await people.post("a-admin", "/api/v1/users", new_user("a-new", "station-a"))
    assert made.status_code == 201, made.text
    assert made.json()["jurisdiction_path"] == "/city/district-a/station-a/"
    for node in ("city", "district-b", "station-b", "nowhere"):  # above or beside
        r = await people.post("a-admin", "/api/v1/users",
                              new_user("x-" + node, node, "administrator"))
        assert r.status_code == 404, node
    again = await people.post("a-admin", "/api/v1/users", new_user("a-new", "station-a"))
    assert again.status_code == 409
    for bad in ({"password": "short"}, {"username": "Bad Name!"}, {"role": "root"}):
        r = await people.post("a-admin", "/api/v1/users",
                              {**new_user("a-bad", "station-a"), **bad})
        assert r.status_code == 422, bad

    names = {u["username"] for u in (await people.get("a-admin", "/api/v1/users")).json()}
    assert names == {"a-admin", "a-super", "a-staff", "a-viewer", "sa-staff", "a-new"}
    everyone = (await people.get("city-admin", "/api/v1/users")).json()
    assert len(everyone) == 10

    b_staff = f"/api/v1/users/{people.user_ids['b-staff']}"
    assert (await people.get("a-admin", b_staff)).status_code == 404
    assert (await people.patch("a-admin", b_staff, {"disabled": True})).status_code == 404
    a_staff = f"/api/v1/users/{people.user_ids['a-staff']}"
    moved = await people.patch("a-admin", a_staff, {"jurisdiction_id": "district-b"})
    assert moved.status_code == 404
    promoted = await people.patch("a-admin", a_staff, {"role": "supervisor",
                                                       "jurisdiction_id": "station-a"})
    assert promoted.status_code == 200
    assert (promoted.json()["role"], promoted.json()["jurisdiction_id"]) == (
        "supervisor", "station-a")
    me = f"/api/v1/users/{people.user_ids['a-admin']}"
    assert (await people.patch("a-admin", me, {"disabled": True})).status_code == 409

    session = (await login(people.client, "a-viewer")).json()
    viewer = f"/api/v1/users/{people.user_ids['a-viewer']}"
    reset = await people.patch("a-admin", viewer, {"password": "a brand new password"})
    assert reset.status_code == 200
    assert (await people.client.post(REFRESH, json={"refresh_token": session["refresh_token"]})
            ).status_code == 401  # a password reset ends the sessions
    assert (await login(people.client, "a-viewer", "a brand new password")).status_code == 200

    with psycopg.connect(people.dsn) as conn:
        rows = conn.execute("SELECT action, actor, after FROM audit_log WHERE actor ="
                            " 'user:a-admin' AND action <> 'user.login' ORDER BY id"
                            ).fetchall()
    assert [r[0] for r in rows] == ["user.create", "user.update", "user.update"]
    assert "password_hash" not in rows[0][2] and rows[2][2]["password_reset"] is True


async def test_audit_is_scoped_and_paged(people: People) -> None:
    await people.post("a-admin", "/api/v1/users", new_user("a-one", "station-a"))
    await people.post("b-admin", "/api/v1/users", new_user("b-one", "station-b"))
    mine = (await people.get("a-super", "/api/v1/audit", entity="user")).json()["items"]
    paths = {r["jurisdiction_path"] for r in mine}
    assert paths and all(p.startswith("/city/district-a/") for p in paths)
    assert "b-one" not in str(mine)
    everything = (await people.get("city-admin", "/api/v1/audit")).json()["items"]
    assert {"a-one", "b-one"} <= {r["after"].get("username") for r in everything
                                  if r["after"]}
    assert any(r["entity"] == "api_key" for r in everything)  # keys of no node: root only
    assert not any(r["entity"] == "api_key" and r["jurisdiction_path"] is None
                   for r in (await people.get("a-super", "/api/v1/audit")).json()["items"])
    page = (await people.get("city-admin", "/api/v1/audit", limit=3)).json()
    assert len(page["items"]) == 3 and page["next_before_id"] == page["items"][-1]["id"]
    rest = (await people.get("city-admin", "/api/v1/audit", limit=500,
                             before_id=page["next_before_id"])).json()
    assert len(rest["items"]) == len(everything) - 3
    by_actor = (await people.get("city-admin", "/api/v1/audit", actor="user:b-admin")
                ).json()["items"]
    assert [r["action"] for r in by_actor] == ["user.create", "user.login"]
    created = (await people.get("city-admin", "/api/v1/audit", entity="user",
                                entity_id=str(people.user_ids["b-staff"]))).json()["items"]
    assert [r["action"] for r in created] == ["user.create"]
    assert (await people.get("city-admin", "/api/v1/audit", since="yesterday")
            ).status_code == 422


async def test_login_works_for_roles_everywhere(people: People) -> None:
    for name, (role, _) in {"sa-staff": (Role.STAFF, ""), "city-viewer": (Role.VIEWER, "")
                            }.items():
        r = await login(people.client, name)
        assert r.json()["role"] == role.value
    assert (await anonymous(people.client, "GET", "/api/v1/users")).status_code == 401


async def test_administrators_manage_the_keys_of_their_subtree(people: People) -> None:
    made = await people.post("a-admin", "/api/v1/api-keys", {
        "name": "station-a task system", "scopes": ["feedback", "export"],
        "jurisdiction_id": "station-a", "site_ids": ["site-a1"]})
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["token"].startswith("gzk_") and key["site_ids"] == ["site-a1"]
    # The token works, within its sites only; the list never shows a token again.
    own = await people.client.get("/api/v1/incidents", headers=bearer(key["token"]))
    assert own.status_code == 200, own.text
    listed = (await people.get("a-admin", "/api/v1/api-keys")).json()
    assert key["id"] in {k["id"] for k in listed} and all("token" not in k for k in listed)
    assert {k["jurisdiction_id"] for k in listed} <= {"district-a", "station-a"}
    everything = (await people.get("city-admin", "/api/v1/api-keys")).json()
    assert len(everything) > len(listed)

    for bad, code in (
        ({"jurisdiction_id": "district-b"}, 404),  # beside its subtree
        ({"jurisdiction_id": "city"}, 404),  # above it
        ({"jurisdiction_id": None}, 422),  # unlimited: only at the root
        ({"site_ids": ["site-b1"]}, 404),  # a site under another node
        ({"scopes": ["root"]}, 422), ({"scopes": []}, 422), ({"name": ""}, 422),
        ({"expires_at": "2020-01-01T00:00:00Z"}, 422), ({"unknown": 1}, 422),
    ):
        body = {"name": "k", "scopes": ["export"], "jurisdiction_id": "station-a", **bad}
        r = await people.post("a-admin", "/api/v1/api-keys", body)
        assert r.status_code == code, (bad, r.text)
    root = await people.post("city-admin", "/api/v1/api-keys",
                             {"name": "city export", "scopes": ["export"]})
    assert root.status_code == 201 and root.json()["jurisdiction_id"] is None
    for who in ("a-super", "a-staff", "export-all"):  # no manage_keys
        r = await people.post(who, "/api/v1/api-keys", {"name": "x", "scopes": ["export"]})
        assert r.status_code == 403, who

    b_key = root.json()["id"]  # not limited to a node of district-a: a-admin cannot see it
    assert (await people.get("a-admin", f"/api/v1/api-keys/{b_key}")).status_code == 404
    assert (await people.post("a-admin", f"/api/v1/api-keys/{b_key}/revoke")
            ).status_code == 404
    revoked = await people.post("a-admin", f"/api/v1/api-keys/{key['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    again = await people.post("a-admin", f"/api/v1/api-keys/{key['id']}/revoke")
    assert again.status_code == 409
    gone = await people.client.get("/api/v1/incidents", headers=bearer(key["token"]))
    assert gone.status_code == 401
    with psycopg.connect(people.dsn) as conn:
        audited = conn.execute("SELECT action, actor FROM audit_log WHERE entity = 'api_key'"
                               " AND entity_id = %s ORDER BY id", (key["id"],)).fetchall()
    assert audited == [("api_key.create", "user:a-admin"), ("api_key.revoke", "user:a-admin")]
