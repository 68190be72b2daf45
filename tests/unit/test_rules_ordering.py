"""The event-time ordering wrapper: in order, out of order, too late, replays, retraction."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from ganzhi.contracts import AlertTransition, TransitionKind
from stream.engine import COLD_STORE_RULES
from stream.rules.cold_chain import RULE_DOOR_OPEN, ColdChainParams, default_params
from stream.rules.ordering import MAX_BUFFER, FeedResult, feed
from stream.rules.record import from_json, to_json

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
Snap = tuple[datetime, dict[str, float]]


def door(sec: float, is_open: bool) -> Snap:
    return T0 + timedelta(seconds=sec), {"door_open": 1.0 if is_open else 0.0}


def door_episode() -> list[Snap]:
    """Door open from 100 s to 600 s (limit 300 s), sampled every 20 s, until 900 s."""
    return [door(s, 100 <= s < 600) for s in range(0, 900, 20)]


class Runner:
    def __init__(self, lateness_s: float, params: ColdChainParams | None = None) -> None:
        self.state = COLD_STORE_RULES.ordered_type()
        self.params = params or default_params("chilled")
        self.lateness_s = lateness_s
        self.out: list[AlertTransition] = []
        self.late = 0

    def __call__(self, snaps: Sequence[Snap]) -> FeedResult:
        r = feed(self.state, COLD_STORE_RULES, self.params, "site-a", "cr-1", snaps,
                 self.lateness_s)
        self.state = from_json(to_json(r.state), COLD_STORE_RULES.ordered_type)
        self.out.extend(r.transitions)
        self.late += r.late
        return r


def summary(out: Sequence[AlertTransition]) -> list[tuple[str, str, datetime, datetime]]:
    return [(t.kind.value, t.rule_id, t.started_at, t.at) for t in out]


def test_in_order_one_by_one_fires_and_resolves_without_delay() -> None:
    r = Runner(lateness_s=120)
    for s in door_episode():
        r([s])
    assert summary(r.out) == [
        ("firing", RULE_DOOR_OPEN, T0 + timedelta(seconds=100), T0 + timedelta(seconds=400)),
        ("resolved", RULE_DOOR_OPEN, T0 + timedelta(seconds=100), T0 + timedelta(seconds=640)),
    ]


def test_shuffled_within_lateness_gives_the_same_alerts() -> None:
    ref = Runner(lateness_s=120)
    for s in door_episode():
        ref([s])
    rng = random.Random(3)
    for _ in range(5):
        snaps = door_episode()
        # Swap neighbours within 60 s (lateness 120 s), deliver in small batches.
        for i in range(0, len(snaps) - 3, 3):
            j = i + rng.randrange(3)
            snaps[i], snaps[j] = snaps[j], snaps[i]
        r = Runner(lateness_s=120)
        i = 0
        while i < len(snaps):
            n = rng.randint(1, 3)
            r(snaps[i:i + n])
            i += n
        assert {t.transition_id for t in r.out} == {t.transition_id for t in ref.out}
        assert r.late == 0


def test_replay_changes_nothing() -> None:
    r = Runner(lateness_s=120)
    snaps = door_episode()
    r(snaps[:30])
    before = list(r.out)
    again = r(snaps[25:30])
    assert again.transitions == [] and r.out == before


def test_too_late_is_counted_and_ignored() -> None:
    r = Runner(lateness_s=60)
    r([door(0, False), door(200, False)])
    res = r([door(100, True)])  # 100 s behind the newest: beyond 60 s
    assert res.late == 1 and r.state.late_count == 1 and res.transitions == []


def test_late_sample_that_breaks_a_run_retracts_an_announced_alert() -> None:
    r = Runner(lateness_s=600)
    r([door(s, True) for s in range(0, 401, 20)])  # open 0..400 s: fires at 300 s
    assert [t.kind for t in r.out] == [TransitionKind.FIRING]
    # A delayed sample says the door was shut at 150 s: no run of 300 s any more.
    res = r([door(150, False)])
    assert [t.kind for t in res.transitions] == [TransitionKind.RESOLVED]
    assert res.transitions[0].values.get("retracted") is True
    assert res.transitions[0].started_at == r.out[0].started_at
    assert res.reordered == 1


def test_late_sample_refines_but_keeps_an_open_alert() -> None:
    r = Runner(lateness_s=600)
    r([door(s, True) for s in range(100, 501, 20)])
    first = r.out[0]
    # An earlier open sample extends the run backwards: the alert is still open, nothing
    # is retracted; a FIRING with the earlier start may follow (the alerts service keeps
    # one open alert per fingerprint).
    res = r([door(80, True)])
    assert all(t.kind is TransitionKind.FIRING for t in res.transitions)
    assert all(t.fingerprint == first.fingerprint for t in res.transitions)


def test_same_timestamp_parts_are_merged_into_one_snapshot() -> None:
    r = Runner(lateness_s=120)
    ts = T0
    r([(ts, {"temperature": 3.0})])
    r([(ts, {"door_open": 1.0})])
    assert r.state.buffer[-1].values == {"temperature": 3.0, "door_open": 1.0}
    assert len(r.state.buffer) == 1


def test_checkpoint_moves_with_the_watermark() -> None:
    r = Runner(lateness_s=60)
    r([door(s, False) for s in range(0, 300, 20)])
    assert r.state.checkpoint_ts is not None
    assert all(s.ts > r.state.checkpoint_ts for s in r.state.buffer)
    newest = max(s.ts for s in r.state.buffer)
    assert all(newest - s.ts <= 60_000_000 for s in r.state.buffer)


def test_the_buffer_per_device_is_bounded_and_the_alerts_are_the_same() -> None:
    """A device sending many samples inside the lateness window: the oldest become final
    early (the state stays bounded), and in-order data gives the same alerts."""
    dense = [door(s / 10, 100 <= s / 10 < 600) for s in range(0, 9000, 5)]  # 2 per second
    ref, capped = Runner(lateness_s=3600), Runner(lateness_s=3600)
    for i in range(0, len(dense), 100):
        ref(dense[i:i + 100])
        r = feed(capped.state, COLD_STORE_RULES, capped.params, "site-a", "cr-1",
                 dense[i:i + 100], capped.lateness_s, max_buffer=50)
        capped.state, capped.out = r.state, capped.out + r.transitions
        assert len(r.state.buffer) <= 50
    assert len(ref.state.buffer) == MAX_BUFFER  # the default cap: 1,800 were in the window
    assert summary(capped.out) == summary(ref.out)


def refire_sequence() -> list[list[Snap]]:
    """Door open from 0 s (fires at 300 s); a late sample says shut at 150 s (retracts);
    a correction at 150 s says open after all (the same episode fires again); the door
    shuts at 500 s (resolves after the 30 s hold)."""
    return [
        [door(s, True) for s in range(0, 401, 20)],
        [door(150, False)],
        [door(150, True)],
        [door(s, s < 500) for s in range(420, 601, 20)],
    ]


def test_fire_retract_fire_again_gets_new_ids() -> None:
    r = Runner(lateness_s=600)
    for batch in refire_sequence():
        r(batch)
    kinds = [(t.kind, t.values.get("retracted", False), t.values.get("generation", 0))
             for t in r.out]
    assert kinds == [
        (TransitionKind.FIRING, False, 0),
        (TransitionKind.RESOLVED, True, 0),
        (TransitionKind.FIRING, False, 1),
        (TransitionKind.RESOLVED, False, 1),
    ]
    assert len({t.fingerprint for t in r.out}) == 1
    assert len({t.started_at for t in r.out}) == 1  # one episode start throughout
    # The alerts service is idempotent by transition id: each must be new to it.
    assert len({t.transition_id for t in r.out}) == 4
    # Generation 0 keeps the plain ids (those made before generations existed).
    plain = Runner(lateness_s=600)
    plain(refire_sequence()[0])
    assert r.out[0].transition_id == plain.out[0].transition_id


def test_fire_retract_fire_replays_are_deterministic() -> None:
    # The same input, in the same batches, gives the same ids.
    a, b = Runner(lateness_s=600), Runner(lateness_s=600)
    for batch in refire_sequence():
        a(batch)
        b(batch)
    assert [t.transition_id for t in a.out] == [t.transition_id for t in b.out]
    # A crash after sending but before the state was saved: the batch again, from the
    # state before it, repeats exactly what was sent.
    seq = refire_sequence()
    c = Runner(lateness_s=600)
    for batch in seq[:2]:
        c(batch)
    saved = c.state
    first = c(seq[2]).transitions
    c.state = saved
    again = c(seq[2]).transitions
    assert [t.transition_id for t in again] == [t.transition_id for t in first]
    assert [t.transition_id for t in first] == [a.out[2].transition_id]
    # Replays of batches whose state was saved add nothing.
    assert c(seq[2]).transitions == []
    assert c(seq[0]).transitions == []


def test_retracted_episodes_are_forgotten_once_final() -> None:
    r = Runner(lateness_s=600)
    for batch in refire_sequence():
        r(batch)
    assert r.state.generations  # the episode is still inside the window
    r([door(s, False) for s in range(620, 2000, 20)])
    assert r.state.generations == {}
