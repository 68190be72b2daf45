"""Staff accounts and their sign-in: argon2 password hashes, short-lived access tokens
(JWT, HS256) and opaque refresh tokens rotated on every use, login throttling counted in
the database, and the account administration the API and the CLI share.

An account is bound to a node of the jurisdiction tree: it sees that node's subtree, or
everything when the node is a root. Every request with an access token loads the account
again (:func:`active_user`), so disabling it, changing its role or node, or ending the
token's sign-in (logout) takes effect at once rather than when its token runs out.
Passwords and tokens are never logged nor written to the audit log
(:data:`ganzhi.audit.REDACTED`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg import AsyncConnection

from alerts.repository import Conflict, NotFound
from ganzhi.access import EVERYTHING, Role, Scope
from ganzhi.audit import audit
from ganzhi.settings import AuthSettings

AnyConn = AsyncConnection[Any]

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
PASSWORD_MIN = 10
PASSWORD_MAX = 256  # argon2 takes any length; a cap keeps a request from costing much
DISPLAY_NAME_MAX = 100
REFRESH_PREFIX = "gzr_"
ALGORITHM = "HS256"

_hasher = PasswordHasher()
_dummy_hash: str | None = None


class InvalidCredentials(Exception):
    """Unknown user, wrong password or disabled account: all answered alike."""


class InvalidToken(Exception):
    """An access or refresh token that is malformed, expired, revoked or of a disabled
    account; the message says which, for the server's log only."""


class Throttled(Exception):
    """Too many failed sign-ins for this username or from this address."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed sign-ins: retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    role: Role
    jurisdiction_id: str
    jurisdiction_path: str
    created_at: datetime
    disabled_at: datetime | None

    @property
    def actor(self) -> str:
        """Who did it, in incident history and the audit log."""
        return f"user:{self.username}"

    @property
    def scope(self) -> Scope:
        """A root node's account sees everything (registered sites or not)."""
        return EVERYTHING if self.jurisdiction_path.count("/") == 2 else Scope(
            path=self.jurisdiction_path)

    def public(self) -> dict[str, Any]:
        """The account as the audit log records it (no hash)."""
        out = asdict(self)
        out["role"] = self.role.value
        return out


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User


# --- passwords (pure, CPU-bound: callers run them in a thread) ---------------------------


def check_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.match(name):
        raise ValueError("username must be 2 to 64 characters: lowercase letters, digits,"
                         " '.', '_' or '-', starting with a letter or digit")
    return name


