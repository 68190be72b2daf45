"""Create, read, change and delete jurisdiction nodes, sites and devices within a scope.

Every function takes the caller's :class:`~ganzhi.access.Scope` and filters its rows with
it in SQL: what lies outside is answered :class:`NotFound`, as if it did not exist. Every
change writes its audit row (before, after) in the transaction of the change.

The tree: a node's ``path`` is its ancestors' ids and its own, ``/gd/sz/ft/``. Moving a
node rewrites the paths of its whole subtree in one statement, under a lock that
serialises changes of the tree's shape (so two moves cannot make a cycle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ganzhi.access import Scope, subtree_prefix
from ganzhi.audit import audit
from ganzhi.registry import Conflict, Forbidden, Invalid, NotFound
from ganzhi.registry.models import (
    SITE_FIELDS,
    DeviceIn,
    DeviceOut,
    DevicePatch,
    DeviceStatus,
    JurisdictionIn,
    JurisdictionOut,
    JurisdictionPatch,
    SiteIn,
    SiteOut,
    SitePage,
    SitePatch,
    checked_params,
    incomplete,
)

Conn = AsyncConnection[Any]
Row = dict[str, Any]

# Serialises changes of the tree's shape (create, move, delete of nodes).
_TREE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('ganzhi.registry.tree'))"
OFFLINE_RULE = "device.offline"


# --- jurisdictions ---------------------------------------------------------------------

_NODE_COLUMNS = "id, parent_id, name, level, path, created_at, updated_at"


async def _fetch(conn: Conn, query: str, params: Sequence[Any]) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def _one(conn: Conn, query: str, params: Sequence[Any]) -> Row | None:
    rows = await _fetch(conn, query, params)
    return rows[0] if rows else None


async def _node(conn: Conn, scope: Scope, node_id: str, *, lock: bool = False) -> Row:
    where, params = scope.path_filter("path")
    row = await _one(
        conn, f"SELECT {_NODE_COLUMNS} FROM jurisdictions WHERE id = %s AND {where}"
        + (" FOR UPDATE" if lock else ""), [node_id, *params])
    if row is None:
        raise NotFound(f"jurisdiction {node_id} not found")
    return row


def _tree_writer(scope: Scope) -> None:
    if scope.site_ids is not None:
        raise Forbidden("a caller limited to some sites cannot change the jurisdiction tree")


async def list_jurisdictions(conn: Conn, scope: Scope,
                             under: str | None = None) -> list[JurisdictionOut]:
    """The caller's subtree (or the subtree of ``under`` within it), by path."""
    where, params = scope.path_filter("path")
    if under is not None:
        node = await _node(conn, scope, under)
        where += " AND path LIKE %s"
        params.append(subtree_prefix(node["path"]))
    rows = await _fetch(conn, f"SELECT {_NODE_COLUMNS} FROM jurisdictions WHERE {where}"
                        " ORDER BY path", params)
    return [JurisdictionOut.model_validate(r) for r in rows]


async def get_jurisdiction(conn: Conn, scope: Scope, node_id: str) -> JurisdictionOut:
    return JurisdictionOut.model_validate(await _node(conn, scope, node_id))


async def create_jurisdiction(conn: Conn, scope: Scope, actor: str,
                              node: JurisdictionIn) -> JurisdictionOut:
    """A new node under ``parent_id`` (which the caller must see), or a root node (only
    for a caller who sees everything)."""
    _tree_writer(scope)
    async with conn.transaction():
        await conn.execute(_TREE_LOCK)
        if node.parent_id is None:
            if scope.path is not None:
                raise Forbidden("only a caller at a root node may create a root node")
            path = f"/{node.id}/"
        else:
            path = (await _node(conn, scope, node.parent_id))["path"] + f"{node.id}/"
        taken = await _one(conn, "SELECT 1 FROM jurisdictions WHERE id = %s", [node.id])
        if taken:
            raise Conflict(f"jurisdiction id {node.id} is taken")
        row = await _one(
            conn, "INSERT INTO jurisdictions (id, parent_id, name, level, path)"
            f" VALUES (%s, %s, %s, %s, %s) RETURNING {_NODE_COLUMNS}",
            [node.id, node.parent_id, node.name, node.level, path])
        assert row is not None
        await audit(conn, actor, "jurisdiction.create", "jurisdiction", node.id,
                    after=row, jurisdiction_path=path)
    return JurisdictionOut.model_validate(row)


