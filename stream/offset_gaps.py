"""A guard against Faust skipping records after a restart or a rebalance.

Measured here with faust-streaming 0.15 (``ganzhi faults``: a stream worker killed with
SIGKILL and restarted under load): in most restarts the new worker's consumer resumed
its partitions *before* seeking them to the committed offsets (``Recovery`` calls
``resume_partitions`` then ``perform_seek``), fetched meanwhile, and then delivered
records with a jump in offsets. Faust takes any jump for a gap that needs no processing
(it exists for compacted topics and transaction markers) and marks it acknowledged
(``Consumer._add_gap``), so the commit moved past tens of records per partition that no
agent ever saw: readings and alerts lost for good.

The platform's topics are neither compacted nor transactional, so their offsets are
consecutive and a jump is always this race. Two parts close it:

* :func:`install` stops Faust from acknowledging a gap (it is logged and counted in
  ``ganzhi_stream_offset_gaps_total``): commits stop at its start.
* :class:`OffsetTracker` is kept by each agent: the next offset it must see per
  partition, from the committed offsets at each assignment. Records past a gap are
  neither processed nor acknowledged, and the partition is sought back to the gap's
  start; records seen before (a re-read after such a seek) are acknowledged and skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ganzhi.observability import get_logger
from stream import metrics

log = get_logger(__name__)

TopicPartition = tuple[str, int]


def install() -> None:
    """Patch Faust's consumer (all instances) so a gap is never acknowledged; idempotent."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer._add_gap, "_ganzhi_guard", False):
        return

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        metrics.OFFSET_GAPS.inc()
        log.warning("offset_gap", topic=tp.topic, partition=tp.partition, first=offset_from,
                    last=offset_to - 1, detail="not acknowledged: the partition is read "
                    "again from the gap")

    _add_gap._ganzhi_guard = True  # type: ignore[attr-defined]
    Consumer._add_gap = _add_gap  # type: ignore[method-assign]


@dataclass
class Split:
    """One batch sorted by what to do with each record."""

    fresh: list[Any] = field(default_factory=list)  # next in line: process, then ack
    seen: list[Any] = field(default_factory=list)  # already processed: ack only
    rewind: dict[TopicPartition, int] = field(default_factory=dict)  # seek back to here


@dataclass
class OffsetTracker:
    """The next offset to process per topic partition (None: take what comes)."""

    next: dict[TopicPartition, int | None] = field(default_factory=dict)

    def assigned(self, committed: Mapping[TopicPartition, int | None]) -> None:
        for tp, offset in committed.items():
            self.next[tp] = offset if offset is not None and offset >= 0 else None

    def split(self, records: Iterable[Any], where: Any = lambda r: r) -> Split:
        """Sort ``records`` (each with ``.topic``, ``.partition``, ``.offset`` through
        ``where``) into fresh, seen and the partitions to read again from a gap."""
        out = Split()
        for record in records:
            m = where(record)
            tp = (m.topic, m.partition)
            if tp in out.rewind:
                continue  # past a gap in this batch: read again after the seek
            expected = self.next.get(tp)
            if expected is None or m.offset == expected:
                out.fresh.append(record)
                self.next[tp] = m.offset + 1
            elif m.offset < expected:
                out.seen.append(record)
            else:
                out.rewind[tp] = expected
        return out
