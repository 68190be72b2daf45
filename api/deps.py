"""Request dependencies: settings, a database connection from the pool, the caller's scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

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


SettingsDep = Annotated[Settings, Depends(get_settings)]
ConnDep = Annotated[AsyncConnection[Any], Depends(get_conn)]
PoolDep = Annotated[AsyncConnectionPool[Any], Depends(get_pool)]
JurisdictionDep = Annotated[Jurisdiction, Depends(get_jurisdiction)]