async def _new_path(conn: Conn, scope: Scope, node: Row, parent_id: str | None) -> str:
    """Where a move puts ``node``; refuses a cycle and a root made by a non-root caller."""
    if scope.path == node["path"]:
        raise Forbidden("the node a caller is bound to cannot be moved by that caller")
    if parent_id is None:
        if scope.path is not None:
            raise Forbidden("only a caller at a root node may make a root node")
        return f"/{node['id']}/"
    parent = await _node(conn, scope, parent_id)
    if parent["path"].startswith(node["path"]):
        raise Conflict(f"cannot move {node['id']} under its own subtree ({parent_id})")
    return str(parent["path"]) + f"{node['id']}/"


async def _move(conn: Conn, node: Row, parent_id: str | None, new_path: str) -> int:
    """Rewrite the paths of the node's whole subtree in one statement."""
    cur = await conn.execute(
        "UPDATE jurisdictions SET path = %s || substr(path, %s),"
        " parent_id = CASE WHEN id = %s THEN %s ELSE parent_id END,"
        " updated_at = now() WHERE path LIKE %s",
        [new_path, len(node["path"]) + 1, node["id"], parent_id,
         subtree_prefix(node["path"])])
    return cur.rowcount


async def update_jurisdiction(conn: Conn, scope: Scope, actor: str, node_id: str,
                              patch: JurisdictionPatch) -> JurisdictionOut:
    """Rename, relabel and/or move a node with its subtree."""
    _tree_writer(scope)
    changes = patch.changes()
    async with conn.transaction():
        await conn.execute(_TREE_LOCK)
        before = await _node(conn, scope, node_id, lock=True)
        moved = 0
        if "parent_id" in changes and changes["parent_id"] != before["parent_id"]:
            new_path = await _new_path(conn, scope, before, changes["parent_id"])
            moved = await _move(conn, before, changes["parent_id"], new_path)
        fields = {k: v for k, v in changes.items() if k in ("name", "level")}
        if fields:
            sets = ", ".join(f"{k} = %s" for k in fields)
            await conn.execute(f"UPDATE jurisdictions SET {sets}, updated_at = now()"
                               " WHERE id = %s", [*fields.values(), node_id])
        after = await _one(conn, f"SELECT {_NODE_COLUMNS} FROM jurisdictions WHERE id = %s",
                           [node_id])
        assert after is not None
        if moved or any(before[k] != after[k] for k in fields):
            await audit(conn, actor, "jurisdiction.move" if moved else "jurisdiction.update",
                        "jurisdiction", node_id, before=before,
                        after={**after, "subtree_nodes": moved} if moved else after,
                        jurisdiction_path=after["path"])
    return JurisdictionOut.model_validate(after)


async def delete_jurisdiction(conn: Conn, scope: Scope, actor: str, node_id: str) -> None:
    """Only an empty node: no child nodes, no sites, nothing else bound to it."""
    _tree_writer(scope)
    async with conn.transaction():
        await conn.execute(_TREE_LOCK)
        node = await _node(conn, scope, node_id, lock=True)
        if scope.path == node["path"]:
            raise Forbidden("the node a caller is bound to cannot be deleted by that caller")
        counts = await _one(
            conn, "SELECT (SELECT count(*) FROM jurisdictions WHERE parent_id = %s) AS nodes,"
            " (SELECT count(*) FROM sites WHERE jurisdiction_id = %s) AS sites",
            [node_id, node_id])
        assert counts is not None
        if counts["nodes"] or counts["sites"]:
            raise Conflict(f"jurisdiction {node_id} is not empty: {counts['nodes']} child"
                           f" nodes, {counts['sites']} sites")
        try:
            async with conn.transaction():
                await conn.execute("DELETE FROM jurisdictions WHERE id = %s", [node_id])
        except errors.ForeignKeyViolation:
            raise Conflict(f"jurisdiction {node_id} is still in use (staff accounts or API"
                           " keys are bound to it)") from None
        await audit(conn, actor, "jurisdiction.delete", "jurisdiction", node_id,
                    before=node, jurisdiction_path=node["path"])


