"""Receivers of clues: their outbox figures and last delivery attempts, and the
operator's way out of a stuck outbox (drop clue events, re-queue dead ones).

A receiver takes clues of every site (its figures and attempts mix them), so all of it
needs the ``operate_receivers`` permission (administrators, ``operator`` keys) and a
caller that sees every site: 403 otherwise.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from psycopg.rows import dict_row

from alerts import outbox
from alerts.routing import DEFAULT_RECEIVER
from api.deps import Caller, ConnDep, OperatorDep, SettingsDep, require_everything
from api.schemas import DeliveryAttempt, DropIn, ReceiverOut, RequeueIn, RowsOut
from ganzhi.settings import Settings

router = APIRouter(prefix="/api/v1/receivers", tags=["receivers"])

_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid access token or API key"},
    403: {"description": "The caller lacks the permission or is limited to some sites"},
    404: {"description": "No such receiver"},
}


def _configured(settings: Settings) -> list[str]:
    """Receiver names from the settings (no secrets needed, unlike the alerts policy)."""
    return [DEFAULT_RECEIVER, *(r.name for r in settings.alerts.receivers)]


async def _attempts(conn: ConnDep, names: list[str], limit: int
                    ) -> dict[str, list[DeliveryAttempt]]:
    """The last ``limit`` delivery attempts of each receiver (index on receiver, at)."""
    out: dict[str, list[DeliveryAttempt]] = {n: [] for n in names}
    if limit == 0:
        return out
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT r.name, x.* FROM unnest(%s::text[]) AS r(name) CROSS JOIN LATERAL ("
            "  SELECT d.outbox_id, o.clue_id::text AS clue_id, o.event, o.seq, d.attempt,"
            "   d.at, d.status_code, d.outcome, d.latency_ms, d.error"
            "  FROM clue_deliveries d JOIN clue_outbox o ON o.id = d.outbox_id"
            "  WHERE d.receiver = r.name ORDER BY d.at DESC, d.id DESC LIMIT %s) x",
            (names, limit))
        for row in await cur.fetchall():
            out[row.pop("name")].append(DeliveryAttempt.model_validate(row))
    return out


@router.get("", response_model=list[ReceiverOut], responses=_ERRORS)
async def list_receivers(
    conn: ConnDep,
    settings: SettingsDep,
    caller: OperatorDep,
    attempts: Annotated[int, Query(ge=0, le=50, description="Last attempts per receiver.")] = 5,
) -> list[ReceiverOut]:
    """Per receiver: pending, held, dead, age of the oldest pending event, last attempts.
    A receiver no longer configured shows while rows of it wait in the outbox."""
    require_everything(caller, "the receivers' figures")
    figures = {f.receiver: f for f in await outbox.figures(conn)}
    configured = _configured(settings)
    names = [*configured, *sorted(set(figures) - set(configured))]
    last = await _attempts(conn, names, attempts)
    out = []
    for name in names:
        f = figures.get(name) or outbox.ReceiverFigures(name, 0, 0, 0, 0.0)
        out.append(ReceiverOut(name=name, configured=name in configured, pending=f.pending,
                               held=f.held, dead=f.dead, oldest_pending_s=f.oldest_pending_s,
                               last_attempts=last[name]))
    return out


async def _operable(conn: ConnDep, settings: Settings, caller: Caller, name: str) -> None:
    require_everything(caller, "dropping or re-queuing clue events")
    if name in _configured(settings):
        return
    cur = await conn.execute("SELECT 1 FROM clue_outbox WHERE receiver = %s LIMIT 1", (name,))
    if await cur.fetchone() is None:
        raise HTTPException(404, f"receiver {name} not found")


@router.post("/{name}/drop", response_model=RowsOut, responses=_ERRORS)
async def drop(conn: ConnDep, settings: SettingsDep, caller: OperatorDep, body: DropIn,
               name: Annotated[str, Path(pattern=_NAME)]) -> RowsOut:
    """Give up on pending or dead clue events of the receiver (``ids`` and ``before``
    narrow it; neither: all of them): never sent, and no longer holding later events."""
    await _operable(conn, settings, caller, name)
    rows = await outbox.drop(conn, name, caller.actor, ids=body.ids, before=body.before)
    return RowsOut(receiver=name, rows=rows)


@router.post("/{name}/requeue", response_model=RowsOut, responses=_ERRORS)
async def requeue(conn: ConnDep, settings: SettingsDep, caller: OperatorDep, body: RequeueIn,
                  name: Annotated[str, Path(pattern=_NAME)]) -> RowsOut:
    """Dead clue events of the receiver (``ids``: only those) go back to pending, due now."""
    await _operable(conn, settings, caller, name)
    rows = await outbox.requeue(conn, name, caller.actor, ids=body.ids)
    return RowsOut(receiver=name, rows=rows)
