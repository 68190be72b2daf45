"""Liveness with a database check, and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from api.deps import PoolDep
from api.schemas import Health

router = APIRouter(tags=["ops"])
DB_CHECK_TIMEOUT_S = 3.0


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(pool: PoolDep) -> Response:
    try:
        async with asyncio.timeout(DB_CHECK_TIMEOUT_S):
            async with pool.connection(timeout=DB_CHECK_TIMEOUT_S) as conn:
                await conn.execute("SELECT 1")
    except Exception as exc:
        body = Health(ok=False, db=f"down: {type(exc).__name__}")
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Health(ok=True, db="ok").model_dump())


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
