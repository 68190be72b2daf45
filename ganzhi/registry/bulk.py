"""Import a whole file of sites, or of one site's devices: all or nothing.

Every row is checked first (its fields, then its jurisdiction, its id and the caller's
scope); one bad row refuses the file with every problem found, by row and column
(:class:`~ganzhi.registry.tabular.FileRefused`), and nothing is written. A good file is
written in one transaction: new rows inserted, changed rows updated, unchanged rows left
alone (no write, no audit row), so importing the same file again changes nothing.

Only the columns the file has are compared and written: a file without ``contact_phone``
leaves the phone numbers as they are; an empty cell in a column it has empties the field.
Device params: a ``params`` column holds a JSON object; ``params.<key>`` columns set one
key each on top of it (or on top of the stored params when there is no ``params``
column; an empty cell removes the key).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from psycopg import AsyncConnection, errors
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError

from ganzhi.access import Scope
from ganzhi.audit import redact
from ganzhi.registry import Conflict
from ganzhi.registry.models import SITE_FIELDS, DeviceIn, SiteIn
from ganzhi.registry.store import (
    _DEVICE_AUDIT,
    _fetch,
    _site,
    _site_audit,
    site_may_be_added,
)
from ganzhi.registry.tabular import FileRefused, RowError, Table, header_errors

Conn = AsyncConnection[Any]
M = TypeVar("M", bound=BaseModel)

SITE_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id", "site_id", "编号", "场所编号", "站点编号"),
    "jurisdiction_id": ("jurisdiction_id", "jurisdiction", "辖区", "辖区编号"),
    "name": ("name", "名称", "场所名称", "单位名称"),
    "category": ("category", "类别", "类型"),
    "address": ("address", "地址"),
    "licence_no": ("licence_no", "license_no", "licence", "统一社会信用代码", "许可证号"),
    "contact_name": ("contact_name", "contact", "联系人"),
    "contact_phone": ("contact_phone", "phone", "联系电话", "电话"),
}
SITE_REQUIRED = ("id", "jurisdiction_id", "name", "category")
DEVICE_COLUMNS: dict[str, tuple[str, ...]] = {
    "device_id": ("device_id", "id", "设备编号"),
    "device_class": ("device_class", "class", "设备类型"),
    "model": ("model", "型号"),
    "location": ("location", "位置", "安装位置"),
    "firmware": ("firmware", "固件", "固件版本"),
    "params": ("params", "参数"),
}
DEVICE_REQUIRED = ("device_id", "device_class")
PARAM_PREFIX = "params."


class ImportReport(BaseModel):
    """What an import did (or, with ``dry_run``, would do)."""

    rows: int
    created: list[str]
    updated: list[str]
    unchanged: int
    dry_run: bool


def _aliases(columns: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    return {alias: name for name, aliases in columns.items() for alias in aliases}


def _model_errors(number: int, exc: ValidationError, columns: Mapping[str, str],
                  default_column: str | None = None) -> list[RowError]:
    """Pydantic's errors as row errors named by the file's own column names."""
    out = []
    for e in exc.errors(include_url=False):
        field = str(e["loc"][0]) if e["loc"] else default_column
        reason = "required" if e["type"] == "missing" else str(e["msg"])
        out.append(RowError(number, columns.get(field or "", field),
                            reason.removeprefix("Value error, ")))
    return out


def _first_seen(rows: Iterable[tuple[int, str]], column: str) -> list[RowError]:
    first: dict[str, int] = {}
    out = []
    for number, key in rows:
        if key in first:
            out.append(RowError(number, column, f"{key} is also on row {first[key]}"))
        else:
            first[key] = number
    return out


def _cells(cells: Mapping[str, str], mapping: Mapping[str, str]) -> dict[str, str]:
    """Non-empty cells by field name."""
    return {mapping[c]: v for c, v in cells.items() if c in mapping and v != ""}


def _beyond(number: int, cells: Mapping[str, str]) -> list[RowError]:
    if cells.get(""):
        return [RowError(number, None, f"cells beyond the header's columns: {cells['']}")]
    return []


# --- sites (pure) ----------------------------------------------------------------------


def parse_sites(table: Table) -> tuple[list[tuple[int, SiteIn]], set[str], list[RowError]]:
    """The file's sites by row number, the fields its columns name, and its problems."""
    mapping, problems = header_errors(table, _aliases(SITE_COLUMNS), SITE_REQUIRED)
    if problems:
        return [], set(), problems
    names = {v: k for k, v in mapping.items()}
    out: list[tuple[int, SiteIn]] = []
    for number, cells in table.rows:
        problems += _beyond(number, cells)
        try:
            out.append((number, SiteIn.model_validate(_cells(cells, mapping))))
        except ValidationError as exc:
            problems += _model_errors(number, exc, names)
    problems += _first_seen(((n, s.id) for n, s in out), names["id"])
    problems.sort(key=lambda e: e.row)
    return out, set(mapping.values()), problems


