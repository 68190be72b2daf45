"""The stream agents' guard against skipped records (stream/offset_gaps.py)."""

from __future__ import annotations

from dataclasses import dataclass

from stream.offset_gaps import OffsetTracker


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int


def recs(partition: int, *offsets: int) -> list[Rec]:
    return [Rec("t", partition, o) for o in offsets]


def test_consecutive_records_are_fresh_from_the_committed_offset() -> None:
    tracker = OffsetTracker()
    tracker.assigned({("t", 0): 10, ("t", 1): None})
    out = tracker.split([*recs(0, 10, 11, 12), *recs(1, 500, 501)])
    assert [r.offset for r in out.fresh] == [10, 11, 12, 500, 501]
    assert out.seen == [] and out.rewind == {}
    assert tracker.next == {("t", 0): 13, ("t", 1): 502}


def test_a_jump_is_not_processed_and_the_partition_is_read_again_from_the_gap() -> None:
    tracker = OffsetTracker()
    tracker.assigned({("t", 0): 10, ("t", 1): 0})
    out = tracker.split([*recs(0, 10, 11, 40, 41), *recs(1, 0, 1)])
    assert [r.offset for r in out.fresh] == [10, 11, 0, 1]
    assert out.rewind == {("t", 0): 12}
    # After the seek: 12.. comes again, then what was past the gap, then repeats.
    out = tracker.split(recs(0, 12, 13, 40, 11))
    assert [r.offset for r in out.fresh] == [12, 13]
    assert out.rewind == {("t", 0): 14}


def test_records_seen_before_are_only_acknowledged() -> None:
    tracker = OffsetTracker()
    tracker.assigned({("t", 0): 5})
    tracker.split(recs(0, 5, 6, 7))
    out = tracker.split(recs(0, 6, 7, 8))
    assert [r.offset for r in out.seen] == [6, 7]
    assert [r.offset for r in out.fresh] == [8]


def test_a_new_assignment_starts_again_from_the_committed_offsets() -> None:
    tracker = OffsetTracker()
    tracker.split(recs(0, 100, 101))
    tracker.assigned({("t", 0): 90})  # the partition came back; 90 was committed
    out = tracker.split(recs(0, 90, 91))
    assert [r.offset for r in out.fresh] == [90, 91]
