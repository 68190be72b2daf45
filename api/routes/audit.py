"""The audit log (supervisors and administrators): who changed what, when, before and
after; newest first with keyset pagination. A scoped caller sees the rows of sites in
its scope and of nodes in its subtree, filtered in SQL; rows of neither (API keys not
bound to a node, for example) only callers who see everything."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from psycopg.rows import dict_row

from api.deps import AuditorDep, ConnDep
from api.params import IsoDateTime
from api.schemas import AuditEntry, AuditPage
from ganzhi.access import Scope

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

_COLUMNS = ("id, at, actor, action, entity, entity_id, site_id, jurisdiction_path, before,"
            " after")


def _scope_clause(scope: Scope) -> tuple[str, list[Any]]:
    if scope.everything:
        return "TRUE", []
    sites, site_params = scope.site_filter("site_id")
    paths, path_params = scope.path_filter("jurisdiction_path")
    if scope.path is None:  # a key limited to sites only: no node rows
        return f"(site_id IS NOT NULL AND {sites})", site_params
    return (f"((site_id IS NOT NULL AND {sites})"
            f" OR (site_id IS NULL AND jurisdiction_path IS NOT NULL AND {paths}))",
            [*site_params, *path_params])


@router.get("", response_model=AuditPage)
async def list_audit(
    conn: ConnDep,
    caller: AuditorDep,
    entity: Annotated[str | None, Query(max_length=64)] = None,
    entity_id: Annotated[str | None, Query(max_length=200)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[IsoDateTime | None, Query(description="Inclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, Query(ge=1, description="Only rows with a lower id.")
                         ] = None,
) -> AuditPage:
    cond, params = _scope_clause(caller.scope)
    where = [cond]
    for column, value in (("entity", entity), ("entity_id", entity_id), ("actor", actor)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if since is not None:
        where.append("at >= %s")
        params.append(since)
    if before_id is not None:
        where.append("id < %s")
        params.append(before_id)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM audit_log WHERE {' AND '.join(where)}"
                          " ORDER BY id DESC LIMIT %s", [*params, limit + 1])
        rows = await cur.fetchall()
    items = [AuditEntry.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return AuditPage(items=items, next_before_id=items[-1].id if more and items else None)
