"""Staff accounts, for administrators: each administrator manages the accounts of their
own subtree of the jurisdiction tree only. An account outside it is 404; an account
cannot be placed on a node outside it (so nobody creates an account above their own node
or grants the administrator role outside their subtree). Every change is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path

from api.deps import AccountsDep, ConnDep, domain_errors
from api.schemas import UserIn, UserOut, UserPatch
from ganzhi import accounts

router = APIRouter(prefix="/api/v1/users", tags=["accounts"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid access token"},
    403: {"description": "Not an administrator"},
    404: {"description": "No such account or node within the caller's subtree"},
    409: {"description": "Username taken, or a change of one's own account refused"},
}


def _out(u: accounts.User) -> UserOut:
    return UserOut.model_validate(u, from_attributes=True)


@router.get("", response_model=list[UserOut], responses=_ERRORS)
async def list_users(conn: ConnDep, caller: AccountsDep) -> list[UserOut]:
    return [_out(u) for u in await accounts.list_users(conn, caller.scope)]


@router.post("", response_model=UserOut, status_code=201, responses=_ERRORS)
async def create_user(conn: ConnDep, caller: AccountsDep, body: UserIn) -> UserOut:
    with domain_errors():
        user = await accounts.create_user(
            conn, caller.actor, username=body.username, password=body.password,
            role=body.role, jurisdiction_id=body.jurisdiction_id,
            display_name=body.display_name, within=caller.scope)
    return _out(user)


@router.get("/{user_id}", response_model=UserOut, responses=_ERRORS)
async def get_user(conn: ConnDep, caller: AccountsDep,
                   user_id: Annotated[int, Path(ge=1)]) -> UserOut:
    with domain_errors():
        return _out(await accounts.get_user(conn, user_id, caller.scope))


@router.patch("/{user_id}", response_model=UserOut, responses=_ERRORS)
async def update_user(conn: ConnDep, caller: AccountsDep, body: UserPatch,
                      user_id: Annotated[int, Path(ge=1)]) -> UserOut:
    """Role, node, display name, disabled, a new password: only the fields sent change.
    Administrators do not demote, move or disable themselves (someone else must), so a
    subtree never loses its last administrator by a slip."""
    if user_id == caller.user_id and (body.role is not None or body.disabled
                                      or body.jurisdiction_id is not None):
        raise HTTPException(409, "you cannot change your own role, node or disable"
                                 " yourself: ask another administrator")
    with domain_errors():
        user = await accounts.update_user(
            conn, caller.actor, user_id, role=body.role, jurisdiction_id=body.jurisdiction_id,
            display_name=body.display_name, disabled=body.disabled, password=body.password,
            within=caller.scope)
    return _out(user)
