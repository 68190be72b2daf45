"""Where the rules model comes from: a YAML file, the ``rule_config`` table, the registry.

:class:`RulesProvider` holds the compiled :class:`~stream.rules.model.Rules` in force and
:meth:`RulesProvider.refresh` (a timer in the worker) reloads it when the file, the table or
the registry's device parameters (``devices.params``) changed: the next evaluation uses the
new parameters, rule state is kept. A document that does not validate is refused whole
(logged, counted); the last good rules stay in force. A registry row whose params do not
validate (the registry validates on write; this is a row written around it) is left out
alone, logged and counted: its device then counts as not configured.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
import yaml
from prometheus_client import Counter, Gauge

from ganzhi import device_params
from ganzhi.contracts import DeviceClass
from ganzhi.observability import get_logger
from ganzhi.settings import ColdChainRuleSettings, HealthRuleSettings
from stream.rules.model import CLASSES, RegisteredDevice, Registry, Rules, RulesDoc, RulesError

log = get_logger(__name__)

RELOADS = Counter("ganzhi_stream_rules_reloads_total", "Rules model (re)loads applied")
RELOAD_ERRORS = Counter(
    "ganzhi_stream_rules_reload_errors_total", "Rules model changes refused (invalid)")
LOADED_AT = Gauge("ganzhi_stream_rules_loaded_timestamp_seconds",
                  "When the rules model in force was loaded")
REGISTRY_INVALID = Gauge(
    "ganzhi_stream_registry_params_invalid",
    "Registry devices whose params do not validate, left out of the rules model")

SCOPES = ("defaults", "site", "device")
_SELECT = ("SELECT device_class, scope, scope_key, params FROM rule_config"
           " ORDER BY device_class, scope, scope_key")
_SELECT_DEVICES = ("SELECT site_id, device_id, device_class, params FROM devices"
                   " ORDER BY site_id, device_id")


def parse_doc(data: Any, where: str) -> RulesDoc:
    if data is None:
        return RulesDoc()
    try:
        return RulesDoc.model_validate(data)
    except ValueError as exc:
        raise RulesError(f"{where}: {exc}") from exc


def read_file(path: Path) -> RulesDoc:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"{path}: {exc}") from exc
    return parse_doc(data, str(path))


def doc_from_rows(rows: Iterable[tuple[str, str, str, Any]]) -> RulesDoc:
    data: dict[str, dict[str, Any]] = {c: {} for c in CLASSES}
    for cls, scope, key, params in rows:
        section = data[cls]
        if scope == "defaults":
            section["defaults"] = params
        else:
            section.setdefault("sites" if scope == "site" else "devices", {})[key] = params
    return parse_doc(data, "rule_config")


def rows_from_doc(doc: RulesDoc) -> list[tuple[str, str, str, dict[str, Any]]]:
    rows: list[tuple[str, str, str, dict[str, Any]]] = []
    for cls in CLASSES:
        section = getattr(doc, cls)
        if section.defaults:
            rows.append((cls, "defaults", "", section.defaults))
        rows += [(cls, "site", k, v) for k, v in sorted(section.sites.items())]
        rows += [(cls, "device", k, v) for k, v in sorted(section.devices.items())]
    return rows


def read_rows(dsn: str) -> tuple[str, list[tuple[str, str, str, Any]]]:
    """The table's rows and a digest of them (the change detector)."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(_SELECT).fetchall()
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    return digest, rows