# --- sites ---------------------------------------------------------------------------

_SITE_COLUMNS = (
    "s.id, s.jurisdiction_id, j.path AS jurisdiction_path, s.name, s.category, s.address,"
    " s.licence_no, s.contact_name, s.contact_phone, s.created_at, s.updated_at")
_SITE_FROM = "FROM sites s JOIN jurisdictions j ON j.id = s.jurisdiction_id"


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def _site(conn: Conn, scope: Scope, site_id: str, *, lock: bool = False) -> Row:
    where, params = scope.site_filter("s.id")
    row = await _one(conn, f"SELECT {_SITE_COLUMNS} {_SITE_FROM} WHERE s.id = %s AND {where}"
                     + (" FOR UPDATE OF s" if lock else ""), [site_id, *params])
    if row is None:
        raise NotFound(f"site {site_id} not found")
    return row


def site_may_be_added(scope: Scope, site_id: str) -> bool:
    """A caller limited to some sites may only add those (their node is checked apart)."""
    return scope.site_ids is None or site_id in scope.site_ids


async def list_sites(conn: Conn, scope: Scope, *, jurisdiction: str | None = None,
                     category: str | None = None, q: str | None = None,
                     after: str | None = None, limit: int = 50) -> SitePage:
    """By id; ``jurisdiction``: its whole subtree; ``q``: in the name, licence or id."""
    where, params = scope.site_filter("s.id")
    clauses = [where]
    if jurisdiction is not None:
        node = await _node(conn, scope, jurisdiction)
        clauses.append("j.path LIKE %s")
        params.append(subtree_prefix(node["path"]))
    if category is not None:
        clauses.append("s.category = %s")
        params.append(category)
    if q:
        clauses.append("(s.name ILIKE %s OR s.licence_no ILIKE %s OR s.id ILIKE %s)")
        params.extend([_like(q)] * 3)
    if after is not None:
        clauses.append("s.id > %s")
        params.append(after)
    rows = await _fetch(conn, f"SELECT {_SITE_COLUMNS} {_SITE_FROM}"
                        f" WHERE {' AND '.join(clauses)} ORDER BY s.id LIMIT %s",
                        [*params, limit + 1])
    items = [SiteOut.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return SitePage(items=items, next_after=items[-1].id if more else None)


async def get_site(conn: Conn, scope: Scope, site_id: str) -> SiteOut:
    return SiteOut.model_validate(await _site(conn, scope, site_id))


def _site_audit(row: Row) -> Row:
    return {k: row[k] for k in ("id", *SITE_FIELDS)}


async def create_site(conn: Conn, scope: Scope, actor: str, site: SiteIn) -> SiteOut:
    """A site under a node the caller sees; its id must be free (across all scopes)."""
    if not site_may_be_added(scope, site.id):
        raise Forbidden(f"this caller may not add site {site.id}")
    async with conn.transaction():
        node = await _node(conn, scope, site.jurisdiction_id)
        values = site.model_dump(mode="json")
        try:
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO sites (id, {', '.join(SITE_FIELDS)})"
                    f" VALUES (%s{', %s' * len(SITE_FIELDS)})",
                    [site.id, *(values[k] for k in SITE_FIELDS)])
        except errors.UniqueViolation:
            raise Conflict(f"site id {site.id} is taken") from None
        row = await _site(conn, scope, site.id)
        await audit(conn, actor, "site.create", "site", site.id, after=_site_audit(row),
                    site_id=site.id, jurisdiction_path=node["path"])
    return SiteOut.model_validate(row)


