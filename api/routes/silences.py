"""Silences and maintenance windows: clues of matching alerts are held while one is in
force; the alerts service's ticker releases them once it ends.

A caller that does not see every site (an account below a root node, a key limited to
a node or to sites) sees and ends only the silences whose ``site_id`` matcher is one of
its sites, and may only make such silences: a glob, or no site matcher, could reach
other jurisdictions' sites. The checks are SQL on the caller's scope.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from alerts import actions
from alerts.actions import SilenceRow
from api.deps import ConnDep, ReaderDep, SilencesDep, domain_errors, site_visible
from api.schemas import SilenceIn, SilenceOut

router = APIRouter(prefix="/api/v1/silences", tags=["silences"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid access token or API key"},
    403: {"description": "The caller lacks the permission or the site"},
}


def _out(s: SilenceRow) -> SilenceOut:
    return SilenceOut.model_validate(s, from_attributes=True)


@router.get("", response_model=list[SilenceOut])
async def list_silences(
    conn: ConnDep,
    caller: ReaderDep,
    active: Annotated[bool, Query(description="Only those not ended nor run out.")] = True,
) -> list[SilenceOut]:
    rows = await actions.list_silences(conn, active_only=active, scope=caller.scope)
    return [_out(s) for s in rows]


@router.post("", response_model=SilenceOut, status_code=201, responses=_ERRORS)
async def create_silence(conn: ConnDep, caller: SilencesDep, body: SilenceIn) -> SilenceOut:
    """A silence (or maintenance window) of at most 30 days, ending in the future."""
    site = body.matcher_dict().get("site_id")
    if not caller.scope.everything and (
            site is None or not await site_visible(conn, caller.scope, site)):
        raise HTTPException(403, "you may only silence sites of your own scope: set"
                                 " matchers.site_id to one of them (no glob)")
    with domain_errors():
        silence_id = await actions.create_silence(
            conn, body.kind, body.matcher_dict(), body.starts_at, body.ends_at, caller.actor,
            body.reason)
        return _out(await actions.get_silence(conn, silence_id))


@router.delete("/{silence_id}", response_model=SilenceOut,
               responses={**_ERRORS, 404: {"description": "No such silence"},
                          409: {"description": "Ended or run out already"}})
async def end_silence(conn: ConnDep, caller: SilencesDep,
                      silence_id: Annotated[int, Path(ge=1)]) -> SilenceOut:
    """End a silence now; its held clues go out at the alerts service's next tick."""
    with domain_errors():
        await actions.get_silence(conn, silence_id, caller.scope)  # 404 outside scope
        await actions.end_silence(conn, silence_id, caller.actor)
        return _out(await actions.get_silence(conn, silence_id))
