"""The rules model: per device class, per site and per device parameters (pure, no I/O).

A :class:`RulesDoc` is what a rules file or the ``rule_config`` table holds::

    cold_store:
      defaults: {door_open: {limit_s: 600}}
      sites:
        site-b: {humidity: false}                      # rule off for the whole site
      devices:
        site-b/freezer-1: {variant: frozen, temperature_high: {limit: -20.0}}
    elevator:
      devices:
        site-a/el-1: {rated_speed_mps: 1.75, top_landing_m: 30.0,
                      alarm_button_quiet_s: 600,             # device events' alarm episode
                      rules: {overspeed: {timer_s: 3}}}
    device_health:
      defaults: {expected_interval_s: 60}
      devices:
        site-a/cold-room-01: {expected_interval_s: 30}  # listed: expected even if never heard

Precedence, later wins: code defaults (per variant) < settings / environment < ``defaults``
< ``sites.<site>`` < the registry's device parameters (``devices.params``, see
:mod:`ganzhi.device_params`; translated by :func:`registry_layer`) < ``devices.<site>/<device>``
(an explicit rule for one device overrides everything). Unknown keys and ill-typed values
are errors naming the place (``cold_store.devices.site-b/freezer-1.door_open: ...``), raised
when the document is compiled, so a bad edit is refused whole and the last good rules stay.

A cold room's variant is never guessed: set nowhere, the room has no band rule and
:meth:`Rules.missing` names ``variant`` (the stream raises ``device.incomplete_config``).
``variant: chilled`` in ``defaults`` or a site is an explicit choice and counts as set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ganzhi import device_params as dp
from ganzhi.contracts import DeviceClass, Severity
from ganzhi.settings import ColdChainRuleSettings, HealthRuleSettings
from stream.rules import cold_chain, elevator
from stream.rules.cold_chain import ColdChainParams, Variant
from stream.rules.device_events import DEFAULT_ALARM_QUIET_S, EventParams
from stream.rules.device_health import HealthParams
from stream.rules.elevator import DEFAULT_RULES, ElevatorParams
from stream.rules.excursion import ExcursionParams

DeviceClassName = str  # "cold_store" | "elevator" | "device_health"
CLASSES = ("cold_store", "elevator", "device_health")

D = TypeVar("D")


class RulesError(ValueError):
    """A rules document that cannot be used; the message names the offending key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: dict[str, Any] = {}
    sites: dict[str, dict[str, Any]] = {}
    devices: dict[str, dict[str, Any]] = {}

    def layers(self, site_id: str, device_id: str,
               registry: Mapping[str, Any] | None = None
               ) -> list[tuple[str, Mapping[str, Any]]]:
        out: list[tuple[str, Mapping[str, Any]]] = [("defaults", self.defaults)]
        if site_id in self.sites:
            out.append((f"sites.{site_id}", self.sites[site_id]))
        key = f"{site_id}/{device_id}"
        if registry:
            out.append((f"registry.{key}", registry))
        if key in self.devices:
            out.append((f"devices.{key}", self.devices[key]))
        return out


class RulesDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cold_store: Section = Section()
    elevator: Section = Section()
    device_health: Section = Section()

    def overlay(self, other: RulesDoc) -> RulesDoc:
        """``other`` on top of this one, entry by entry (a key set in ``other`` wins)."""
        merged: dict[str, Any] = {}
        for cls in CLASSES:
            a, b = getattr(self, cls), getattr(other, cls)
            merged[cls] = Section(
                defaults={**a.defaults, **b.defaults},
                sites={k: {**a.sites.get(k, {}), **b.sites.get(k, {})}
                       for k in a.sites.keys() | b.sites.keys()},
                devices={k: {**a.devices.get(k, {}), **b.devices.get(k, {})}
                         for k in a.devices.keys() | b.devices.keys()},
            )
        return RulesDoc.model_validate(merged)


