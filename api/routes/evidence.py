"""Evidence snapshots by SHA-256, read from the evidence store ingest writes.

A hash is not a permission: a snapshot is served only to a caller who may see an alert
that names it (in the alert's values or in one of its transitions: the raised and the
cleared picture), checked in SQL with the caller's scope. Anything else, stored or not,
is 404 alike, so the answer tells nothing about other sites' evidence.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response

from api.deps import ConnDep, ReaderDep
from ganzhi.access import Scope
from ganzhi.evidence import EvidenceError, EvidenceStore, make_store

router = APIRouter(prefix="/api/v1/evidence", tags=["evidence"])

# Private: a shared cache must not keep what only some callers may see. A day, not
# forever: access may be withdrawn.
_HEADERS = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline"}


def _store(request: Request) -> EvidenceStore:
    store: EvidenceStore | None = getattr(request.app.state, "evidence", None)
    if store is None:
        store = request.app.state.evidence = make_store(request.app.state.settings.evidence)
    return store


async def _linked(conn: ConnDep, scope: Scope, sha256: str) -> bool:
    """Whether an alert of a site in ``scope`` names the snapshot (indexed lookups)."""
    cond, params = scope.site_filter("a.site_id")
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM alerts a WHERE a.\"values\" ? 'snapshot_sha256'"
        f"  AND a.\"values\"->>'snapshot_sha256' = %s AND {cond})"
        " OR EXISTS (SELECT 1 FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
        "  WHERE e.payload->'values' ? 'snapshot_sha256'"
        f"  AND e.payload->'values'->>'snapshot_sha256' = %s AND {cond})",
        [sha256, *params, sha256, *params])
    row = await cur.fetchone()
    return bool(row and row[0])


@router.get(
    "/{sha256}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}},
               404: {"description": "Not stored, or of no alert the caller may see"}},
    summary="An evidence snapshot (annotated JPEG); its bytes hash to its name",
)
async def get_evidence(
    request: Request,
    conn: ConnDep,
    caller: ReaderDep,
    sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
) -> Response:
    if not await _linked(conn, caller.scope, sha256):
        raise HTTPException(status_code=404, detail=f"no evidence {sha256}")
    etag = f'"{sha256}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag, **_HEADERS})
    try:
        data = await asyncio.to_thread(_store(request).get, sha256)
    except EvidenceError as exc:  # stored bytes no longer match their hash
        raise HTTPException(status_code=500, detail=f"evidence corrupted: {exc}") from exc
    if data is None:
        raise HTTPException(status_code=404, detail=f"no evidence {sha256}")
    return Response(content=data, media_type="image/jpeg", headers={"ETag": etag, **_HEADERS})
