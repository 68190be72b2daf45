"""Silences and maintenance windows: clues of matching alerts are held while one is in
force; the alerts service's ticker releases them once it ends.

A key limited to some sites may only make silences whose ``site_id`` matcher is exactly
one of its sites (a glob could reach other sites), and only end those.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from alerts import actions
from alerts.actions import SilenceRow
from alerts.repository import NotFound
from api.deps import Caller, ConnDep, JurisdictionDep, SilencesDep, domain_errors
from api.schemas import SilenceIn, SilenceOut

router = APIRouter(prefix="/api/v1/silences", tags=["silences"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key"},
    403: {"description": "The key lacks the scope or the site"},
}


def _out(s: SilenceRow) -> SilenceOut:
    return SilenceOut.model_validate(s, from_attributes=True)


def _covers(caller: Caller, matchers: dict[str, str]) -> bool:
    return caller.site_ids is None or matchers.get("site_id") in caller.site_ids


@router.get("", response_model=list[SilenceOut])
async def list_silences(
    conn: ConnDep,
    _scope: JurisdictionDep,
    active: Annotated[bool, Query(description="Only those not ended nor run out.")] = True,
) -> list[SilenceOut]:
    return [_out(s) for s in await actions.list_silences(conn, active_only=active)]


@router.post("", response_model=SilenceOut, status_code=201, responses=_ERRORS)
async def create_silence(conn: ConnDep, caller: SilencesDep, body: SilenceIn) -> SilenceOut:
    """A silence (or maintenance window) of at most 30 days, ending in the future."""
    if not _covers(caller, body.matchers):
        raise HTTPException(403, "this key may only silence its own sites: set"
                                 f" matchers.site_id to one of {sorted(caller.site_ids or ())}")
    with domain_errors():
        silence_id = await actions.create_silence(
            conn, body.kind, body.matchers, body.starts_at, body.ends_at, caller.actor,
            body.reason)
        return _out(await actions.get_silence(conn, silence_id))


@router.delete("/{silence_id}", response_model=SilenceOut,
               responses={**_ERRORS, 404: {"description": "No such silence"},
                          409: {"description": "Ended or run out already"}})
async def end_silence(conn: ConnDep, caller: SilencesDep,
                      silence_id: Annotated[int, Path(ge=1)]) -> SilenceOut:
    """End a silence now; its held clues go out at the alerts service's next tick."""
    with domain_errors():
        silence = await actions.get_silence(conn, silence_id)
        if not _covers(caller, silence.matchers):
            raise NotFound(f"silence {silence_id} not found")
        await actions.end_silence(conn, silence_id, caller.actor)
        return _out(await actions.get_silence(conn, silence_id))