@cache
def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def _patch(base: D, override: Any, where: str, forbidden: frozenset[str] = frozenset()) -> D:
    """``base`` (a dataclass) with the fields in ``override`` replaced, type-checked."""
    if not isinstance(override, Mapping):
        raise RulesError(f"{where}: expected a mapping or true/false, got {override!r}")
    names = {f.name for f in dataclasses.fields(cast(Any, base))} - forbidden
    unknown = set(override) - names
    if unknown:
        raise RulesError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(names)})")
    current = {f.name: getattr(base, f.name) for f in dataclasses.fields(cast(Any, base))}
    try:
        return cast(D, _adapter(cast(Any, type(base))).validate_python({**current, **override}))
    except ValidationError as exc:
        raise RulesError(f"{where}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RulesError(f"{where}: expected a number >= 0, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- cold store

# Config key -> (ColdChainParams field, default used when a rule off by default is enabled)
_COLD_RULES: dict[str, tuple[str, Any]] = {
    "temperature_high": ("temperature_high", None),
    "frozen_rebound": ("frozen_rebound", ExcursionParams(
        limit=-15.0, duration_s=300.0, hysteresis=1.0, clear_duration_s=300.0,
        allowed_lateness_s=0.0, severity=Severity.CRITICAL,
        rule_id=cold_chain.RULE_FROZEN_REBOUND)),
    "temperature_low": ("temperature_low", cold_chain.LowParams()),
    "rate_of_rise": ("rate_of_rise", cold_chain.RateParams()),
    "door_open": ("door_open", cold_chain.DoorParams()),
    "humidity": ("humidity", cold_chain.HumidityParams()),
    "probe_failure": ("probe_failure", cold_chain.ProbeParams()),
    "compressor_not_running": ("compressor", cold_chain.CompressorParams()),
}
_EXCURSION_FIXED = frozenset({"allowed_lateness_s", "rule_id"})


def _cold_rule(params: ColdChainParams, key: str, value: Any, where: str,
               high_fallback: ExcursionParams) -> ColdChainParams:
    """One rule's override: ``false``/``null`` off, ``true`` on, a mapping patches it."""
    fname, fallback = _COLD_RULES[key]
    current = getattr(params, fname)
    new: Any
    if value is False or value is None:
        new = None
    else:
        start = current if current is not None else (
            fallback if fallback is not None else high_fallback)
        forbidden = _EXCURSION_FIXED if isinstance(start, ExcursionParams) else frozenset()
        new = start if value is True else _patch(start, value, where, forbidden)
    changes: dict[str, Any] = {fname: new}
    return replace(params, **changes)


@dataclass(frozen=True)
class ColdStoreConfig:
    params: ColdChainParams
    allowed_lateness_s: float
    # Registry parameter names this room's rules need and nobody set (docs/rules.md).
    missing: tuple[str, ...] = ()


def _settings_temperature_high(p: ExcursionParams, variant: Variant,
                               s: ColdChainRuleSettings) -> ExcursionParams:
    """The environment's ``GANZHI_STREAM__COLD_CHAIN__*`` knobs that were set explicitly.

    The timings apply to both variants; ``limit_c`` (8 °C by default) only to chilled rooms.
    """
    names = {"duration_s": "duration_s", "hysteresis_c": "hysteresis",
             "clear_duration_s": "clear_duration_s", "severity": "severity",
             "metric": "metric"}
    if variant == "chilled":
        names["limit_c"] = "limit"
    changes = {dst: getattr(s, src) for src, dst in names.items() if src in s.model_fields_set}
    return _patch(p, changes, "GANZHI_STREAM__COLD_CHAIN") if changes else p


def resolve_cold_store(section: Section, base: ColdChainRuleSettings, site_id: str,
                       device_id: str, registry: Mapping[str, Any] | None = None
                       ) -> ColdStoreConfig:
    layers = section.layers(site_id, device_id, registry)
    variant: Variant | None = None  # never guessed: see missing
    for where, layer in layers:
        if "variant" in layer:
            if layer["variant"] not in ("chilled", "frozen", "other"):
                raise RulesError(f"cold_store.{where}.variant: expected chilled, frozen or "
                                 f"other, got {layer['variant']!r}")
            variant = layer["variant"]
    params = cold_chain.default_params(variant)
    chilled_high = cold_chain.default_params("chilled").temperature_high
    assert chilled_high is not None
    # A band switched on for a room without one (other, not configured): the chilled
    # rule's timings, the environment's timings, the layer's limit.
    high_fallback = _settings_temperature_high(chilled_high, "other", base)
    if params.temperature_high is not None:
        params = replace(params, temperature_high=_settings_temperature_high(
            params.temperature_high, variant or "other", base))
    lateness = base.allowed_lateness_s
    for where, layer in layers:
        for key, value in layer.items():
            here = f"cold_store.{where}.{key}"
            if key == "variant":
                continue
            if key == "allowed_lateness_s":
                lateness = _number(value, here)
            elif key == "defrost_recovery_s":
                params = replace(params, defrost=cold_chain.DefrostParams(_number(value, here)))
            elif key in _COLD_RULES:
                params = _cold_rule(params, key, value, here, high_fallback)
            else:
                known = sorted(["variant", "allowed_lateness_s", "defrost_recovery_s",
                                *_COLD_RULES])
                raise RulesError(f"{here}: unknown key (known: {known})")
    missing: tuple[str, ...] = ()
    if variant is None:
        missing = ("variant",)
    elif variant == "other" and params.temperature_high is None:
        missing = ("high_limit_c",)
    return ColdStoreConfig(params, lateness, missing)


# --------------------------------------------------------------------------- elevator

_ELEVATOR_FIELDS = frozenset({"rated_speed_mps", "top_landing_m", "bottom_landing_m",
                              "overspeed_ratio", "overtravel_margin_m", "moving_speed_mps"})
ELEVATOR_DEFAULT_LATENESS_S = 10.0


@dataclass(frozen=True)
class ElevatorConfig:
    params: ElevatorParams
    allowed_lateness_s: float
    # Device events (stream.rules.device_events): an alarm-button episode ends after this
    # long without a press.
    alarm_button_quiet_s: float = DEFAULT_ALARM_QUIET_S


def _rule_id(name: str, where: str) -> str:
    rid = name if name.startswith(elevator.PREFIX) else elevator.PREFIX + name
    if rid not in DEFAULT_RULES:
        known = sorted(r.removeprefix(elevator.PREFIX) for r in DEFAULT_RULES)
        raise RulesError(f"{where}: unknown elevator rule {name!r} (known: {known})")
    return rid


def resolve_elevator(section: Section, site_id: str, device_id: str,
                     registry: Mapping[str, Any] | None = None) -> ElevatorConfig:
    params = ElevatorParams()
    lateness = ELEVATOR_DEFAULT_LATENESS_S
    quiet = DEFAULT_ALARM_QUIET_S
    for where, layer in section.layers(site_id, device_id, registry):
        geometry = {k: v for k, v in layer.items() if k in _ELEVATOR_FIELDS}
        params = _patch(params, geometry, f"elevator.{where}", frozenset({"rules"}))
        for key, value in layer.items():
            here = f"elevator.{where}.{key}"
            if key in _ELEVATOR_FIELDS:
                continue
            if key == "allowed_lateness_s":
                lateness = _number(value, here)
            elif key == "alarm_button_quiet_s":
                quiet = _number(value, here)
                if quiet <= 0:
                    raise RulesError(f"{here}: expected a number > 0, got {value!r}")
            elif key == "rules":
                if not isinstance(value, Mapping):
                    raise RulesError(f"{here}: expected a mapping of rule -> parameters")
                rules = dict(params.rules)
                for name, rv in value.items():
                    rid = _rule_id(str(name), here)
                    cur = rules.get(rid, DEFAULT_RULES[rid])
                    if isinstance(rv, bool):
                        rules[rid] = replace(cur, enabled=rv)
                    else:
                        rules[rid] = _patch(cur, rv, f"{here}.{name}")
                params = replace(params, rules=rules)
            else:
                known = sorted([*_ELEVATOR_FIELDS, "allowed_lateness_s",
                                "alarm_button_quiet_s", "rules"])
                raise RulesError(f"{here}: unknown key (known: {known})")
    return ElevatorConfig(params, lateness, quiet)


def elevator_missing(cfg: ElevatorConfig) -> tuple[str, ...]:
    """Registry parameter names the elevator's rules need and nobody set."""
    p = cfg.params
    return tuple(name for name, v in (("rated_speed_mps", p.rated_speed_mps),
                                      ("top_landing_m", p.top_landing_m)) if v is None)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class RegisteredDevice:
    """One row of the registry's ``devices`` table, its params validated."""

    device_class: DeviceClass
    params: dp.DeviceParams


Registry = Mapping[tuple[str, str], RegisteredDevice]


def registry_layer(params: dp.DeviceParams) -> dict[str, Any]:
    """A device's registry parameters as a layer of the rules model (its keys)."""
    out: dict[str, Any] = {}
    if isinstance(params, dp.ColdStoreParams):
        if params.variant is not None:
            out["variant"] = params.variant
        for src, rule in (("high_limit_c", "temperature_high"),
                          ("low_limit_c", "temperature_low"),
                          ("rebound_limit_c", "frozen_rebound")):
            limit = getattr(params, src)
            if limit is not None:
                out[rule] = {"limit": limit}
    elif isinstance(params, dp.ElevatorParams):
        for key in ("rated_speed_mps", "top_landing_m", "bottom_landing_m"):
            if getattr(params, key) is not None:
                out[key] = getattr(params, key)
    return out


# --------------------------------------------------------------------------- device health


def resolve_health(section: Section, base: HealthRuleSettings, site_id: str,
                   device_id: str, reported_period_s: float | None = None
                   ) -> HealthParams | None:
    """None when the rule is switched off for this device. ``reported_period_s`` (the
    device's own configured report period, from its birth message) replaces the
    class-wide default interval, but not one set for the device's site or the device."""
    params = HealthParams(expected_interval_s=base.expected_interval_s,
                          missed_intervals=base.missed_intervals)
    enabled = True
    layers = section.layers(site_id, device_id)
    if reported_period_s is not None and not any(
            "expected_interval_s" in layer for where, layer in layers[1:]):
        layers.insert(1, ("reported", {"expected_interval_s": reported_period_s}))
    for where, layer in layers:
        layer = dict(layer)
        if "enabled" in layer:
            flag = layer.pop("enabled")
            if not isinstance(flag, bool):
                raise RulesError(f"device_health.{where}.enabled: expected true or false")
            enabled = flag
        params = _patch(params, layer, f"device_health.{where}")
        if params.expected_interval_s <= 0 or params.missed_intervals <= 0:
            raise RulesError(f"device_health.{where}: intervals must be > 0")
    return params if enabled else None


# --------------------------------------------------------------------------- compiled rules


class Rules:
    """A validated rules document with per-device lookups (cached)."""

    def __init__(self, doc: RulesDoc, cold_base: ColdChainRuleSettings | None = None,
                 health_base: HealthRuleSettings | None = None,
                 registry: Registry | None = None) -> None:
        self.doc = doc
        self.registry: Registry = registry or {}
        self._cold_base = cold_base or ColdChainRuleSettings()
        self._health_base = health_base or HealthRuleSettings()
        self._cold: dict[tuple[str, str], ColdStoreConfig] = {}
        self._lift: dict[tuple[str, str], ElevatorConfig] = {}
        self._health: dict[tuple[str, str, float | None], HealthParams | None] = {}
        self._check()

    def _check(self) -> None:
        """Resolve every place the document names, so errors show at load, not later."""
        for cls, resolve in (("cold_store", self.cold_store), ("elevator", self.elevator),
                             ("device_health", self.health)):
            section: Section = getattr(self.doc, cls)
            resolve("", "")
            for site in section.sites:
                resolve(site, "")
            for key in section.devices:
                site, sep, device = key.partition("/")
                if not sep or not site or not device:
                    raise RulesError(f"{cls}.devices.{key}: expected 'site/device'")
                resolve(site, device)
        for site, device in self.registry:
            self.cold_store(site, device)
            self.elevator(site, device)

    def _registry(self, cls: DeviceClass, site_id: str, device_id: str
                  ) -> dict[str, Any] | None:
        reg = self.registry.get((site_id, device_id))
        if reg is None or reg.device_class is not cls:
            return None
        return registry_layer(reg.params)

    def cold_store(self, site_id: str, device_id: str) -> ColdStoreConfig:
        key = (site_id, device_id)
        if key not in self._cold:
            self._cold[key] = resolve_cold_store(
                self.doc.cold_store, self._cold_base, site_id, device_id,
                self._registry(DeviceClass.COLD_STORE, site_id, device_id))
        return self._cold[key]

    def elevator(self, site_id: str, device_id: str) -> ElevatorConfig:
        key = (site_id, device_id)
        if key not in self._lift:
            self._lift[key] = resolve_elevator(
                self.doc.elevator, site_id, device_id,
                self._registry(DeviceClass.ELEVATOR, site_id, device_id))
        return self._lift[key]

    def missing(self, device_class: DeviceClass, site_id: str, device_id: str
                ) -> tuple[str, ...]:
        """Parameters the device's class needs and neither the registry nor the rules
        documents set for it (``()``: completely configured)."""
        if device_class is DeviceClass.COLD_STORE:
            return self.cold_store(site_id, device_id).missing
        if device_class is DeviceClass.ELEVATOR:
            return elevator_missing(self.elevator(site_id, device_id))
        return ()

    def device_events(self, site_id: str, device_id: str) -> EventParams:
        """Device-event parameters (the alarm button's quiet period is an elevator key,
        ``alarm_button_quiet_s``; events carry no device class)."""
        return EventParams(alarm_quiet_s=self.elevator(site_id, device_id).alarm_button_quiet_s)

    def health(self, site_id: str, device_id: str,
               reported_period_s: float | None = None) -> HealthParams | None:
        key = (site_id, device_id, reported_period_s)
        if key not in self._health:
            self._health[key] = resolve_health(self.doc.device_health, self._health_base,
                                               site_id, device_id, reported_period_s)
        return self._health[key]

    def expected_devices(self) -> list[tuple[str, str]]:
        """Devices the health section lists: watched even before their first message."""
        out = []
        for key in sorted(self.doc.device_health.devices):
            site, _, device = key.partition("/")
            if self.health(site, device) is not None:
                out.append((site, device))
        return out
