"""Cold-chain excursion rule: pure event-time logic, no I/O.

A device is *in excursion* when its value stays above ``limit`` for at least
``duration_s`` (event time, the readings' own timestamps). It clears only when the value
stays at or below ``limit - hysteresis`` for ``clear_duration_s``.

Out-of-order readings: the state keeps a *committed* machine (everything at or before
``committed_until``) plus a sorted buffer of newer samples. A sample is placed in the
buffer in time order (same timestamp replaces, so replays are idempotent); samples older
than ``newest - allowed_lateness_s`` are folded into the committed machine. What the rule
says *now* is the committed machine with the buffer replayed on top (the "view"). A
FIRING is emitted once when the view fires; a RESOLVED once when, after that, it stops
firing. Samples at or before ``committed_until`` are late: reported and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

import msgspec

from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from stream.rules.identity import fingerprint, transition_id
from stream.rules.record import Record, evolve

RULE_ID = "cold_chain.temperature_high"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ExcursionParams:
    limit: float
    duration_s: float
    hysteresis: float
    clear_duration_s: float
    allowed_lateness_s: float
    severity: Severity
    metric: str = "temperature"
    rule_id: str = RULE_ID

    @property
    def clear_below(self) -> float:
        return self.limit - self.hysteresis


class Phase(StrEnum):
    NORMAL = "normal"
    PENDING = "pending"  # above the limit, not yet for duration_s
    FIRING = "firing"
    CLEARING = "clearing"  # firing, but at or below limit - hysteresis since `since`


def to_us(ts: datetime) -> int:
    """Event time as integer microseconds since the epoch (exact, JSON-safe)."""
    d = ts - _EPOCH  # (exact, as ``// timedelta(microseconds=1)``, faster)
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class Machine(Record, frozen=True):
    """The rule's state machine at one point in event time."""

    phase: Phase = Phase.NORMAL
    started_at: int | None = None  # first above-limit sample of the current run
    fired_at: int | None = None  # sample that confirmed the excursion
    since: int | None = None  # start of the clear hold
    max_value: float | None = None
    last_value: float | None = None


class Emitted(Record, frozen=True):
    """The FIRING sent downstream that has not been resolved yet."""

    started_at: int
    fired_at: int
    transition_id: str


class ExcursionState(Record, frozen=True):
    """Everything the rule keeps per device; JSON round-trippable (a Faust table value)."""

    committed: Machine = Machine()
    committed_until: int | None = None
    buffer: list[tuple[int, float]] = msgspec.field(default_factory=list)
    open: Emitted | None = None  # FIRING emitted, RESOLVED not yet
    last_emitted_at: int | None = None  # event time of the last transition sent
    late_count: int = 0


class _Event(NamedTuple):
    kind: TransitionKind
    machine: Machine  # machine right after the transition
    started_at: int
    at: int


class StepResult(NamedTuple):  # (a tuple: made at every step)
    state: ExcursionState
    transitions: list[AlertTransition]
    late: bool = False


def _advance(
    m: Machine, ts: int, value: float, p: ExcursionParams
) -> tuple[Machine, _Event | None]:
    """Apply one in-order sample to the machine."""
    dur = round(p.duration_s * 1_000_000)
    clear = round(p.clear_duration_s * 1_000_000)
    above = value > p.limit
    if m.phase is Phase.NORMAL or m.phase is Phase.PENDING:
        if not above:
            return Machine(last_value=value), None
        if m.phase is Phase.NORMAL or m.started_at is None:
            m = Machine(phase=Phase.PENDING, started_at=ts, max_value=value,
                          last_value=value)
        else:
            mx = value if m.max_value is None else max(m.max_value, value)
            m = evolve(m, max_value=mx, last_value=value)
        start = m.started_at
        assert start is not None
        if ts - start >= dur:
            m = evolve(m, phase=Phase.FIRING, fired_at=ts)
            return m, _Event(TransitionKind.FIRING, m, start, ts)
        return m, None
    # FIRING or CLEARING
    start = m.started_at
    assert start is not None
    mx = max(m.max_value if m.max_value is not None else value, value)
    if value > p.clear_below:
        return evolve(m, phase=Phase.FIRING, since=None, max_value=mx,
                            last_value=value), None
    since = m.since if m.phase is Phase.CLEARING and m.since is not None else ts
    m = evolve(m, phase=Phase.CLEARING, since=since, max_value=mx, last_value=value)
    if ts - since >= clear:
        return Machine(last_value=value), \
            _Event(TransitionKind.RESOLVED, m, start, ts)
    return m, None


def _is_firing(m: Machine) -> bool:
    return m.phase is Phase.FIRING or m.phase is Phase.CLEARING


