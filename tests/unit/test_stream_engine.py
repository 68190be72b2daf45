"""The worker's rule path without Faust: scenarios through the batch processor, device
health with its timer, rules changed while running."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.simulators.scenario import (
    ColdRoomScenario,
    ElevatorScenario,
    ScenarioSample,
    iter_samples,
    load_scenario,
)
from ganzhi.contracts import (
    AlertTransition,
    BoundingBox,
    Detection,
    DeviceClass,
    DeviceStatus,
    Reading,
    Telemetry,
    TransitionKind,
    Violation,
)
from ganzhi.contracts.bounds import DETAIL_MAX_BYTES
from ganzhi.settings import ColdChainRuleSettings
from stream.engine import RuleEngine
from stream.memory import MemoryAdapters
from stream.processor import BatchProcessor, Incoming
from stream.rules import cold_chain, elevator, vision
from stream.rules.cold_chain import ColdChainState
from stream.rules.device_health import RULE_ID as OFFLINE
from stream.rules.elevator import ElevatorState
from stream.rules.model import Rules, RulesDoc

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


# Cold rooms here are chilled unless a test says otherwise: the variant is never guessed
# (a room configured nowhere raises device.incomplete_config: test_rules_registry_traces.py).
BASE = RulesDoc.model_validate({"cold_store": {"defaults": {"variant": "chilled"}}})


def configured(doc: dict[str, Any]) -> Rules:
    return Rules(BASE.overlay(RulesDoc.model_validate(doc)), ColdChainRuleSettings())


class Harness(MemoryAdapters):
    """Processor, in-memory state store (a stand-in for the Faust table), recorded sends."""

    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.doc = doc or {}
        self.now = T0
        self.rules = configured(self.doc)
        engine = RuleEngine(lambda: self.rules, lambda site, device: 0)
        self.proc = BatchProcessor(engine, self, self, self.send, dead_letter=self.dead_letter,
                                   clock=lambda: self.now)

    @property
    def sent(self) -> list[AlertTransition]:
        return self.transitions

    def set_rules(self, doc: dict[str, Any]) -> None:
        self.rules = configured(doc)

    async def telemetry(self, *msgs: Telemetry, received_at: datetime | None = None) -> None:
        await self.proc.process([Incoming(0, m.model_dump_json().encode(), received_at)
                                 for m in msgs])

    def rules_sent(self) -> list[AlertTransition]:
        return [t for t in self.sent if t.rule_id != OFFLINE]


def message(s: ScenarioSample, cls: DeviceClass, device: str) -> Telemetry:
    return Telemetry(
        msg_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{device}/{s.ts.isoformat()}"),
        site_id="site-a", device_id=device, ts=s.ts, device_class=cls,
        readings=[Reading(metric=v.metric, value=v.value, unit=v.unit[:16] or "1")
                  for v in s.values])


def shuffle_within(items: list[Telemetry], span: int, rng: random.Random) -> list[Telemetry]:
    out = list(items)
    for i in range(0, len(out) - span, span):
        j = i + rng.randrange(span)
        out[i], out[j] = out[j], out[i]
    return out


async def deliver(h: Harness, msgs: list[Telemetry], rng: random.Random) -> None:
    i = 0
    while i < len(msgs):
        n = rng.randint(1, 20)
        await h.telemetry(*msgs[i:i + n])
        i += n


def ids(out: Sequence[AlertTransition]) -> list[tuple[str, str, str]]:
    return sorted((t.rule_id, t.kind.value, t.transition_id) for t in out)


def assert_same_alerts(sent: Sequence[AlertTransition], expected: Sequence[AlertTransition],
                       lateness: timedelta) -> None:
    """Everything the in-order rules say was sent. Out of order, the head may also have
    announced an episode early with a slightly later start, before the earlier sample came
    in: such an extra FIRING is allowed (same fingerprint, start within the lateness); the
    alerts service attaches it to the alert already open."""
    assert set(ids(expected)) <= set(ids(sent))
    extra = [t for t in sent if (t.rule_id, t.kind.value, t.transition_id) not in
             set(ids(expected))]
    for t in extra:
        match = [e for e in expected if e.kind is TransitionKind.FIRING
                 and e.fingerprint == t.fingerprint and e.started_at <= t.started_at
                 <= e.started_at + lateness]
        assert t.kind is TransitionKind.FIRING and match, t


COLD = sorted(p.name for p in (SCENARIOS / "cold_room").glob("*.yaml"))
LIFT = sorted(p.name for p in (SCENARIOS / "elevator").glob("*.yaml"))


@pytest.mark.parametrize("name", COLD)
@pytest.mark.parametrize("order", ["in_order", "shuffled"])
async def test_cold_room_scenario_through_the_worker_path(name: str, order: str) -> None:
    sc = load_scenario(SCENARIOS / "cold_room" / name)
    assert isinstance(sc, ColdRoomScenario)
    samples = list(iter_samples(sc))
    # What the pure rules say, fed in order with the variant's defaults ...
    params = cold_chain.default_params(sc.spec.variant)
    state, expected = ColdChainState(), []
    for s in samples:
        r = cold_chain.step(state, params, "site-a", "cr-1", s.ts,
                            {v.metric: v.value for v in s.values})
        state, expected = r.state, expected + r.transitions
    # ... is what the worker path sends, the variant coming from the rules model, with the
    # messages in batches and (shuffled) out of order within the allowed lateness.
    h = Harness({"cold_store": {"devices": {"site-a/cr-1": {"variant": sc.spec.variant}}}})
    rng = random.Random(name)
    msgs = [message(s, DeviceClass.COLD_STORE, "cr-1") for s in samples]
    if order == "shuffled":
        msgs = shuffle_within(msgs, 6, rng)  # 10 s apart: at most 60 s late (allowed 120 s)
    await deliver(h, msgs, rng)
    if order == "in_order":
        assert ids(h.rules_sent()) == ids(expected)
    assert_same_alerts(h.rules_sent(), expected, timedelta(seconds=60))
    if "normal" not in name:
        assert any(t.kind is TransitionKind.FIRING for t in expected)


@pytest.mark.parametrize("name", LIFT)
async def test_elevator_scenario_through_the_worker_path(name: str) -> None:
    sc = load_scenario(SCENARIOS / "elevator" / name)
    assert isinstance(sc, ElevatorScenario)
    top = (sc.spec.floors - 1) * sc.spec.floor_height_m
    params = elevator.ElevatorParams(rated_speed_mps=sc.spec.rated_speed_mps, top_landing_m=top)
    samples = list(iter_samples(sc))
    state, expected = ElevatorState(), []
    for s in samples:
        state, trs = elevator.step(state, params, "site-a", "el-1", s.ts,
                                   {v.metric: v.value for v in s.values})
        expected += trs
    # Geometry per device from the rules model; without it overspeed could not be judged.
    h = Harness({"elevator": {"devices": {"site-a/el-1": {
        "rated_speed_mps": sc.spec.rated_speed_mps, "top_landing_m": top}}}})
    rng = random.Random(name)
    msgs = shuffle_within([message(s, DeviceClass.ELEVATOR, "el-1") for s in samples], 3, rng)
    await deliver(h, msgs, rng)
    assert_same_alerts(h.rules_sent(), expected, timedelta(seconds=3))
    if name != "normal.yaml":
        assert [t.kind for t in expected] == [TransitionKind.FIRING, TransitionKind.RESOLVED]


def cold(second: float, temp: float = 3.0, door: float = 0.0, device: str = "cr-1"
         ) -> Telemetry:
    return Telemetry(
        msg_id=uuid.uuid4(), site_id="site-a", device_id=device,
        ts=T0 + timedelta(seconds=second), device_class=DeviceClass.COLD_STORE,
        readings=[Reading(metric="temperature", value=temp, unit="celsius"),
                  Reading(metric="door_open", value=door, unit="bool")])


async def test_rule_change_applies_at_the_next_evaluation_and_keeps_state() -> None:
    h = Harness()
    for s in range(0, 201, 20):
        await h.telemetry(cold(s, door=1.0))  # open 200 s, limit 300 s: nothing yet
    assert h.rules_sent() == []
    h.set_rules({"cold_store": {"sites": {"site-a": {"door_open": {"limit_s": 120}}}}})
    await h.telemetry(cold(220, door=1.0))
    (fire,) = h.rules_sent()
    assert fire.rule_id == cold_chain.RULE_DOOR_OPEN and fire.started_at == T0
    # The samples still in the lateness buffer (120 s: from 100 s on) are stepped again
    # with the new limit, as after a restart: it was passed at the one of 120 s.
    assert fire.at == T0 + timedelta(seconds=120)


async def test_silent_device_goes_offline_on_the_timer_and_data_clears_it() -> None:
    h = Harness({"device_health": {"defaults": {"expected_interval_s": 60}}})
    await h.telemetry(cold(0), received_at=T0)
    since = T0 - timedelta(hours=1)
    h.now = T0 + timedelta(seconds=170)
    await h.proc.tick({0}, since)
    assert h.sent == []
    h.now = T0 + timedelta(seconds=181)
    await h.proc.tick({0}, since)
    await h.proc.tick({0}, since)  # once only
    (fire,) = h.sent
    assert (fire.rule_id, fire.kind, fire.started_at) == (OFFLINE, TransitionKind.FIRING, T0)
    await h.telemetry(cold(300), received_at=T0 + timedelta(seconds=300))
    assert [t.kind for t in h.sent] == [TransitionKind.FIRING, TransitionKind.RESOLVED]


async def test_a_device_waiting_in_the_backlog_is_not_silent() -> None:
    """Behind on a partition (a restart's backlog), the timer measures silence up to the
    receive time of the last record read there, not up to now."""
    h = Harness({"device_health": {"defaults": {"expected_interval_s": 60}}})
    for i, s in enumerate(range(0, 121, 10)):  # sent every 10 s, read 10 minutes later
        msg = cold(s)
        await h.proc.process([Incoming(0, msg.model_dump_json().encode(),
                                       T0 + timedelta(seconds=s), offset=i)])
    assert h.proc.read_up_to(0) == 12
    h.now = T0 + timedelta(seconds=720)
    since = T0 - timedelta(hours=1)
    await h.proc.tick({0}, since, behind={0})
    assert h.sent == []  # the rest of its messages are still to be read
    await h.proc.tick({0}, since)  # caught up, and nothing since 120 s: silent
    assert [(t.rule_id, t.kind) for t in h.sent] == [(OFFLINE, TransitionKind.FIRING)]


async def test_timer_leaves_partitions_of_other_workers_and_waits_after_takeover() -> None:
    h = Harness()
    await h.telemetry(cold(0), received_at=T0)
    h.now = T0 + timedelta(seconds=400)
    await h.proc.tick({1}, T0 - timedelta(hours=1))  # the device is on partition 0
    await h.proc.tick({0}, T0 + timedelta(seconds=300))  # owned for 100 s < 180 s
    assert h.sent == []
    await h.proc.tick({0}, T0 + timedelta(seconds=200))
    assert [t.rule_id for t in h.sent] == [OFFLINE]


async def test_expected_device_that_never_sent_anything_goes_offline() -> None:
    h = Harness({"device_health": {"devices": {"site-a/ghost": {"expected_interval_s": 10}}}})
    since = T0 - timedelta(hours=1)
    await h.proc.tick({0}, since)  # first seen by the timer: watched from now
    h.now = T0 + timedelta(seconds=29)
    await h.proc.tick({0}, since)
    assert h.sent == []
    h.now = T0 + timedelta(seconds=31)
    await h.proc.tick({0}, since)
    (fire,) = h.sent
    assert (fire.device_id, fire.rule_id, fire.started_at) == ("ghost", OFFLINE, T0)
    assert "no data" in fire.summary


def status(state: str, ts: datetime) -> Incoming:
    msg = DeviceStatus(msg_id=uuid.uuid4(), site_id="site-a", device_id="cr-1", ts=ts,
                       state=state)  # type: ignore[arg-type]
    return Incoming(0, msg.model_dump_json().encode(), ts + timedelta(seconds=1))


async def test_last_will_raises_after_its_grace_and_a_stale_one_is_ignored() -> None:
    h = Harness()
    await h.telemetry(cold(0), received_at=T0)
    # A will made at connect time (T0 - 1 h) but received after the data: current.
    will = status("offline", T0 - timedelta(hours=1))
    will = Incoming(0, will.value, T0 + timedelta(seconds=5))
    await h.proc.process_status([will])
    assert h.sent == []  # held for the will grace (10 s)
    h.now = T0 + timedelta(seconds=16)
    await h.proc.tick({0}, T0)  # judged even right after a takeover
    (fire,) = h.sent
    assert fire.kind is TransitionKind.FIRING and fire.values["reason"] == "last_will"
    assert fire.started_at == T0 + timedelta(seconds=5)
    await h.proc.process_status([status("online", T0 + timedelta(seconds=60))])
    assert [t.kind for t in h.sent] == [TransitionKind.FIRING, TransitionKind.RESOLVED]
    # A will received before data already heard is stale (topics are not ordered together).
    await h.telemetry(cold(120), received_at=T0 + timedelta(seconds=120))
    await h.proc.process_status([Incoming(0, will.value, T0 + timedelta(seconds=100))])
    assert len(h.sent) == 2


async def test_kitchen_camera_telemetry_only_feeds_device_health() -> None:
    h = Harness()
    msg = Telemetry(msg_id=uuid.uuid4(), site_id="site-a", device_id="cam-1", ts=T0,
                    device_class=DeviceClass.KITCHEN_CAMERA,
                    readings=[Reading(metric="fps", value=5.0, unit="1/s")])
    await h.telemetry(msg, received_at=T0)
    assert set(h.states) == {"site-a/cam-1/health"}


def detection(state: str, second: int, sha: str | None = None,
              violation: str = "no_mask") -> Incoming:
    msg = Detection(
        msg_id=uuid.uuid4(), site_id="site-a", device_id="cam-1",
        ts=T0 + timedelta(seconds=second), violation=violation, state=state,  # type: ignore[arg-type]
        score=0.8, boxes=[BoundingBox(label="no_mask", score=0.8, x1=1, y1=2, x2=30, y2=40)],
        snapshot_sha256=sha)
    return Incoming(0, msg.model_dump_json().encode(), T0 + timedelta(seconds=second))


async def test_camera_finding_raised_then_cleared_is_one_alert_with_its_evidence() -> None:
    h = Harness()
    raised, cleared = "a" * 64, "b" * 64
    await h.proc.process_detections([detection("raised", 10, raised)])
    await h.proc.process_detections([detection("raised", 40, "c" * 64)])  # same episode
    await h.proc.process_detections([detection("cleared", 90, cleared)])
    await h.proc.process_detections([detection("cleared", 95, "d" * 64)])  # nothing open
    fire, res = h.rules_sent()
    assert (fire.rule_id, fire.kind, fire.started_at) == (
        "vision.no_mask", TransitionKind.FIRING, T0 + timedelta(seconds=10))
    assert fire.values["snapshot_sha256"] == raised and fire.values["labels"] == ["no_mask"]
    # The boxes themselves, in pixels of the snapshot, for the console to draw; and their
    # count, as before.
    assert fire.values["detections"] == [
        {"label": "no_mask", "score": 0.8, "x1": 1, "y1": 2, "x2": 30, "y2": 40}]
    assert fire.values["boxes"] == 1
    assert (res.kind, res.started_at, res.at) == (
        TransitionKind.RESOLVED, fire.started_at, T0 + timedelta(seconds=90))
    assert res.values["snapshot_sha256"] == cleared and res.summary.startswith("rectified")
    # A replay of the raise after the clear is a new episode only if it is new data:
    # the same message again gives the same transition id (deduplicated downstream).
    h2 = Harness()
    await h2.proc.process_detections([detection("raised", 10, raised)])
    assert h2.rules_sent()[0].transition_id == fire.transition_id


async def test_camera_health_findings_are_major() -> None:
    h = Harness()
    await h.proc.process_detections([detection("raised", 0, violation="camera_covered")])
    (fire,) = h.rules_sent()
    assert fire.rule_id == "vision.camera_covered" and fire.severity.value == "major"


async def test_the_devices_own_report_period_sets_its_offline_limit() -> None:
    h = Harness()  # class default: 60 s x 3
    birth = DeviceStatus(msg_id=uuid.uuid4(), site_id="site-a", device_id="cr-1", ts=T0,
                         state="online", report_period_s=10)
    await h.proc.process_status([Incoming(0, birth.model_dump_json().encode(), T0)])
    h.now = T0 + timedelta(seconds=31)
    await h.proc.tick({0}, T0 - timedelta(hours=1))
    assert [t.rule_id for t in h.sent] == [OFFLINE]
    assert h.sent[0].values["expected_interval_s"] == 10


async def test_two_sites_with_the_same_device_id_keep_their_own_rule_state() -> None:
    h = Harness(doc={"cold_store": {"defaults": {"temperature_high": {"duration_s": 60}}}})

    def msg(site: str, second: int, temp: float) -> Telemetry:
        return Telemetry(msg_id=uuid.uuid4(), site_id=site, device_id="fridge-1",
                         ts=T0 + timedelta(seconds=second), device_class=DeviceClass.COLD_STORE,
                         readings=[Reading(metric="temperature", value=temp, unit="celsius")])

    for s in range(0, 181, 30):  # site-a too warm for 3 minutes, site-b fine, interleaved
        await h.telemetry(msg("site-a", s, 12.0), msg("site-b", s, 3.0))
    fired = [t for t in h.rules_sent() if t.kind is TransitionKind.FIRING]
    assert {(t.site_id, t.device_id) for t in fired} == {("site-a", "fridge-1")}
    assert {k.split("/")[0] for k in h.states} == {"site-a", "site-b"}


def test_a_crowded_frames_detections_fit_in_the_alerts_bounded_values() -> None:
    # 100 boxes with long labels would be ~14 KiB: the most confident that fit are kept,
    # the count stays whole, and the transition is valid (values at most 8 KiB as JSON).
    boxes = [BoundingBox(label="厨" * 60, score=i / 100, x1=1.04, y1=2, x2=30, y2=40)
             for i in range(100)]
    finding = vision.Finding(Violation.NO_MASK, "raised", T0, 0.9, boxes, "a" * 64)
    _, (fire,) = vision.step(vision.VisionState(), "site-a", "cam-1", finding)
    shown = fire.values["detections"]
    assert fire.values["boxes"] == 100 and 0 < len(shown) < 100
    assert [d["score"] for d in shown] == sorted((d["score"] for d in shown), reverse=True)
    assert shown[0] == {"label": "厨" * 60, "score": 0.99, "x1": 1.0, "y1": 2, "x2": 30,
                        "y2": 40}
    assert len(json.dumps(fire.values, ensure_ascii=False).encode()) <= DETAIL_MAX_BYTES


async def test_the_timer_counts_devices_online_and_offline() -> None:
    """``ganzhi_stream_devices{state}``: the devices of the partitions judged, with
    device.offline open or not (the platform's share offline is summed over workers)."""
    from prometheus_client import REGISTRY

    def gauge(state: str) -> float | None:
        return REGISTRY.get_sample_value("ganzhi_stream_devices", {"state": state})

    h = Harness({"device_health": {"defaults": {"expected_interval_s": 60},
                                   "devices": {"site-a/ghost": {"expected_interval_s": 60}}}})
    await h.telemetry(cold(0), received_at=T0)
    await h.telemetry(cold(0, device="cr-2"), received_at=T0)
    since = T0 - timedelta(hours=1)
    h.now = T0 + timedelta(seconds=100)
    await h.telemetry(cold(100, device="cr-2"), received_at=h.now)
    await h.proc.tick({0}, since)
    assert (gauge("online"), gauge("offline")) == (3, 0)  # ghost: watched from now
    h.now = T0 + timedelta(seconds=200)
    await h.proc.tick({0}, since)
    assert (gauge("online"), gauge("offline")) == (2, 1)  # cr-1 silent for 200 s
    await h.proc.tick({1}, since)  # a partition without them: none counted
    assert (gauge("online"), gauge("offline")) == (0, 0)
