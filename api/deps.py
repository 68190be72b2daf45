"""Request dependencies: settings, a database connection from the pool, the caller's scope
(read routes: :func:`get_jurisdiction`; changes: an API key with a scope,
:func:`require_scope`), the alerts policy, and the mapping of domain errors to HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from alerts.repository import Conflict, NotFound, Policy
from ganzhi import apikeys
from ganzhi.apikeys import Scope
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


@dataclass(frozen=True)
class Jurisdiction:
    """Which sites the caller may see. ``site_ids`` None means every site."""

    site_ids: frozenset[str] | None = None

    def allows(self, site_id: str) -> bool:
        return self.site_ids is None or site_id in self.site_ids


async def get_jurisdiction(request: Request) -> Jurisdiction:
    """The seam for jurisdiction-scoped staff auth (city / district / station).

    NOT IMPLEMENTED YET: there is no authentication, every caller sees every site, so the
    API must only be reachable from a trusted network. The auth issue replaces this body
    (verify the staff token, map it to the sites of the staff member's jurisdiction, 401
    without one); every route already filters its queries by the returned scope.
    """
    return Jurisdiction(site_ids=None)


@dataclass(frozen=True)
class Caller:
    """The API key behind a request that changes something."""

    name: str
    key_id: str
    scopes: frozenset[str]
    site_ids: frozenset[str] | None  # None: every site

    @property
    def actor(self) -> str:
        """Who did it, in incident history and on dropped outbox rows."""
        return f"key:{self.name}"

    def allows(self, site_id: str) -> bool:
        return self.site_ids is None or site_id in self.site_ids


# auto_error=False: a missing or non-Bearer header is answered 401 below, not 403.
_bearer = HTTPBearer(auto_error=False, description="An API key: gzk_<id>_<secret>")
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def require_scope(scope: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller's live API key (401 without one: missing, malformed,
    unknown, wrong secret or revoked, all alike so a guess learns nothing) that has
    ``scope`` (403 otherwise)."""

    async def caller(
        conn: Annotated[AsyncConnection[Any], Depends(get_conn)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        key = await apikeys.lookup(conn, credentials.credentials) if credentials else None
        if key is None:
            raise HTTPException(401, "a valid API key is required (Authorization: Bearer)",
                                headers=_UNAUTHORIZED)
        if scope not in key.scopes:
            raise HTTPException(403, f"this API key lacks the {scope!r} scope")
        return Caller(key.name, key.id, key.scopes, key.site_ids)

    return caller


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
        raise HTTPException(422, str(exc)) from None


SettingsDep = Annotated[Settings, Depends(get_settings)]
ConnDep = Annotated[AsyncConnection[Any], Depends(get_conn)]
PoolDep = Annotated[AsyncConnectionPool[Any], Depends(get_pool)]
JurisdictionDep = Annotated[Jurisdiction, Depends(get_jurisdiction)]
PolicyDep = Annotated[Policy, Depends(get_policy)]
StaffDep = Annotated[Caller, Depends(require_scope("staff"))]
FeedbackDep = Annotated[Caller, Depends(require_scope("feedback"))]
SilencesDep = Annotated[Caller, Depends(require_scope("silences"))]
OperatorDep = Annotated[Caller, Depends(require_scope("operator"))]
