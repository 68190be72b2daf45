"""API keys of machine callers (the task system's feedback) and, until staff sign-in
exists, of staff tools.

A token reads ``gzk_<id>_<secret>``: the id finds the key's row, and only the SHA-256 of
the secret is stored, so a copy of the database does not let anyone call the API. The
token is shown once, when the key is made; a lost token is revoked and replaced.

Scopes (what each allows: :data:`ganzhi.access.KEY_SCOPES`): ``feedback`` (the task
system reports on its clues), ``staff`` (read, and acknowledge, assign, comment on and
resolve incidents), ``silences`` (read, create and end silences), ``operator`` (read,
drop and re-queue receivers' clue events), ``export`` (read only), ``provisioning``
(read, provision devices). A key may be limited to a node of the jurisdiction tree
(``jurisdiction_id``: the sites registered under it) and to a list of sites
(``site_ids``); neither: every site. A key may expire (``expires_at``); an expired or
revoked key is refused like an unknown one. Keys never manage accounts or keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from alerts.repository import NotFound
from ganzhi.access import EVERYTHING, KEY_SCOPES, Permission, Scope, key_permissions
from ganzhi.audit import audit

AnyConn = AsyncConnection[Any]
SCOPES: frozenset[str] = frozenset(KEY_SCOPES)
PREFIX = "gzk"
ID_LENGTH = 12
NAME_MAX = 100
# token_urlsafe(9) is exactly 12 characters; token_urlsafe(32) is 43.
_TOKEN = re.compile(rf"^{PREFIX}_([A-Za-z0-9_-]{{{ID_LENGTH}}})_([A-Za-z0-9_-]{{20,100}})$")


@dataclass(frozen=True)
class ApiKey:
    """A key as stored, without its secret."""

    id: str
    name: str
    scopes: frozenset[str]
    site_ids: frozenset[str] | None
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = None
    jurisdiction_id: str | None = None
    jurisdiction_path: str | None = None

    @property
    def actor(self) -> str:
        """Who the key is in incident history and on dropped outbox rows."""
        return f"key:{self.name}"

    @property
    def permissions(self) -> frozenset[Permission]:
        return key_permissions(self.scopes)

    @property
    def scope(self) -> Scope:
        """The sites the key acts on: its node's subtree (a root node: every site),
        narrowed to its site list when it has one."""
        path = self.jurisdiction_path
        if path is not None and path.count("/") == 2:
            path = None
        return Scope(path=path, site_ids=self.site_ids)

    def public(self) -> dict[str, Any]:
        """The key as the audit log records it (never its secret)."""
        return {"id": self.id, "name": self.name, "scopes": sorted(self.scopes),
                "site_ids": sorted(self.site_ids) if self.site_ids is not None else None,
                "jurisdiction_id": self.jurisdiction_id, "expires_at": self.expires_at,
                "revoked_at": self.revoked_at}


# --- pure --------------------------------------------------------------------------------


def new_token() -> tuple[str, str, str]:
    """A fresh (id, secret, token)."""
    key_id = secrets.token_urlsafe(9)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{PREFIX}_{key_id}_{secret}"


def parse_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None. The id has a fixed length, so an
    underscore inside the id or the secret does not confuse the split."""
    m = _TOKEN.match(token)
    return (m.group(1), m.group(2)) if m else None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, secret_hash: str) -> bool:
    """Constant-time comparison, so response times tell nothing about the stored hash."""
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def check_key(name: str, scopes: Iterable[str], site_ids: Iterable[str] | None
              ) -> tuple[str, list[str], list[str] | None]:
    """Normalised (name, scopes, site_ids) of a new key, or ValueError saying what is
    wrong: a key without a scope would be useless, an unknown scope a typo."""
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise ValueError(f"name must have 1 to {NAME_MAX} characters")
    wanted = sorted(set(scopes))
    if not wanted:
        raise ValueError(f"at least one scope is needed: {sorted(SCOPES)}")
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scopes {unknown}: choose from {sorted(SCOPES)}")
    sites = None if site_ids is None else sorted({s.strip() for s in site_ids if s.strip()})
    if sites is not None and not sites:
        raise ValueError("site_ids, when given, must name at least one site")
    return name, wanted, sites


# --- PostgreSQL --------------------------------------------------------------------------

_COLUMNS = ("k.id, k.name, k.scopes, k.site_ids, k.created_at, k.revoked_at, k.expires_at,"
            " k.jurisdiction_id, j.path")
_FROM = "FROM api_keys k LEFT JOIN jurisdictions j ON j.id = k.jurisdiction_id"


def _row(r: tuple[Any, ...]) -> ApiKey:
    return ApiKey(r[0], r[1], frozenset(r[2]), None if r[3] is None else frozenset(r[3]),
                  r[4], r[5], r[6], r[7], r[8])


