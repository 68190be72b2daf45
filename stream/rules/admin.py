"""``ganzhi rules``: check a rules file, show what is in force, edit the rules table."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
from pathlib import Path
from typing import Any

import psycopg
import yaml

from ganzhi.settings import Settings, StreamSettings
from stream.rules.model import CLASSES, Rules, RulesError
from stream.rules.sources import SCOPES, RulesProvider, doc_from_rows, read_file, replace_db


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "value") and isinstance(getattr(obj, "value", None), str):
        return obj.value  # enums
    return obj


def effective(rules: Rules, site_id: str, device_id: str) -> dict[str, Any]:
    """The parameters one device gets, per class, after every override."""
    cs, el = rules.cold_store(site_id, device_id), rules.elevator(site_id, device_id)
    return {
        "cold_store": {"allowed_lateness_s": cs.allowed_lateness_s, **_plain(cs.params)},
        "elevator": {"allowed_lateness_s": el.allowed_lateness_s, **_plain(el.params)},
        "device_health": _plain(rules.health(site_id, device_id)) or "off",
    }


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="ganzhi rules", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    chk = sub.add_parser("check", help="validate a rules file")
    chk.add_argument("file", type=Path)
    show = sub.add_parser("show", help="the rules in force (file + table), or one device's")
    show.add_argument("--device", metavar="SITE/DEVICE",
                      help="print the effective parameters of this device")
    imp = sub.add_parser("import", help="replace the rules table with a file's content")
    imp.add_argument("file", type=Path)
    put = sub.add_parser("set", help="set one entry of the rules table")
    put.add_argument("device_class", choices=CLASSES)
    put.add_argument("scope", choices=SCOPES)
    put.add_argument("key", nargs="?", default="", help="site, or site/device ('' for defaults)")
    put.add_argument("params", help='YAML or JSON mapping, e.g. "{door_open: {limit_s: 600}}"')
    rm = sub.add_parser("delete", help="delete one entry of the rules table")
    rm.add_argument("device_class", choices=CLASSES)
    rm.add_argument("scope", choices=SCOPES)
    rm.add_argument("key", nargs="?", default="")
    a = parser.parse_args(argv)
    s = settings.stream
    dsn = settings.db.dsn.get_secret_value()
    try:
        if a.cmd == "check":
            Rules(read_file(a.file), s.cold_chain, s.device_health)
            print(f"{a.file}: ok")
        elif a.cmd == "show":
            provider = RulesProvider(s.rules_file, dsn if s.rules_from_db else None,
                                     s.cold_chain, s.device_health)
            rules = provider.load()
            if a.device:
                site, _, device = a.device.partition("/")
                print(_dump(effective(rules, site, device)))
            else:
                print(_dump(rules.doc.model_dump(exclude_defaults=True)))
        elif a.cmd == "import":
            n = replace_db(dsn, read_file(a.file), getpass.getuser())
            print(f"rule_config now holds {n} entries from {a.file}")
        else:
            _edit(dsn, a, s)
    except (RulesError, psycopg.Error, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}")
        return 1
    return 0


def _edit(dsn: str, a: argparse.Namespace, s: StreamSettings) -> None:
    key = a.key if a.scope != "defaults" else ""
    with psycopg.connect(dsn) as conn, conn.transaction():
        rows = conn.execute("SELECT device_class, scope, scope_key, params FROM rule_config"
                            " FOR UPDATE").fetchall()
        current = {(c, sc, k): p for c, sc, k, p in rows}
        if a.cmd == "delete":
            current.pop((a.device_class, a.scope, key), None)
        else:
            params = yaml.safe_load(a.params)
            if not isinstance(params, dict):
                raise RulesError(f"params: expected a mapping, got {params!r}")
            current[(a.device_class, a.scope, key)] = params
        Rules(doc_from_rows([(c, sc, k, p) for (c, sc, k), p in current.items()]),
              s.cold_chain, s.device_health)  # refuse what the worker would refuse
        if a.cmd == "delete":
            conn.execute("DELETE FROM rule_config WHERE device_class = %s AND scope = %s"
                         " AND scope_key = %s", (a.device_class, a.scope, key))
        else:
            conn.execute(
                "INSERT INTO rule_config (device_class, scope, scope_key, params, updated_by)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (device_class, scope, scope_key)"
                " DO UPDATE SET params = EXCLUDED.params, updated_at = now(),"
                " updated_by = EXCLUDED.updated_by",
                (a.device_class, a.scope, key, json.dumps(params), getpass.getuser()))
    print(f"{a.cmd}: {a.device_class} {a.scope} {key or '(defaults)'}")

