"""Parameter types every route shares."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")


def _iso_only(value: Any) -> Any:
    """Pydantic would read ``0.5`` or ``1700000000`` as a Unix time: a client that sent a
    number meant something else, so only ISO 8601 text (or a datetime) is a date here."""
    if isinstance(value, bool | int | float) or (isinstance(value, str)
                                                  and _NUMBER.match(value)):
        raise ValueError("expected an ISO 8601 date and time with a time zone,"
                         " e.g. 2026-07-01T08:00:00+08:00")
    return value


# A date and time with a time zone, written in ISO 8601 (never a bare number).
IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
