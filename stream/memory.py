"""In-memory adapters of the batch processor's ports: the rule path without Kafka or
PostgreSQL, for expectations (what the rules make of a workload), benchmarks and tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ganzhi.contracts import AlertTransition, DeadLetter
from stream.sinks.readings import ReadingRow, WriteResult


@dataclass
class MemoryAdapters:
    """Readings sink (counts), rule-state store, transition and dead-letter senders."""

    states: dict[str, tuple[str, int]] = field(default_factory=dict)
    transitions: list[AlertTransition] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    rows: int = 0

    async def write(self, rows: Sequence[ReadingRow]) -> WriteResult:
        self.rows += len(rows)
        return WriteResult(len(rows), 0, 0)

    def get(self, key: str) -> str | None:
        return self.states[key][0] if key in self.states else None

    def put(self, key: str, value: str, partition: int) -> None:
        self.states[key] = (value, partition)

    def keys(self) -> Iterator[str]:
        return iter(list(self.states))

    async def send(self, transitions: Sequence[AlertTransition]) -> None:
        self.transitions.extend(transitions)

    async def dead_letter(self, letters: Sequence[tuple[bytes, DeadLetter]]) -> None:
        self.dead.extend(dl for _, dl in letters)