# --- devices (pure) --------------------------------------------------------------------


def _param_value(text: str) -> Any:
    """``-18`` a number, ``true`` a boolean, ``["a"]`` a list, anything else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _params(number: int, cells: Mapping[str, str], mapping: Mapping[str, str],
            stored: Mapping[str, Any] | None) -> dict[str, Any] | RowError | None:
    """The row's params; None when the file has no params columns (keep them)."""
    base: dict[str, Any]
    if "params" in mapping.values():
        column = next(c for c, f in mapping.items() if f == "params")
        text = cells.get(column, "")
        try:
            base = json.loads(text) if text else {}
        except ValueError as exc:
            return RowError(number, column, f"not JSON: {exc}")
        if not isinstance(base, dict):
            return RowError(number, column, "must be a JSON object")
    elif any(f.startswith(PARAM_PREFIX) for f in mapping.values()):
        base = dict(stored or {})
    else:
        return None
    for column, field in mapping.items():
        if field.startswith(PARAM_PREFIX):
            key = field.removeprefix(PARAM_PREFIX)
            text = cells.get(column, "")
            if text:
                base[key] = _param_value(text)
            else:
                base.pop(key, None)
    return base


def device_ids(table: Table) -> list[str]:
    """The device ids a file names (to look up what is stored before parsing it)."""
    mapping, _ = header_errors(table, _aliases(DEVICE_COLUMNS), (), (PARAM_PREFIX,))
    column = next((c for c, f in mapping.items() if f == "device_id"), None)
    return [cells.get(column, "") for _, cells in table.rows] if column else []


