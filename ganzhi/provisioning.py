"""Device provisioning: broker credentials for a registered device, and taking them away.

``provision`` gives a device of the registry (``devices`` table) its MQTT account on the
broker (Mosquitto's dynamic-security plugin, :mod:`ganzhi.broker.dynsec`): username
``{site_id}/{device_id}``, a random password, a forced client id equal to the username,
and a role of its own that may publish on its five channels and nothing else (no
subscription at all). The password is returned once, with the edge box's config snippet;
the platform keeps no copy (the plugin keeps a salted PBKDF2-SHA512 hash), the database
records ``mqtt_username`` and ``provisioned_at``, and the audit log the action without
the secret. ``revoke`` deletes the account on the broker, which disconnects the device's
sessions at once, and records ``revoked_at``.

Order: the device row is locked (``FOR UPDATE``) in a transaction, the broker is
changed, then the row and its audit record are written and committed. A broker failure
changes nothing; a database failure after the broker's change leaves at worst a broker
account whose password nobody holds, which the next ``provision`` or ``revoke`` fixes
(both are idempotent on the broker).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from ganzhi.access import EVERYTHING, Scope
from ganzhi.audit import audit
from ganzhi.broker import dynsec
from ganzhi.contracts.payloads import DeviceClass
from ganzhi.mqtt_auth import CredentialError, device_username, generate_password
from ganzhi.settings import MqttSettings


class ProvisioningError(Exception):
    """A refused or failed provisioning action; the message says why and holds no secret."""


class InvalidDevice(ProvisioningError, ValueError):
    """Site or device id outside the contract's id pattern."""


class DeviceNotFound(ProvisioningError, LookupError):
    """No such device in the registry, or one outside the caller's scope (alike)."""


class ProvisioningConflict(ProvisioningError):
    """The device's credential state does not allow it (already provisioned, or none)."""


class BrokerUnavailable(ProvisioningError):
    """The broker could not be reached, refused the admin, or refused a command."""


@dataclass(frozen=True)
class Issued:
    """A new credential. ``password`` exists only here: show it once, keep it nowhere."""

    site_id: str
    device_id: str
    username: str
    password: str
    edge_config: str
    provisioned_at: datetime
    rotated: bool

    def __repr__(self) -> str:  # never print the password by accident
        return f"Issued(username={self.username!r}, rotated={self.rotated})"


@dataclass(frozen=True)
class Revoked:
    site_id: str
    device_id: str
    username: str
    revoked_at: datetime


# --- the broker side (blocking; run in a thread) ----------------------------------------


def broker_issue(settings: MqttSettings, site_id: str, device_id: str, password: str) -> None:
    """Create (or reset: new password, sessions kicked, role and client id restored) the
    device's account and role on the broker."""
    username, role = device_username(site_id, device_id), dynsec.device_role(site_id, device_id)
    acls = dynsec.device_acls(site_id, device_id)
    with dynsec.DynsecAdmin(settings) as admin:
        if dynsec.failed(admin.run([dynsec.create_role(role, acls)])[0]):
            admin.check([dynsec.modify_role(role, acls)])
        answer = admin.run([dynsec.create_client(username, password, role, clientid=username)])
        if dynsec.failed(answer[0]):
            admin.check(dynsec.reset_client(username, password, role, clientid=username))


def broker_remove(settings: MqttSettings, site_id: str, device_id: str) -> bool:
    """Delete the device's account (its sessions are disconnected at once) and role.
    False when the broker had no such account."""
    username, role = device_username(site_id, device_id), dynsec.device_role(site_id, device_id)
    with dynsec.DynsecAdmin(settings) as admin:
        client, _role = admin.run([dynsec.delete_client(username), dynsec.delete_role(role)])
    return dynsec.failed(client) is None


async def _on_broker(fn: Any, *args: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args)
    except dynsec.DynsecError as exc:
        raise BrokerUnavailable(str(exc)) from None


# --- the edge box's config --------------------------------------------------------------


