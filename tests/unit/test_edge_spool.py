"""The on-disk spool: order, acknowledgement, size cap policies, surviving a reopen."""

from __future__ import annotations

from pathlib import Path

from edge.spool import Spool, WhenFull


def test_pending_in_order_per_device_and_ack_removes(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db")
    seqs = [s.append("a" if i % 2 else "b", f"t/{i}", f"{i}".encode()) for i in range(6)]
    a = s.pending("a")
    assert [m.payload for m in a] == [b"1", b"3", b"5"]
    assert [m.seq for m in s.pending("a", after_seq=a[0].seq)] == [a[1].seq, a[2].seq]
    s.ack(a[0].seq)
    s.ack(a[0].seq)  # acking twice is harmless
    assert [m.payload for m in s.pending("a")] == [b"3", b"5"]
    assert s.depth() == 5 and all(q is not None for q in seqs)


def test_survives_reopen(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db")
    for i in range(3):
        s.append("a", "t", bytes([i]), retain=i == 2)
    s.ack(s.pending("a")[0].seq)
    s.close()
    again = Spool(tmp_path / "s.db")
    pending = again.pending("a")
    assert [m.payload for m in pending] == [b"\x01", b"\x02"]
    assert pending[1].retain and again.depth() == 2 and again.size_bytes() == 2


def test_drop_oldest_when_full(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", max_messages=3, when_full=WhenFull.DROP_OLDEST)
    for i in range(5):
        assert s.append("a", "t", bytes([i])) is not None
    assert [m.payload for m in s.pending("a")] == [b"\x02", b"\x03", b"\x04"]
    assert s.stats.dropped == 2 and s.stats.refused == 0


def test_refuse_new_when_full(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", max_messages=3, when_full=WhenFull.REFUSE_NEW)
    results = [s.append("a", "t", bytes([i])) for i in range(5)]
    assert results[3:] == [None, None]
    assert [m.payload for m in s.pending("a")] == [b"\x00", b"\x01", b"\x02"]
    assert s.stats.refused == 2


def test_byte_cap(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.db", max_bytes=1024, when_full=WhenFull.DROP_OLDEST)
    for _ in range(5):
        s.append("a", "t", b"x" * 300)
    assert s.depth() == 3 and s.size_bytes() == 900
    assert s.append("a", "t", b"y" * 2000) is None  # larger than the whole spool