def _digest(rows: Any) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def read_sources(dsn: str) -> tuple[str, list[tuple[str, str, str, Any]],
                                    list[tuple[str, str, str, Any]]]:
    """The ``rule_config`` rows and the registry's ``devices`` rows, read together, and
    one digest of both (the change detector)."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(_SELECT).fetchall()
        try:
            devices = conn.execute(_SELECT_DEVICES).fetchall()
        except psycopg.errors.UndefinedTable:  # a database before the registry migration
            conn.rollback()
            devices = []
    return _digest([rows, devices]), rows, devices


def registry_from_rows(rows: Iterable[tuple[str, str, str, Any]]
                       ) -> tuple[Registry, list[str]]:
    """The registry's device parameters, validated per row, and the refusals (``site/dev:
    reason``) of rows left out. Devices of a class no rule reads are left out silently."""
    known = {c.value for c in DeviceClass}
    out: dict[tuple[str, str], RegisteredDevice] = {}
    errors: list[str] = []
    for site_id, device_id, cls, params in rows:
        if cls not in known:
            continue
        try:
            model = device_params.validate(cls, params)
        except ValueError as exc:
            errors.append(f"{site_id}/{device_id} ({cls}): {exc}")
            continue
        out[(site_id, device_id)] = RegisteredDevice(DeviceClass(cls), model)
    return out, errors


def replace_db(dsn: str, doc: RulesDoc, who: str) -> int:
    """Make the table hold exactly ``doc`` (one transaction); returns the row count."""
    Rules(doc)  # refuse an invalid document before touching the table
    rows = rows_from_doc(doc)
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("DELETE FROM rule_config")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO rule_config (device_class, scope, scope_key, params, updated_by)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(c, s, k, json.dumps(p), who) for c, s, k, p in rows])
    return len(rows)


class RulesProvider:
    def __init__(self, path: Path | None, dsn: str | None,
                 cold_base: ColdChainRuleSettings, health_base: HealthRuleSettings) -> None:
        self._path, self._dsn = path, dsn
        self._cold_base, self._health_base = cold_base, health_base
        self._file_stamp: str | None = None
        self._file_doc = RulesDoc()
        self._db_digest: str | None = None
        self._db_doc = RulesDoc()
        self._registry: Registry = {}
        self.rules = Rules(RulesDoc(), cold_base, health_base)

    def _file_changed(self) -> bool:
        if self._path is None:
            return False
        stamp = hashlib.sha256(self._path.read_bytes()).hexdigest()
        if stamp == self._file_stamp:
            return False
        self._file_stamp = stamp  # an invalid file is reported once, not on every poll
        self._file_doc = read_file(self._path)
        return True

    def _db_changed(self) -> bool:
        if self._dsn is None:
            return False
        digest, rows, devices = read_sources(self._dsn)
        if digest == self._db_digest:
            return False
        self._db_digest = digest
        registry, errors = registry_from_rows(devices)
        REGISTRY_INVALID.set(len(errors))
        for error in errors:
            log.error("registry_params_invalid", detail="device left out of the rules model",
                      error=error)
        self._registry = registry
        self._db_doc = doc_from_rows(rows)
        return True

    def _compile(self) -> Rules:
        return Rules(self._file_doc.overlay(self._db_doc), self._cold_base,
                     self._health_base, self._registry)

    def load(self) -> Rules:
        """First load, at start: an error here stops the worker with the reason."""
        self._file_changed()
        self._db_changed()
        self.rules = self._compile()
        RELOADS.inc()
        LOADED_AT.set_to_current_time()
        return self.rules

    def refresh(self) -> bool:
        """Reload if the file or the table changed; True when new rules are in force."""
        try:
            changed = self._file_changed() | self._db_changed()
            if not changed:
                return False
            rules = self._compile()
        except (OSError, psycopg.OperationalError) as exc:  # unreadable for now
            log.warning("rules_source_unavailable", detail="keeping the rules in force",
                        error=str(exc).splitlines()[0][:300])
            return False
        except (RulesError, psycopg.Error) as exc:
            RELOAD_ERRORS.inc()
            log.error("rules_change_refused", detail="keeping the rules in force",
                      error=str(exc))
            return False
        self.rules = rules
        RELOADS.inc()
        LOADED_AT.set_to_current_time()
        log.info("rules_reloaded", file=str(self._path) if self._path else None,
                 db_rows=len(rows_from_doc(self._db_doc)), registry_devices=len(self._registry))
        return True
