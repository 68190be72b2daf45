"""Device provisioning: a registered device's MQTT credential, issued once and revoked.

``provision`` answers the password exactly once, with the edge box's config snippet;
the platform keeps no copy. ``revoke`` deletes the credential on the broker, which
disconnects the device at once. Both need the ``provision`` permission, and a device
outside the caller's scope is answered 404 like an unknown one. See ganzhi/provisioning.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from api.deps import Caller, ConnDep, SettingsDep, require
from api.errors import unprocessable
from ganzhi import provisioning
from ganzhi.access import Permission

router = APIRouter(prefix="/api/v1/sites/{site_id}/devices/{device_id}",
                   tags=["provisioning"])

ProvisionDep = Annotated[Caller, Depends(require(Permission.PROVISION))]
SiteId = Annotated[str, Path(description="The site's id")]
DeviceId = Annotated[str, Path(description="The device's id within the site")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid access token or API key"},
    403: {"description": "The caller lacks the provision permission"},
    404: {"description": "No such device, or not in the caller's scope"},
    422: {"description": "Invalid site or device id"},
    503: {"description": "Broker unreachable, admin not configured, or command refused"},
}


class CredentialOut(BaseModel):
    username: str
    password: str = Field(description="Shown only this once; the platform keeps no copy.")
    edge_config: str = Field(description="YAML for the edge box's config file.")
    provisioned_at: datetime
    rotated: bool


class RevokedOut(BaseModel):
    username: str
    revoked_at: datetime


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except provisioning.DeviceNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except provisioning.ProvisioningConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except provisioning.InvalidDevice as exc:
        raise unprocessable(str(exc), ("path",)) from None
    except provisioning.BrokerUnavailable as exc:
        raise HTTPException(503, f"provisioning unavailable: {exc}") from None


@router.post("/provision", response_model=CredentialOut, status_code=201,
             responses={**_ERRORS, 409: {"description": "Already provisioned (use rotate)"}})
async def provision_device(
    conn: ConnDep, settings: SettingsDep, caller: ProvisionDep, site_id: SiteId,
    device_id: DeviceId,
    rotate: Annotated[bool, Query(description="Issue a new password for a provisioned "
                                  "device; its open sessions are disconnected.")] = False,
) -> CredentialOut:
    """Create the device's broker credential (publish on its own topics only)."""
    with _errors():
        issued = await provisioning.provision(conn, settings.mqtt, caller.actor, site_id,
                                              device_id, scope=caller.scope, rotate=rotate)
    return CredentialOut(username=issued.username, password=issued.password,
                         edge_config=issued.edge_config,
                         provisioned_at=issued.provisioned_at, rotated=issued.rotated)


@router.post("/revoke", response_model=RevokedOut,
             responses={**_ERRORS, 409: {"description": "No credential to revoke"}})
async def revoke_device(conn: ConnDep, settings: SettingsDep, caller: ProvisionDep,
                        site_id: SiteId, device_id: DeviceId) -> RevokedOut:
    """Delete the device's broker credential: its connection is dropped at once."""
    with _errors():
        revoked = await provisioning.revoke(conn, settings.mqtt, caller.actor, site_id,
                                            device_id, scope=caller.scope)
    return RevokedOut(username=revoked.username, revoked_at=revoked.revoked_at)