def check_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValueError(f"password must have {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def verify_password(password_hash: str | None, password: str) -> tuple[bool, bool]:
    """(matches, needs rehash). Without a hash (unknown user) a dummy one is verified, so
    the answer takes about as long as for a real account and tells no name apart."""
    global _dummy_hash
    if password_hash is None:
        _dummy_hash = _dummy_hash or _hasher.hash(secrets.token_urlsafe(16))
        password_hash, known = _dummy_hash, False
    else:
        known = True
    try:
        _hasher.verify(password_hash, password[:PASSWORD_MAX])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    return known, known and _hasher.check_needs_rehash(password_hash)


# --- tokens (pure) -----------------------------------------------------------------------


def issue_access(user: User, secret: str, settings: AuthSettings,
                 now: datetime | None = None, session: uuid.UUID | None = None) -> str:
    """``session``: the sign-in (its refresh tokens' family) the token belongs to, as
    ``sid``; the token is refused once that sign-in ends (logout, revocation)."""
    now = now or datetime.now(UTC)
    claims = {
        "sub": str(user.id), "name": user.username, "role": user.role.value,
        "jur": user.jurisdiction_path, "iss": settings.issuer, "iat": now,
        "exp": now + timedelta(seconds=settings.access_ttl_s), "jti": uuid.uuid4().hex,
    }
    if session is not None:
        claims["sid"] = str(session)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


@dataclass(frozen=True)
class Access:
    user_id: int
    session: uuid.UUID | None  # None: a token from before sign-ins were named (minutes)


def decode_access(token: str, secret: str, settings: AuthSettings) -> Access:
    """The account and sign-in of a valid access token, or InvalidToken (bad signature,
    expired, another issuer, missing claims). Only HS256 is accepted: never ``alg: none``."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=settings.issuer,
                            options={"require": ["sub", "exp", "iat", "jti", "iss"]})
        sid = claims.get("sid")
        return Access(int(claims["sub"]), None if sid is None else uuid.UUID(str(sid)))
    except (jwt.PyJWTError, ValueError) as exc:
        raise InvalidToken(f"access token refused: {type(exc).__name__}") from None


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- accounts in PostgreSQL --------------------------------------------------------------

_USER = ("u.id, u.username, u.display_name, u.role, u.jurisdiction_id, j.path,"
         " u.created_at, u.disabled_at")
_FROM = "FROM users u JOIN jurisdictions j ON j.id = u.jurisdiction_id"


def _user(r: tuple[Any, ...]) -> User:
    return User(r[0], r[1], r[2], Role(r[3]), r[4], r[5], r[6], r[7])


async def active_user(conn: AnyConn, user_id: int, session: uuid.UUID | None = None
                      ) -> User | None:
    """The account behind an access token, as it is now; None when disabled or gone, or
    when ``session`` (the token's sign-in) has ended: signed out, or revoked."""
    if session is None:
        cur = await conn.execute(
            f"SELECT {_USER} {_FROM} WHERE u.id = %s AND u.disabled_at IS NULL", (user_id,))
    else:
        cur = await conn.execute(
            f"SELECT {_USER} {_FROM} WHERE u.id = %s AND u.disabled_at IS NULL"
            " AND EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family = %s"
            " AND t.user_id = u.id AND t.revoked_at IS NULL)", (user_id, session))
    row = await cur.fetchone()
    return _user(row) if row else None


async def list_users(conn: AnyConn, within: Scope = EVERYTHING) -> list[User]:
    """Accounts bound to a node of the ``within`` subtree."""
    cond, params = within.path_filter("j.path")
    cur = await conn.execute(f"SELECT {_USER} {_FROM} WHERE {cond} ORDER BY u.id", params)
    return [_user(r) for r in await cur.fetchall()]


async def get_user(conn: AnyConn, user_id: int, within: Scope = EVERYTHING) -> User:
    """NotFound for an unknown account and for one outside ``within`` alike."""
    cond, params = within.path_filter("j.path")
    cur = await conn.execute(f"SELECT {_USER} {_FROM} WHERE u.id = %s AND {cond}",
                             [user_id, *params])
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return _user(row)


async def user_by_name(conn: AnyConn, username: str) -> User:
    cur = await conn.execute(f"SELECT {_USER} {_FROM} WHERE u.username = %s",
                             (username.strip().lower(),))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"user {username} not found")
    return _user(row)


async def _node_path(conn: AnyConn, jurisdiction_id: str, within: Scope) -> str:
    """The path of a node within the caller's subtree: nobody places an account above
    their own node. NotFound otherwise, as for a node that does not exist."""
    cond, params = within.path_filter("path")
    cur = await conn.execute(f"SELECT path FROM jurisdictions WHERE id = %s AND {cond}",
                             [jurisdiction_id, *params])
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"jurisdiction {jurisdiction_id} not found")
    return str(row[0])


def _display_name(value: str | None) -> str:
    text = (value or "").strip()
    if len(text) > DISPLAY_NAME_MAX:
        raise ValueError(f"display_name has at most {DISPLAY_NAME_MAX} characters")
    return text


async def create_user(conn: AnyConn, actor: str, *, username: str, password: str,
                      role: Role | str, jurisdiction_id: str, display_name: str = "",
                      within: Scope = EVERYTHING) -> User:
    """A new account; Conflict when the name is taken. Audited as ``user.create``."""
    name, role = check_username(username), Role(role)
    shown = _display_name(display_name)
    password_hash = await asyncio.to_thread(hash_password, password)
    async with conn.transaction():
        path = await _node_path(conn, jurisdiction_id, within)
        cur = await conn.execute(
            "INSERT INTO users (username, display_name, password_hash, role, jurisdiction_id)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (username) DO NOTHING RETURNING id",
            (name, shown, password_hash, role.value, jurisdiction_id))
        row = await cur.fetchone()
        if row is None:
            raise Conflict(f"user {name} exists already")
        user = await get_user(conn, int(row[0]))
        await audit(conn, actor, "user.create", "user", str(user.id), after=user.public(),
                    jurisdiction_path=path)
    return user


