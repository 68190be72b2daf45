"""Rule state in the worker's memory, checkpointed to PostgreSQL with the offsets it reflects.

The model is Flink's: state and source positions are saved together, and a worker that
takes a partition restores both, then reads on from there. The records between the
checkpoint and a crash are processed again, which at-least-once already allows: the
readings sink ignores stored messages and the rules repeat the same transitions with
the same ids, which the alerts service deduplicates.

* :class:`CheckpointedStates` is the processor's :class:`~stream.state.StateStore`: the
  states (:class:`~stream.state.Held`: objects, JSON only once a checkpoint writes them) of
  the partitions this worker holds, the keys changed since the last checkpoint, and per
  partition the next offset of each source topic that the state reflects
  (:meth:`CheckpointedStates.processed`, called after each batch's state is saved).
* :class:`CheckpointRepository` is the PostgreSQL side (migration 0016): a partition is
  *claimed* by raising its epoch; a checkpoint is written only under the epoch its worker
  holds, in one transaction with its states, so a worker that lost a partition (its
  session expired, another took over) can never overwrite the newer owner's checkpoint.
* :class:`Checkpointer` ties them: on assignment it claims the partitions, keeps what it
  still holds (nobody claimed it in between) or loads it, and says where each source
  partition must be read from; every ``checkpoint_s`` and when partitions are revoked or
  the worker stops, it saves what changed.

A checkpoint takes the changed states under the processor's lock (references to state
objects that are never changed in place: dictionary work, no I/O, no JSON) and serialises
and writes them outside it, giving the event loop back every few hundred states, so
batches go on meanwhile; a failed write marks them changed again for the next one.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import cast

import psycopg

from ganzhi.failures import RetryPolicy, is_transient, retry_transient
from ganzhi.observability import get_logger
from stream import metrics
from stream.state import Held

log = get_logger(__name__)

Offsets = dict[str, int]  # topic -> next offset to read
YIELD_EVERY = 256  # states serialised between two turns of the event loop


@dataclass(frozen=True)
class PartitionCheckpoint:
    partition: int
    offsets: Offsets
    states: list[tuple[str, Held]]  # those changed since the last checkpoint


@dataclass
class CheckpointedStates:
    """Rule state of the partitions this worker holds, in memory."""

    _data: dict[str, Held] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)
    _next: dict[int, Offsets] = field(default_factory=dict)
    _saved: dict[int, Offsets] = field(default_factory=dict)

    # --- StateStore -----------------------------------------------------------------

    def get(self, key: str) -> Held | None:
        return self._data.get(key)

    def put(self, key: str, value: Held) -> None:
        self._data[key] = value
        self._dirty.add(key)

    def keys(self) -> Iterator[str]:
        return iter(list(self._data))

    # --- positions ------------------------------------------------------------------

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """The record at ``offset`` is done: its effects are in the state."""
        d = self._next.setdefault(partition, {})
        if offset + 1 > d.get(topic, -1):
            d[topic] = offset + 1

    def next_offsets(self, partition: int) -> Offsets:
        return dict(self._next.get(partition, {}))

    def __len__(self) -> int:
        return len(self._data)

    # --- checkpoints ----------------------------------------------------------------

    def take(self, partitions: Collection[int]) -> list[PartitionCheckpoint]:
        """What changed on ``partitions`` since the last checkpoint (states and offsets),
        no longer marked changed: give it back with :meth:`untake` if it is not saved."""
        states: dict[int, list[tuple[str, Held]]] = {}
        for key in list(self._dirty):
            held = self._data[key]
            if held.partition in partitions:
                states.setdefault(held.partition, []).append((key, held))
                self._dirty.discard(key)
        out = []
        for p in sorted(partitions):
            offsets = self.next_offsets(p)
            if p in states or offsets != self._saved.get(p, {}):
                out.append(PartitionCheckpoint(p, offsets, states.get(p, [])))
        return out

    def untake(self, checkpoints: Iterable[PartitionCheckpoint]) -> None:
        for cp in checkpoints:
            self._dirty.update(k for k, _ in cp.states if k in self._data)

    def saved(self, checkpoints: Iterable[PartitionCheckpoint]) -> None:
        for cp in checkpoints:
            self._saved[cp.partition] = cp.offsets

    def load(self, partition: int, states: Iterable[tuple[str, str]], offsets: Offsets) -> None:
        """Replace what is held of ``partition`` by a checkpoint."""
        self.drop([partition])
        for key, value in states:
            self._data[key] = Held.of_json(value, partition)
        self._next[partition] = dict(offsets)
        self._saved[partition] = dict(offsets)

    def drop(self, partitions: Collection[int]) -> list[str]:
        """Forget ``partitions``; returns the keys forgotten."""
        gone = [k for k, h in self._data.items() if h.partition in partitions]
        for k in gone:
            del self._data[k]
            self._dirty.discard(k)
        for p in partitions:
            self._next.pop(p, None)
            self._saved.pop(p, None)
        return gone

    def held(self) -> set[int]:
        """Partitions with state or positions here."""
        return set(self._next) | {h.partition for h in self._data.values()}


@dataclass(frozen=True)
class Claim:
    epoch: int
    offsets: Offsets  # of the last checkpoint


_CLAIM = """
INSERT INTO stream_partitions AS sp (app_id, partition, epoch, owner)
SELECT %s, p, 1, %s FROM unnest(%s::int[]) AS p
ON CONFLICT (app_id, partition) DO UPDATE
  SET epoch = sp.epoch + 1, owner = EXCLUDED.owner
