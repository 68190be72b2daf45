"""Rule state as the rules keep it: frozen msgspec structs, JSON for checkpoints.

Every node of rule state (a cold room's hold machines, an elevator's rule phases, the
ordering wrapper, a device's health) is a :class:`Record`. A rule step never changes a
record: it builds new ones from the parts that stayed (:func:`evolve`), so a state
object can be kept in an undo log, a reorder chain or a checkpoint being written while
later messages go on. msgspec structs are built and copied in a fraction of the time a
pydantic model takes, and encoded to JSON several times faster; that is the batch path of
issue 13, where every message replaces a few of them.

The JSON has the field names of the attributes; fields at their default are left out
(``omit_defaults``), and absent fields read back as their defaults, so state written with
every field (older checkpoints) reads back the same. Alert transitions kept in state
(pydantic contracts) are encoded and read back through their own models.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from pydantic import BaseModel

__all__ = ["Record", "encode", "evolve", "from_json", "to_json"]


class Record(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Base of every rule-state node (immutable; no reference cycles, so not tracked by
    the garbage collector). Subclasses say ``frozen=True`` again for the type checker
    (msgspec inherits it; mypy does not see that)."""


R = TypeVar("R")

evolve = msgspec.structs.replace


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    raise NotImplementedError(f"cannot encode {type(obj).__name__} in rule state")


def _dec_hook(tp: Any, obj: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.model_validate(obj)
    raise NotImplementedError(f"cannot decode {tp!r} in rule state")


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)
_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def encode(obj: Any) -> bytes:
    """``obj`` (records, and what they hold) as JSON."""
    return _ENCODER.encode(obj)


def to_json(obj: Record) -> str:
    """The JSON of ``obj`` (all of it: a checkpoint may store less, see
    :meth:`stream.state.Held.json`)."""
    return _ENCODER.encode(obj).decode()


def from_json(raw: str | bytes, tp: type[R]) -> R:
    """``raw`` read as ``tp`` (a record type, or a generic one with its parameters);
    raises ``msgspec.ValidationError`` (a ``ValueError``) where it does not fit."""
    dec = _DECODERS.get(tp)
    if dec is None:
        dec = _DECODERS[tp] = msgspec.json.Decoder(tp, dec_hook=_dec_hook)
    result: R = dec.decode(raw)
    return result