async def update_user(conn: AnyConn, actor: str, user_id: int, *,
                      role: Role | str | None = None, jurisdiction_id: str | None = None,
                      display_name: str | None = None, disabled: bool | None = None,
                      password: str | None = None, within: Scope = EVERYTHING) -> User:
    """Change an account within ``within``: role, node (also within), display name,
    disabled or not, a new password. Disabling it or resetting its password ends its
    sessions (refresh tokens). Audited as ``user.update``, the password as a flag only."""
    new_role = Role(role) if role is not None else None
    shown = _display_name(display_name) if display_name is not None else None
    new_hash = await asyncio.to_thread(hash_password, password) if password else None
    async with conn.transaction():
        before = await get_user(conn, user_id, within)
        await conn.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (user_id,))
        if jurisdiction_id is not None:
            await _node_path(conn, jurisdiction_id, within)
        await conn.execute(
            "UPDATE users SET role = COALESCE(%s, role),"
            " jurisdiction_id = COALESCE(%s, jurisdiction_id),"
            " display_name = COALESCE(%s, display_name),"
            " password_hash = COALESCE(%s, password_hash),"
            " disabled_at = CASE WHEN %s::boolean IS NULL THEN disabled_at"
            "   WHEN %s THEN COALESCE(disabled_at, now()) ELSE NULL END,"
            " updated_at = now() WHERE id = %s",
            (new_role.value if new_role else None, jurisdiction_id, shown, new_hash,
             disabled, disabled, user_id))
        after = await get_user(conn, user_id)
        if disabled or new_hash is not None:
            await revoke_sessions(conn, user_id)
        changes = {**after.public(), "password_reset": new_hash is not None}
        await audit(conn, actor, "user.update", "user", str(user_id), before=before.public(),
                    after=changes, jurisdiction_path=after.jurisdiction_path)
    return after


async def revoke_sessions(conn: AnyConn, user_id: int) -> int:
    cur = await conn.execute("UPDATE refresh_tokens SET revoked_at = now()"
                             " WHERE user_id = %s AND revoked_at IS NULL", (user_id,))
    return cur.rowcount


async def ensure_root(conn: AnyConn, actor: str, jurisdiction_id: str, name: str,
                      level: str = "city") -> bool:
    """Bootstrap: make a root node of the tree unless it exists; True when made."""
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO jurisdictions (id, parent_id, name, level, path)"
            " VALUES (%s, NULL, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING path",
            (jurisdiction_id, name, level, f"/{jurisdiction_id}/"))
        row = await cur.fetchone()
        if row is None:
            return False
        await audit(conn, actor, "jurisdiction.create", "jurisdiction", jurisdiction_id,
                    after={"id": jurisdiction_id, "name": name, "level": level,
                           "parent_id": None}, jurisdiction_path=str(row[0]))
    return True


# --- sign-in -----------------------------------------------------------------------------


async def _throttle(conn: AnyConn, username: str, ip: str, s: AuthSettings) -> None:
    """Throttled when this name, or this address, failed too often within the window.
    Retry-After: when the oldest failure that counts leaves the window."""
    window = timedelta(seconds=s.login_window_s)
    for column, value, limit in (("username", username, s.max_failures_per_user),
                                 ("ip", ip, s.max_failures_per_ip)):
        cur = await conn.execute(
            f"SELECT count(*), min(at), now() FROM login_failures"
            f" WHERE {column} = %s AND at > now() - %s", (value, window))
        row = await cur.fetchone()
        assert row is not None
        if row[0] >= limit:
            retry = (row[1] + window - row[2]).total_seconds()
            raise Throttled(max(1, int(retry) + 1))


async def _record_failure(conn: AnyConn, username: str, ip: str) -> None:
    await conn.execute("INSERT INTO login_failures (username, ip) VALUES (%s, %s)",
                       (username, ip))
    await conn.execute("DELETE FROM login_failures WHERE at < now() - interval '1 day'")


