"""In-memory adapters of the batch processor's ports: the rule path without Kafka or
PostgreSQL, for expectations (what the rules make of a workload), benchmarks and tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ganzhi.contracts import AlertTransition, DeadLetter
from stream.sinks.readings import ReadingRow, WriteResult
from stream.state import Held


@dataclass
class MemoryAdapters:
    """Readings sink (counts), rule-state store, transition and dead-letter senders."""

    states: dict[str, Held] = field(default_factory=dict)
    transitions: list[AlertTransition] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    rows: int = 0

    async def write(self, rows: Sequence[ReadingRow]) -> WriteResult:
        self.rows += len(rows)
        return WriteResult(len(rows), 0, 0)

    def get(self, key: str) -> Held | None:
        return self.states.get(key)

    def put(self, key: str, value: Held) -> None:
        self.states[key] = value

    def keys(self) -> Iterator[str]:
        return iter(list(self.states))

    async def send(self, transitions: Sequence[AlertTransition]) -> None:
        self.transitions.extend(transitions)

    async def dead_letter(self, letters: Sequence[tuple[bytes, DeadLetter]]) -> None:
        self.dead.extend(dl for _, dl in letters)
