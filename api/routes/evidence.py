"""Evidence snapshots by SHA-256, read from the evidence store ingest writes."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response

from ganzhi.evidence import EvidenceError, EvidenceStore, make_store

router = APIRouter(prefix="/api/v1/evidence", tags=["evidence"])


def _store(request: Request) -> EvidenceStore:
    store: EvidenceStore | None = getattr(request.app.state, "evidence", None)
    if store is None:
        store = request.app.state.evidence = make_store(request.app.state.settings.evidence)
    return store


@router.get(
    "/{sha256}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "not stored"}},
    summary="An evidence snapshot (annotated JPEG); its bytes hash to its name",
)
async def get_evidence(
    request: Request,
    sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
) -> Response:
    etag = f'"{sha256}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    try:
        data = await asyncio.to_thread(_store(request).get, sha256)
    except EvidenceError as exc:  # stored bytes no longer match their hash
        raise HTTPException(status_code=500, detail=f"evidence corrupted: {exc}") from exc
    if data is None:
        raise HTTPException(status_code=404, detail=f"no evidence {sha256}")
    return Response(content=data, media_type="image/jpeg", headers={
        "ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"})
