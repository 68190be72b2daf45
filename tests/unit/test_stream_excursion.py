"""Cold-chain excursion rule: event time, hysteresis, lateness, idempotent replays."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from stream.rules.excursion import ExcursionParams, ExcursionState, step
from stream.rules.record import from_json, to_json

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
P = ExcursionParams(limit=8.0, duration_s=600, hysteresis=1.0, clear_duration_s=120,
                    allowed_lateness_s=120, severity=Severity.MAJOR)


class Feed:
    def __init__(self, params: ExcursionParams = P) -> None:
        self.params = params
        self.state = ExcursionState()
        self.out: list[AlertTransition] = []
        self.late = 0

    def __call__(self, samples: Iterable[tuple[float, float]]) -> list[AlertTransition]:
        new: list[AlertTransition] = []
        for sec, value in samples:
            r = step(self.state, self.params, "site-a", "cs-1", T0 + timedelta(seconds=sec), value)
            self.state = r.state
            self.late += r.late
            new.extend(r.transitions)
        self.out.extend(new)
        return new


def every(start: float, stop: float, value: float, dt: float = 60) -> list[tuple[float, float]]:
    n = int((stop - start) // dt) + 1
    return [(start + i * dt, value) for i in range(n)]


def kinds(trs: list[AlertTransition]) -> list[TransitionKind]:
    return [t.kind for t in trs]


def test_fires_only_after_duration() -> None:
    f = Feed()
    assert f(every(0, 540, 10.0)) == []  # 540 s above: not yet
    (fired,) = f([(600, 11.2)])
    assert fired.kind is TransitionKind.FIRING
    assert fired.started_at == T0 and fired.at == T0 + timedelta(seconds=600)
    assert fired.rule_id == "cold_chain.temperature_high"
    assert fired.values["max_value"] == 11.2 and fired.values["limit"] == 8.0
    assert fired.summary == "temperature above 8.0 °C for 600 s (max 11.2 °C)"
    assert fired.severity is Severity.MAJOR


def test_short_spike_does_not_fire() -> None:
    f = Feed()
    f(every(0, 300, 3.0) + every(360, 840, 12.0) + every(900, 3000, 3.0))
    assert f.out == []


def test_fires_exactly_once_over_a_long_excursion() -> None:
    f = Feed()
    f(every(0, 6 * 3600, 10.0, dt=30))
    assert kinds(f.out) == [TransitionKind.FIRING]


def test_hysteresis_and_clear_hold() -> None:
    f = Feed()
    f(every(0, 600, 10.0))
    assert kinds(f.out) == [TransitionKind.FIRING]
    # Just below the limit but above limit - hysteresis: still firing, for a long time.
    assert f(every(660, 2000, 7.5)) == []
    # Below limit - hysteresis, but not for clear_duration_s yet; then back up.
    assert f([(2040, 6.5), (2100, 6.5), (2130, 7.5)]) == []
    # Held below for 120 s: resolves at the sample completing the hold.
    f([(2160, 6.5), (2220, 6.0)])
    assert f([(2280, 6.0)])[0].kind is TransitionKind.RESOLVED
    resolved = f.out[-1]
    assert resolved.at == T0 + timedelta(seconds=2280)
    assert resolved.started_at == f.out[0].started_at == T0
    assert resolved.fingerprint == f.out[0].fingerprint
    assert resolved.transition_id != f.out[0].transition_id
    # Nothing more while normal; a new excursion is a new FIRING with its own id.
    f(every(2340, 3000, 5.0))
    f(every(3060, 3660, 9.0))
    assert kinds(f.out) == [TransitionKind.FIRING, TransitionKind.RESOLVED,
                            TransitionKind.FIRING]
    assert f.out[2].transition_id != f.out[0].transition_id


def test_late_below_limit_sample_breaks_the_run() -> None:
    f = Feed()
    # Above from 0..540 every 60 s but the 480 s sample is missing ...
    f([s for s in every(0, 540, 10.0) if s[0] != 480])
    # ... and arrives 60 s late (lateness 120 s) below the limit: the run restarts at 540.
    assert f([(480, 5.0)]) == []
    assert f(every(600, 1080, 10.0)) == []  # would have fired at 600 without it
    (fired,) = f([(1140, 10.0)])
    assert fired.started_at == T0 + timedelta(seconds=540)
    assert f.late == 0


def test_out_of_order_above_samples_fire_in_event_time() -> None:
    f = Feed()
    samples = every(0, 600, 10.0)
    # Shuffle within the lateness window: pairs swapped.
    swapped = [s for pair in zip(samples[1::2], samples[0::2], strict=False) for s in pair]
    swapped.append(samples[-1])
    f(swapped)
    assert kinds(f.out) == [TransitionKind.FIRING]
    assert f.out[0].started_at == T0


def test_too_late_readings_counted_and_ignored() -> None:
    f = Feed()
    f(every(0, 900, 3.0))
    before = f.state
    assert f([(100, 50.0), (200, 50.0)]) == []
    assert f.late == 2 and f.state.late_count == 2
    assert f.state.committed == before.committed and f.state.buffer == before.buffer


def test_replayed_samples_give_no_second_transition() -> None:
    f = Feed()
    samples = every(0, 1200, 10.0)
    f(samples)
    assert kinds(f.out) == [TransitionKind.FIRING]
    # Replay the recent ones (inside lateness) and all of them (mostly late now).
    f(samples[-3:])
    f(samples)
    assert kinds(f.out) == [TransitionKind.FIRING]
    # Resolve, then replay again: still one of each.
    f(every(1260, 1500, 5.0))
    f(every(1260, 1500, 5.0))
    f(samples + every(1260, 1500, 5.0))
    assert kinds(f.out) == [TransitionKind.FIRING, TransitionKind.RESOLVED]


def test_same_input_gives_same_transition_ids() -> None:
    a, b = Feed(), Feed()
    data = every(0, 700, 10.0) + every(760, 1000, 5.0)
    a(data)
    b(data)
    assert [t.transition_id for t in a.out] == [t.transition_id for t in b.out]
    assert len(a.out) == 2


def test_state_json_round_trip_mid_excursion() -> None:
    f = Feed()
    f(every(0, 420, 10.0, dt=30))
    g = Feed()
    g.state = from_json(to_json(f.state), ExcursionState)
    assert g.state == f.state
    g(every(450, 600, 10.0, dt=30))
    assert kinds(g.out) == [TransitionKind.FIRING] and g.out[0].started_at == T0


def test_late_sample_retracts_a_speculative_firing() -> None:
    f = Feed(ExcursionParams(limit=8.0, duration_s=120, hysteresis=1.0, clear_duration_s=60,
                             allowed_lateness_s=300, severity=Severity.MINOR))
    f([(0, 10.0), (60, 10.0), (120, 10.0)])
    assert kinds(f.out) == [TransitionKind.FIRING]
    f([(90, 2.0)])  # late but within lateness: the run was broken
    assert kinds(f.out) == [TransitionKind.FIRING, TransitionKind.RESOLVED]
    assert f.out[1].started_at == f.out[0].started_at


def test_zero_duration_fires_on_first_sample() -> None:
    f = Feed(ExcursionParams(limit=8.0, duration_s=0, hysteresis=0, clear_duration_s=0,
                             allowed_lateness_s=0, severity=Severity.MAJOR))
    f([(0, 9.0), (10, 9.5), (20, 8.0), (30, 7.0)])
    assert kinds(f.out) == [TransitionKind.FIRING, TransitionKind.RESOLVED]
    assert f.out[1].at == T0 + timedelta(seconds=20)

