"""API keys of machine callers, for administrators (``manage_keys``): each administrator
sees and makes the keys limited to nodes of their own subtree only, and a key made below
the root is limited to such a node (and, optionally, to sites under it). The token is in
the creation's answer only. Every change is audited (``api_key.create``/``revoke``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path

from api.deps import ConnDep, KeysDep, domain_errors
from api.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut
from ganzhi import apikeys

router = APIRouter(prefix="/api/v1/api-keys", tags=["accounts"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid access token"},
    403: {"description": "Not an administrator"},
    404: {"description": "No such key, node or site within the caller's subtree"},
}
_KEY_ID = r"^[A-Za-z0-9_-]{12}$"


def _out(k: apikeys.ApiKey) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "scopes": sorted(k.scopes),
            "site_ids": sorted(k.site_ids) if k.site_ids is not None else None,
            "jurisdiction_id": k.jurisdiction_id, "created_at": k.created_at,
            "expires_at": k.expires_at, "revoked_at": k.revoked_at}


@router.get("", response_model=list[ApiKeyOut], responses=_ERRORS)
async def list_keys(conn: ConnDep, caller: KeysDep) -> list[ApiKeyOut]:
    return [ApiKeyOut(**_out(k)) for k in await apikeys.list_keys(conn, caller.scope)]


@router.post("", response_model=ApiKeyCreated, status_code=201, responses=_ERRORS)
async def create_key(conn: ConnDep, caller: KeysDep, body: ApiKeyIn) -> ApiKeyCreated:
    with domain_errors():
        key, token = await apikeys.create(
            conn, body.name, body.scopes, body.site_ids, expires_at=body.expires_at,
            jurisdiction_id=body.jurisdiction_id, actor=caller.actor, within=caller.scope)
    return ApiKeyCreated(**_out(key), token=token)


@router.get("/{key_id}", response_model=ApiKeyOut, responses=_ERRORS)
async def get_key(conn: ConnDep, caller: KeysDep,
                  key_id: Annotated[str, Path(pattern=_KEY_ID)]) -> ApiKeyOut:
    with domain_errors():
        return ApiKeyOut(**_out(await apikeys.get_key(conn, key_id, caller.scope)))


@router.post("/{key_id}/revoke", response_model=ApiKeyOut,
             responses={**_ERRORS, 409: {"description": "Revoked before"}})
async def revoke_key(conn: ConnDep, caller: KeysDep,
                     key_id: Annotated[str, Path(pattern=_KEY_ID)]) -> ApiKeyOut:
    with domain_errors():
        if not await apikeys.revoke(conn, key_id, caller.actor, within=caller.scope):
            await apikeys.get_key(conn, key_id, caller.scope)  # 404 if it does not exist
            raise HTTPException(409, f"API key {key_id} was revoked before")
        return ApiKeyOut(**_out(await apikeys.get_key(conn, key_id, caller.scope)))
