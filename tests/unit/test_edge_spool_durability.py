"""The spool under a hard kill, under two threads (sampler appends, paho acks), batch acks."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from edge.spool import Spool


def test_committed_rows_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    code = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from edge.spool import Spool\n"
        f"s = Spool(Path({str(db)!r}))\n"
        "for i in range(200): s.append('a', 't/a', str(i).encode())\n"
        "s.ack(s.pending('a', limit=1)[0].seq)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -signal.SIGKILL
    spool = Spool(db)
    assert [int(m.payload) for m in spool.pending("a", limit=1000)] == list(range(1, 200))
    assert spool.depth() == 199


def test_appends_and_acks_from_different_threads(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    produced = 500
    done = threading.Event()
    acked: list[int] = []

    def acker() -> None:
        while not (done.is_set() and spool.depth() == 0):
            for m in spool.pending("a", limit=50):
                spool.ack(m.seq)
                acked.append(int(m.payload))

    t = threading.Thread(target=acker)
    t.start()
    for i in range(produced):
        spool.append("a", "t/a", str(i).encode())
    done.set()
    t.join(10)
    assert not t.is_alive()
    assert acked == list(range(produced))
    assert spool.depth() == 0 and spool.size_bytes() == 0


def test_ack_many_is_one_transaction_and_ignores_unknown_seqs(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    seqs = [spool.append("a", "t/a", bytes([i])) for i in range(5)]
    assert all(s is not None for s in seqs)
    spool.ack_many([s for s in seqs[:3] if s is not None] + [10_000])
    spool.ack_many([])
    assert [m.payload for m in spool.pending("a")] == [b"\x03", b"\x04"]
    assert spool.depth() == 2 and spool.size_bytes() == 2
    spool.close()
    assert Spool(tmp_path / "s.db").depth() == 2
