"""The registry: the jurisdiction tree, its sites and their devices; spreadsheet imports.

Reads need the ``read`` permission, changes ``edit_registry``. A caller sees, makes and
changes only nodes and sites within its scope; anything outside answers 404, as if it did
not exist. Every change is in the audit log with its before and after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, UploadFile

from api.deps import Caller, ConnDep, ReaderDep, SettingsDep, require
from api.errors import unprocessable, unprocessable_rows
from ganzhi.access import Permission
from ganzhi.registry import Conflict, Forbidden, NotFound, store
from ganzhi.registry.bulk import ImportReport, import_devices, import_sites
from ganzhi.registry.models import (
    JURISDICTION_ID_PATTERN,
    SITE_ID_PATTERN,
    Category,
    DeviceIn,
    DeviceOut,
    DevicePatch,
    JurisdictionIn,
    JurisdictionOut,
    JurisdictionPatch,
    SiteIn,
    SiteOut,
    SitePage,
    SitePatch,
)
from ganzhi.registry.tabular import MAX_BYTES, FileRefused, Table, read_table
from ganzhi.settings import Settings

EditorDep = Annotated[Caller, Depends(require(Permission.EDIT_REGISTRY))]
NodeId = Annotated[str, Path(pattern=JURISDICTION_ID_PATTERN)]
SiteId = Annotated[str, Path(pattern=SITE_ID_PATTERN)]
DeviceId = Annotated[str, Path(pattern=SITE_ID_PATTERN)]
DryRun = Annotated[bool, Query(description="Check the file, write nothing")]

router = APIRouter(prefix="/api/v1", tags=["registry"])

_READ: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not signed in"},
    403: {"description": "Lacks the read permission"},
    404: {"description": "No such node, site or device within the caller's scope"},
}
_WRITE: dict[int | str, dict[str, Any]] = {
    **_READ,
    403: {"description": "Lacks edit_registry, or not the caller's to do"},
    409: {"description": "The registry's state does not allow it"},
    422: {"description": "Bad input, with the reason"},
}
_IMPORT: dict[int | str, dict[str, Any]] = {
    **_WRITE,
    422: {"description": "The file is refused as a whole: ``detail.errors`` lists every"
                         " problem by row and column; nothing was written"},
}


@contextmanager
def registry_errors() -> Iterator[None]:
    """NotFound 404, Forbidden 403, Conflict 409, a refused file or bad input 422."""
    try:
        yield
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except Forbidden as exc:
        raise HTTPException(403, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    except FileRefused as exc:
        raise unprocessable_rows("the file was refused, nothing was written",
                                 [vars(e) for e in exc.errors]) from None
    except ValueError as exc:
        raise unprocessable(str(exc)) from None


def _health(settings: Settings) -> store.Health:
    h = settings.stream.device_health
    return store.Health(h.expected_interval_s, h.missed_intervals)


async def _table(file: UploadFile) -> Table:
    data = await file.read(MAX_BYTES + 1)
    with registry_errors():
        return read_table(data, file.filename, file.content_type)


# --- jurisdictions ---------------------------------------------------------------------


@router.get("/jurisdictions", response_model=list[JurisdictionOut], responses=_READ)
async def list_jurisdictions(
    conn: ConnDep, caller: ReaderDep,
    under: Annotated[str | None, Query(pattern=JURISDICTION_ID_PATTERN,
                                       description="Only this node's subtree")] = None,
) -> list[JurisdictionOut]:
    """The caller's part of the tree, by path (a parent before its children)."""
    with registry_errors():
        return await store.list_jurisdictions(conn, caller.scope, under)


@router.post("/jurisdictions", response_model=JurisdictionOut, status_code=201,
             responses=_WRITE)
async def create_jurisdiction(conn: ConnDep, caller: EditorDep,
                              body: JurisdictionIn) -> JurisdictionOut:
    """A node under one the caller sees; a root node only by a caller at a root."""
    with registry_errors():
        return await store.create_jurisdiction(conn, caller.scope, caller.actor, body)


@router.get("/jurisdictions/{node_id}", response_model=JurisdictionOut, responses=_READ)
async def get_jurisdiction(conn: ConnDep, caller: ReaderDep, node_id: NodeId
                           ) -> JurisdictionOut:
    with registry_errors():
        return await store.get_jurisdiction(conn, caller.scope, node_id)


@router.patch("/jurisdictions/{node_id}", response_model=JurisdictionOut, responses=_WRITE)
async def update_jurisdiction(conn: ConnDep, caller: EditorDep, node_id: NodeId,
                              body: JurisdictionPatch) -> JurisdictionOut:
    """Rename or relabel; a new ``parent_id`` moves the node with its whole subtree (never
    under itself)."""
    with registry_errors():
        return await store.update_jurisdiction(conn, caller.scope, caller.actor, node_id,
                                               body)


@router.delete("/jurisdictions/{node_id}", status_code=204, responses=_WRITE)
async def delete_jurisdiction(conn: ConnDep, caller: EditorDep, node_id: NodeId) -> Response:
    """Only an empty node: no child nodes, sites, accounts or keys."""
    with registry_errors():
        await store.delete_jurisdiction(conn, caller.scope, caller.actor, node_id)
    return Response(status_code=204)


# --- sites ---------------------------------------------------------------------------


