"""Per-device rule parameters: settings defaults, overridden by an optional YAML file.

Format (every key optional; keys are those of ``ColdChainRuleSettings``)::

    cold_chain:
      defaults: {limit_c: 8.0, duration_s: 600}
      sites:
        site-a: {limit_c: 5.0}
      devices:
        site-a/freezer-1: {limit_c: -15.0, hysteresis_c: 2.0}

Precedence: device > site > file defaults > settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ganzhi.contracts import Severity
from ganzhi.settings import ColdChainRuleSettings
from stream.rules.excursion import ExcursionParams


class RulesConfigError(ValueError):
    pass


def _check(section: str, override: Any) -> dict[str, Any]:
    if not isinstance(override, dict):
        raise RulesConfigError(f"{section}: expected a mapping, got {type(override).__name__}")
    unknown = set(override) - set(ColdChainRuleSettings.model_fields)
    if unknown:
        raise RulesConfigError(f"{section}: unknown keys {sorted(unknown)}")
    return override


def _merge(base: ColdChainRuleSettings, override: dict[str, Any]) -> ColdChainRuleSettings:
    return ColdChainRuleSettings.model_validate({**base.model_dump(), **override})


def to_params(s: ColdChainRuleSettings) -> ExcursionParams:
    return ExcursionParams(
        limit=s.limit_c, duration_s=s.duration_s, hysteresis=s.hysteresis_c,
        clear_duration_s=s.clear_duration_s, allowed_lateness_s=s.allowed_lateness_s,
        severity=Severity(s.severity), metric=s.metric,
    )


class ColdChainRules:
    """Resolves the excursion parameters of each device (cached)."""

    def __init__(
        self,
        defaults: ColdChainRuleSettings,
        sites: dict[str, dict[str, Any]] | None = None,
        devices: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self._defaults = defaults
        self._sites = {k: _check(f"sites.{k}", v) for k, v in (sites or {}).items()}
        self._devices = {k: _check(f"devices.{k}", v) for k, v in (devices or {}).items()}
        self._cache: dict[tuple[str, str], ExcursionParams] = {}
        # Validate every override now, not on the first reading of that device.
        for key in self._devices:
            site, _, device = key.partition("/")
            if not device:
                raise RulesConfigError(f"devices.{key}: expected 'site/device'")
            self.params_for(site, device)
        for site in self._sites:
            self.params_for(site, "")
        self._cache.clear()

    @property
    def metric(self) -> str:
        return self._defaults.metric

    def params_for(self, site_id: str, device_id: str) -> ExcursionParams:
        key = (site_id, device_id)
        cached = self._cache.get(key)
        if cached is None:
            merged = self._defaults
            for override in (self._sites.get(site_id), self._devices.get(f"{site_id}/{device_id}")):
                if override:
                    merged = _merge(merged, override)
            cached = self._cache[key] = to_params(merged)
        return cached

    @classmethod
    def load(cls, defaults: ColdChainRuleSettings, path: Path | None) -> ColdChainRules:
        if path is None:
            return cls(defaults)
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(doc, dict):
            raise RulesConfigError(f"{path}: expected a mapping at the top")
        section = doc.get("cold_chain") or {}
        if not isinstance(section, dict):
            raise RulesConfigError(f"{path}: cold_chain must be a mapping")
        unknown = set(section) - {"defaults", "sites", "devices"}
        if unknown:
            raise RulesConfigError(f"{path}: cold_chain has unknown keys {sorted(unknown)}")
        base = _merge(defaults, _check("defaults", section.get("defaults") or {}))
        sites, devices = section.get("sites") or {}, section.get("devices") or {}
        if not isinstance(sites, dict) or not isinstance(devices, dict):
            raise RulesConfigError(f"{path}: cold_chain.sites and .devices must be mappings")
        return cls(base, sites, devices)
