"""Rule evaluation: dispatch by device class, device health, the offline timer.

Pure apart from the :class:`~stream.state.StateView` it reads and writes (an in-memory
view over the rule-state store), so it runs the same under Faust and in tests. Per device it keeps:

* ``{site}/{device}/cold_store`` or ``.../elevator`` - the snapshot rules of that class in
  an :mod:`stream.rules.ordering` wrapper (lateness buffer, speculative head);
* ``{site}/{device}/health`` - :mod:`stream.rules.device_health` plus the device's
  partition, so the timer knows which worker owns it and which checkpoint holds it;
* ``{site}/{device}/events`` - :mod:`stream.rules.device_events` (alarm button, power,
  source errors) plus the partition, written only once the device sent such an event;
* ``{site}/{device}/config`` - :mod:`stream.rules.device_config` (``device.incomplete_config``)
  plus the partition, written only once the device was heard incompletely configured.

Parameters come from the rules model in force at each call (``rules()``), so a rules
change applies at the next evaluation without touching state.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from ganzhi.contracts import (
    AlertTransition,
    Detection,
    DeviceClass,
    DeviceEvent,
    DeviceStatus,
    TransitionKind,
)
from ganzhi.contracts.telemetry_decoder import TelemetryLike
from ganzhi.observability import get_logger
from stream import metrics
from stream.rules import (
    cold_chain,
    device_config,
    device_events,
    device_health,
    elevator,
    vision,
)
from stream.rules.cold_chain import ColdChainState
from stream.rules.device_config import ConfigState
from stream.rules.device_events import DeviceEventsState
from stream.rules.device_health import DeviceHealthState, HealthParams
from stream.rules.elevator import ElevatorState
from stream.rules.excursion import to_us
from stream.rules.model import Rules
from stream.rules.ordering import Chain, OrderedState, SnapshotRule, feed
from stream.rules.record import Record, evolve
from stream.state import StateView

log = get_logger(__name__)

S = TypeVar("S", bound=Record)
P = TypeVar("P")

COLD_STORE_RULES: SnapshotRule[ColdChainState, cold_chain.ColdChainParams] = SnapshotRule(
    ColdChainState, cold_chain.snapshot_step, cold_chain.open_fingerprints)
ELEVATOR_RULES: SnapshotRule[ElevatorState, elevator.ElevatorParams] = SnapshotRule(
    ElevatorState, elevator.step_us, elevator.open_fingerprints)


HEALTH = "health"
VISION = "vision"
EVENTS = "events"
CONFIG = "config"


GC_THRESHOLDS = (100_000, 20, 100)
_NO_HEALTH = HealthParams()  # (for a device no health rule watches: nothing is sent)


def tune_gc() -> None:
    """The worker's garbage-collector settings. Rule state stays parsed in memory between
    batches (:class:`StateCache`) and every message replaces some of it, so with the
    default thresholds (700, 10, 10) full collections over that whole heap ran about once
    a batch and took more than half the worker's time. Rule state holds no reference
    cycles (immutable trees, freed by reference counting), so collecting less often costs
    little memory. Objects alive at startup are frozen out of the collections."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def state_key(site_id: str, device_id: str, name: str) -> str:
    return f"{site_id}/{device_id}/{name}"


class HealthEntry(Record, frozen=True):
    partition: int
    state: DeviceHealthState


class EventsEntry(Record, frozen=True):
    partition: int
    state: DeviceEventsState


class ConfigEntry(Record, frozen=True):
    partition: int
    state: ConfigState


def event_label(name: str) -> str:
    """The ``event`` label of ``ganzhi_stream_events_total``: a name a rule reads, or
    ``other`` (devices choose event names: the label's values stay bounded)."""
    return name if name in device_events.KNOWN_EVENTS else "other"


@dataclass
class Evaluation:
    transitions: list[AlertTransition] = field(default_factory=list)
    late: int = 0