@router.get("/sites", response_model=SitePage, responses=_READ)
async def list_sites(
    conn: ConnDep, caller: ReaderDep,
    jurisdiction: Annotated[str | None, Query(pattern=JURISDICTION_ID_PATTERN,
                                              description="This node's whole subtree")] = None,
    category: Category | None = None,
    q: Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00]*$",
                                   description="In the name, licence number or id")] = None,
    after: Annotated[str | None, Query(pattern=SITE_ID_PATTERN,
                                       description="next_after of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SitePage:
    """Sites by id, a page at a time (keyset)."""
    with registry_errors():
        return await store.list_sites(conn, caller.scope, jurisdiction=jurisdiction,
                                      category=category, q=q, after=after, limit=limit)


@router.post("/sites", response_model=SiteOut, status_code=201, responses=_WRITE)
async def create_site(conn: ConnDep, caller: EditorDep, body: SiteIn) -> SiteOut:
    with registry_errors():
        return await store.create_site(conn, caller.scope, caller.actor, body)


@router.post("/sites/import", response_model=ImportReport, responses=_IMPORT)
async def import_sites_file(conn: ConnDep, caller: EditorDep, file: UploadFile,
                            dry_run: DryRun = False) -> ImportReport:
    """A CSV or XLSX file of sites (columns: id, jurisdiction_id, name, category, and
    optionally address, licence_no, contact_name, contact_phone; Chinese headers too):
    all or nothing; importing it again changes nothing."""
    table = await _table(file)
    with registry_errors():
        return await import_sites(conn, caller.scope, caller.actor, table, dry_run=dry_run)


@router.get("/sites/{site_id}", response_model=SiteOut, responses=_READ)
async def get_site(conn: ConnDep, caller: ReaderDep, site_id: SiteId) -> SiteOut:
    with registry_errors():
        return await store.get_site(conn, caller.scope, site_id)


@router.patch("/sites/{site_id}", response_model=SiteOut, responses=_WRITE)
async def update_site(conn: ConnDep, caller: EditorDep, site_id: SiteId,
                      body: SitePatch) -> SiteOut:
    with registry_errors():
        return await store.update_site(conn, caller.scope, caller.actor, site_id, body)


@router.delete("/sites/{site_id}", status_code=204, responses=_WRITE)
async def delete_site(conn: ConnDep, caller: EditorDep, site_id: SiteId) -> Response:
    """Only a site without devices."""
    with registry_errors():
        await store.delete_site(conn, caller.scope, caller.actor, site_id)
    return Response(status_code=204)


# --- devices -------------------------------------------------------------------------


@router.get("/sites/{site_id}/devices", response_model=list[DeviceOut], responses=_READ)
async def list_devices(conn: ConnDep, caller: ReaderDep, settings: SettingsDep,
                       site_id: SiteId) -> list[DeviceOut]:
    """The site's devices with their status, last sign of life and missing params."""
    with registry_errors():
        return await store.list_devices(conn, caller.scope, site_id, _health(settings))


@router.post("/sites/{site_id}/devices", response_model=DeviceOut, status_code=201,
             responses=_WRITE)
async def create_device(conn: ConnDep, caller: EditorDep, settings: SettingsDep,
                        site_id: SiteId, body: DeviceIn) -> DeviceOut:
    """Register a device (its MQTT credentials come from provisioning)."""
    with registry_errors():
        return await store.create_device(conn, caller.scope, caller.actor, site_id, body,
                                         _health(settings))


@router.post("/sites/{site_id}/devices/import", response_model=ImportReport,
             responses=_IMPORT)
async def import_devices_file(conn: ConnDep, caller: EditorDep, site_id: SiteId,
                              file: UploadFile, dry_run: DryRun = False) -> ImportReport:
    """A CSV or XLSX file of the site's devices (columns: device_id, device_class, and
    optionally model, location, firmware, params as a JSON object, params.<key>): all or
    nothing; importing it again changes nothing."""
    table = await _table(file)
    with registry_errors():
        return await import_devices(conn, caller.scope, caller.actor, site_id, table,
                                    dry_run=dry_run)


@router.get("/sites/{site_id}/devices/{device_id}", response_model=DeviceOut,
            responses=_READ)
async def get_device(conn: ConnDep, caller: ReaderDep, settings: SettingsDep,
                     site_id: SiteId, device_id: DeviceId) -> DeviceOut:
    with registry_errors():
        return await store.get_device(conn, caller.scope, site_id, device_id,
                                      _health(settings))


@router.patch("/sites/{site_id}/devices/{device_id}", response_model=DeviceOut,
              responses=_WRITE)
async def update_device(conn: ConnDep, caller: EditorDep, settings: SettingsDep,
                        site_id: SiteId, device_id: DeviceId, body: DevicePatch) -> DeviceOut:
    """Change fields; class and params are checked together."""
    with registry_errors():
        return await store.update_device(conn, caller.scope, caller.actor, site_id,
                                         device_id, body, _health(settings))


@router.delete("/sites/{site_id}/devices/{device_id}", status_code=204, responses=_WRITE)
async def delete_device(conn: ConnDep, caller: EditorDep, site_id: SiteId,
                        device_id: DeviceId) -> Response:
    """Not while it holds live MQTT credentials (revoke them first)."""
    with registry_errors():
        await store.delete_device(conn, caller.scope, caller.actor, site_id, device_id)
    return Response(status_code=204)
