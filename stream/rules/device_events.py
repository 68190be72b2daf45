"""Device events (``ganzhi.event.v1``) into alert transitions: pure logic, no I/O.

The edge reports what a device itself signals as a :class:`~ganzhi.contracts.DeviceEvent`
(``event`` name, severity, ``detail``). Three alerts come of them, one episode at a time
per device (one FIRING, one RESOLVED):

* ``alarm_button_pressed`` -> ``elevator.alarm_button``, the event's severity but at
  least major; resolved by a quiet period (no press for ``alarm_quiet_s``, event time);
* ``power_lost`` -> ``device.power_lost``, critical; resolved by ``power_restored``;
* ``source_error`` -> ``device.source_error``, minor; resolved by ``source_recovered``,
  or by telemetry of the device sampled after the error.

Any other event name is valid input that raises nothing (outcome ``unknown``).

* **Alarm button.** A press opens an episode; presses during it extend it (no new
  alert). It resolves ``alarm_quiet_s`` after the last press (``at`` = last press +
  quiet, so however it is noticed the RESOLVED is the same): noticed on the device's next
  message (an event or telemetry) whose event time is past that, or by the timer
  (:func:`tick`, processing time: the quiet period has passed since the last press was
  *received*), for a device that says nothing more. Telemetry saying the button is still
  held (``alarm_button`` = 1) keeps the episode going like a press.
* **Power.** ``power_lost`` opens, ``power_restored`` (event time at or after the start)
  resolves; more ``power_lost`` while open extend.
* **Source error.** The edge sends ``source_error`` (``detail.reason``: ``modbus_timeout``,
  ``modbus_unreachable``, ...) when a device starts failing to read and
  ``source_recovered`` when it reads again. One alert per device whatever the reason (the
  latest reason is in the values). An edge agent restarted while its device failed never
  sends the ``source_recovered``, so telemetry of the device sampled *after* the error
  also resolves it: telemetry exists only when a read worked.

Replays and stragglers: each latch remembers ``closed_at``, the newest event time an
episode ended at (alarm: its last press; power and source: the clearing event). An
opening event at or before it is stale (a replay of a batch whose state was saved, or
an event reordered behind its clearing) and changes nothing; so is a clearing event with
nothing open (it still moves ``closed_at``) or older than the open episode. Ids come from
:mod:`stream.rules.identity` (fingerprint per rule and device), so a replay of the same
input from the same state repeats the same transitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from stream.rules import identity
from stream.rules.excursion import from_us, to_us
from stream.rules.record import Record, evolve

RULE_ALARM = "elevator.alarm_button"
RULE_POWER = "device.power_lost"
RULE_SOURCE = "device.source_error"
RULE_IDS = (RULE_ALARM, RULE_POWER, RULE_SOURCE)

ALARM_PRESSED = "alarm_button_pressed"
POWER_LOST = "power_lost"
POWER_RESTORED = "power_restored"
SOURCE_ERROR = "source_error"
SOURCE_RECOVERED = "source_recovered"
ALARM_METRIC = "alarm_button"  # elevator telemetry: 1 while the button is held
KNOWN_EVENTS = frozenset({ALARM_PRESSED, POWER_LOST, POWER_RESTORED, SOURCE_ERROR,
                          SOURCE_RECOVERED})

DEFAULT_ALARM_QUIET_S = 300.0
_RANK = {Severity.INFO: 0, Severity.MINOR: 1, Severity.MAJOR: 2, Severity.CRITICAL: 3}
_REASON_MAX = 64
_DETAIL_TEXT_MAX = 300


class Outcome(StrEnum):
    FIRED = "fired"  # opened an episode (FIRING)
    EXTENDED = "extended"  # belongs to the open episode
    RESOLVED = "resolved"  # closed the open episode (RESOLVED)
    STALE = "stale"  # nothing to do: a replay, a straggler, a clearing with nothing open
    UNKNOWN = "unknown"  # not an event any rule reads


@dataclass(frozen=True)
class EventParams:
    alarm_quiet_s: float = DEFAULT_ALARM_QUIET_S


class Episode(Record, frozen=True, kw_only=True):
    started_at: int  # event time of the opening event (µs)
    last_at: int  # newest event time that belongs to it (alarm: the last press)
    last_received: int | None = None  # processing time the last one was received
    severity: Severity
    count: int = 1  # events that belong to it (alarm: presses)
    reason: str | None = None  # source_error: the latest detail.reason


class Latch(Record, frozen=True):
    open: Episode | None = None
    closed_at: int | None = None  # newest event time an episode ended at (see module doc)


class DeviceEventsState(Record, frozen=True):
    """Per device; JSON round-trippable (a Faust table value)."""

    alarm: Latch = Latch()
    power: Latch = Latch()
    source: Latch = Latch()


@dataclass(frozen=True)
class EventResult:
    state: DeviceEventsState
    transitions: list[AlertTransition]
    outcome: Outcome


@dataclass(frozen=True)
class _Device:
    site_id: str
    device_id: str


# --------------------------------------------------------------------------- helpers


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _max(a: int | None, b: int) -> int:
    return b if a is None else max(a, b)


def at_least(severity: Severity, floor: Severity) -> Severity:
    return severity if _RANK[severity] >= _RANK[floor] else floor


def _reason(detail: Mapping[str, Any]) -> str | None:
    r = detail.get("reason")
    return r[:_REASON_MAX] if isinstance(r, str) and r else None


def _transition(dev: _Device, rule_id: str, kind: TransitionKind, ep: Episode, at: int,
                summary: str, values: dict[str, Any]) -> AlertTransition:
    fp = identity.fingerprint(rule_id, dev.site_id, dev.device_id)
    start = from_us(ep.started_at)
    return AlertTransition(
        transition_id=identity.transition_id(fp, kind, start), kind=kind, fingerprint=fp,
        rule_id=rule_id, severity=ep.severity, site_id=dev.site_id, device_id=dev.device_id,
        started_at=start, at=from_us(at), summary=summary, values=values)


def _open(latch: Latch, ep: Episode) -> Latch:
    return Latch(open=ep, closed_at=latch.closed_at)


def _close(latch: Latch, ended: int) -> Latch:
    return Latch(open=None, closed_at=_max(latch.closed_at, ended))


# --------------------------------------------------------------------------- alarm button


def _alarm_due(ep: Episode, p: EventParams) -> int:
    """Event time the alarm episode ends if no press comes: last press + quiet."""
    return ep.last_at + _us(p.alarm_quiet_s)


def _alarm_resolve(st: DeviceEventsState, p: EventParams, dev: _Device
                   ) -> tuple[DeviceEventsState, AlertTransition]:
    ep = st.alarm.open
    assert ep is not None
    at = _alarm_due(ep, p)
    tr = _transition(dev, RULE_ALARM, TransitionKind.RESOLVED, ep, at,
                     f"alarm button quiet for {p.alarm_quiet_s:.0f} s "
                     f"({ep.count} press{'es' if ep.count != 1 else ''})",
                     {"presses": ep.count, "quiet_s": p.alarm_quiet_s,
                      "last_press_at": from_us(ep.last_at).isoformat()})
    return evolve(st, alarm=_close(st.alarm, ep.last_at)), tr


def _alarm_expire(st: DeviceEventsState, p: EventParams, dev: _Device, t: int
                  ) -> tuple[DeviceEventsState, list[AlertTransition]]:
    """The device said something at event time ``t``: an alarm quiet since then ends."""
    ep = st.alarm.open
    if ep is None or t < _alarm_due(ep, p):
        return st, []
    st, tr = _alarm_resolve(st, p, dev)
    return st, [tr]


def _press(st: DeviceEventsState, dev: _Device, t: int, rx: int | None, severity: Severity
           ) -> tuple[DeviceEventsState, list[AlertTransition], Outcome]:
    latch = st.alarm
    ep = latch.open
    if ep is not None:
        if t <= ep.last_at:
            return st, [], Outcome.STALE  # a replay, or a press already covered
        ep = evolve(ep, last_at=t, last_received=rx, count=ep.count + 1)
        return evolve(st, alarm=_open(latch, ep)), [], Outcome.EXTENDED
    if latch.closed_at is not None and t <= latch.closed_at:
        return st, [], Outcome.STALE
    ep = Episode(started_at=t, last_at=t, last_received=rx,
                 severity=at_least(severity, Severity.MAJOR))
    tr = _transition(dev, RULE_ALARM, TransitionKind.FIRING, ep, t,
                     "elevator alarm button pressed (用户报警)",
                     {"event": ALARM_PRESSED, "event_severity": severity.value})
    return evolve(st, alarm=_open(latch, ep)), [tr], Outcome.FIRED


# --------------------------------------------------------------------------- latches


@dataclass(frozen=True)
class _LatchRule:
    field: str  # DeviceEventsState field
    rule_id: str
    severity: Severity
    raised: str  # FIRING summary
    cleared: str  # RESOLVED summary


_POWER = _LatchRule("power", RULE_POWER, Severity.CRITICAL, "device lost power",
                    "power restored")
_SOURCE = _LatchRule("source", RULE_SOURCE, Severity.MINOR,
                     "the edge cannot read the device", "the edge reads the device again")


def _values(ep: Episode, event: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"event": event}
    if ep.reason is not None:
        out["reason"] = ep.reason
    return {**out, **(extra or {})}


def _raise(st: DeviceEventsState, rule: _LatchRule, dev: _Device, t: int, event: str,
           detail: Mapping[str, Any]) -> tuple[DeviceEventsState, list[AlertTransition], Outcome]:
    latch: Latch = getattr(st, rule.field)
    ep = latch.open
    reason = _reason(detail)
    if ep is not None:
        if t <= ep.last_at:
            return st, [], Outcome.STALE
        ep = evolve(ep, last_at=t, count=ep.count + 1,
                                   reason=reason or ep.reason)
        return evolve(st, **{rule.field: _open(latch, ep)}), [], Outcome.EXTENDED
    if latch.closed_at is not None and t <= latch.closed_at:
        return st, [], Outcome.STALE
    ep = Episode(started_at=t, last_at=t, severity=rule.severity, reason=reason)
    text = detail.get("detail")
    extra = {"detail": text[:_DETAIL_TEXT_MAX]} if isinstance(text, str) and text else None
    summary = f"{rule.raised} ({reason})" if reason else rule.raised
    tr = _transition(dev, rule.rule_id, TransitionKind.FIRING, ep, t, summary,
                     _values(ep, event, extra))
    return evolve(st, **{rule.field: _open(latch, ep)}), [tr], Outcome.FIRED


def _clear(st: DeviceEventsState, rule: _LatchRule, dev: _Device, t: int, by: str
           ) -> tuple[DeviceEventsState, list[AlertTransition], Outcome]:
    latch: Latch = getattr(st, rule.field)
    ep = latch.open
    if ep is None:
        return evolve(st, **{rule.field: _close(latch, t)}), [], Outcome.STALE
    if t < ep.started_at:
        return st, [], Outcome.STALE  # older than the episode: it cleared an earlier one
    held = (t - ep.started_at) / 1_000_000
    tr = _transition(dev, rule.rule_id, TransitionKind.RESOLVED, ep, t,
                     f"{rule.cleared} after {held:.0f} s",
                     _values(ep, by, {"events": ep.count}))
    return evolve(st, **{rule.field: _close(latch, t)}), [tr], Outcome.RESOLVED


# --------------------------------------------------------------------------- entry points


def on_event(state: DeviceEventsState, params: EventParams, site_id: str, device_id: str,
             event: str, severity: Severity, detail: Mapping[str, Any], ts: datetime,
             received_at: datetime | None = None) -> EventResult:
    """One device event (event time ``ts``, received at ``received_at``)."""
    dev = _Device(site_id, device_id)
    t = to_us(ts)
    rx = to_us(received_at) if received_at is not None else None
    st, out = _alarm_expire(state, params, dev, t)
    if event == ALARM_PRESSED:
        st, trs, outcome = _press(st, dev, t, rx, severity)
    elif event == POWER_LOST:
        st, trs, outcome = _raise(st, _POWER, dev, t, event, detail)
    elif event == POWER_RESTORED:
        st, trs, outcome = _clear(st, _POWER, dev, t, event)
    elif event == SOURCE_ERROR:
        st, trs, outcome = _raise(st, _SOURCE, dev, t, event, detail)
    elif event == SOURCE_RECOVERED:
        st, trs, outcome = _clear(st, _SOURCE, dev, t, event)
    else:
        trs, outcome = [], Outcome.UNKNOWN
    return EventResult(st, out + trs, outcome)


def _alarm_held(st: DeviceEventsState, p: EventParams, held: int, rx: int | None
                ) -> DeviceEventsState:
    """The button still held (telemetry ``alarm_button`` = 1) at ``held`` keeps an open,
    not yet quiet episode going, as a press would (not counted as one)."""
    ep = st.alarm.open
    if ep is None or held <= ep.last_at or held >= _alarm_due(ep, p):
        return st
    ep = evolve(ep, last_at=held, last_received=rx)
    return evolve(st, alarm=_open(st.alarm, ep))


def on_telemetry(state: DeviceEventsState, params: EventParams, site_id: str,
                 device_id: str, ts: datetime, alarm_held_at: datetime | None = None,
                 received_at: datetime | None = None) -> EventResult:
    """Telemetry of the device sampled at ``ts`` (its newest reading): ends a quiet alarm,
    and a source error older than the sample (the edge read the device after it).
    ``alarm_held_at``: the newest sample saying the alarm button is held."""
    dev = _Device(site_id, device_id)
    t = to_us(ts)
    st = state
    if alarm_held_at is not None:
        rx = to_us(received_at) if received_at is not None else None
        st = _alarm_held(st, params, to_us(alarm_held_at), rx)
    st, out = _alarm_expire(st, params, dev, t)
    outcome = Outcome.RESOLVED if out else Outcome.STALE
    ep = st.source.open
    if ep is not None and t > ep.started_at:
        st, trs, outcome = _clear(st, _SOURCE, dev, t, "telemetry")
        out += trs
    return EventResult(st, out, outcome)


def tick(state: DeviceEventsState, params: EventParams, site_id: str, device_id: str,
         now: datetime) -> EventResult:
    """Timer, on the processing-time clock ``now``: an alarm whose last press was
    received ``alarm_quiet_s`` or more ago ends (at last press + quiet, event time)."""
    ep = state.alarm.open
    if ep is None or ep.last_received is None or \
            to_us(now) - ep.last_received < _us(params.alarm_quiet_s):
        return EventResult(state, [], Outcome.STALE)
    st, tr = _alarm_resolve(state, params, _Device(site_id, device_id))
    return EventResult(st, [tr], Outcome.RESOLVED)


def open_rules(state: DeviceEventsState) -> list[str]:
    """Rule ids with an open episode (for tests and inspection)."""
    return [rid for rid, latch in ((RULE_ALARM, state.alarm), (RULE_POWER, state.power),
                                   (RULE_SOURCE, state.source)) if latch.open is not None]