async def update_site(conn: Conn, scope: Scope, actor: str, site_id: str,
                      patch: SitePatch) -> SiteOut:
    """Change fields; a new ``jurisdiction_id`` must be a node the caller sees."""
    changes = patch.changes()
    async with conn.transaction():
        before = await _site(conn, scope, site_id, lock=True)
        if "jurisdiction_id" in changes:
            await _node(conn, scope, changes["jurisdiction_id"])
        changed = {k: v for k, v in changes.items() if before[k] != v}
        if not changed:
            return SiteOut.model_validate(before)
        sets = ", ".join(f"{k} = %s" for k in changed)
        await conn.execute(f"UPDATE sites SET {sets}, updated_at = now() WHERE id = %s",
                           [*changed.values(), site_id])
        after = await _site(conn, Scope(), site_id)
        await audit(conn, actor, "site.update", "site", site_id, before=_site_audit(before),
                    after=_site_audit(after), site_id=site_id,
                    jurisdiction_path=after["jurisdiction_path"])
    return SiteOut.model_validate(after)


async def delete_site(conn: Conn, scope: Scope, actor: str, site_id: str) -> None:
    """Only a site without devices."""
    async with conn.transaction():
        before = await _site(conn, scope, site_id, lock=True)
        count = await _one(conn, "SELECT count(*) AS n FROM devices WHERE site_id = %s",
                           [site_id])
        if count and count["n"]:
            raise Conflict(f"site {site_id} still has {count['n']} devices: delete them first")
        await conn.execute("DELETE FROM sites WHERE id = %s", [site_id])
        await audit(conn, actor, "site.delete", "site", site_id, before=_site_audit(before),
                    site_id=site_id, jurisdiction_path=before["jurisdiction_path"])


# --- devices -------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """When a device counts as offline without an open ``device.offline`` alert: silent
    for ``expected_interval_s * missed_intervals`` (the stream's device-health defaults)."""

    expected_interval_s: float = 60.0
    missed_intervals: float = 3.0

    @property
    def stale_after_s(self) -> float:
        return self.expected_interval_s * self.missed_intervals


def device_status(last_seen: datetime | None, offline_alert: bool, now: datetime,
                  stale_after_s: float) -> DeviceStatus:
    if offline_alert:
        return "offline"
    if last_seen is None:
        return "unknown"
    return "offline" if (now - last_seen).total_seconds() > stale_after_s else "online"


_DEVICE_COLUMNS = (
    "d.site_id, d.device_id, d.device_class, d.model, d.location, d.firmware, d.params,"
    " d.last_seen AS reported_at, d.mqtt_username, d.revoked_at, d.created_at, d.updated_at")
# The latest reading, the latest event of one of its own alerts (device.offline is no sign
# of life), and whether a device.offline alert is open.
_DEVICE_LIFE = (
    ", (SELECT r.time FROM readings r WHERE r.site_id = d.site_id AND r.device_id ="
    " d.device_id ORDER BY r.time DESC LIMIT 1) AS last_reading,"
    " (SELECT max(e.at) FROM alerts a JOIN alert_events e ON e.alert_id = a.id"
    " WHERE a.site_id = d.site_id AND a.device_id = d.device_id"
    f" AND a.rule_id <> '{OFFLINE_RULE}') AS last_event,"
    " EXISTS (SELECT 1 FROM alerts a WHERE a.site_id = d.site_id AND a.device_id ="
    f" d.device_id AND a.rule_id = '{OFFLINE_RULE}' AND a.status = 'open') AS offline_alert")
_DEVICE_AUDIT = ("site_id", "device_id", "device_class", "model", "location", "firmware",
                 "params")


def _device_out(row: Row, health: Health, now: datetime) -> DeviceOut:
    seen = [t for t in (row["reported_at"], row.get("last_reading"), row.get("last_event"))
            if t is not None]
    last_seen = max(seen) if seen else None
    return DeviceOut(
        **{k: row[k] for k in (*_DEVICE_AUDIT, "created_at", "updated_at")},
        status=device_status(last_seen, bool(row.get("offline_alert")), now,
                             health.stale_after_s),
        last_seen=last_seen,
        incomplete=incomplete(row["device_class"], row["params"]),
        provisioned=row["mqtt_username"] is not None and row["revoked_at"] is None)


async def _devices(conn: Conn, site_id: str, device_id: str | None = None, *,
                   life: bool = True, lock: bool = False) -> list[Row]:
    query = f"SELECT {_DEVICE_COLUMNS}{_DEVICE_LIFE if life else ''} FROM devices d" \
            " WHERE d.site_id = %s"
    params: list[Any] = [site_id]
    if device_id is not None:
        query += " AND d.device_id = %s"
        params.append(device_id)
    query += " ORDER BY d.device_id" + (" FOR UPDATE OF d" if lock else "")
    return await _fetch(conn, query, params)


async def _device(conn: Conn, site_id: str, device_id: str, *, life: bool = True,
                  lock: bool = False) -> Row:
    rows = await _devices(conn, site_id, device_id, life=life, lock=lock)
    if not rows:
        raise NotFound(f"device {site_id}/{device_id} not found")
    return rows[0]


async def list_devices(conn: Conn, scope: Scope, site_id: str,
                       health: Health = Health()) -> list[DeviceOut]:
    await _site(conn, scope, site_id)
    now = datetime.now(UTC)
    return [_device_out(r, health, now) for r in await _devices(conn, site_id)]


async def get_device(conn: Conn, scope: Scope, site_id: str, device_id: str,
                     health: Health = Health()) -> DeviceOut:
    await _site(conn, scope, site_id)
    return _device_out(await _device(conn, site_id, device_id), health, datetime.now(UTC))


def _device_audit(row: Row) -> Row:
    return {k: row[k] for k in _DEVICE_AUDIT}


async def create_device(conn: Conn, scope: Scope, actor: str, site_id: str,
                        device: DeviceIn, health: Health = Health()) -> DeviceOut:
    async with conn.transaction():
        site = await _site(conn, scope, site_id, lock=True)
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO devices (site_id, device_id, device_class, model, location,"
                    " firmware, params) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [site_id, device.device_id, device.device_class.value, device.model,
                     device.location, device.firmware, Jsonb(device.params)])
        except errors.UniqueViolation:
            raise Conflict(f"device {site_id}/{device.device_id} exists") from None
        row = await _device(conn, site_id, device.device_id)
        await audit(conn, actor, "device.create", "device", f"{site_id}/{device.device_id}",
                    after=_device_audit(row), site_id=site_id,
                    jurisdiction_path=site["jurisdiction_path"])
    return _device_out(row, health, datetime.now(UTC))


