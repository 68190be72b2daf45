"""The in-memory rule-state store and what a checkpoint takes from it (no I/O)."""

from __future__ import annotations

from stream.checkpoints import CheckpointedStates, PartitionCheckpoint
from stream.state import Held


def jsons(cp: PartitionCheckpoint) -> list[tuple[str, str]]:
    return [(k, h.json()) for k, h in cp.states]


def test_a_checkpoint_takes_the_changed_states_and_positions_of_its_partitions() -> None:
    s = CheckpointedStates()
    s.put("a/d1/health", Held.of_json("1", 0))
    s.put("a/d2/health", Held.of_json("2", 1))
    s.processed("telemetry", 0, 41)
    s.processed("telemetry", 0, 40)  # an older record never moves the position back
    s.processed("status", 1, 7)

    (cp,) = s.take({0})
    assert (cp.partition, cp.offsets, jsons(cp)) == (0, {"telemetry": 42}, [("a/d1/health", "1")])
    s.saved([cp])
    assert s.take({0}) == []  # nothing changed since
    (cp1,) = s.take({1})
    assert jsons(cp1) == [("a/d2/health", "2")] and cp1.offsets == {"status": 8}


def test_a_position_that_moved_is_saved_even_without_a_changed_state() -> None:
    s = CheckpointedStates()
    s.processed("telemetry", 0, 1)
    s.saved(s.take({0}))
    s.processed("telemetry", 0, 2)
    (cp,) = s.take({0})
    assert cp.states == [] and cp.offsets == {"telemetry": 3}


def test_a_failed_checkpoint_gives_its_states_back() -> None:
    s = CheckpointedStates()
    s.put("a/d1/health", Held.of_json("1", 0))
    cps = s.take({0})
    s.put("a/d1/health", Held.of_json("1b", 0))  # changed again while the write was failing
    s.untake(cps)
    (cp,) = s.take({0})
    assert jsons(cp) == [("a/d1/health", "1b")]  # the newest value goes


def test_load_replaces_a_partition_and_drop_forgets_it() -> None:
    s = CheckpointedStates()
    s.put("a/old/health", Held.of_json("x", 0))
    s.put("a/other/health", Held.of_json("y", 1))
    s.load(0, [("a/d1/health", "1")], {"telemetry": 10})
    held = s.get("a/d1/health")
    assert s.get("a/old/health") is None and held is not None and held.json() == "1"
    assert s.next_offsets(0) == {"telemetry": 10}
    assert s.take({0}) == []  # loaded = saved: nothing to write back
    assert sorted(s.keys()) == ["a/d1/health", "a/other/health"]
    assert s.drop([1]) == ["a/other/health"]
    assert s.held() == {0}
    assert len(s) == 1


def test_each_source_partition_starts_after_what_the_state_reflects() -> None:
    from stream.agents import start_offsets

    state = {0: {"telemetry": 120, "status": 3}, 1: {}}
    earliest = {("telemetry", 0): 0, ("status", 0): 5, ("events", 0): 0,
                ("telemetry", 1): 40, ("telemetry", 2): None}
    targets, lost = start_offsets(state, earliest)
    assert targets == {
        ("telemetry", 0): 120,  # the checkpoint's position
        ("status", 0): 5,  # retention took 3 and 4 before anyone read them: the log start
        ("events", 0): 0,  # nothing of this topic processed yet: from the start
        ("telemetry", 1): 40,
        ("telemetry", 2): None,  # start unknown: take what comes
    }
    assert lost == [("status", 0, 3, 5)]


def test_a_taken_state_is_written_as_it_was_when_taken() -> None:
    """A checkpoint takes the states under the lock and serialises them afterwards, while
    batches go on: what it writes is the state at the take, not a later one."""
    import asyncio
    import uuid
    from datetime import UTC, datetime, timedelta

    from ganzhi.contracts import DeviceClass, Reading, Telemetry
    from stream.engine import RuleEngine
    from stream.memory import MemoryAdapters
    from stream.processor import BatchProcessor, Incoming
    from stream.rules.model import Rules, RulesDoc

    t0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    rules = Rules(RulesDoc.model_validate({"cold_store": {"defaults": {
        "variant": "chilled", "allowed_lateness_s": 60}}}))
    s, mem = CheckpointedStates(), MemoryAdapters()
    proc = BatchProcessor(RuleEngine(lambda: rules, lambda a, b: 0), mem, s, mem.send,
                          dead_letter=mem.dead_letter, clock=lambda: t0 + timedelta(days=1),
                          on_processed=s.processed)

    def batch(second: int, air: float) -> None:
        msg = Telemetry(msg_id=uuid.uuid4(), site_id="a", device_id="cr-1",
                        ts=t0 + timedelta(seconds=second), device_class=DeviceClass.COLD_STORE,
                        readings=[Reading(metric="temperature", value=air, unit="Cel")])
        asyncio.run(proc.process([Incoming(0, msg.model_dump_json().encode(), topic="t",
                                           offset=second)]))

    batch(0, 3.0)
    batch(10, 9.5)
    taken = {k: h for cp in s.take({0}) for k, h in cp.states}
    # (The JSON of the objects taken, made apart from the parts the store keeps.)
    expected = {k: Held(h.partition, h.obj).json() for k, h in taken.items()
                if h.obj is not None}
    for second in range(20, 200, 10):  # batches go on before the taken states are written
        batch(second, 12.0)
    assert set(expected) == {"a/cr-1/cold_store", "a/cr-1/health"}
    assert {k: h.json() for k, h in taken.items()} == expected
    (cp,) = s.take({0})  # what changed since
    assert cp.offsets == {"t": 191}
    assert {k: h.json() for k, h in cp.states} != expected
