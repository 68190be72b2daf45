"""API keys of machine callers (the task system's feedback) and, until staff sign-in
exists, of staff tools.

A token reads ``gzk_<id>_<secret>``: the id finds the key's row, and only the SHA-256 of
the secret is stored, so a copy of the database does not let anyone call the API. The
token is shown once, when the key is made; a lost token is revoked and replaced.

Scopes: ``feedback`` (the task system reports on its clues), ``staff`` (acknowledge,
assign, comment on and resolve incidents), ``silences`` (create and end silences),
``operator`` (drop and re-queue receivers' clue events). ``site_ids`` None: every site;
otherwise the key only acts on those sites.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from psycopg import AsyncConnection

AnyConn = AsyncConnection[Any]
Scope = Literal["feedback", "staff", "silences", "operator"]
SCOPES: frozenset[str] = frozenset(get_args(Scope))
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

    @property
    def actor(self) -> str:
        """Who the key is in incident history and on dropped outbox rows."""
        return f"key:{self.name}"


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

_COLUMNS = "id, name, scopes, site_ids, created_at, revoked_at"


def _row(r: tuple[Any, ...]) -> ApiKey:
    return ApiKey(r[0], r[1], frozenset(r[2]), None if r[3] is None else frozenset(r[3]),
                  r[4], r[5])


async def create(conn: AnyConn, name: str, scopes: Iterable[str],
                 site_ids: Iterable[str] | None = None) -> tuple[ApiKey, str]:
    """Make a key; returns it and its token (the only time the token exists in clear)."""
    name, wanted, sites = check_key(name, scopes, site_ids)
    key_id, secret, token = new_token()
    cur = await conn.execute(
        f"INSERT INTO api_keys (id, name, secret_hash, scopes, site_ids)"
        f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (key_id, name, hash_secret(secret), wanted, sites))
    row = await cur.fetchone()
    assert row is not None
    return _row(row), token


async def list_keys(conn: AnyConn) -> list[ApiKey]:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")
    return [_row(r) for r in await cur.fetchall()]


async def revoke(conn: AnyConn, key_id: str) -> bool:
    """Revoke a key; False when there is no such key or it was revoked before."""
    cur = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
        (key_id,))
    return cur.rowcount == 1


async def lookup(conn: AnyConn, token: str) -> ApiKey | None:
    """The live key of ``token``, or None (malformed, unknown, wrong secret, revoked)."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    cur = await conn.execute(
        f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE id = %s", (key_id,))
    row = await cur.fetchone()
    if row is None or not secret_matches(secret, row[6]) or row[5] is not None:
        return None
    return _row(row[:6])
