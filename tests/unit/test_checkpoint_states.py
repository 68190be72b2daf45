"""The in-memory rule-state store and what a checkpoint takes from it (no I/O)."""

from __future__ import annotations

from stream.checkpoints import CheckpointedStates


def test_a_checkpoint_takes_the_changed_states_and_positions_of_its_partitions() -> None:
    s = CheckpointedStates()
    s.put("a/d1/health", "1", 0)
    s.put("a/d2/health", "2", 1)
    s.processed("telemetry", 0, 41)
    s.processed("telemetry", 0, 40)  # an older record never moves the position back
    s.processed("status", 1, 7)

    (cp,) = s.take({0})
    assert (cp.partition, cp.offsets, cp.states) == (0, {"telemetry": 42}, [("a/d1/health", "1")])
    s.saved([cp])
    assert s.take({0}) == []  # nothing changed since
    (cp1,) = s.take({1})
    assert cp1.states == [("a/d2/health", "2")] and cp1.offsets == {"status": 8}


def test_a_position_that_moved_is_saved_even_without_a_changed_state() -> None:
    s = CheckpointedStates()
    s.processed("telemetry", 0, 1)
    s.saved(s.take({0}))
    s.processed("telemetry", 0, 2)
    (cp,) = s.take({0})
    assert cp.states == [] and cp.offsets == {"telemetry": 3}


def test_a_failed_checkpoint_gives_its_states_back() -> None:
    s = CheckpointedStates()
    s.put("a/d1/health", "1", 0)
    cps = s.take({0})
    s.put("a/d1/health", "1b", 0)  # changed again while the write was failing
    s.untake(cps)
    (cp,) = s.take({0})
    assert cp.states == [("a/d1/health", "1b")]  # the newest value goes


def test_load_replaces_a_partition_and_drop_forgets_it() -> None:
    s = CheckpointedStates()
    s.put("a/old/health", "x", 0)
    s.put("a/other/health", "y", 1)
    s.load(0, [("a/d1/health", "1")], {"telemetry": 10})
    assert s.get("a/old/health") is None and s.get("a/d1/health") == "1"
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
