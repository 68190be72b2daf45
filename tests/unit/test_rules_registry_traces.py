"""Device parameters from the registry in the rules model, and the three traces found on a
running stack, through the worker's rule path (batch processor, rules model, engine):

* a frozen room at -20 °C configured nowhere was judged chilled: ``temperature_low``
  ("freezing risk") raised and open for good;
* the same room warming to -9 °C for 20 minutes raised only ``rate_of_rise``, resolved
  while the room stayed warm;
* an elevator running 2.4 m/s, rated speed never set: no overspeed.

Each is shown as it was (every room assumed chilled, no rated speed: what the model did
before) and as it is with the registry's parameters (or, unset, the incomplete-config alert).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ganzhi import device_params
from ganzhi.contracts import AlertTransition, DeviceClass, Reading, Severity, Telemetry
from ganzhi.contracts import TransitionKind as K
from ganzhi.settings import ColdChainRuleSettings
from stream import metrics
from stream.engine import RuleEngine
from stream.memory import MemoryAdapters
from stream.processor import BatchProcessor, Incoming
from stream.rules import cold_chain
from stream.rules.device_config import RULE_INCOMPLETE_CONFIG
from stream.rules.device_health import RULE_ID as OFFLINE
from stream.rules.model import RegisteredDevice, Registry, Rules, RulesDoc, RulesError
from stream.rules.sources import registry_from_rows

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
SITE = "site-a"
LOW, HIGH, REBOUND, RATE = (cold_chain.RULE_TEMPERATURE_LOW, cold_chain.RULE_TEMPERATURE_HIGH,
                            cold_chain.RULE_FROZEN_REBOUND, cold_chain.RULE_RATE_OF_RISE)


def registry(*rows: tuple[str, DeviceClass, dict[str, Any]]) -> Registry:
    return {(SITE, dev): RegisteredDevice(cls, device_params.validate(cls, params))
            for dev, cls, params in rows}


class Harness(MemoryAdapters):
    def __init__(self, doc: dict[str, Any] | None = None, reg: Registry | None = None) -> None:
        super().__init__()
        self.now = T0
        self.set_rules(doc or {}, reg)
        engine = RuleEngine(lambda: self.rules, lambda site, device: 0)
        self.proc = BatchProcessor(engine, self, self, self.send, dead_letter=self.dead_letter,
                                   clock=lambda: self.now)

    def set_rules(self, doc: dict[str, Any], reg: Registry | None = None) -> None:
        self.rules = Rules(RulesDoc.model_validate(doc), ColdChainRuleSettings(), None, reg)

    async def feed(self, msgs: Iterator[Telemetry]) -> None:
        for m in msgs:
            self.now = m.ts
            await self.proc.process([Incoming(0, m.model_dump_json().encode(), m.ts)])

    def sent(self, rule_id: str | None = None) -> list[AlertTransition]:
        return [t for t in self.transitions if t.rule_id != OFFLINE
                and (rule_id is None or t.rule_id == rule_id)]

    def open_rules(self) -> set[str]:
        """Rule ids with a FIRING not (yet) resolved."""
        state: dict[str, bool] = {}
        for t in self.sent():
            state[t.rule_id] = t.kind is K.FIRING
        return {r for r, firing in state.items() if firing}


def cold_msg(device: str, second: int, temp: float) -> Telemetry:
    return Telemetry(msg_id=uuid.uuid4(), site_id=SITE, device_id=device,
                     ts=T0 + timedelta(seconds=second), device_class=DeviceClass.COLD_STORE,
                     readings=[Reading(metric="temperature", value=temp, unit="celsius")])


def frozen_room_day(device: str = "fz-1") -> Iterator[Telemetry]:
    """A frozen room: -20 °C for an hour, the compressor fails (warms to -9 °C in 10 min,
    stays there 20 min), repaired (back to -20 °C in 10 min), -20 °C until 2.5 h."""
    for s in range(0, 9001, 60):
        if s <= 3600:
            temp = -20.0
        elif s <= 4200:
            temp = -20.0 + 11.0 * (s - 3600) / 600
        elif s <= 5400:
            temp = -9.0
        elif s <= 6000:
            temp = -9.0 - 11.0 * (s - 5400) / 600
        else:
            temp = -20.0
        yield cold_msg(device, s, round(temp, 2))


async def feed_until(h: Harness, msgs: Iterator[Telemetry], second: int) -> None:
    await h.feed(m for m in msgs if m.ts <= T0 + timedelta(seconds=second))


# --------------------------------------------------------------------------- cold room


async def test_before_a_frozen_room_judged_chilled_freezing_risk_for_good() -> None:
    # What the model did before: every room chilled unless a rules file said otherwise.
    h = Harness({"cold_store": {"defaults": {"variant": "chilled"}}})
    await feed_until(h, frozen_room_day(), 3600)
    (low,) = h.sent()
    assert low.rule_id == LOW and low.kind is K.FIRING
    assert low.started_at == T0  # -20 °C "at or below 0 °C": from the first sample
    # The compressor fails: only the rate of rise, resolved while the room is at -9 °C.
    await h.feed(m for m in frozen_room_day() if T0 + timedelta(seconds=3600) < m.ts
                 <= T0 + timedelta(seconds=5400))
    assert [(t.rule_id, t.kind) for t in h.sent()] == [
        (LOW, K.FIRING), (RATE, K.FIRING), (RATE, K.RESOLVED)]
    assert h.sent(RATE)[1].at < T0 + timedelta(seconds=5400)  # resolved while still warm
    assert h.open_rules() == {LOW}  # and the wrong alert open for good


async def test_frozen_room_from_the_registry_quiet_when_cold_alarmed_while_warm() -> None:
    h = Harness(reg=registry(("fz-1", DeviceClass.COLD_STORE, {"variant": "frozen"})))
    await feed_until(h, frozen_room_day(), 3600)
    assert h.sent() == []  # -20 °C is normal for a frozen room; it is configured
    await h.feed(m for m in frozen_room_day() if T0 + timedelta(seconds=3600) < m.ts
                 <= T0 + timedelta(seconds=5400))
    # At -9 °C: the band (> -18 °C, 10 min) and the rebound (> -15 °C, 5 min) are open.
    assert {HIGH, REBOUND} <= h.open_rules()
    assert LOW not in {t.rule_id for t in h.sent()}
    (rebound,) = h.sent(REBOUND)
    assert rebound.severity is Severity.CRITICAL and rebound.values["limit"] == -15.0
    assert h.sent(HIGH)[0].values["limit"] == -18.0
    # Repaired and cold again: both resolved, once, after the clear hold.
    await h.feed(m for m in frozen_room_day() if m.ts > T0 + timedelta(seconds=5400))
    assert h.open_rules() == set()
    for rule in (HIGH, REBOUND):
        fire, resolved = h.sent(rule)
        assert (fire.kind, resolved.kind) == (K.FIRING, K.RESOLVED)
        assert T0 + timedelta(seconds=6000) <= resolved.at <= T0 + timedelta(seconds=6400)
    assert h.sent(RULE_INCOMPLETE_CONFIG) == []


async def test_room_configured_nowhere_gets_no_band_but_an_incomplete_config_alert() -> None:
    h = Harness()
    await feed_until(h, frozen_room_day(), 5400)
    rules = {t.rule_id for t in h.sent()}
    assert LOW not in rules and HIGH not in rules and REBOUND not in rules  # no guess
    assert RATE in rules  # the rules that need no variant still run
    (info,) = h.sent(RULE_INCOMPLETE_CONFIG)
    assert info.kind is K.FIRING and info.severity is Severity.INFO
    assert info.values == {"missing": ["variant"], "device_class": "cold_store"}
    assert info.started_at == T0  # when the device was first heard
    # The gauge, counted by the timer over the partitions this worker owns.
    await h.proc.tick({0}, T0)
    gauge = metrics.DEVICES_INCOMPLETE.labels("cold_store")
    assert gauge._value.get() == 1
    # The registry gets the variant: resolved by the timer, no message needed.
    h.set_rules({}, registry(("fz-1", DeviceClass.COLD_STORE, {"variant": "frozen"})))
    h.now = T0 + timedelta(seconds=5410)
    await h.proc.tick({0}, T0)
    fire, resolved = h.sent(RULE_INCOMPLETE_CONFIG)
    assert resolved.kind is K.RESOLVED and resolved.transition_id != fire.transition_id
    assert resolved.at == h.now and gauge._value.get() == 0
    # ... and the room is judged frozen from its next sample on (still at -9 °C).
    await h.feed(m for m in frozen_room_day() if T0 + timedelta(seconds=5400) < m.ts
                 <= T0 + timedelta(seconds=5460))
    assert len(h.sent(RULE_INCOMPLETE_CONFIG)) == 2  # nothing more


async def test_incomplete_config_resolves_on_the_next_message_too() -> None:
    h = Harness()
    await h.feed(iter([cold_msg("fz-1", 0, -20.0)]))
    h.set_rules({"cold_store": {"sites": {SITE: {"variant": "frozen"}}}})
    await h.feed(iter([cold_msg("fz-1", 60, -20.0)]))
    fire, resolved = h.sent(RULE_INCOMPLETE_CONFIG)
    assert (fire.kind, resolved.kind) == (K.FIRING, K.RESOLVED)
    assert resolved.at == T0 + timedelta(seconds=60)
    # Heard again: nothing more (state kept, nothing written for a complete device).
    await h.feed(iter([cold_msg("fz-1", 120, -20.0)]))
    assert len(h.sent(RULE_INCOMPLETE_CONFIG)) == 2


async def test_an_alert_raised_under_the_wrong_variant_is_resolved_once_configured() -> None:
    # The room of the first trace, upgraded: configured frozen, its freezing-risk alert
    # (open for good under the chilled guess) is resolved at the next sample, dated at
    # the oldest sample still in the lateness buffer (stepped again with the new rules).
    h = Harness({"cold_store": {"defaults": {"variant": "chilled"}}})
    await feed_until(h, frozen_room_day(), 1200)
    assert h.open_rules() == {LOW}
    h.set_rules({}, registry(("fz-1", DeviceClass.COLD_STORE, {"variant": "frozen"})))
    await h.feed(m for m in frozen_room_day() if T0 + timedelta(seconds=1200) < m.ts
                 <= T0 + timedelta(seconds=1260))
    _, resolved = h.sent(LOW)
    assert resolved.kind is K.RESOLVED and resolved.values["reason"] == "rule_off"
    assert resolved.at == T0 + timedelta(seconds=1080) and h.open_rules() == set()


# --------------------------------------------------------------------------- elevator


def lift_msg(second: float, speed: float) -> Telemetry:
    return Telemetry(
        msg_id=uuid.uuid4(), site_id=SITE, device_id="el-1",
        ts=T0 + timedelta(seconds=second), device_class=DeviceClass.ELEVATOR,
        readings=[Reading(metric="speed", value=speed, unit="m_per_s"),
                  Reading(metric="direction", value=1.0, unit="enum"),
                  Reading(metric="door_state", value=0.0, unit="enum"),
                  Reading(metric="door_zone", value=1.0, unit="bool"),
                  Reading(metric="position_m", value=10.0 + second, unit="m")])


def overspeed_run() -> Iterator[Telemetry]:
    return iter([lift_msg(s, 1.6 if s < 5 else 2.4) for s in range(12)])


async def test_before_an_elevator_without_rated_speed_no_overspeed() -> None:
    h = Harness()
    await h.feed(overspeed_run())
    assert "elevator.overspeed" not in {t.rule_id for t in h.sent()}
    # Not silent any more: the device is reported incompletely configured.
    (info,) = h.sent(RULE_INCOMPLETE_CONFIG)
    assert info.values["missing"] == ["rated_speed_mps", "top_landing_m"]


async def test_elevator_with_rated_speed_from_the_registry_raises_overspeed() -> None:
    h = Harness(reg=registry(("el-1", DeviceClass.ELEVATOR,
                              {"rated_speed_mps": 1.75, "top_landing_m": 54.0})))
    await h.feed(overspeed_run())
    (fire,) = h.sent("elevator.overspeed")
    assert fire.kind is K.FIRING and fire.started_at == T0 + timedelta(seconds=5)
    assert h.sent(RULE_INCOMPLETE_CONFIG) == []


# --------------------------------------------------------------------------- precedence


def test_precedence_sites_then_registry_then_rules_devices() -> None:
    reg = registry(("fz-1", DeviceClass.COLD_STORE, {"variant": "frozen", "high_limit_c": -20}),
                   ("el-1", DeviceClass.ELEVATOR, {"rated_speed_mps": 1.75,
                                                   "top_landing_m": 54.0}))
    doc = {"cold_store": {"defaults": {"variant": "chilled"},
                          "sites": {SITE: {"variant": "chilled"}},
                          "devices": {f"{SITE}/fz-1": {"frozen_rebound": {"limit": -16.0}}}},
           "elevator": {"devices": {f"{SITE}/el-1": {"rated_speed_mps": 2.5}}}}
    r = Rules(RulesDoc.model_validate(doc), registry=reg)
    fz = r.cold_store(SITE, "fz-1").params
    # the registry's variant and limit over the site's; the device's explicit rule over both
    assert fz.variant == "frozen" and fz.temperature_low is None
    assert fz.temperature_high is not None and fz.temperature_high.limit == -20.0
    assert fz.frozen_rebound is not None and fz.frozen_rebound.limit == -16.0
    assert r.cold_store(SITE, "other-room").params.variant == "chilled"  # site default
    el = r.elevator(SITE, "el-1").params
    assert (el.rated_speed_mps, el.top_landing_m) == (2.5, 54.0)
    assert r.missing(DeviceClass.ELEVATOR, SITE, "el-1") == ()
    # an explicit variant in the rules for the device overrides the registry's
    doc2 = {"cold_store": {"devices": {f"{SITE}/fz-1": {"variant": "chilled"}}}}
    assert Rules(RulesDoc.model_validate(doc2), registry=reg).cold_store(
        SITE, "fz-1").params.variant == "chilled"


def test_registry_params_of_another_class_are_not_read() -> None:
    reg = registry(("x-1", DeviceClass.ELEVATOR, {"rated_speed_mps": 1.0}))
    r = Rules(RulesDoc(), registry=reg)
    assert r.missing(DeviceClass.COLD_STORE, SITE, "x-1") == ("variant",)
    assert r.missing(DeviceClass.ELEVATOR, SITE, "x-1") == ("top_landing_m",)
    assert r.missing(DeviceClass.KITCHEN_CAMERA, SITE, "x-1") == ()


def test_other_variant_needs_its_own_band() -> None:
    reg = registry(("wine", DeviceClass.COLD_STORE, {"variant": "other"}),
                   ("ice", DeviceClass.COLD_STORE, {"variant": "other", "high_limit_c": -40.0,
                                                    "low_limit_c": -70.0 + 15}))
    r = Rules(RulesDoc(), ColdChainRuleSettings(duration_s=120), registry=reg)
    wine = r.cold_store(SITE, "wine")
    assert wine.missing == ("high_limit_c",) and wine.params.temperature_high is None
    ice = r.cold_store(SITE, "ice")
    assert ice.missing == () and ice.params.temperature_high is not None
    assert (ice.params.temperature_high.limit, ice.params.temperature_high.duration_s) == (
        -40.0, 120)
    assert ice.params.temperature_low is not None and ice.params.temperature_low.limit == -55


def test_registry_rows_validated_one_by_one() -> None:
    reg, errors = registry_from_rows([
        (SITE, "fz-1", "cold_store", {"variant": "frozen"}),
        (SITE, "bad", "cold_store", {"variant": "warm"}),
        (SITE, "el-1", "elevator", {"rated_speed_mps": -1}),
        (SITE, "gw-1", "gateway", {"anything": 1}),  # a class no rule reads: left out
    ])
    assert set(reg) == {(SITE, "fz-1")}
    assert len(errors) == 2 and "site-a/bad (cold_store): variant" in errors[0]
    assert "rated_speed_mps" in errors[1]


@pytest.mark.parametrize("variant", ["warm", 3])
def test_bad_variant_in_a_rules_document_names_the_place(variant: object) -> None:
    with pytest.raises(RulesError, match=r"cold_store\.defaults\.variant: expected chilled"):
        Rules(RulesDoc.model_validate({"cold_store": {"defaults": {"variant": variant}}}))
