"""The audit log: who changed what, when, before and after. One function, called in the
same transaction as the change it records, so a change and its record commit together."""

from __future__ import annotations

import json
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

# Never written to the log, whatever the entity (hashes and secrets).
REDACTED = frozenset({"password", "password_hash", "secret", "secret_hash", "token",
                      "mqtt_password", "mqtt_password_hash"})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str, ensure_ascii=False)  # datetimes, decimals as text


def redact(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: ("[redacted]" if k in REDACTED else v) for k, v in values.items()}


async def audit(conn: AsyncConnection[Any], actor: str, action: str, entity: str,
                entity_id: str, *, before: dict[str, Any] | None = None,
                after: dict[str, Any] | None = None, site_id: str | None = None,
                jurisdiction_path: str | None = None) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, site_id, jurisdiction_path,"
        " before, after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (actor, action, entity, entity_id, site_id, jurisdiction_path,
         Jsonb(redact(before), dumps=_dumps) if before is not None else None,
         Jsonb(redact(after), dumps=_dumps) if after is not None else None))
