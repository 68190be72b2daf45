"""device.offline: timer on the processing-time watermark, data return, last will."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ganzhi.contracts import TransitionKind
from stream.rules.device_health import (
    RULE_ID,
    DeviceHealthState,
    HealthParams,
    observe,
    status,
    tick,
)
from stream.rules.record import from_json, to_json

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
P = HealthParams(expected_interval_s=60, missed_intervals=3)  # offline after 180 s


def s(sec: float) -> datetime:
    return T0 + timedelta(seconds=sec)


def fresh() -> DeviceHealthState:
    return DeviceHealthState(site_id="site-a", device_id="cr-1")


def test_never_heard_device_is_not_reported() -> None:
    assert tick(fresh(), P, s(10_000)).transitions == []


def test_silence_longer_than_interval_raises_once_and_data_clears() -> None:
    st = observe(fresh(), P, s(0)).state
    st = observe(st, P, s(60)).state
    r = tick(st, P, s(200))  # 140 s silent: within three intervals
    assert r.transitions == []
    r = tick(r.state, P, s(241))
    assert [t.kind for t in r.transitions] == [TransitionKind.FIRING]
    fire = r.transitions[0]
    assert fire.rule_id == RULE_ID and fire.started_at == s(60) and fire.at == s(241)
    assert fire.values["reason"] == "silent"
    st = r.state
    for sec in (300, 600, 3600):  # later ticks say nothing more
        r = tick(st, P, s(sec))
        assert r.transitions == []
        st = r.state
    r = observe(st, P, s(4000))
    assert [t.kind for t in r.transitions] == [TransitionKind.RESOLVED]
    res = r.transitions[0]
    assert res.started_at == fire.started_at and res.at == s(4000)
    assert res.fingerprint == fire.fingerprint
    assert r.state.offline is None
    assert tick(r.state, P, s(4100)).transitions == []


def test_timer_uses_receive_time_not_device_clock() -> None:
    # Device clock 1 h behind; it is received on time, so it is not offline.
    skewed = s(0) - timedelta(hours=1)
    st = observe(fresh(), P, skewed, received_at=s(0)).state
    assert tick(st, P, s(100)).transitions == []
    r = tick(st, P, s(181))
    assert len(r.transitions) == 1
    assert r.transitions[0].started_at == skewed  # reported in the device's event time


def test_last_will_raises_after_its_grace_unless_the_device_comes_back() -> None:
    st = observe(fresh(), P, s(0)).state
    held = status(st, P, s(5), online=False)
    assert held.transitions == [] and tick(held.state, P, s(14)).transitions == []
    # back within the grace (a reconnect, or a stale will replayed at start): nothing
    back = observe(held.state, P, s(8), received_at=s(8)).state
    assert tick(back, P, s(30)).transitions == []
    r = tick(held.state, P, s(15))
    assert [t.kind for t in r.transitions] == [TransitionKind.FIRING]
    assert r.transitions[0].started_at == s(5) and r.transitions[0].values["reason"] == "last_will"
    # the timer does not raise it a second time
    r2 = tick(r.state, P, s(1000))
    assert r2.transitions == []
    # a second will while offline: nothing new
    assert status(r2.state, P, s(1001), online=False).transitions == []
    r3 = status(r2.state, P, s(1200), online=True)
    assert [t.kind for t in r3.transitions] == [TransitionKind.RESOLVED]


def test_ids_deterministic_and_state_round_trips() -> None:
    def play() -> list[str]:
        st = observe(fresh(), P, s(0)).state
        r = tick(st, P, s(500))
        r2 = observe(r.state, P, s(600))
        assert from_json(to_json(r.state), DeviceHealthState) == r.state
        return [t.transition_id for t in r.transitions + r2.transitions]

    a, b = play(), play()
    assert a == b and len(set(a)) == 2
