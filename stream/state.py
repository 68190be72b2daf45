"""Rule state as the worker holds it: parsed objects in memory, JSON only for checkpoints.

The store (:class:`StateStore`: :class:`~stream.checkpoints.CheckpointedStates` in the
worker, :class:`~stream.memory.MemoryAdapters` in tests and benchmarks) maps each key to a
:class:`Held`: the state object the rules made last, or the JSON a checkpoint restored
(parsed the first time a rule reads it). JSON is made only when a checkpoint writes the
state (:meth:`Held.json`), not on every batch: a device heard several times between two
checkpoints is serialised once, and the batch path does no JSON work for state at all.
State objects are :class:`~stream.rules.record.Record` structs.

A :class:`StateView` is one batch's view of the store: each key read once, changes kept
per message (undone together when a rule raises on it) and put back by :meth:`flush`
after the batch's transitions were sent. State objects are never changed in place (rule
state is a tree of frozen models), so a checkpoint can take the :class:`Held` records
under the processor's lock and serialise them later while batches go on.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from stream.rules import ordering
from stream.rules.record import Record, from_json, to_json

M = TypeVar("M", bound=Record)


@dataclass(eq=False, slots=True)
class Held:
    """One key's state. ``obj`` (parsed) or ``raw`` (JSON from a checkpoint) is set."""

    partition: int  # that of the device's messages: which checkpoint holds the key
    obj: Record | None = None
    raw: str | None = None
    extra: object = None  # in-memory companion of ``obj`` (an ordering Chain)
    # The JSON of parts of the state last written (ordering.dump_json reuses them).
    parts: ordering.JsonParts | None = None

    @classmethod
    def of_json(cls, raw: str, partition: int) -> Held:
        return cls(partition, raw=raw)

    def parsed(self, model: type[M]) -> M:
        """The state as ``model`` (parsed from the JSON once, then kept). ``model`` may
        be a generic record with its parameters (``OrderedState[ColdChainState]``)."""
        obj = self.obj
        if isinstance(obj, _origin(model)):
            return obj  # type: ignore[return-value]
        parsed = from_json(self.json(), model)
        self.obj, self.raw, self.extra = parsed, None, None
        return parsed

    def json(self) -> str:
        """The state as a checkpoint stores it."""
        if self.raw is not None:
            return self.raw
        obj = self.obj
        assert obj is not None
        if isinstance(obj, ordering.OrderedState):
            raw, self.parts = ordering.dump_json(obj, self.parts)
            return raw
        return to_json(obj)


_ORIGINS: dict[Any, type] = {}


def _origin(model: Any) -> type:
    """The class of ``model``'s instances (that of a parametrised generic record)."""
    cls = _ORIGINS.get(model)
    if cls is None:
        cls = _ORIGINS[model] = typing.get_origin(model) or model
    return cls


class StateStore(Protocol):
    """Rule state per key."""

    def get(self, key: str) -> Held | None: ...

    def put(self, key: str, value: Held) -> None: ...

    def keys(self) -> Iterator[str]: ...


@dataclass
class StateView:
    """Parsed state for one batch: each key read once from the store and put back once by
    :meth:`flush` (after the transitions were sent); keys whose state object did not
    change are not put again."""

    store: StateStore
    _pending: dict[str, tuple[Record, int]] = field(default_factory=dict)
    # Undo log of the message being evaluated: key -> what _pending held before it.
    _undo: dict[str, tuple[Record, int] | None] = field(default_factory=dict)
    # In-memory companions (ordering chains) of the objects saved in this batch.
    _extra: dict[str, tuple[Record, object]] = field(default_factory=dict)

    def load(self, key: str, model: type[M]) -> M | None:
        if key in self._pending:
            obj = self._pending[key][0]
            assert isinstance(obj, _origin(model))
            return obj  # type: ignore[return-value]
        held = self.store.get(key)
        return None if held is None else held.parsed(model)

    def extra(self, key: str, obj: Record) -> object:
        """The companion kept with ``obj`` (as loaded for ``key``), if any."""
        if key in self._extra:
            o, x = self._extra[key]
            return x if o is obj else None
        held = self.store.get(key)
        return held.extra if held is not None and held.obj is obj else None

    def set_extra(self, key: str, obj: Record, extra: object) -> None:
        self._extra[key] = (obj, extra)

    def save(self, key: str, obj: Record, partition: int) -> None:
        if key not in self._undo:
            self._undo[key] = self._pending.get(key)
        self._pending[key] = (obj, partition)

    def begin(self) -> None:
        """Start one message's changes (undone together by :meth:`rollback`)."""
        self._undo.clear()

    def rollback(self) -> None:
        for key, before in self._undo.items():
            if before is None:
                self._pending.pop(key, None)
            else:
                self._pending[key] = before
        self._undo.clear()

    def flush(self) -> int:
        """Put the changed state into the store; returns how many keys were put."""
        n = 0
        store = self.store
        for key, (obj, partition) in self._pending.items():
            old = store.get(key)
            if old is not None and old.obj is obj and old.partition == partition:
                continue  # unchanged
            x = self._extra.get(key)
            extra = x[1] if x is not None and x[0] is obj else None
            store.put(key, Held(partition, obj, None, extra,
                                old.parts if old is not None else None))
            n += 1
        self._pending.clear()
        self._extra.clear()
        return n
