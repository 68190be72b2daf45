"""The API's error contract: every 4xx body is ``{"detail": ...}``.

401, 403, 404, 409, 429 and 503 carry a sentence (``ErrorOut``); 422 always carries the
list FastAPI's own validation uses (``HTTPValidationError``: ``loc``, ``msg``, ``type``),
also when the route itself finds the input wrong (a reversed time range, a file row), so
a client parses one shape. Every authenticated route documents 401 and 403.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel


class ErrorOut(BaseModel):
    detail: str


def unprocessable(msg: str, loc: Sequence[str | int] = ("body",),
                  kind: str = "value_error") -> HTTPException:
    """A 422 shaped like FastAPI's validation errors."""
    return HTTPException(422, [{"loc": list(loc), "msg": msg, "type": kind}])


def unprocessable_rows(msg: str, rows: Sequence[dict[str, Any]]) -> HTTPException:
    """A 422 for a refused file: one entry per bad row and column."""
    detail = [{"loc": ["file", int(r.get("row", 0)), str(r.get("column") or "")],
               "msg": str(r.get("reason", msg)), "type": "value_error"} for r in rows]
    return HTTPException(422, detail or [{"loc": ["file"], "msg": msg, "type": "value_error"}])


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No valid access token or API key"},
    403: {"model": ErrorOut, "description": "The caller lacks the permission"},
}
