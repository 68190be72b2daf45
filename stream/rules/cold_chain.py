"""Cold-chain rules beyond the plain high-temperature excursion: pure event-time logic.

One call of :func:`step` feeds one *snapshot* of a cold room (the readings of one
telemetry message: ``temperature`` = air / control probe, ``temperature_product``,
``humidity``, ``door_open``, ``compressor_on``, ``defrost_on``; any may be missing) to every
rule and returns the transitions to send. Every rule is confirmed over a duration and
cleared only after a clear hold (with hysteresis where the signal is a number), so a blip
never fires, and each episode gives one FIRING and one RESOLVED.

Rules (rule ids ``cold_chain.<name>``; ``None`` in :class:`ColdChainParams` disables one):

* ``temperature_high`` - the :mod:`stream.rules.excursion` rule, defrost-gated (below).
* ``frozen_rebound`` - frozen rooms: air above -15 °C (DB31/T 388), critical; also an
  excursion machine with its own parameters.
* ``temperature_low`` - chilled rooms: at or below 0 °C (freezing risk; GB/T 24616 keeps
  chilled goods above freezing).
* ``rate_of_rise`` - air rose more than ``rise_c`` over the trailing ``window_s``.
* ``door_open`` - ``door_open == 1`` continuously for longer than ``limit_s``.
* ``humidity`` - relative humidity outside ``[low, high]``.
* ``probe_failure`` - a temperature probe reads an impossible value (outside
  ``valid_min..valid_max``, e.g. the open-circuit code 850.0) or stays exactly equal for
  longer than ``stuck_s`` while another probe changes. Impossible values are dropped from
  every other rule (a broken probe is one alert, not five).
* ``compressor_not_running`` - compressor off (and not defrosting) for at least
  ``window_s`` while the air rose at least ``rise_c`` over that window.

Defrost: while ``defrost_on == 1`` and for ``recovery_s`` after it ends, the air-probe
rules ``temperature_high``, ``frozen_rebound`` and ``rate_of_rise`` are suppressed: they
cannot start (a pending run is dropped) and cannot clear (an alert already firing stays
firing until the room is back to normal after the recovery).

Order: snapshots must come in event-time order per device; a snapshot at or before the
newest one already seen is counted in ``late_count`` and ignored (the reorder buffer of
:mod:`stream.rules.excursion` is upstream-only here: inner excursion machines always see
in-order samples).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple

import msgspec

from ganzhi.contracts import AlertTransition, Severity, TransitionKind
from stream.rules import excursion
from stream.rules.excursion import ExcursionParams, ExcursionState, from_us, to_us
from stream.rules.identity import fingerprint, transition_id
from stream.rules.record import Record, evolve

# chilled / frozen: GB/T 24616 bands (below); other: neither, the band rules only where
# their limits are configured. ``None`` (ColdChainParams.variant): not configured, so no
# band rule runs (stream/rules/model.py reports the device as incompletely configured).
Variant = Literal["chilled", "frozen", "other"]

AIR = "temperature"
PRODUCT = "temperature_product"
HUMIDITY = "humidity"
DOOR = "door_open"
COMPRESSOR = "compressor_on"
DEFROST = "defrost_on"

RULE_TEMPERATURE_HIGH = "cold_chain.temperature_high"
RULE_FROZEN_REBOUND = "cold_chain.frozen_rebound"
RULE_TEMPERATURE_LOW = "cold_chain.temperature_low"
RULE_RATE_OF_RISE = "cold_chain.rate_of_rise"
RULE_DOOR_OPEN = "cold_chain.door_open"
RULE_HUMIDITY = "cold_chain.humidity"
RULE_PROBE_FAILURE = "cold_chain.probe_failure"
RULE_COMPRESSOR = "cold_chain.compressor_not_running"

_US = 1_000_000


def _us(seconds: float) -> int:
    return round(seconds * _US)


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class LowParams:
    """Value at or below ``limit`` for ``duration_s``; clears above ``limit + hysteresis``."""

    limit: float = 0.0
    duration_s: float = 600.0
    hysteresis: float = 0.5
    clear_duration_s: float = 120.0
    severity: Severity = Severity.MAJOR
    metric: str = AIR


@dataclass(frozen=True)
class RateParams:
    """Air rose more than ``rise_c`` over ``window_s`` for ``duration_s``."""

    rise_c: float = 3.0
    window_s: float = 600.0
    min_coverage: float = 0.8  # the history must span this share of the window
    duration_s: float = 120.0
    hysteresis: float = 1.0
    clear_duration_s: float = 180.0
    severity: Severity = Severity.MAJOR


@dataclass(frozen=True)
class DoorParams:
    limit_s: float = 300.0
    clear_duration_s: float = 30.0
    severity: Severity = Severity.MAJOR


@dataclass(frozen=True)
class HumidityParams:
    low: float = 50.0
    high: float = 95.0
    duration_s: float = 1800.0
    hysteresis: float = 2.0
    clear_duration_s: float = 300.0
    severity: Severity = Severity.MINOR


@dataclass(frozen=True)
class ProbeParams:
    probes: tuple[str, ...] = (AIR, PRODUCT)
    valid_min: float = -60.0
    valid_max: float = 60.0
    invalid_s: float = 60.0  # impossible values for this long
    stuck_s: float = 1800.0  # exactly equal for longer than this ...
    # ... while one of these changed (so a quiet room is not a stuck probe)
    others: tuple[str, ...] = (AIR, PRODUCT, HUMIDITY)
    clear_duration_s: float = 120.0
    severity: Severity = Severity.MAJOR


@dataclass(frozen=True)
class CompressorParams:
    window_s: float = 600.0
    rise_c: float = 1.0
    duration_s: float = 600.0
    clear_duration_s: float = 120.0
    severity: Severity = Severity.MAJOR


@dataclass(frozen=True)
class DefrostParams:
    recovery_s: float = 900.0


@dataclass(frozen=True)
class ColdChainParams:
    variant: Variant | None = "chilled"
    temperature_high: ExcursionParams | None = None
    frozen_rebound: ExcursionParams | None = None
    temperature_low: LowParams | None = None
    rate_of_rise: RateParams | None = field(default_factory=RateParams)
    door_open: DoorParams | None = field(default_factory=DoorParams)
    humidity: HumidityParams | None = field(default_factory=HumidityParams)
    probe_failure: ProbeParams | None = field(default_factory=ProbeParams)
    compressor: CompressorParams | None = field(default_factory=CompressorParams)
    defrost: DefrostParams = field(default_factory=DefrostParams)


def default_params(variant: Variant | None = "chilled", **overrides: Any) -> ColdChainParams:
    """Defaults per variant; ``overrides`` replace whole rule parameter objects (or None).

    ``other`` and ``None`` (not configured) have no band rule (temperature_high,
    frozen_rebound, temperature_low): a band guessed for the wrong kind of room is wrong
    for good. The rules that need no band (rate of rise, door, humidity, probe,
    compressor) run for every room."""
    if variant is None or variant == "other":
        p = ColdChainParams(variant=variant)
    elif variant == "chilled":
        p = ColdChainParams(
            variant="chilled",
            # GB/T 24616: chilled goods below 8 °C.
            temperature_high=ExcursionParams(
                limit=8.0, duration_s=600.0, hysteresis=1.0, clear_duration_s=120.0,
                allowed_lateness_s=0.0, severity=Severity.MAJOR, rule_id=RULE_TEMPERATURE_HIGH),
            # GB/T 24616: ... and above freezing.
            temperature_low=LowParams(),
        )
    else:
        p = ColdChainParams(
            variant="frozen",
            # GB/T 24616: frozen goods at or below -18 °C.
            temperature_high=ExcursionParams(
                limit=-18.0, duration_s=600.0, hysteresis=1.0, clear_duration_s=120.0,
                allowed_lateness_s=0.0, severity=Severity.MAJOR, rule_id=RULE_TEMPERATURE_HIGH),
            # DB31/T 388: frozen food must not rebound above -15 °C.
            frozen_rebound=ExcursionParams(
                limit=-15.0, duration_s=300.0, hysteresis=1.0, clear_duration_s=300.0,
                allowed_lateness_s=0.0, severity=Severity.CRITICAL, rule_id=RULE_FROZEN_REBOUND),
        )
    return replace(p, **overrides)


# --------------------------------------------------------------------------- state


class Phase(StrEnum):
    NORMAL = "normal"
    PENDING = "pending"
    FIRING = "firing"
    CLEARING = "clearing"


class Hold(Record, frozen=True):
    """Generic confirm / clear-hold machine for a boolean condition."""

    phase: Phase = Phase.NORMAL
    started_at: int | None = None
    since: int | None = None  # start of the clear hold
    open_id: str | None = None  # transition id of the FIRING not yet resolved


class ProbeTrack(Record, frozen=True):
    value: float | None = None
    since: int | None = None  # first sample with this exact value
    invalid_since: int | None = None


class ColdChainState(Record, frozen=True):
    """Everything the rules keep per device; JSON round-trippable (a Faust table value)."""

    last_ts: int | None = None
    late_count: int = 0
    temperature_high: ExcursionState = ExcursionState()
    frozen_rebound: ExcursionState = ExcursionState()
    temperature_low: Hold = Hold()
    rate_of_rise: Hold = Hold()
    door_open: Hold = Hold()
    humidity: Hold = Hold()
    probe_failure: Hold = Hold()
    compressor: Hold = Hold()
    # Valid air readings, trailing window.
    air_history: list[tuple[int, float]] = msgspec.field(default_factory=list)
    defrost_until: int | None = None  # suppression end (None while defrosting: see below)
    defrosting: bool = False
    door_since: int | None = None
    compressor_off_since: int | None = None
    probes: dict[str, ProbeTrack] = msgspec.field(default_factory=dict)
    last_values: dict[str, float] = msgspec.field(default_factory=dict)
    # When each metric last changed value.
    changed_at: dict[str, int] = msgspec.field(default_factory=dict)


_HOLD0 = Hold()
_PROBE0 = ProbeTrack()


class StepResult(NamedTuple):  # (a tuple: made at every step)
    state: ColdChainState
    transitions: list[AlertTransition]
    late: bool = False


# --------------------------------------------------------------------------- helpers



def _make(
    kind: TransitionKind, rule_id: str, severity: Severity, site_id: str, device_id: str,
    started_at: int, at: int, summary: str, values: dict[str, Any],
) -> AlertTransition:
    fp = fingerprint(rule_id, site_id, device_id)
    start = from_us(started_at)
    tid = transition_id(fp, kind, start)
    return AlertTransition(
        transition_id=tid, kind=kind, fingerprint=fp, rule_id=rule_id, severity=severity,
        site_id=site_id, device_id=device_id, started_at=start, at=from_us(at),
        summary=summary, values=values,
    )


class _Ctx(NamedTuple):
    site_id: str
    device_id: str
    ts: int


def _hold(
    h: Hold, ctx: _Ctx, *, rule_id: str, severity: Severity, active: bool, clear_ok: bool,
    duration_s: float, clear_duration_s: float,
    describe: Callable[[], tuple[str, dict[str, Any]]], start: int | None = None,
) -> tuple[Hold, AlertTransition | None]:
    """Advance a confirm / clear-hold machine by one in-order sample.

    ``active``: the condition holds now; ``clear_ok``: it is clearly gone (hysteresis).
    ``start``: when the condition began, if earlier than now (defaults to now).
    ``describe``: the transition's summary and values (called only to make one).
    """
    ts = ctx.ts
    if h.phase in (Phase.NORMAL, Phase.PENDING):
        if not active:
            return _HOLD0, None
        started = h.started_at if h.phase is Phase.PENDING and h.started_at is not None \
            else (ts if start is None else start)
        if ts - started < _us(duration_s):
            return Hold(phase=Phase.PENDING, started_at=started), None
        what, values = describe()
        tr = _make(TransitionKind.FIRING, rule_id, severity, ctx.site_id, ctx.device_id,
                   started, ts, what, values)
        return Hold(phase=Phase.FIRING, started_at=started,
                         open_id=tr.transition_id), tr
    started = h.started_at if h.started_at is not None else ts
    if not clear_ok:
        return evolve(h, phase=Phase.FIRING, since=None), None
    since = h.since if h.phase is Phase.CLEARING and h.since is not None else ts
    if ts - since < _us(clear_duration_s):
        return evolve(h, phase=Phase.CLEARING, since=since), None
    what, values = describe()
    tr = _make(TransitionKind.RESOLVED, rule_id, severity, ctx.site_id, ctx.device_id,
               started, ts, f"cleared: {what}", values)
    return _HOLD0, tr


def _excursion(
    st: ExcursionState, p: ExcursionParams, ctx: _Ctx, value: float, suppressed: bool,
) -> tuple[ExcursionState, list[AlertTransition]]:
    # Suppressed samples are fed as exactly the limit: not above it (a pending run is
    # dropped) and above limit - hysteresis (a firing alert does not clear).
    v = p.limit if suppressed else value
    r = excursion.step_us(st, p, ctx.site_id, ctx.device_id, ctx.ts, v)
    return r.state, r.transitions


def _rise(history: list[tuple[int, float]], ts: int, window_s: float,
          min_coverage: float) -> float | None:
    """Newest minus the oldest value within the trailing window, if it is covered enough.
    (``history`` may reach further back: the window is found in it, not copied.)"""
    i = bisect.bisect_left(history, (ts - _us(window_s),))
    if i >= len(history):
        return None
    t0, v0 = history[i]
    if ts - t0 < _us(window_s * min_coverage):
        return None
    return history[-1][1] - v0


def _resolve_switched_off(state: ColdChainState, params: ColdChainParams, ctx: _Ctx,
                          out: list[AlertTransition], upd: dict[str, Any]) -> None:
    """A rule off (``None``) whose alert is open: resolve it now. Without this an alert
    raised under parameters that no longer apply (a frozen room judged as chilled, then
    configured frozen: ``temperature_low`` open since) would stay open for good."""
    off_excursions, off_holds = _switched_off(params)
    opened: list[tuple[str, str, Severity, int]] = []
    for name, rule_id, sev in off_excursions:
        x: ExcursionState = getattr(state, name)
        if x.open is not None:
            opened.append((name, rule_id, sev, x.open.started_at))
            upd[name] = ExcursionState()
    for name, rule_id in off_holds:
        h: Hold = getattr(state, name)
        if h.phase in (Phase.FIRING, Phase.CLEARING):
            opened.append((name, rule_id, _HOLD_SEVERITY[name],
                           h.started_at if h.started_at is not None else ctx.ts))
            upd[name] = Hold()
    for name, rule_id, sev, started in opened:
        out.append(_make(
            TransitionKind.RESOLVED, rule_id, sev, ctx.site_id, ctx.device_id, started,
            max(ctx.ts, started), f"rule {name} no longer applies to this room "
            f"(variant {params.variant or 'not configured'})",
            {"reason": "rule_off", "variant": params.variant}))


# --------------------------------------------------------------------------- the step


def step(
    state: ColdChainState, params: ColdChainParams, site_id: str, device_id: str,
    ts: datetime, values: Mapping[str, float],
) -> StepResult:
    """Feed one snapshot (in event-time order); returns the new state and transitions."""
    return step_us(state, params, site_id, device_id, to_us(ts), values)


def step_us(
    state: ColdChainState, params: ColdChainParams, site_id: str, device_id: str,
    t: int, values: Mapping[str, float],
) -> StepResult:
    """:func:`step` with the event time in microseconds since the epoch."""
    if state.last_ts is not None and t <= state.last_ts:
        return StepResult(evolve(state, late_count=state.late_count + 1), [],
                          late=True)
    ctx = _Ctx(site_id, device_id, t)
    out: list[AlertTransition] = []
    upd: dict[str, Any] = {"last_ts": t}
    _resolve_switched_off(state, params, ctx, out, upd)
    pp = params.probe_failure
    valid_min = pp.valid_min if pp else -60.0
    valid_max = pp.valid_max if pp else 60.0

    def valid(metric: str) -> float | None:
        v = values.get(metric)
        if v is None:
            return None
        if metric in (AIR, PRODUCT) and not valid_min <= v <= valid_max:
            return None
        return v

    # Value-change bookkeeping (for the stuck-probe test).
    last_values = dict(state.last_values)
    changed_at = dict(state.changed_at)
    for m, mv in values.items():
        if m not in last_values or last_values[m] != mv:
            changed_at[m] = t
        last_values[m] = mv
    upd["last_values"], upd["changed_at"] = last_values, changed_at

    # Defrost suppression window.
    defrosting, until = state.defrosting, state.defrost_until
    if DEFROST in values:
        now_on = values[DEFROST] >= 0.5
        if now_on:
            defrosting, until = True, None
        elif defrosting:
            defrosting, until = False, t + _us(params.defrost.recovery_s)
    suppressed = defrosting or (until is not None and t < until)
    upd["defrosting"], upd["defrost_until"] = defrosting, until

    air = valid(AIR)

    # Air history for rise rules (longest window needed).
    window_s = max(params.rate_of_rise.window_s if params.rate_of_rise else 0.0,
                   params.compressor.window_s if params.compressor else 0.0)
    # (Sorted by time: samples come in order, a late one returned above.) Entries within
    # ``window`` of ``t``: from the first with x[0] >= t - window (a 1-tuple sorts first).
    old = state.air_history
    hist = old[bisect.bisect_left(old, (t - _us(window_s),)):]
    if air is not None:
        hist.append((t, air))
    upd["air_history"] = hist

    # temperature_high / frozen_rebound: excursion machines, defrost-gated on the air probe.
    for name, xp in (("temperature_high", params.temperature_high),
                     ("frozen_rebound", params.frozen_rebound)):
        if xp is None:
            continue
        xv = air if xp.metric == AIR else valid(xp.metric)
        if xv is None:
            continue
        gated = suppressed and xp.metric == AIR
        new_x, trs = _excursion(getattr(state, name), xp, ctx, xv, gated)
        upd[name] = new_x
        out.extend(trs)

    # temperature_low (freezing risk in a chilled room).
    lp = params.temperature_low
    if lp is not None:
        lv = air if lp.metric == AIR else valid(lp.metric)
        if lv is not None:
            h, tr = _hold(
                state.temperature_low, ctx, rule_id=RULE_TEMPERATURE_LOW, severity=lp.severity,
                active=lv <= lp.limit, clear_ok=lv > lp.limit + lp.hysteresis,
                duration_s=lp.duration_s, clear_duration_s=lp.clear_duration_s,
                describe=lambda: (
                    f"{lp.metric} at or below {lp.limit:.1f} °C (freezing risk)",
                    {"metric": lp.metric, "limit": lp.limit, "value": lv}))
            upd["temperature_low"] = h
            out.extend([tr] if tr else [])

    # rate_of_rise on the air probe.
    rp = params.rate_of_rise
    if rp is not None and air is not None:
        rise = _rise(hist, t, rp.window_s, rp.min_coverage)
        active = rise is not None and rise > rp.rise_c and not suppressed
        clear_ok = rise is None or rise <= rp.rise_c - rp.hysteresis
        h, tr = _hold(
            state.rate_of_rise, ctx, rule_id=RULE_RATE_OF_RISE, severity=rp.severity,
            active=active, clear_ok=clear_ok and not suppressed, duration_s=rp.duration_s,
            clear_duration_s=rp.clear_duration_s,
            describe=lambda: (
                f"air rising faster than {rp.rise_c:.1f} °C per {rp.window_s:.0f} s",
                {"rise_c": rise, "threshold_c": rp.rise_c, "window_s": rp.window_s}))
        upd["rate_of_rise"] = h
        out.extend([tr] if tr else [])

    # door_open: open continuously for longer than limit_s.
    dp = params.door_open
    if DOOR in values:
        is_open = values[DOOR] >= 0.5
        door_since = (state.door_since if state.door_since is not None else t) \
            if is_open else None
        upd["door_since"] = door_since
        if dp is not None:
            h, tr = _hold(
                state.door_open, ctx, rule_id=RULE_DOOR_OPEN, severity=dp.severity,
                active=is_open, clear_ok=not is_open, duration_s=dp.limit_s,
                clear_duration_s=dp.clear_duration_s, start=door_since,
                describe=lambda: (f"door open longer than {dp.limit_s:.0f} s",
                                  {"limit_s": dp.limit_s}))
            upd["door_open"] = h
            out.extend([tr] if tr else [])

    # humidity out of band.
    hp = params.humidity
    if hp is not None and HUMIDITY in values:
        v = values[HUMIDITY]
        h, tr = _hold(
            state.humidity, ctx, rule_id=RULE_HUMIDITY, severity=hp.severity,
            active=v < hp.low or v > hp.high,
            clear_ok=hp.low + hp.hysteresis <= v <= hp.high - hp.hysteresis,
            duration_s=hp.duration_s, clear_duration_s=hp.clear_duration_s,
            describe=lambda: (f"humidity outside {hp.low:.0f}-{hp.high:.0f} %",
                              {"low": hp.low, "high": hp.high, "value": v}))
        upd["humidity"] = h
        out.extend([tr] if tr else [])

    # probe_failure: impossible or stuck.
    if pp is not None:
        probes = dict(state.probes)
        faults: list[tuple[int, str]] = []
        seen = False
        for m in pp.probes:
            if m not in values:
                continue
            seen = True
            v = values[m]
            pt = probes.get(m, _PROBE0)
            if not pp.valid_min <= v <= pp.valid_max:
                inv = pt.invalid_since if pt.invalid_since is not None else t
                pt = ProbeTrack(invalid_since=inv)
                if t - inv >= _us(pp.invalid_s):
                    faults.append((inv, f"{m} impossible value {v}"))
            else:
                since = pt.since if pt.value == v and pt.since is not None else t
                pt = ProbeTrack(value=v, since=since)
                others = [changed_at[o] for o in pp.others if o != m and o in changed_at]
                if t - since > _us(pp.stuck_s) and any(c > since for c in others):
                    faults.append((since, f"{m} stuck at {v}"))
            probes[m] = pt
        upd["probes"] = probes
        if seen:
            h, tr = _hold(
                state.probe_failure, ctx, rule_id=RULE_PROBE_FAILURE, severity=pp.severity,
                active=bool(faults), clear_ok=not faults, duration_s=0.0,
                clear_duration_s=pp.clear_duration_s,
                start=min(f[0] for f in faults) if faults else None,
                describe=lambda: (
                    "probe failure: " + ("; ".join(f[1] for f in faults) or "probe"),
                    {"faults": [f[1] for f in faults]}))
            upd["probe_failure"] = h
            out.extend([tr] if tr else [])

    # compressor_not_running while the room warms.
    cp = params.compressor
    if COMPRESSOR in values:
        off = values[COMPRESSOR] < 0.5 and not defrosting
        off_since = (state.compressor_off_since if state.compressor_off_since is not None
                     else t) if off else None
        upd["compressor_off_since"] = off_since
        if cp is not None and air is not None:
            rise = _rise(hist, t, cp.window_s, 0.95)
            active = (off_since is not None and t - off_since >= _us(cp.window_s)
                      and rise is not None and rise >= cp.rise_c)
            h, tr = _hold(
                state.compressor, ctx, rule_id=RULE_COMPRESSOR, severity=cp.severity,
                active=active, clear_ok=not off, duration_s=cp.duration_s,
                clear_duration_s=cp.clear_duration_s,
                describe=lambda: (
                    f"compressor not running while the air rises ≥ {cp.rise_c:.1f} °C "
                    f"per {cp.window_s:.0f} s",
                    {"rise_c": rise, "off_since": None if off_since is None
                     else from_us(off_since).isoformat()}))
            upd["compressor"] = h
            out.extend([tr] if tr else [])

    return StepResult(evolve(state, **upd), out)


_HOLDS = {
    "temperature_low": RULE_TEMPERATURE_LOW, "rate_of_rise": RULE_RATE_OF_RISE,
    "door_open": RULE_DOOR_OPEN, "humidity": RULE_HUMIDITY,
    "probe_failure": RULE_PROBE_FAILURE, "compressor": RULE_COMPRESSOR,
}
_HOLD_SEVERITY = {
    "temperature_low": LowParams.severity, "rate_of_rise": RateParams.severity,
    "door_open": DoorParams.severity, "humidity": HumidityParams.severity,
    "probe_failure": ProbeParams.severity, "compressor": CompressorParams.severity,
}
_EXCURSIONS = (("temperature_high", RULE_TEMPERATURE_HIGH, Severity.MAJOR),
               ("frozen_rebound", RULE_FROZEN_REBOUND, Severity.CRITICAL))
_Off = tuple[tuple[tuple[str, str, Severity], ...], tuple[tuple[str, str], ...]]
# Per parameters object (each device's is kept by the rules model): the rules off in it.
# Holding the object keeps its id from being reused while it is here.
_OFF: dict[int, tuple[ColdChainParams, _Off]] = {}
_OFF_MAX = 100_000


def _switched_off(params: ColdChainParams) -> _Off:
    """The excursion rules and the hold rules off (``None``) in ``params``."""
    held = _OFF.get(id(params))
    if held is not None and held[0] is params:
        return held[1]
    off = (tuple(x for x in _EXCURSIONS if getattr(params, x[0]) is None),
           tuple((name, rid) for name, rid in _HOLDS.items() if getattr(params, name) is None))
    if len(_OFF) >= _OFF_MAX:
        _OFF.clear()
    _OFF[id(params)] = (params, off)
    return off


def open_fingerprints(state: ColdChainState, site_id: str, device_id: str) -> set[str]:
    """Fingerprints of the alerts this state holds open (FIRING sent, not resolved)."""
    out = {fingerprint(r, site_id, device_id)
           for r, x in ((RULE_TEMPERATURE_HIGH, state.temperature_high),
                        (RULE_FROZEN_REBOUND, state.frozen_rebound)) if x.open is not None}
    for name, rule_id in _HOLDS.items():
        if getattr(state, name).phase in (Phase.FIRING, Phase.CLEARING):
            out.add(fingerprint(rule_id, site_id, device_id))
    return out


def snapshot_step(
    state: ColdChainState, params: ColdChainParams, site_id: str, device_id: str,
    t: int, values: Mapping[str, float],
) -> tuple[ColdChainState, list[AlertTransition]]:
    """:func:`step_us` in the shape :mod:`stream.rules.ordering` drives."""
    r = step_us(state, params, site_id, device_id, t, values)
    return r.state, r.transitions