async def update_device(conn: Conn, scope: Scope, actor: str, site_id: str, device_id: str,
                        patch: DevicePatch, health: Health = Health()) -> DeviceOut:
    changes = patch.changes()
    async with conn.transaction():
        site = await _site(conn, scope, site_id)
        before = await _device(conn, site_id, device_id, life=False, lock=True)
        if "device_class" in changes or "params" in changes:
            merged = {**before, **changes}
            try:
                changes["params"] = checked_params(merged["device_class"], merged["params"])
            except ValueError as exc:
                raise Invalid(str(exc)) from None
        changed = {k: v for k, v in changes.items() if before[k] != v}
        if changed:
            sets = ", ".join(f"{k} = %s" for k in changed)
            values = [Jsonb(v) if k == "params" else v for k, v in changed.items()]
            await conn.execute(f"UPDATE devices SET {sets}, updated_at = now()"
                               " WHERE site_id = %s AND device_id = %s",
                               [*values, site_id, device_id])
        after = await _device(conn, site_id, device_id)
        if changed:
            await audit(conn, actor, "device.update", "device", f"{site_id}/{device_id}",
                        before=_device_audit(before), after=_device_audit(after),
                        site_id=site_id, jurisdiction_path=site["jurisdiction_path"])
    return _device_out(after, health, datetime.now(UTC))


async def delete_device(conn: Conn, scope: Scope, actor: str, site_id: str,
                        device_id: str) -> None:
    """Not while it holds live MQTT credentials: revoke them first."""
    async with conn.transaction():
        site = await _site(conn, scope, site_id)
        before = await _device(conn, site_id, device_id, life=False, lock=True)
        if before["mqtt_username"] is not None and before["revoked_at"] is None:
            raise Conflict(f"device {site_id}/{device_id} holds live MQTT credentials:"
                           " revoke them first")
        await conn.execute("DELETE FROM devices WHERE site_id = %s AND device_id = %s",
                           [site_id, device_id])
        await audit(conn, actor, "device.delete", "device", f"{site_id}/{device_id}",
                    before=_device_audit(before), site_id=site_id,
                    jurisdiction_path=site["jurisdiction_path"])