def edge_config(settings: MqttSettings, site_id: str, device_id: str,
                device_class: str) -> str:
    """The part of the edge box's YAML (edge/config.py) for this device, to merge into
    its file. The password goes into ``password_file`` on the box, never into the YAML."""
    username = device_username(site_id, device_id)
    entry: dict[str, Any] = {
        "device_id": device_id,
        "username": username,
        "password_file": f"{settings.edge_secrets_dir.rstrip('/')}/{device_id}",
    }
    broker: dict[str, Any] = {"host": settings.edge_host or settings.host,
                              "port": settings.edge_port, "tls": settings.edge_tls}
    if settings.edge_tls:
        broker["ca_file"] = settings.edge_ca_file
    if device_class == DeviceClass.KITCHEN_CAMERA:
        section = "cameras"
        entry["source"] = "rtsp://CAMERA-ADDRESS/stream"
    else:
        section = "devices"
        entry["device_class"] = device_class
        entry["source"] = {"type": "simulator"}
    body = yaml.safe_dump({"site_id": site_id, "broker": broker, section: [entry]},
                          sort_keys=False, allow_unicode=True)
    return (
        f"# ganzhi edge config for {username}: merge into the box's YAML file.\n"
        f"# Put the password (shown once) alone in {entry['password_file']}, mode 0600.\n"
        "# Replace the source with the real one (see deploy/edge/*.yaml).\n" + body
    )


# --- the registry side ------------------------------------------------------------------


def _username(site_id: str, device_id: str) -> str:
    try:
        return device_username(site_id, device_id)
    except CredentialError as exc:
        raise InvalidDevice(str(exc)) from None


async def _locked_device(conn: AsyncConnection[Any], scope: Scope, site_id: str,
                         device_id: str) -> dict[str, Any]:
    where, params = scope.site_filter("site_id")
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT site_id, device_id, device_class, mqtt_username, provisioned_at, revoked_at"
        f" FROM devices WHERE site_id = %s AND device_id = %s AND {where} FOR UPDATE",
        [site_id, device_id, *params])
    row = await cur.fetchone()
    if row is None:
        raise DeviceNotFound(f"no device {site_id}/{device_id}")
    return row


def _live(row: dict[str, Any]) -> bool:
    return row["provisioned_at"] is not None and row["revoked_at"] is None


def _state(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("mqtt_username", "provisioned_at", "revoked_at")}


async def provision(conn: AsyncConnection[Any], settings: MqttSettings, actor: str,
                    site_id: str, device_id: str, *, scope: Scope = EVERYTHING,
                    rotate: bool = False) -> Issued:
    """Issue the device's broker credential. A device with a live one is refused
    (:class:`ProvisioningConflict`) unless ``rotate``: a new password, the old sessions
    disconnected."""
    username = _username(site_id, device_id)
    async with conn.transaction():
        row = await _locked_device(conn, scope, site_id, device_id)
        if _live(row) and not rotate:
            raise ProvisioningConflict(
                f"device {username} is already provisioned (rotate to issue a new password)")
        password = generate_password()
        await _on_broker(broker_issue, settings, site_id, device_id, password)
        cur = await conn.execute(
            "UPDATE devices SET mqtt_username = %s, provisioned_at = now(), revoked_at = NULL,"
            " updated_at = now() WHERE site_id = %s AND device_id = %s"
            " RETURNING provisioned_at", (username, site_id, device_id))
        stamp = await cur.fetchone()
        assert stamp is not None
        rotated = _live(row)
        after = {"mqtt_username": username, "provisioned_at": stamp[0], "revoked_at": None}
        await audit(conn, actor, "device.rotate" if rotated else "device.provision", "device",
                    username, before=_state(row), after=after, site_id=site_id)
    config = edge_config(settings, site_id, device_id, row["device_class"])
    return Issued(site_id, device_id, username, password, config, stamp[0], rotated)


async def revoke(conn: AsyncConnection[Any], settings: MqttSettings, actor: str,
                 site_id: str, device_id: str, *, scope: Scope = EVERYTHING) -> Revoked:
    """Take the device's credential away: deleted on the broker, which disconnects its
    sessions at once and refuses its next CONNECT."""
    username = _username(site_id, device_id)
    async with conn.transaction():
        row = await _locked_device(conn, scope, site_id, device_id)
        if not _live(row):
            raise ProvisioningConflict(f"device {username} has no credential to revoke")
        await _on_broker(broker_remove, settings, site_id, device_id)
        cur = await conn.execute(
            "UPDATE devices SET revoked_at = now(), updated_at = now()"
            " WHERE site_id = %s AND device_id = %s RETURNING revoked_at",
            (site_id, device_id))
        stamp = await cur.fetchone()
        assert stamp is not None
        after = {**_state(row), "revoked_at": stamp[0]}
        await audit(conn, actor, "device.revoke", "device", username, before=_state(row),
                    after=after, site_id=site_id)
    return Revoked(site_id, device_id, username, stamp[0])
