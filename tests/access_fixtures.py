"""Who is who in the API tests: a jurisdiction tree, sites under it, staff accounts of
every role at several nodes, and API keys; helpers to sign in and to call the API as
someone. A plain module (not a conftest), so any test, and the authorisation matrix,
can import it.

The tree::

    city (root)
    ├── district-a ── station-a ── site-a1, site-a2
    └── district-b ── station-b ── site-b1

``site-x`` (an alert may name a site the registry does not know) is seen only by callers
who see everything.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from api.main import create_app
from ganzhi import accounts, apikeys
from ganzhi.access import Role
from ganzhi.settings import AuthSettings, DatabaseSettings, Settings, WebhookSettings

JWT_SECRET = "test-jwt-signing-key-0123456789abcdefghij"
WEBHOOK_SECRET = "w" * 40
PASSWORD = "correct horse battery staple"

# id -> (parent, level)
TREE: dict[str, tuple[str | None, str]] = {
    "city": (None, "city"),
    "district-a": ("city", "district"),
    "district-b": ("city", "district"),
    "station-a": ("district-a", "station"),
    "station-b": ("district-b", "station"),
}
# site -> node
SITES: dict[str, str] = {"site-a1": "station-a", "site-a2": "station-a",
                         "site-b1": "station-b"}
UNREGISTERED_SITE = "site-x"

# username -> (role, node)
USERS: dict[str, tuple[Role, str]] = {
    "city-admin": (Role.ADMINISTRATOR, "city"),
    "city-viewer": (Role.VIEWER, "city"),
    "a-admin": (Role.ADMINISTRATOR, "district-a"),
    "a-super": (Role.SUPERVISOR, "district-a"),
    "a-staff": (Role.STAFF, "district-a"),
    "a-viewer": (Role.VIEWER, "district-a"),
    "b-admin": (Role.ADMINISTRATOR, "district-b"),
    "b-staff": (Role.STAFF, "district-b"),
    "sa-staff": (Role.STAFF, "station-a"),
}

# key name -> (scopes, sites, node)
KEYS: dict[str, tuple[list[str], list[str] | None, str | None]] = {
    "export-all": (["export"], None, None),
    "export-a": (["export"], None, "district-a"),
    "export-a1": (["export"], ["site-a1"], None),
    "staff-all": (["staff"], None, None),
    "staff-a": (["staff"], None, "district-a"),
    "feedback-all": (["feedback"], None, None),
    "feedback-a": (["feedback"], None, "district-a"),
    "silences-all": (["silences"], None, None),
    "silences-a": (["silences"], None, "district-a"),
    "operator-all": (["operator"], None, None),
    "operator-a": (["operator"], None, "district-a"),
}


def path_of(node: str) -> str:
    parts = [node]
    while (parent := TREE[parts[-1]][0]) is not None:
        parts.append(parent)
    return "/" + "/".join(reversed(parts)) + "/"


API_LOGIN = "ganzhi_api_test"


def api_dsn(dsn: str) -> str:
    """``dsn`` as the API connects in production: a login role in ``ganzhi_api`` (least
    privilege, granted by migrate), not the owner. Every API test runs this way, so a
    route that needs a privilege the role lacks fails its tests."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                            (API_LOGIN,)).fetchone():
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                conn.execute(f"CREATE ROLE {API_LOGIN} LOGIN IN ROLE ganzhi_api")
    return make_conninfo(dsn, user=API_LOGIN)


def settings(dsn: str, **changes: Any) -> Settings:
    """The API's settings for tests: the least-privilege database role, the signing key,
    a webhook secret (resolving needs the alerts policy), a small pool."""
    base = Settings(
        db=DatabaseSettings(dsn=SecretStr(api_dsn(dsn)), pool_max=2),
        auth=AuthSettings(jwt_secret=SecretStr(JWT_SECRET)),
        webhook=WebhookSettings(url="http://127.0.0.1:9/clues",
                                secret=SecretStr(WEBHOOK_SECRET)),
    )
    return base.model_copy(update=changes)


async def seed_tree(conn: AsyncConnection[Any]) -> None:
    for node, (parent, level) in TREE.items():
        await conn.execute(
            "INSERT INTO jurisdictions (id, parent_id, name, level, path)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (node, parent, node.title(), level, path_of(node)))
    for site, node in SITES.items():
        await conn.execute(
            "INSERT INTO sites (id, jurisdiction_id, name, category) VALUES (%s, %s, %s,"
            " 'cold_store') ON CONFLICT DO NOTHING", (site, node, site))


async def seed_users(conn: AsyncConnection[Any],
                     users: dict[str, tuple[Role, str]] | None = None) -> dict[str, int]:
    out = {}
    for name, (role, node) in (users or USERS).items():
        user = await accounts.create_user(conn, "test", username=name, password=PASSWORD,
                                          role=role, jurisdiction_id=node)
        out[name] = user.id
    return out


async def seed_keys(conn: AsyncConnection[Any]) -> dict[str, str]:
    tokens = {}
    for name, (scopes, sites, node) in KEYS.items():
        _, tokens[name] = await apikeys.create(conn, name, scopes, sites,
                                               jurisdiction_id=node)
    return tokens


@dataclass
class People:
    """The seeded world: user ids, key tokens, and access tokens (signed in lazily)."""

    client: httpx.AsyncClient
    dsn: str
    user_ids: dict[str, int]
    keys: dict[str, str]
    access: dict[str, str] = field(default_factory=dict)

    async def token(self, who: str) -> str:
        """An API key's token, or a signed-in user's access token."""
        if who in self.keys:
            return self.keys[who]
        if who not in self.access:
            self.access[who] = await login(self.client, who)
        return self.access[who]

    async def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(who)}"}

    async def get(self, who: str, url: str, **params: Any) -> httpx.Response:
        return await self.client.get(url, params=params, headers=await self.headers(who))

    async def post(self, who: str, url: str, body: dict[str, Any] | None = None
                   ) -> httpx.Response:
        return await self.client.post(url, json=body or {}, headers=await self.headers(who))

    async def patch(self, who: str, url: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.patch(url, json=body, headers=await self.headers(who))

    async def delete(self, who: str, url: str) -> httpx.Response:
        return await self.client.delete(url, headers=await self.headers(who))


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    response = await client.post("/api/v1/auth/login",
                                 json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def seed_people(dsn: str) -> tuple[dict[str, int], dict[str, str]]:
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await seed_tree(conn)
        return await seed_users(conn), await seed_keys(conn)


async def root_reader_token(dsn: str, name: str = "test-reader") -> str:
    """An ``export`` key for every site: what tests that are not about access read with."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        _, token = await apikeys.create(conn, name, ["export"])
    return token


@asynccontextmanager
async def api_client(app_settings: Settings, token: str | None = None
                     ) -> AsyncIterator[httpx.AsyncClient]:
    """The API in process (lifespan included); ``token``: sent unless a request says
    otherwise."""
    app = create_app(app_settings)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api",
                                     headers=headers) as c:
            yield c


async def anonymous(client: httpx.AsyncClient, method: str, url: str,
                    **kwargs: Any) -> httpx.Response:
    """A request without the client's default Authorization header."""
    request = client.build_request(method, url, **kwargs)
    request.headers.pop("authorization", None)
    return await client.send(request)