def _transition(
    kind: TransitionKind, p: ExcursionParams, site_id: str, device_id: str,
    started_at: int, at: int, m: Machine,
) -> AlertTransition:
    fp = fingerprint(p.rule_id, site_id, device_id)
    start = from_us(started_at)
    tid = transition_id(fp, kind, start)
    max_v = m.max_value if m.max_value is not None else m.last_value
    held = (at - started_at) / 1_000_000
    if kind is TransitionKind.FIRING:
        summary = (f"{p.metric} above {p.limit:.1f} °C for {held:.0f} s "
                   f"(max {max_v:.1f} °C)")
    else:
        summary = (f"{p.metric} back at or below {p.clear_below:.1f} °C after {held:.0f} s "
                   f"(max {max_v:.1f} °C)")
    return AlertTransition(
        transition_id=tid, kind=kind, fingerprint=fp, rule_id=p.rule_id, severity=p.severity,
        site_id=site_id, device_id=device_id, started_at=start, at=from_us(at), summary=summary,
        values={
            "metric": p.metric, "limit": p.limit, "hysteresis": p.hysteresis,
            "duration_s": p.duration_s, "clear_duration_s": p.clear_duration_s,
            "max_value": max_v, "last_value": m.last_value,
        },
    )


def _insert(buffer: list[tuple[int, float]], ts: int, value: float) -> list[tuple[int, float]]:
    out = [s for s in buffer if s[0] != ts]
    out.append((ts, value))
    out.sort(key=lambda s: s[0])
    return out


def step(
    state: ExcursionState, params: ExcursionParams, site_id: str, device_id: str,
    ts: datetime, value: float,
) -> StepResult:
    """Feed one sample (any order); returns the new state and the transitions to send."""
    return step_us(state, params, site_id, device_id, to_us(ts), value)


def step_us(
    state: ExcursionState, params: ExcursionParams, site_id: str, device_id: str,
    t: int, value: float,
) -> StepResult:
    """:func:`step` with the event time in microseconds since the epoch."""
    value = float(value)  # (the state's fields are floats)
    if state.committed_until is not None and t <= state.committed_until:
        return StepResult(evolve(state, late_count=state.late_count + 1), [],
                          late=True)
    old = state.buffer
    buffer = [*old, (t, value)] if not old or t > old[-1][0] else _insert(old, t, value)
    watermark = buffer[-1][0] - round(params.allowed_lateness_s * 1_000_000)

    # Replay the buffer from the committed machine; the prefix older than the
    # watermark becomes the new committed machine.
    machine, committed, committed_until, n_committed = state.committed, state.committed, \
        state.committed_until, 0
    events: list[_Event] = []
    for i, (sts, sval) in enumerate(buffer):
        machine, ev = _advance(machine, sts, sval, params)
        if ev is not None:
            events.append(ev)
        if sts <= watermark:
            committed, committed_until, n_committed = machine, sts, i + 1

    open_, last_at = state.open, state.last_emitted_at
    out: list[AlertTransition] = []
    for ev in events:
        if last_at is not None and ev.at <= last_at:
            continue  # already said (or older than what was said)
        if ev.kind is TransitionKind.FIRING and open_ is None:
            tr = _transition(ev.kind, params, site_id, device_id, ev.started_at, ev.at,
                             ev.machine)
            open_ = Emitted(started_at=ev.started_at, fired_at=ev.at,
                            transition_id=tr.transition_id)
        elif ev.kind is TransitionKind.RESOLVED and open_ is not None:
            tr = _transition(ev.kind, params, site_id, device_id, open_.started_at, ev.at,
                             ev.machine)
            open_ = None
        else:
            continue
        out.append(tr)
        last_at = ev.at

    newest = buffer[-1][0]
    view_at = max(newest, last_at or newest)
    if _is_firing(machine) and open_ is None and machine.started_at is not None:
        # Became firing through a reordering that produced no in-order FIRING event
        # after what was already said.
        tr = _transition(TransitionKind.FIRING, params, site_id, device_id,
                         machine.started_at, view_at, machine)
        open_ = Emitted(started_at=machine.started_at, fired_at=view_at,
                        transition_id=tr.transition_id)
        out.append(tr)
        last_at = view_at
    elif not _is_firing(machine) and open_ is not None:
        # A late sample undid an excursion already announced: take it back.
        tr = _transition(TransitionKind.RESOLVED, params, site_id, device_id,
                         open_.started_at, view_at, machine)
        open_ = None
        out.append(tr)
        last_at = view_at

    new_state = ExcursionState(
        committed=committed, committed_until=committed_until,
        buffer=buffer[n_committed:], open=open_, last_emitted_at=last_at,
        late_count=state.late_count)
    return StepResult(new_state, out)
