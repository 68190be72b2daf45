"""Device liveness: ``device.offline``, pure logic, no I/O.

Three inputs, one alert per device (rule id ``device.offline``, one FIRING and one
RESOLVED per episode):

* :func:`observe` - any message from the device (telemetry, status, heartbeat). Records
  when it was heard; if the device was offline, the episode is RESOLVED.
* :func:`status` - the device's retained status topic: ``online=False`` is the MQTT last
  will (the broker publishes it when the connection drops). It raises the alert once
  ``will_grace_s`` has passed with nothing heard from the device since (the next
  :func:`tick`): a device that reconnects at once, or a stale will the broker replays when
  the platform starts, raises nothing. ``online=True`` (the birth) counts as being heard.
* :func:`tick` - a periodic timer. A silent device sends nothing, so event time (the
  readings' own timestamps) cannot advance for it: the timer must run on the
  **processing-time watermark**, the stream processor's wall clock (``now``). To compare
  like with like, silence is measured from the processing time at which the last message
  was *received* (``received_at`` in :func:`observe`), not from the device's own ``ts``,
  so a device whose clock is skewed is not reported offline. When ``received_at`` is not
  given (replays, tests) the message's event time is used and ``tick`` must then be given
  an event-time watermark instead; do not mix the two clocks for one device.

A device is offline when ``now - last_received > offline_after_s`` (default: three missed
expected intervals). ``started_at`` of the FIRING is the event time the device was last
heard (or the time of the last will); ``at`` is ``now`` (timer) or the will's time.

Transition ids are deterministic from (rule, site, device, kind, started_at), so a replay
repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from stream.rules import identity
from stream.rules.excursion import from_us, to_us
from stream.rules.record import Record, evolve

RULE_ID = "device.offline"


@dataclass(frozen=True)
class HealthParams:
    expected_interval_s: float = 60.0
    missed_intervals: float = 3.0
    severity: Severity = Severity.MAJOR
    will_grace_s: float = 10.0

    @property
    def offline_after_s(self) -> float:
        return self.expected_interval_s * self.missed_intervals


class Offline(Record, frozen=True):
    started_at: int  # event time last heard (or of the last will)
    at: int
    reason: str  # "silent" or "last_will"
    transition_id: str


class DeviceHealthState(Record, frozen=True):
    """Per-device liveness; JSON round-trippable (a Faust table value)."""

    site_id: str
    device_id: str
    last_event_ts: int | None = None  # device time of the newest message heard
    last_received: int | None = None  # processing time it was received (the timer's clock)
    offline: Offline | None = None
    reported_period_s: float | None = None  # the device's own report period (its birth)
    will_at: int | None = None  # a last will received (processing time), not yet raised


class HealthResult(NamedTuple):  # (a tuple: made at every message)
    state: DeviceHealthState
    transitions: list[AlertTransition]


def fingerprint(site_id: str, device_id: str) -> str:
    return identity.fingerprint(RULE_ID, site_id, device_id)


def _transition(
    st: DeviceHealthState, p: HealthParams, kind: TransitionKind, started_at: int, at: int,
    summary: str, reason: str,
) -> AlertTransition:
    fp = fingerprint(st.site_id, st.device_id)
    start = from_us(started_at)
    tid = identity.transition_id(fp, kind, start)
    return AlertTransition(
        transition_id=tid, kind=kind, fingerprint=fp, rule_id=RULE_ID, severity=p.severity,
        site_id=st.site_id, device_id=st.device_id, started_at=start, at=from_us(at),
        summary=summary,
        values={"reason": reason, "expected_interval_s": p.expected_interval_s,
                "offline_after_s": p.offline_after_s},
    )


def _raise(st: DeviceHealthState, p: HealthParams, started_at: int, at: int,
           reason: str) -> HealthResult:
    if st.offline is not None:
        return HealthResult(st, [])  # already said
    silent = (at - started_at) / 1_000_000
    summary = ("device sent its last will (connection lost)" if reason == "last_will"
               else f"no data for {silent:.0f} s (expected every {p.expected_interval_s:.0f} s)")
    tr = _transition(st, p, TransitionKind.FIRING, started_at, at, summary, reason)
    off = Offline(started_at=started_at, at=at, reason=reason, transition_id=tr.transition_id)
    return HealthResult(evolve(st, offline=off), [tr])


def _heard(st: DeviceHealthState, p: HealthParams, ts: datetime,
           received_at: datetime | None) -> HealthResult:
    t = to_us(ts)
    rx = to_us(received_at) if received_at is not None else t
    new = evolve(
        st, last_event_ts=t if st.last_event_ts is None else max(st.last_event_ts, t),
        last_received=rx if st.last_received is None else max(st.last_received, rx),
        will_at=st.will_at if st.will_at is not None and st.will_at > rx else None,
        offline=None)
    if st.offline is None:
        return HealthResult(new, [])
    at = max(t, st.offline.at)
    return HealthResult(new, [_transition(st, p, TransitionKind.RESOLVED,
                                          st.offline.started_at, at, "device heard again",
                                          st.offline.reason)])


def observe(state: DeviceHealthState, params: HealthParams, ts: datetime,
            received_at: datetime | None = None) -> HealthResult:
    """A message from the device (event time ``ts``, received at ``received_at``)."""
    return _heard(state, params, ts, received_at)


def status(state: DeviceHealthState, params: HealthParams, ts: datetime, online: bool,
           received_at: datetime | None = None) -> HealthResult:
    """A status message: ``online=False`` (a last will) is held for ``will_grace_s``
    (see :func:`tick`); ``online=True`` is a birth."""
    if online:
        return _heard(state, params, ts, received_at)
    t = to_us(received_at if received_at is not None else ts)
    if state.offline is not None or (state.last_received is not None
                                     and state.last_received > t):
        return HealthResult(state, [])  # already offline, or heard from since
    return HealthResult(evolve(state, will_at=t), [])


def tick(state: DeviceHealthState, params: HealthParams, now: datetime) -> HealthResult:
    """Timer: ``now`` is the processing-time watermark (see the module docstring)."""
    n = to_us(now)
    if state.offline is None and state.will_at is not None:
        if n - state.will_at >= round(params.will_grace_s * 1_000_000):
            r = _raise(state, params, state.will_at, n, "last_will")
            return HealthResult(evolve(r.state, will_at=None), r.transitions)
        return HealthResult(state, [])
    if state.offline is not None or state.last_received is None:
        return HealthResult(state, [])  # never heard: nothing to compare with
    if n - state.last_received <= round(params.offline_after_s * 1_000_000):
        return HealthResult(state, [])
    started = state.last_event_ts if state.last_event_ts is not None else state.last_received
    return _raise(state, params, started, max(n, started), "silent")
