"""Building dead letters: the one shape every service uses for what it refuses."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import ValidationError

from ganzhi.contracts.payloads import DeadLetter

# A dead letter keeps at most this much of the payload: it must fit a Kafka record
# (1 MB by default), and a refused 8 MB snapshot would not.
DEAD_LETTER_PAYLOAD_MAX = 512 * 1024

Stage = Literal["ingest", "stream", "alerts"]


def make_dead_letter(source: str, payload: bytes, reason: str, error: str,
                     stage: Stage = "ingest") -> DeadLetter:
    """A dead letter keeping the payload (cut to :data:`DEAD_LETTER_PAYLOAD_MAX`)."""
    if len(payload) > DEAD_LETTER_PAYLOAD_MAX:
        error = f"{error[:1900]} (payload of {len(payload)} bytes kept truncated to " \
                f"{DEAD_LETTER_PAYLOAD_MAX})"
    return DeadLetter(
        stage=stage, source_topic=source[:1000], reason=reason, error=error[:2000],
        payload_b64=base64.b64encode(payload[:DEAD_LETTER_PAYLOAD_MAX]).decode(),
    )


def describe(exc: ValidationError) -> str:
    """The first errors of a validation, one ``field.path: message`` each."""
    parts = []
    for err in exc.errors(include_url=False)[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
