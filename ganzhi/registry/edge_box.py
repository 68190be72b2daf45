"""Register what an edge box declares: its site (if new) and each device or camera with
the params its rules need (``params:`` in the box file, see ``edge/config.py``).

The box file is the installer's description of the site; importing it is how those
params reach the stream (the agent never sends them, so a device cannot decide how it
is judged). Existing devices get the box's params and class; nothing is removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ganzhi.access import Scope
from ganzhi.contracts.payloads import DeviceClass
from ganzhi.registry import NotFound
from ganzhi.registry.models import DeviceIn, DevicePatch, SiteIn
from ganzhi.registry.store import (
    Conn,
    create_device,
    create_site,
    get_device,
    get_site,
    update_device,
)

_CATEGORY = {DeviceClass.COLD_STORE: "cold_store", DeviceClass.ELEVATOR: "elevator_site",
             DeviceClass.KITCHEN_CAMERA: "restaurant"}


@dataclass
class BoxImport:
    site_created: bool = False
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


Entry = tuple[str, str, DeviceClass, dict[str, Any]]  # site, device, class, params


async def register_box(conn: Conn, scope: Scope, actor: str, site_id: str,
                       entries: Sequence[Entry], *, jurisdiction_id: str,
                       site_name: str | None = None) -> BoxImport:
    """Create the box's site under ``jurisdiction_id`` unless it exists, then create or
    update each of its devices (audited, scoped like every registry change). ``entries``:
    ``edge.config.AgentConfig.registry_entries()`` of the box file."""
    out = BoxImport()
    try:
        await get_site(conn, scope, site_id)
    except NotFound:
        classes = [c for _, _, c, _ in entries]
        category = _CATEGORY.get(classes[0], "other") if classes else "other"
        await create_site(conn, scope, actor, SiteIn.model_validate({
            "id": site_id, "jurisdiction_id": jurisdiction_id,
            "name": site_name or site_id, "category": category}))
        out.site_created = True
    for entry_site, device_id, device_class, params in entries:
        if entry_site != site_id:
            raise ValueError(f"{entry_site}/{device_id} is not of site {site_id}")
        try:
            await get_device(conn, scope, site_id, device_id)
        except NotFound:
            await create_device(conn, scope, actor, site_id, DeviceIn(
                device_id=device_id, device_class=device_class, params=params))
            out.created.append(device_id)
            continue
        await update_device(conn, scope, actor, site_id, device_id, DevicePatch(
            device_class=device_class, params=params))
        out.updated.append(device_id)
    return out