def parse_devices(table: Table, stored: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> tuple[list[tuple[int, DeviceIn]], set[str], list[RowError]]:
    """The file's devices by row number, the fields its columns name, and its problems.
    ``stored``: the params stored per device id, which ``params.<key>`` columns change."""
    mapping, problems = header_errors(table, _aliases(DEVICE_COLUMNS), DEVICE_REQUIRED,
                                      (PARAM_PREFIX,))
    if problems:
        return [], set(), problems
    names = {v: k for k, v in mapping.items()}
    out: list[tuple[int, DeviceIn]] = []
    for number, cells in table.rows:
        problems += _beyond(number, cells)
        data: dict[str, Any] = {k: v for k, v in _cells(cells, mapping).items()
                                if k != "params" and not k.startswith(PARAM_PREFIX)}
        params = _params(number, cells, mapping, (stored or {}).get(data.get("device_id", "")))
        if isinstance(params, RowError):
            problems.append(params)
            continue
        if params is not None:
            data["params"] = params
        try:
            out.append((number, DeviceIn.model_validate(data)))
        except ValidationError as exc:
            problems += _model_errors(number, exc, names, default_column="params")
    problems += _first_seen(((n, d.device_id) for n, d in out), names["device_id"])
    problems.sort(key=lambda e: e.row)
    fields = {f for f in mapping.values() if not f.startswith(PARAM_PREFIX)}
    if len(fields) < len(set(mapping.values())):
        fields.add("params")
    return out, fields, problems


# --- writing -------------------------------------------------------------------------

_AUDIT = ("INSERT INTO audit_log (actor, action, entity, entity_id, site_id,"
          " jurisdiction_path, before, after) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)")


def _json(values: dict[str, Any] | None) -> Jsonb | None:
    if values is None:
        return None
    return Jsonb(redact(values), dumps=lambda o: json.dumps(o, default=str,
                                                             ensure_ascii=False))


def _plan(new: Sequence[tuple[str, dict[str, Any]]], stored: Mapping[str, dict[str, Any]],
          fields: Sequence[str]) -> tuple[list[str], list[str], int]:
    """Which keys are created, which updated (a compared field differs), how many not."""
    created, updated, same = [], [], 0
    for key, values in new:
        before = stored.get(key)
        if before is None:
            created.append(key)
        elif any(before[f] != values[f] for f in fields):
            updated.append(key)
        else:
            same += 1
    return created, updated, same


async def _write(conn: Conn, query: str, rows: list[list[Any]]) -> None:
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(query, rows)


def _refuse_on(problems: list[RowError]) -> None:
    if problems:
        raise FileRefused(sorted(problems, key=lambda e: e.row))


# --- sites ---------------------------------------------------------------------------


async def _site_problems(conn: Conn, scope: Scope, rows: list[tuple[int, SiteIn]],
                         stored: Mapping[str, dict[str, Any]], nodes: Mapping[str, str]
                         ) -> list[RowError]:
    where, params = scope.site_filter("id")
    visible = {r["id"] for r in await _fetch(
        conn, f"SELECT id FROM sites WHERE id = ANY(%s) AND {where}",
        [list(stored), *params])}
    problems = []
    for number, site in rows:
        if site.jurisdiction_id not in nodes:
            problems.append(RowError(number, "jurisdiction_id", f"no jurisdiction"
                                     f" {site.jurisdiction_id} within your scope"))
        if site.id in stored and site.id not in visible:
            problems.append(RowError(number, "id", f"site id {site.id} is taken by a site"
                                     " outside your scope"))
        elif site.id not in stored and not site_may_be_added(scope, site.id):
            problems.append(RowError(number, "id", f"you may not add site {site.id}"))
    return problems


async def import_sites(conn: Conn, scope: Scope, actor: str, table: Table, *,
                       dry_run: bool = False) -> ImportReport:
    """Upsert the file's sites, all or nothing (:class:`FileRefused` with every problem)."""
    rows, present, problems = parse_sites(table)
    _refuse_on(problems)
    fields = [f for f in SITE_FIELDS if f in present]
    try:
        async with conn.transaction():
            return await _import_sites(conn, scope, actor, rows, fields, dry_run)
    except (errors.UniqueViolation, errors.ForeignKeyViolation) as exc:
        raise Conflict(f"the registry changed during the import, try again: {exc}") from None


async def _import_sites(conn: Conn, scope: Scope, actor: str, rows: list[tuple[int, SiteIn]],
                        fields: list[str], dry_run: bool) -> ImportReport:
    ids = [s.id for _, s in rows]
    where, params = scope.path_filter("path")
    nodes = {r["id"]: r["path"] for r in await _fetch(
        conn, f"SELECT id, path FROM jurisdictions WHERE id = ANY(%s) AND {where}",
        [sorted({s.jurisdiction_id for _, s in rows}), *params])}
    stored = {r["id"]: r for r in await _fetch(
        conn, f"SELECT id, {', '.join(SITE_FIELDS)} FROM sites WHERE id = ANY(%s)"
        " ORDER BY id FOR UPDATE", [ids])}
    _refuse_on(await _site_problems(conn, scope, rows, stored, nodes))
    new = [(s.id, s.model_dump(mode="json")) for _, s in rows]
    created, updated, same = _plan(new, stored, fields)
    report = ImportReport(rows=len(rows), created=created, updated=updated, unchanged=same,
                          dry_run=dry_run)
    if dry_run:
        return report
    values = dict(new)
    await _write(conn, f"INSERT INTO sites (id, {', '.join(SITE_FIELDS)})"
                 f" VALUES (%s{', %s' * len(SITE_FIELDS)})",
                 [[k, *(values[k][f] for f in SITE_FIELDS)] for k in created])
    await _write(conn, f"UPDATE sites SET ({', '.join(fields)}, updated_at) ="
                 f" ({'%s, ' * len(fields)}now()) WHERE id = %s",
                 [[*(values[k][f] for f in fields), k] for k in updated])
    audits = [[actor, "site.create", "site", k, k, nodes[values[k]["jurisdiction_id"]], None,
               _json({"id": k, **{f: values[k][f] for f in SITE_FIELDS}})] for k in created]
    for k in updated:
        before = _site_audit(stored[k])
        after = {**before, **{f: values[k][f] for f in fields}}
        audits.append([actor, "site.update", "site", k, k,
                       nodes[after["jurisdiction_id"]], _json(before), _json(after)])
    await _write(conn, _AUDIT, audits)
    return report


# --- devices -------------------------------------------------------------------------

_DEVICE_FIELDS = ("device_class", "model", "location", "firmware", "params")


def _device_row(values: dict[str, Any], fields: Iterable[str]) -> list[Any]:
    return [Jsonb(values[f]) if f == "params" else values[f] for f in fields]


async def import_devices(conn: Conn, scope: Scope, actor: str, site_id: str, table: Table,
                         *, dry_run: bool = False) -> ImportReport:
    """Upsert the file's devices of one site the caller sees, all or nothing."""
    try:
        async with conn.transaction():
            site = await _site(conn, scope, site_id, lock=True)
            stored = {r["device_id"]: r for r in await _fetch(
                conn, f"SELECT {', '.join(_DEVICE_AUDIT)} FROM devices WHERE site_id = %s"
                " AND device_id = ANY(%s) ORDER BY device_id FOR UPDATE",
                [site_id, device_ids(table)])}
            rows, present, problems = parse_devices(
                table, {k: v["params"] for k, v in stored.items()})
            _refuse_on(problems)
            return await _write_devices(conn, actor, site, rows, stored, present, dry_run)
    except errors.UniqueViolation as exc:
        raise Conflict(f"the registry changed during the import, try again: {exc}") from None


async def _write_devices(conn: Conn, actor: str, site: dict[str, Any],
                         rows: list[tuple[int, DeviceIn]], stored: Mapping[str, Any],
                         present: set[str], dry_run: bool) -> ImportReport:
    site_id, path = site["id"], site["jurisdiction_path"]
    fields = [f for f in _DEVICE_FIELDS if f in present]
    new = [(d.device_id, {"site_id": site_id, **d.model_dump(mode="json")}) for _, d in rows]
    created, updated, same = _plan(new, stored, fields)
    report = ImportReport(rows=len(rows), created=created, updated=updated, unchanged=same,
                          dry_run=dry_run)
    if dry_run:
        return report
    values = dict(new)
    await _write(conn, "INSERT INTO devices (site_id, device_id, device_class, model, location,"
                 " firmware, params) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 [[site_id, k, *_device_row(values[k], _DEVICE_FIELDS)] for k in created])
    await _write(conn, f"UPDATE devices SET ({', '.join(fields)}, updated_at) ="
                 f" ({'%s, ' * len(fields)}now()) WHERE site_id = %s AND device_id = %s",
                 [[*_device_row(values[k], fields), site_id, k] for k in updated])
    audits = [[actor, "device.create", "device", f"{site_id}/{k}", site_id, path, None,
               _json({f: values[k][f] for f in _DEVICE_AUDIT})] for k in created]
    for k in updated:
        before = {f: stored[k][f] for f in _DEVICE_AUDIT}
        after = {**before, **{f: values[k][f] for f in fields}}
        audits.append([actor, "device.update", "device", f"{site_id}/{k}", site_id, path,
                       _json(before), _json(after)])
    await _write(conn, _AUDIT, audits)
    return report