def snapshots(msg: TelemetryLike) -> list[tuple[datetime, dict[str, float]]]:
    """The readings of one message grouped by their timestamp, oldest first."""
    readings = msg.readings
    one: dict[str, float] = {}
    for r in readings:  # the usual case: no reading with its own time, one snapshot
        if r.ts is not None:
            break
        one[r.metric] = r.value
    else:
        if readings:
            return [(msg.ts, one)]
    by_ts: dict[datetime, dict[str, float]] = defaultdict(dict)
    for r in readings:
        by_ts[r.ts or msg.ts][r.metric] = r.value
    return sorted(by_ts.items(), key=lambda kv: kv[0])


class RuleEngine:
    def __init__(self, rules: Callable[[], Rules],
                 partition_of: Callable[[str, str], int]) -> None:
        self._rules = rules
        self._partition_of = partition_of

    # ------------------------------------------------------------------ messages

    def telemetry(self, view: StateView, partition: int, msg: TelemetryLike,
                  received_at: datetime, out: Evaluation) -> None:
        rules = self._rules()
        snaps = snapshots(msg)
        if msg.device_class is DeviceClass.COLD_STORE:
            cfg = rules.cold_store(msg.site_id, msg.device_id)
            self._feed(view, partition, msg, "cold_store", COLD_STORE_RULES, cfg.params,
                       snaps, cfg.allowed_lateness_s, out)
        elif msg.device_class is DeviceClass.ELEVATOR:
            ecfg = rules.elevator(msg.site_id, msg.device_id)
            self._feed(view, partition, msg, "elevator", ELEVATOR_RULES, ecfg.params,
                       snaps, ecfg.allowed_lateness_s, out)
        self._config(view, partition, msg.device_class, msg.site_id, msg.device_id,
                     snaps[-1][0], rules, out)
        self.heard(view, partition, msg.site_id, msg.device_id, snaps[-1][0], received_at, out)
        self._events_telemetry(view, partition, msg, snaps, received_at, out)

    def _config(self, view: StateView, partition: int, device_class: DeviceClass,
                site_id: str, device_id: str, ts: datetime, rules: Rules,
                out: Evaluation) -> None:
        """``device.incomplete_config``: raised when the device is heard lacking the
        parameters its class needs, resolved once it has them."""
        missing = rules.missing(device_class, site_id, device_id)
        key = state_key(site_id, device_id, CONFIG)
        entry = view.load(key, ConfigEntry)
        before = entry.state if entry else None
        if not missing and (before is None or before.open_since is None):
            return  # the usual case: nothing read or written beyond the lookup
        new, trs = device_config.observe(before, device_class, site_id, device_id,
                                         missing, ts)
        if trs:
            self._log_config(trs[0], device_class, missing)
        out.transitions.extend(trs)
        state = new or ConfigState(device_class=device_class)
        if state != before:
            view.save(key, ConfigEntry(partition=partition, state=state), partition)

    @staticmethod
    def _log_config(tr: AlertTransition, device_class: DeviceClass,
                    missing: tuple[str, ...] | list[str]) -> None:
        if tr.kind is TransitionKind.FIRING:
            log.warning("device_incomplete_config", site_id=tr.site_id,
                        device_id=tr.device_id, device_class=device_class.value,
                        missing=list(missing),
                        detail="rules needing these parameters are not run")
        else:
            log.info("device_config_complete", site_id=tr.site_id, device_id=tr.device_id,
                     device_class=device_class.value)

    def _feed(
        self, view: StateView, partition: int, msg: TelemetryLike, name: str,
        rule: SnapshotRule[S, P], params: P, snaps: list[tuple[datetime, dict[str, float]]],
        lateness_s: float, out: Evaluation,
    ) -> None:
        key = state_key(msg.site_id, msg.device_id, name)
        st = view.load(key, rule.ordered_type) or OrderedState()
        extra = view.extra(key, st)
        res = feed(st, rule, params, msg.site_id, msg.device_id, snaps, lateness_s,
                   chain=extra if isinstance(extra, Chain) else None)
        if res.late:
            out.late += res.late
            metrics.LATE_DROPPED.labels(name).inc(res.late)
            log.warning("snapshots older than the allowed lateness ignored by the rules",
                        site_id=msg.site_id, device_id=msg.device_id, rules=name,
                        count=res.late, allowed_lateness_s=lateness_s, msg_id=str(msg.msg_id))
        if res.reordered:
            metrics.REORDERED.labels(name).inc(res.reordered)
        out.transitions.extend(res.transitions)
        view.save(key, res.state, partition)
        view.set_extra(key, res.state, res.chain)

    def _health(self, view: StateView, site_id: str, device_id: str
                ) -> tuple[HealthEntry | None, HealthParams | None]:
        entry = view.load(state_key(site_id, device_id, HEALTH), HealthEntry)
        reported = entry.state.reported_period_s if entry else None
        return entry, self._rules().health(site_id, device_id, reported)

    def _save_health(self, view: StateView, entry: HealthEntry) -> None:
        s = entry.state
        view.save(state_key(s.site_id, s.device_id, HEALTH), entry, entry.partition)

    def heard(self, view: StateView, partition: int, site_id: str, device_id: str,
              ts: datetime, received_at: datetime, out: Evaluation) -> None:
        """Any message from the device: it is alive."""
        key = state_key(site_id, device_id, HEALTH)
        entry = view.load(key, HealthEntry)
        st = entry.state if entry else DeviceHealthState(site_id=site_id, device_id=device_id)
        params = self._rules().health(site_id, device_id, st.reported_period_s)
        r = device_health.observe(st, params or _NO_HEALTH, ts, received_at)
        if params is not None:
            out.transitions.extend(r.transitions)
        view.save(key, HealthEntry(partition=partition, state=r.state), partition)

    def detection(self, view: StateView, partition: int, msg: Detection,
                  received_at: datetime, out: Evaluation) -> None:
        """A camera agent's confirmed finding (raised / cleared)."""
        key = state_key(msg.site_id, msg.device_id, VISION)
        st = view.load(key, vision.VisionState) or vision.VisionState()
        st, trs = vision.step(st, msg.site_id, msg.device_id, vision.Finding(
            msg.violation, msg.state, msg.ts, msg.score, msg.boxes, msg.snapshot_sha256,
            msg.model))
        out.transitions.extend(trs)
        view.save(key, st, partition)
        self.heard(view, partition, msg.site_id, msg.device_id, msg.ts, received_at, out)

    # ------------------------------------------------------------------ device events

    def _save_events(self, view: StateView, site_id: str, device_id: str,
                     entry: EventsEntry) -> None:
        view.save(state_key(site_id, device_id, EVENTS), entry, entry.partition)

    def event(self, view: StateView, partition: int, msg: DeviceEvent,
              received_at: datetime, out: Evaluation) -> None:
        """A device event (alarm button, power, source errors; others are counted)."""
        entry = view.load(state_key(msg.site_id, msg.device_id, EVENTS), EventsEntry)
        st = entry.state if entry else DeviceEventsState()
        params = self._rules().device_events(msg.site_id, msg.device_id)
        r = device_events.on_event(st, params, msg.site_id, msg.device_id, msg.event,
                                   msg.severity, msg.detail, msg.ts, received_at)
        metrics.EVENTS.labels(event_label(msg.event), r.outcome.value).inc()
        if r.outcome is device_events.Outcome.UNKNOWN:
            log.info("device_event_not_read_by_any_rule", site_id=msg.site_id,
                     device_id=msg.device_id, event_name=msg.event, msg_id=str(msg.msg_id))
        out.transitions.extend(r.transitions)
        if r.state != st:
            self._save_events(view, msg.site_id, msg.device_id,
                              EventsEntry(partition=partition, state=r.state))

    def _events_telemetry(self, view: StateView, partition: int, msg: TelemetryLike,
                          snaps: list[tuple[datetime, dict[str, float]]],
                          received_at: datetime, out: Evaluation) -> None:
        """Telemetry of a device with device-event state: may end its alarm episode (or,
        the button still held, keep it going) or its source error. Nothing to read or
        write for the other devices."""
        site_id, device_id = msg.site_id, msg.device_id
        entry = view.load(state_key(site_id, device_id, EVENTS), EventsEntry)
        if entry is None:
            return
        params = self._rules().device_events(site_id, device_id)
        held = [ts for ts, v in snaps if v.get(device_events.ALARM_METRIC, 0.0) >= 0.5]
        r = device_events.on_telemetry(entry.state, params, site_id, device_id, snaps[-1][0],
                                       max(held) if held else None, received_at)
        out.transitions.extend(r.transitions)
        if r.state != entry.state:
            self._save_events(view, site_id, device_id,
                              EventsEntry(partition=partition, state=r.state))

    def status(self, view: StateView, partition: int, msg: DeviceStatus,
               received_at: datetime, out: Evaluation) -> None:
        """The retained status topic: ``online`` births, ``offline`` last wills."""
        if msg.state == "online":
            if msg.report_period_s is not None:
                entry, _ = self._health(view, msg.site_id, msg.device_id)
                st = entry.state if entry else DeviceHealthState(
                    site_id=msg.site_id, device_id=msg.device_id)
                if st.reported_period_s != msg.report_period_s:
                    st = evolve(st, reported_period_s=msg.report_period_s)
                    self._save_health(view, HealthEntry(partition=partition, state=st))
            self.heard(view, partition, msg.site_id, msg.device_id, msg.ts, received_at, out)
            return
        entry, params = self._health(view, msg.site_id, msg.device_id)
        st = entry.state if entry else DeviceHealthState(site_id=msg.site_id,
                                                         device_id=msg.device_id)
        # The will's payload was made when the device connected; the broker sent it when
        # the connection dropped, which is about when ingest received it. It is held for
        # the will grace; data heard since makes it stale (topics are not ordered together).
        if params is None:
            return
        r = device_health.status(st, params, received_at, online=False,
                                 received_at=received_at)
        out.transitions.extend(r.transitions)
        self._save_health(view, HealthEntry(partition=partition, state=r.state))

    # ------------------------------------------------------------------ timer

    def tick(self, view: StateView, clocks: Mapping[int, datetime],
             active_since: datetime, out: Evaluation) -> None:
        """Processing-time timer: raise ``device.offline`` for silent devices this worker
        owns. ``clocks`` maps each telemetry partition to judge to its processing-time
        watermark: the wall clock while the worker keeps up with it, the receive time of
        the last record read while it is behind (a backlog is not silence); devices of
        other partitions are left alone. A device is also judged only once the worker has
        owned its partition for longer than its offline limit."""
        rules = self._rules()
        seen: set[tuple[str, str]] = set()
        incomplete: dict[str, int] = {c.value: 0 for c in DeviceClass}
        liveness = {"online": 0, "offline": 0}
        for key in list(view.store.keys()):
            site_id, device_id, name = key.split("/", 2)
            if name == HEALTH:
                seen.add((site_id, device_id))
                check = self._tick_one
            elif name == EVENTS:
                check = self._tick_events
            elif name == CONFIG:
                try:
                    cls = self._tick_config(view, rules, site_id, device_id, clocks, out)
                except Exception:
                    metrics.RULE_ERRORS.inc()
                    log.exception("config_check_failed", site_id=site_id,
                                  device_id=device_id)
                    continue
                if cls is not None:
                    incomplete[cls.value] += 1
                continue
            else:
                continue
            mark = len(out.transitions)
            view.begin()
            try:
                check(view, rules, site_id, device_id, clocks, active_since, out)
                if name == HEALTH:
                    entry = view.load(key, HealthEntry)
                    if entry is not None and entry.partition in clocks:
                        liveness["offline" if entry.state.offline else "online"] += 1
            except Exception:  # one device's broken state must not stop the timer
                view.rollback()
                del out.transitions[mark:]
                metrics.RULE_ERRORS.inc()
                log.exception("offline_check_failed" if name == HEALTH
                              else "device_events_check_failed",
                              site_id=site_id, device_id=device_id)
        for cls_name, n in incomplete.items():
            metrics.DEVICES_INCOMPLETE.labels(cls_name).set(n)
        for site_id, device_id in rules.expected_devices():
            if (site_id, device_id) in seen:
                continue
            partition = self._partition_of(site_id, device_id)
            if partition not in clocks:
                continue
            # Watched from now on: silent from here, offline after its limit.
            st = DeviceHealthState(site_id=site_id, device_id=device_id,
                                   last_received=to_us(clocks[partition]))
            self._save_health(view, HealthEntry(partition=partition, state=st))
            liveness["online"] += 1  # (not silent for long enough yet)
        for state, n in liveness.items():
            metrics.DEVICES.labels(state).set(n)

    def _tick_one(self, view: StateView, rules: Rules, site_id: str, device_id: str,
                  clocks: Mapping[int, datetime], active_since: datetime,
                  out: Evaluation) -> None:
        entry, params = self._health(view, site_id, device_id)
        if entry is None or params is None or entry.partition not in clocks:
            return
        now = clocks[entry.partition]
        held_will = entry.state.will_at is not None
        if not held_will and now - active_since <= timedelta(seconds=params.offline_after_s):
            return
        r = device_health.tick(entry.state, params, now)
        if r.transitions:
            out.transitions.extend(r.transitions)
            self._save_health(view, HealthEntry(partition=entry.partition, state=r.state))


    def _tick_config(self, view: StateView, rules: Rules, site_id: str, device_id: str,
                     clocks: Mapping[int, datetime], out: Evaluation) -> DeviceClass | None:
        """An open ``device.incomplete_config`` whose device is complete now (the
        registry or the rules changed) is resolved without waiting for the device.
        Returns the device's class while it stays incomplete (for the gauge)."""
        key = state_key(site_id, device_id, CONFIG)
        entry = view.load(key, ConfigEntry)
        if entry is None or entry.state.open_since is None or entry.partition not in clocks:
            return None
        st = entry.state
        if rules.missing(st.device_class, site_id, device_id):
            return st.device_class
        trs = device_config.complete(st, site_id, device_id, clocks[entry.partition])
        for tr in trs:
            self._log_config(tr, st.device_class, [])
        out.transitions.extend(trs)
        view.save(key, ConfigEntry(partition=entry.partition,
                                   state=ConfigState(device_class=st.device_class)),
                  entry.partition)
        return None

    def _tick_events(self, view: StateView, rules: Rules, site_id: str, device_id: str,
                     clocks: Mapping[int, datetime], active_since: datetime,
                     out: Evaluation) -> None:
        """An alarm-button episode whose last press was received a quiet period ago
        ends. Like the offline check, only on partitions this worker owns, and only once
        it has owned them for a quiet period (a backlog of presses is read first)."""
        entry = view.load(state_key(site_id, device_id, EVENTS), EventsEntry)
        if entry is None or entry.state.alarm.open is None or entry.partition not in clocks:
            return
        params = rules.device_events(site_id, device_id)
        now = clocks[entry.partition]
        if now - active_since <= timedelta(seconds=params.alarm_quiet_s):
            return
        r = device_events.tick(entry.state, params, site_id, device_id, now)
        if r.transitions:
            out.transitions.extend(r.transitions)
            self._save_events(view, site_id, device_id,
                              EventsEntry(partition=entry.partition, state=r.state))
