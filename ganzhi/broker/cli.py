"""``ganzhi devices provision|revoke SITE DEVICE``: device credentials from the shell.

Needs the database (GANZHI_DB__DSN) and the broker's admin account
(GANZHI_MQTT__HOST/PORT, GANZHI_MQTT__ADMIN_USERNAME/ADMIN_PASSWORD). The password is
printed once on stdout, or written to a new 0600 file with ``--password-file``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganzhi.settings import Settings

if TYPE_CHECKING:  # (psycopg is imported when a command runs: none on an edge box)
    from psycopg import AsyncConnection


def _actor(a: argparse.Namespace) -> str:
    return str(a.by) if a.by else f"cli:{getpass.getuser()}"


def _run(s: Settings, command: str,
         work: Callable[[AsyncConnection[Any]], Awaitable[int]]) -> int:
    from psycopg import AsyncConnection

    from ganzhi import provisioning

    async def go() -> int:
        dsn = s.db.dsn.get_secret_value()
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await work(conn)

    try:
        return asyncio.run(go())
    except (provisioning.ProvisioningError, OSError) as exc:
        print(f"ganzhi devices {command}: {exc}", file=sys.stderr)
        return 1


def _write_secret(path: Path, password: str) -> None:
    """A new file, mode 0600 from its creation; an existing one is never overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")


def _provision(s: Settings, a: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection[Any]) -> int:
        from ganzhi import provisioning

        issued = await provisioning.provision(conn, s.mqtt, _actor(a), a.site, a.device,
                                              rotate=a.rotate)
        verb = "rotated" if issued.rotated else "provisioned"
        print(f"{verb} {issued.username} at {issued.provisioned_at.isoformat()}")
        if a.password_file is not None:
            _write_secret(a.password_file, issued.password)
            print(f"password written to {a.password_file} (mode 0600)")
        else:
            print("password (shown only this once; keep it secret):", file=sys.stderr)
            print(f"password: {issued.password}")
        print(issued.edge_config, end="")
        return 0

    return _run(s, "provision", work)


def _revoke(s: Settings, a: argparse.Namespace) -> int:
    async def work(conn: AsyncConnection[Any]) -> int:
        from ganzhi import provisioning

        revoked = await provisioning.revoke(conn, s.mqtt, _actor(a), a.site, a.device)
        print(f"revoked {revoked.username} at {revoked.revoked_at.isoformat()};"
              " its connections were dropped")
        return 0

    return _run(s, "revoke", work)


def add_device_parsers(sub: Any) -> None:
    """``devices provision`` and ``devices revoke`` under the main parser's ``sub``."""
    devices = sub.add_parser("devices", help="device MQTT credentials: provision, revoke")
    dsub = devices.add_subparsers(dest="action", required=True)
    prov = dsub.add_parser("provision", help="issue a registered device's MQTT password")
    rev = dsub.add_parser("revoke", help="delete it on the broker: the device is cut off")
    for p in (prov, rev):
        p.add_argument("site")
        p.add_argument("device")
        p.add_argument("--by", default=None, help="who (default: cli:<user>)")
    prov.add_argument("--rotate", action="store_true",
                      help="replace a live password (its sessions are disconnected)")
    prov.add_argument("--password-file", type=Path, default=None,
                      help="write the password to this new 0600 file instead of stdout")
    prov.set_defaults(fn=_provision)
    rev.set_defaults(fn=_revoke)
