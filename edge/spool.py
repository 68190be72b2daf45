"""Store and forward: every outgoing message waits here, on disk, until the broker has it.

SQLite in WAL mode with ``synchronous=FULL``: a row is on disk when ``append`` returns,
so a power cut or ``kill -9`` loses nothing that was spooled (NORMAL would risk the last
transactions on power loss, and an edge box loses power). Rows leave only through
``ack``, called when the broker's PUBACK arrives. Order is the ``seq`` column.

When the spool is full, the configured policy decides, and every message it costs is
counted: ``drop_oldest`` deletes the oldest pending message to make room (the newest
data is usually worth more to a supervisor), ``refuse_new`` keeps the old ones and
refuses the new message.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class WhenFull(StrEnum):
    DROP_OLDEST = "drop_oldest"
    REFUSE_NEW = "refuse_new"


@dataclass(frozen=True)
class Spooled:
    seq: int
    device_id: str
    topic: str
    payload: bytes
    retain: bool


@dataclass
class SpoolStats:
    dropped: int = 0  # oldest messages deleted to make room
    refused: int = 0  # new messages not taken


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  device_id  TEXT    NOT NULL,
  topic      TEXT    NOT NULL,
  payload    BLOB    NOT NULL,
  retain     INTEGER NOT NULL DEFAULT 0,
  created_at REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_device ON outbox (device_id, seq);
"""


class Spool:
    """Thread-safe: the sampler appends from the agent's loop, paho's thread acks."""

    def __init__(
        self,
        path: Path,
        max_messages: int = 1_000_000,
        max_bytes: int = 1 << 30,
        when_full: WhenFull = WhenFull.DROP_OLDEST,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.stats = SpoolStats()
        row = self._db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox")
        self._count, self._bytes = row.fetchone()

    def append(
        self, device_id: str, topic: str, payload: bytes, retain: bool = False
    ) -> int | None:
        """Store a message; its ``seq``, or None when the policy refused it."""
        size = len(payload)
        with self._lock:
            if size > self.max_bytes:
                self.stats.refused += 1
                return None
            while self._count >= self.max_messages or self._bytes + size > self.max_bytes:
                if self.when_full is WhenFull.REFUSE_NEW or self._count == 0:
                    self.stats.refused += 1
                    return None
                self._drop_oldest()
            cur = self._db.execute(
                "INSERT INTO outbox (device_id, topic, payload, retain, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (device_id, topic, payload, int(retain), time.time()),
            )
            self._count += 1
            self._bytes += size
            return int(cur.lastrowid or 0)

    def append_many(self, items: list[tuple[str, str, bytes]]) -> int:
        """Store ``(device_id, topic, payload)`` messages in one transaction (one fsync);
        returns how many were taken (the rest refused by the full policy)."""
        taken = 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for device_id, topic, payload in items:
                    size = len(payload)
                    while self._count >= self.max_messages or \
                            self._bytes + size > self.max_bytes:
                        if self.when_full is WhenFull.REFUSE_NEW or self._count == 0:
                            break
                        self._drop_oldest()
                    if self._count >= self.max_messages or self._bytes + size > self.max_bytes:
                        self.stats.refused += 1
                        continue
                    self._db.execute(
                        "INSERT INTO outbox (device_id, topic, payload, retain, created_at)"
                        " VALUES (?, ?, ?, 0, ?)", (device_id, topic, payload, time.time()))
                    self._count += 1
                    self._bytes += size
                    taken += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._count, self._bytes = self._db.execute(
                    "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox").fetchone()
                raise
        return taken

    def _drop_oldest(self) -> None:
        row = self._db.execute(
            "DELETE FROM outbox WHERE seq = (SELECT min(seq) FROM outbox)"
            " RETURNING length(payload)"
        ).fetchone()
        if row is not None:
            self._count -= 1
            self._bytes -= int(row[0])
            self.stats.dropped += 1

    def pending(self, device_id: str, after_seq: int = 0, limit: int = 100) -> list[Spooled]:
        """The device's unacknowledged messages after ``after_seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, device_id, topic, payload, retain FROM outbox"
                " WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (device_id, after_seq, limit),
            ).fetchall()
        return [Spooled(r[0], r[1], r[2], bytes(r[3]), bool(r[4])) for r in rows]

    def ack(self, seq: int) -> None:
        self.ack_many([seq])

    def ack_many(self, seqs: list[int]) -> None:
        """Delete acknowledged messages in one transaction (one fsync, not one each).

        The uplink collects the PUBACKs of one loop turn and acks them together: per-row
        commits capped the drain of a backlog at the disk's fsync rate. An ack lost to a
        crash only means the message is sent again (consumers dedupe by ``msg_id``).
        """
        if not seqs:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for seq in seqs:
                    row = self._db.execute(
                        "DELETE FROM outbox WHERE seq = ? RETURNING length(payload)", (seq,)
                    ).fetchone()
                    if row is not None:
                        self._count -= 1
                        self._bytes -= int(row[0])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def depth(self) -> int:
        with self._lock:
            return int(self._count)

    def size_bytes(self) -> int:
        with self._lock:
            return int(self._bytes)

    def close(self) -> None:
        with self._lock:
            self._db.close()