async def _start_session(conn: AnyConn, user: User, s: AuthSettings, secret: str,
                         family: uuid.UUID) -> tuple[Tokens, int]:
    refresh = new_refresh_token()
    cur = await conn.execute(
        "INSERT INTO refresh_tokens (user_id, family, token_hash, expires_at)"
        " VALUES (%s, %s, %s, now() + %s) RETURNING id",
        (user.id, family, token_hash(refresh), timedelta(seconds=s.refresh_ttl_s)))
    row = await cur.fetchone()
    assert row is not None
    access = issue_access(user, secret, s, session=family)
    return Tokens(access, refresh, s.access_ttl_s, user), int(row[0])


async def login(conn: AnyConn, username: str, password: str, ip: str, s: AuthSettings,
                secret: str) -> Tokens:
    """Sign in: tokens, or Throttled, or InvalidCredentials (unknown name, wrong password
    and disabled account alike; each counts as a failure). Attempts on one name are
    serialised by an advisory lock, so parallel guesses cannot overrun the limit."""
    name = username.strip().lower()[:64]
    tokens: Tokens | None = None
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('login:' || %s))", (name,))
        await _throttle(conn, name, ip, s)
        cur = await conn.execute(
            "SELECT id, password_hash, disabled_at FROM users WHERE username = %s", (name,))
        row = await cur.fetchone()
        ok, rehash = await asyncio.to_thread(verify_password, row[1] if row else None,
                                             password)
        if not ok or row is None or row[2] is not None:
            await _record_failure(conn, name, ip)
        else:
            tokens = await _signed_in(conn, int(row[0]), password if rehash else None, s,
                                      secret, ip)
    if tokens is None:  # raised after the commit: the failure must be counted
        raise InvalidCredentials("invalid username or password")
    return tokens


async def _signed_in(conn: AnyConn, user_id: int, rehash_password: str | None,
                     s: AuthSettings, secret: str, ip: str) -> Tokens:
    if rehash_password is not None:  # the hasher's parameters changed since
        new_hash = await asyncio.to_thread(hash_password, rehash_password)
        await conn.execute("UPDATE users SET password_hash = %s WHERE id = %s",
                           (new_hash, user_id))
    user = await get_user(conn, user_id)
    await conn.execute("DELETE FROM login_failures WHERE username = %s", (user.username,))
    tokens, _ = await _start_session(conn, user, s, secret, uuid.uuid4())
    await audit(conn, user.actor, "user.login", "user", str(user.id), after={"ip": ip},
                jurisdiction_path=user.jurisdiction_path)
    return tokens


async def refresh(conn: AnyConn, token: str, s: AuthSettings, secret: str) -> Tokens:
    """A new pair for a live refresh token, which is revoked (rotation). A rotated token
    used again means a copy is abroad: its whole family is revoked, and InvalidToken."""
    tokens: Tokens | None = None
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id, user_id, family, expires_at <= now(), revoked_at, replaced_by"
            " FROM refresh_tokens WHERE token_hash = %s FOR UPDATE", (token_hash(token),))
        row = await cur.fetchone()
        if row is None or row[3]:
            raise InvalidToken("refresh token unknown or expired")
        if row[4] is not None:
            if row[5] is None:
                raise InvalidToken("refresh token revoked")
            await _revoke_family(conn, row[2])
            await audit(conn, "system", "user.refresh_reuse", "user", str(row[1]),
                        after={"family": str(row[2])})
        else:
            user = await active_user(conn, int(row[1]))
            if user is None:
                raise InvalidToken("account disabled")
            tokens, new_id = await _start_session(conn, user, s, secret, row[2])
            await conn.execute("UPDATE refresh_tokens SET revoked_at = now(), replaced_by = %s"
                               " WHERE id = %s", (new_id, row[0]))
    if tokens is None:  # raised after the commit: the family's revocation must stand
        raise InvalidToken("refresh token reused: every session of its sign-in is revoked")
    return tokens


async def _revoke_family(conn: AnyConn, family: uuid.UUID) -> None:
    await conn.execute("UPDATE refresh_tokens SET revoked_at = now()"
                       " WHERE family = %s AND revoked_at IS NULL", (family,))


async def logout(conn: AnyConn, token: str) -> bool:
    """End the sign-in session of a refresh token (its whole family); False when the
    token is unknown. The session's access tokens are refused from then on."""
    cur = await conn.execute("SELECT family FROM refresh_tokens WHERE token_hash = %s",
                             (token_hash(token),))
    row = await cur.fetchone()
    if row is None:
        return False
    await _revoke_family(conn, row[0])
    return True
