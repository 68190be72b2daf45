"""Request dependencies: settings, a database connection from the pool, the caller
(:func:`get_caller`: a staff access token or an API key) and what it may do
(:func:`require`), the alerts policy, and the mapping of domain errors to HTTP.

Every route but ``/healthz``, ``/metrics``, the schema and the sign-in endpoints needs a
caller; each filters its queries by the caller's :class:`ganzhi.access.Scope` in SQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from alerts.repository import Conflict, NotFound, Policy
from api.errors import unprocessable
from ganzhi import accounts, apikeys
from ganzhi.access import Permission, Role, Scope, permissions_of
from ganzhi.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


async def get_conn(
    pool: Annotated[AsyncConnectionPool[Any], Depends(get_pool)],
) -> AsyncIterator[AsyncConnection[Any]]:
    async with pool.connection() as conn:
        yield conn


async def get_read_conn(
    request: Request,
    primary: Annotated[AsyncConnection[Any], Depends(get_conn)],
) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection for heavy reads that may lag a little (readings, statistics): from
    the read replica's pool where ``GANZHI_DB__READ_DSN`` is set, else the request's own
    primary connection (one request never holds two of the primary's)."""
    pool: AsyncConnectionPool[Any] = request.app.state.read_pool
    if pool is request.app.state.pool:
        yield primary
        return
    async with pool.connection() as conn:
        yield conn


Kind = Literal["user", "key"]


@dataclass(frozen=True)
class Caller:
    """Who is calling: a signed-in staff member or an API key, what they may do, and the
    sites they see. Every query of every route filters by ``scope`` in SQL."""

    actor: str  # user:<username> or key:<name>, in incident history and the audit log
    permissions: frozenset[Permission]
    scope: Scope
    kind: Kind
    user_id: int | None = None
    role: Role | None = None

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


# auto_error=False: a missing or non-Bearer header is answered 401 below, not 403.
_bearer = HTTPBearer(auto_error=False, description=(
    "A staff access token (JWT from POST /api/v1/auth/login) or an API key"
    " (gzk_<id>_<secret>)"))
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, reason, headers=_UNAUTHORIZED)


def jwt_secret_of(request: Request) -> str:
    secret: str = request.app.state.jwt_secret
    return secret


async def _from_access_token(conn: AsyncConnection[Any], token: str, request: Request
                             ) -> Caller:
    settings: Settings = request.app.state.settings
    try:
        access = accounts.decode_access(token, jwt_secret_of(request), settings.auth)
    except accounts.InvalidToken:
        raise unauthorized("invalid or expired access token: sign in again") from None
    user = await accounts.active_user(conn, access.user_id, access.session)
    if user is None:
        raise unauthorized("this sign-in has ended (signed out or revoked), or the account"
                           " is disabled: sign in again")
    return Caller(user.actor, permissions_of(user.role), user.scope, "user", user.id,
                  user.role)


async def get_caller(
    request: Request,
    conn: Annotated[AsyncConnection[Any], Depends(get_conn)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller behind ``Authorization: Bearer``: an access token (its account loaded
    again, so a disabled one is refused at once) or an API key. 401 without a valid one:
    missing, malformed, unknown, wrong secret, expired or revoked all alike."""
    if credentials is None:
        raise unauthorized("sign in (POST /api/v1/auth/login) or use an API key:"
                           " Authorization: Bearer <token>")
    token = credentials.credentials
    if accounts.looks_like_jwt(token):
        return await _from_access_token(conn, token, request)
    key = await apikeys.lookup(conn, token)
    if key is None:
        raise unauthorized("invalid, expired or revoked API key")
    return Caller(key.actor, key.permissions, key.scope, "key")


def require(permission: Permission) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the authenticated caller (401 otherwise) holding ``permission``
    (403 otherwise, saying which)."""

    async def caller(who: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if not who.can(permission):
            what = "role" if who.kind == "user" else "API key"
            raise HTTPException(403, f"this {what} lacks the {permission.value!r} permission")
        return who

    return caller


def require_everything(caller: Caller, what: str) -> None:
    """403 unless the caller sees every site: ``what`` acts across jurisdictions."""
    if not caller.scope.everything:
        raise HTTPException(403, f"{what} needs access to every site (an account at a"
                                 " root node, or a key without a node or site limit)")


def get_policy(request: Request) -> Policy:
    """The alerts policy built at startup (receivers, escalation), which resolving an
    incident needs to send its ``resolved`` clue event; 503 when the API was started
    without a usable GANZHI_WEBHOOK__SECRET."""
    policy: Policy | None = getattr(request.app.state, "policy", None)
    if policy is None:
        reason = getattr(request.app.state, "policy_error", "no alerts policy")
        raise HTTPException(503, f"unavailable: {reason}")
    return policy


@contextmanager
def domain_errors() -> Iterator[None]:
    """NotFound -> 404, Conflict -> 409, ValueError (bad input) -> 422, each with its
    reason."""
    try:
        yield
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:
        raise unprocessable(str(exc)) from None


SettingsDep = Annotated[Settings, Depends(get_settings)]
ConnDep = Annotated[AsyncConnection[Any], Depends(get_conn)]
ReadConnDep = Annotated[AsyncConnection[Any], Depends(get_read_conn)]
PoolDep = Annotated[AsyncConnectionPool[Any], Depends(get_pool)]
PolicyDep = Annotated[Policy, Depends(get_policy)]
CallerDep = Annotated[Caller, Depends(get_caller)]
ReaderDep = Annotated[Caller, Depends(require(Permission.READ))]
StaffDep = Annotated[Caller, Depends(require(Permission.WORK_INCIDENTS))]
FeedbackDep = Annotated[Caller, Depends(require(Permission.FEEDBACK))]
SilencesDep = Annotated[Caller, Depends(require(Permission.SILENCE))]
OperatorDep = Annotated[Caller, Depends(require(Permission.OPERATE_RECEIVERS))]
AuditorDep = Annotated[Caller, Depends(require(Permission.READ_AUDIT))]
AccountsDep = Annotated[Caller, Depends(require(Permission.MANAGE_ACCOUNTS))]
KeysDep = Annotated[Caller, Depends(require(Permission.MANAGE_KEYS))]


async def site_visible(conn: AsyncConnection[Any], scope: Scope, site_id: str) -> bool:
    """Whether ``site_id`` is in ``scope``, asked of the database like every other scope
    check (a path scope needs the registry)."""
    cond, params = scope.site_filter("x.site_id")
    cur = await conn.execute(f"SELECT 1 FROM (SELECT %s::text AS site_id) x WHERE {cond}",
                             [site_id, *params])
    return await cur.fetchone() is not None