RETURNING partition, epoch, offsets
"""
_LOAD = "SELECT key, partition, state FROM stream_state WHERE app_id = %s AND partition = ANY(%s)"
_SAVE_POSITIONS = """
UPDATE stream_partitions AS sp SET offsets = v.offsets, saved_at = now()
FROM unnest(%s::int[], %s::bigint[], %s::jsonb[]) AS v(partition, epoch, offsets)
WHERE sp.app_id = %s AND sp.partition = v.partition AND sp.epoch = v.epoch
RETURNING sp.partition
"""
_STAGING = ("CREATE TEMP TABLE IF NOT EXISTS stream_state_in"
            " (key text, partition integer, state text) ON COMMIT DELETE ROWS")
_SAVE_STATES = """
INSERT INTO stream_state (app_id, key, partition, state)
SELECT %s, key, partition, state FROM stream_state_in
ON CONFLICT (app_id, key) DO UPDATE SET partition = EXCLUDED.partition, state = EXCLUDED.state
"""


class CheckpointRepository:
    """The checkpoints of one stream application in PostgreSQL; one connection."""

    def __init__(self, dsn: str, app_id: str) -> None:
        self._dsn = dsn
        self.app_id = app_id
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            await self._conn.execute(_STAGING)
        return self._conn

    async def claim(self, partitions: Collection[int], owner: str
                    ) -> tuple[dict[int, Claim], list[tuple[str, int, str]]]:
        """Raise the epoch of ``partitions``; returns each one's claim and the stored states
        of all of them."""
        try:
            conn = await self._connection()
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(_CLAIM, (self.app_id, owner, sorted(partitions)))
                claims = {}
                for p, e, o in cast("list[tuple[int, int, dict[str, int]]]",
                                    await cur.fetchall()):
                    claims[p] = Claim(e, {str(k): int(v) for k, v in o.items()})
                await cur.execute(_LOAD, (self.app_id, sorted(partitions)))
                rows = cast("list[tuple[str, int, str]]", await cur.fetchall())
            return claims, rows
        except psycopg.OperationalError:
            await self.close()
            raise

    async def save(self, checkpoints: Collection[PartitionCheckpoint],
                   epochs: Mapping[int, int]) -> set[int]:
        """Write ``checkpoints`` under ``epochs`` in one transaction; returns the
        partitions whose epoch has moved on (claimed by another worker): nothing of
        theirs is written."""
        cps = [cp for cp in checkpoints if cp.partition in epochs]
        if not cps:
            return set()
        try:
            conn = await self._connection()
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(_SAVE_POSITIONS, (
                    [cp.partition for cp in cps], [epochs[cp.partition] for cp in cps],
                    [json.dumps(cp.offsets) for cp in cps], self.app_id))
                kept = {p for (p,) in cast("list[tuple[int]]", await cur.fetchall())}
                if any(cp.states for cp in cps if cp.partition in kept):
                    n = 0
                    async with cur.copy("COPY stream_state_in FROM STDIN") as copy:
                        for cp in cps:
                            if cp.partition in kept:
                                for key, held in cp.states:
                                    # (Serialised here, outside the processor's lock.)
                                    await copy.write_row((key, cp.partition, held.json()))
                                    n += 1
                                    if n % YIELD_EVERY == 0:
                                        await asyncio.sleep(0)  # batches go on meanwhile
                    await cur.execute(_SAVE_STATES, (self.app_id,))
            return {cp.partition for cp in cps} - kept
        except psycopg.OperationalError:
            await self.close()
            raise

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Checkpointer:
    """Claims, loads and checkpoints the partitions of one worker (see the module doc)."""

    def __init__(self, repo: CheckpointRepository, states: CheckpointedStates,
                 lock: asyncio.Lock, *, retry: RetryPolicy | None = None,
                 stop: asyncio.Event | None = None, owner: str | None = None) -> None:
        self.repo = repo
        self.states = states
        self._lock = lock  # the processor's: state and positions are consistent under it
        self._retry = retry or RetryPolicy(base_s=0.5, max_s=10.0)
        self._stop = stop
        self.owner = owner or worker_name()
        self.epochs: dict[int, int] = {}
        self._saving = asyncio.Lock()  # one checkpoint write at a time
        self.last_saved_at: float | None = None

    async def assigned(self, partitions: Collection[int]) -> dict[int, Offsets]:
        """The worker now holds exactly ``partitions``: claim them, keep or load their
        state, forget the others. Returns per partition the offsets its state reflects
        (a topic missing: none of its records was processed, read it from the start).
        Retries while PostgreSQL is unavailable (a worker without its state must not
        process anything)."""
        async with self._saving, self._lock:
            gone = self.states.held() - set(partitions)
            if gone:
                self.states.drop(gone)
            for p in gone:
                self.epochs.pop(p, None)
            if not partitions:
                return {}
            started = time.perf_counter()
            claims, rows = await retry_transient(
                lambda: self.repo.claim(partitions, self.owner), policy=self._retry,
                stop=self._stop, on_retry=_report("claim"))
            by_partition: dict[int, list[tuple[str, str]]] = {}
            for key, p, state in rows:
                by_partition.setdefault(p, []).append((key, state))
            out: dict[int, Offsets] = {}
            loaded = kept = 0
            for p in partitions:
                c = claims[p]
                if self.epochs.get(p) == c.epoch - 1:
                    kept += 1  # nobody took it since our last claim: memory is current
                else:
                    self.states.drop([p])
                    self.states.load(p, by_partition.get(p, []), c.offsets)
                    loaded += len(by_partition.get(p, []))
                self.epochs[p] = c.epoch
                out[p] = self.states.next_offsets(p)
            metrics.STATE_LOADED.inc(loaded)
            log.info("rule_state_claimed", partitions=sorted(partitions), kept=kept,
                     states_loaded=loaded, seconds=round(time.perf_counter() - started, 3),
                     positions={p: out[p] for p in sorted(out)})
            return out

    async def checkpoint(self, why: str = "timer") -> int:
        """Save what changed on the partitions held; returns the states written. A
        failure is logged and counted, and what was taken is marked changed again."""
        async with self._saving:
            async with self._lock:
                cps = self.states.take(set(self.epochs))
            if not cps:
                return 0
            started = time.perf_counter()
            try:
                fenced = await self.repo.save(cps, dict(self.epochs))
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, psycopg.Error):
                    raise
                self.states.untake(cps)
                metrics.CHECKPOINT_FAILURES.inc()
                log.error("checkpoint_failed", why=why,
                          error=f"{type(exc).__name__}: {exc}"[:500])
                return 0
            done = [cp for cp in cps if cp.partition not in fenced]
            self.states.saved(done)
            if fenced:
                metrics.CHECKPOINT_FENCED.inc(len(fenced))
                log.warning("partitions_taken_by_another_worker", partitions=sorted(fenced),
                            detail="their state here is dropped; the new owner has it")
                async with self._lock:
                    self.states.drop(fenced)
                for p in fenced:
                    self.epochs.pop(p, None)
            written = sum(len(cp.states) for cp in done)
            took = time.perf_counter() - started
            metrics.CHECKPOINT_SECONDS.observe(took)
            metrics.CHECKPOINT_STATES.inc(written)
            self.last_saved_at = time.time()
            log.debug("checkpoint_saved", why=why, partitions=len(done), states=written,
                      seconds=round(took, 3))
            return written

    async def close(self) -> None:
        await self.repo.close()


def _report(what: str) -> Callable[[BaseException, int, float], None]:
    def report(exc: BaseException, attempt: int, delay: float) -> None:
        metrics.CHECKPOINT_FAILURES.inc()
        log.error("transient_failure", stage=f"checkpoint_{what}",
                  error=f"{type(exc).__name__}: {exc}"[:500], attempt=attempt,
                  retry_in_s=round(delay, 2))
    return report