def _within(within: Scope) -> tuple[str, list[Any]]:
    """Keys a subtree sees: those limited to a node of it (all, at the root)."""
    cond, params = within.path_filter("j.path")
    if not within.everything:
        cond = f"j.path IS NOT NULL AND {cond}"
    return cond, params


async def _get(conn: AnyConn, key_id: str) -> ApiKey | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} {_FROM} WHERE k.id = %s", (key_id,))
    row = await cur.fetchone()
    return _row(row) if row else None


async def create(conn: AnyConn, name: str, scopes: Iterable[str],
                 site_ids: Iterable[str] | None = None, *,
                 expires_at: datetime | None = None, jurisdiction_id: str | None = None,
                 actor: str = "system", within: Scope = EVERYTHING) -> tuple[ApiKey, str]:
    """Make a key; returns it and its token (the only time the token exists in clear).
    Audited as ``api_key.create``. ValueError: bad name, scopes, expiry or node.

    ``within``: the maker's subtree. Below the root a key must be limited to a node of
    it, and its sites must lie under that node (NotFound otherwise, as for a node or
    site that does not exist): nobody makes a key that reaches beyond their own sites."""
    name, wanted, sites = check_key(name, scopes, site_ids)
    if expires_at is not None and (expires_at.tzinfo is None
                                   or expires_at <= datetime.now(expires_at.tzinfo)):
        raise ValueError("expires_at must be in the future, with a time zone")
    if jurisdiction_id is None and within.path is not None:
        raise ValueError("jurisdiction_id is needed: a key is limited to a node of your"
                         " subtree")
    key_id, secret, token = new_token()
    async with conn.transaction():
        if jurisdiction_id is not None:
            cond, params = within.path_filter("path")
            cur = await conn.execute(
                f"SELECT path FROM jurisdictions WHERE id = %s AND {cond}",
                [jurisdiction_id, *params])
            node = await cur.fetchone()
            if node is None:
                if within.path is not None:
                    raise NotFound(f"jurisdiction {jurisdiction_id} not found")
                raise ValueError(f"no jurisdiction {jurisdiction_id}")
            if sites is not None:
                under = Scope(path=None if str(node[0]).count("/") == 2 else str(node[0]))
                cond, params = under.site_filter("id")
                cur = await conn.execute(
                    f"SELECT id FROM sites WHERE id = ANY(%s) AND {cond}", [sites, *params])
                missing = set(sites) - {str(r[0]) for r in await cur.fetchall()}
                if missing:
                    raise NotFound(f"sites {sorted(missing)} not found under"
                                   f" {jurisdiction_id}")
        await conn.execute(
            "INSERT INTO api_keys (id, name, secret_hash, scopes, site_ids, expires_at,"
            " jurisdiction_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (key_id, name, hash_secret(secret), wanted, sites, expires_at, jurisdiction_id))
        key = await _get(conn, key_id)
        assert key is not None
        await audit(conn, actor, "api_key.create", "api_key", key.id, after=key.public(),
                    jurisdiction_path=key.jurisdiction_path)
    return key, token


async def list_keys(conn: AnyConn, within: Scope = EVERYTHING) -> list[ApiKey]:
    """Keys; ``within`` a subtree: only the keys limited to a node of it."""
    cond, params = _within(within)
    cur = await conn.execute(
        f"SELECT {_COLUMNS} {_FROM} WHERE {cond} ORDER BY k.created_at, k.id", params)
    return [_row(r) for r in await cur.fetchall()]


async def get_key(conn: AnyConn, key_id: str, within: Scope = EVERYTHING) -> ApiKey:
    """A key :func:`list_keys` shows to ``within``; NotFound otherwise."""
    cond, params = _within(within)
    cur = await conn.execute(f"SELECT {_COLUMNS} {_FROM} WHERE k.id = %s AND {cond}",
                             [key_id, *params])
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return _row(row)


async def revoke(conn: AnyConn, key_id: str, actor: str = "system",
                 within: Scope = EVERYTHING) -> bool:
    """Revoke a key; False when there is no such key or it was revoked before. Audited
    as ``api_key.revoke``. ``within``: only a key it sees (NotFound otherwise)."""
    if not within.everything:
        await get_key(conn, key_id, within)
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
            (key_id,))
        if cur.rowcount != 1:
            return False
        key = await _get(conn, key_id)
        assert key is not None
        await audit(conn, actor, "api_key.revoke", "api_key", key_id, after=key.public(),
                    jurisdiction_path=key.jurisdiction_path)
    return True


async def lookup(conn: AnyConn, token: str) -> ApiKey | None:
    """The live key of ``token``, or None (malformed, unknown, wrong secret, revoked,
    expired)."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    cur = await conn.execute(
        f"SELECT {_COLUMNS}, k.secret_hash, k.expires_at <= now() {_FROM} WHERE k.id = %s",
        (key_id,))
    row = await cur.fetchone()
    if row is None or not secret_matches(secret, row[9]) or row[5] is not None or row[10]:
        return None
    return _row(row[:9])
