"""Rule-state checkpoints in a real PostgreSQL: claims, saves, loads and fencing."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from stream.checkpoints import (
    CheckpointedStates,
    Checkpointer,
    CheckpointRepository,
    PartitionCheckpoint,
)
from stream.state import Held


def json_of(states: CheckpointedStates, key: str) -> str | None:
    held = states.get(key)
    return None if held is None else held.json()


async def test_a_claim_loads_what_the_last_owner_saved(pg_dsn: str) -> None:
    first = Checkpointer(CheckpointRepository(pg_dsn, "app"), CheckpointedStates(),
                         asyncio.Lock(), owner="w1")
    assert await first.assigned({0, 1}) == {0: {}, 1: {}}  # nothing saved yet
    first.states.put("s/d1/cold_store", Held.of_json('{"v": 1}', 0))
    first.states.put("s/d2/cold_store", Held.of_json('{"v": 2}', 1))
    first.states.processed("ganzhi.telemetry.v1", 0, 99)
    assert await first.checkpoint() == 2
    # After the checkpoint: not saved.
    first.states.put("s/d1/cold_store", Held.of_json('{"v": 3}', 0))
    first.states.processed("ganzhi.telemetry.v1", 0, 120)

    second = Checkpointer(CheckpointRepository(pg_dsn, "app"), CheckpointedStates(),
                          asyncio.Lock(), owner="w2")
    assert await second.assigned({0}) == {0: {"ganzhi.telemetry.v1": 100}}
    assert json_of(second.states, "s/d1/cold_store") == '{"v": 1}'
    assert second.states.get("s/d2/cold_store") is None  # partition 1 is not its

    # The first worker lost partition 0 without knowing: its checkpoint must not land.
    first.states.put("s/d2/cold_store", Held.of_json('{"v": 4}', 1))
    assert await first.checkpoint() == 1  # partition 1 is still its own
    assert 0 not in first.epochs and first.states.get("s/d1/cold_store") is None
    with psycopg.connect(pg_dsn) as conn:
        rows = dict(conn.execute("SELECT key, state FROM stream_state WHERE app_id = 'app'"
                                 ).fetchall())
        positions = dict(conn.execute(
            "SELECT partition, offsets FROM stream_partitions WHERE app_id = 'app'").fetchall())
    assert rows == {"s/d1/cold_store": '{"v": 1}', "s/d2/cold_store": '{"v": 4}'}
    assert positions[0] == {"ganzhi.telemetry.v1": 100}

    # Another application's checkpoints are its own.
    other = Checkpointer(CheckpointRepository(pg_dsn, "other"), CheckpointedStates(),
                         asyncio.Lock(), owner="w3")
    assert await other.assigned({0}) == {0: {}}
    for c in (first, second, other):
        await c.close()


async def test_a_worker_keeps_its_memory_when_nobody_took_the_partition(pg_dsn: str) -> None:
    w = Checkpointer(CheckpointRepository(pg_dsn, "app"), CheckpointedStates(),
                     asyncio.Lock(), owner="w1")
    await w.assigned({0, 1})
    w.states.put("s/d1/health", Held.of_json("unsaved", 0))
    w.states.processed("ganzhi.telemetry.v1", 0, 5)
    # A rebalance that gives it partition 0 again and takes 1 away.
    assert await w.assigned({0}) == {0: {"ganzhi.telemetry.v1": 6}}
    assert json_of(w.states, "s/d1/health") == "unsaved"
    await w.close()


async def test_a_failed_write_keeps_the_states_for_the_next_checkpoint(pg_dsn: str) -> None:
    repo = CheckpointRepository(pg_dsn, "app")
    w = Checkpointer(repo, CheckpointedStates(), asyncio.Lock(), owner="w1")
    await w.assigned({0})
    w.states.put("s/d1/health", Held.of_json("1", 0))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE stream_state RENAME TO stream_state_away")
        try:
            assert await w.checkpoint() == 0  # logged and counted, not raised
        finally:
            conn.execute("ALTER TABLE stream_state_away RENAME TO stream_state")
    assert await w.checkpoint() == 1
    await w.close()


def test_save_ignores_partitions_without_an_epoch() -> None:
    repo = CheckpointRepository("postgresql://unused", "app")
    got = asyncio.run(repo.save([PartitionCheckpoint(3, {}, [("k", Held.of_json("v", 3))])],
                                {}))
    assert got == set()


@pytest.mark.parametrize("bad", ["", "0"])
def test_checkpoint_interval_must_be_positive(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from ganzhi.settings import Settings

    monkeypatch.setenv("GANZHI_STREAM__CHECKPOINT_S", bad)
    with pytest.raises(ValidationError, match="checkpoint_s"):
        Settings()
