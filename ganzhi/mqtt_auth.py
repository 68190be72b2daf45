"""MQTT identities and credentials for Mosquitto 2.0: password file, ACL, per-device secrets.

Identity scheme (see ``docs/edge-security-notes.md``):

* A device logs in with the username ``{site_id}/{device_id}`` and its own random password.
  The ACL has one ``pattern`` line per channel, ``pattern write ganzhi/v1/%u/<channel>``;
  Mosquitto substitutes the whole username for ``%u`` (it refuses only usernames holding
  ``+`` or ``#``), so the broker itself confines a device to its own site *and* device.
  The client id is not trusted (a client chooses it freely): the ACL never uses ``%c``.
* Service accounts (ingest, monitoring) have plain names without ``/``, so the device
  patterns expand for them to topics outside the device tree.

This module writes the password file itself in Mosquitto 2.0's PBKDF2-SHA512 format
(``$7$<iterations>$<salt>$<hash>``, what ``mosquitto_passwd`` writes), so a password never
appears on a command line; each new secret goes into its own file with mode 0600 and is
never printed or logged. After changing the password file, send the broker SIGHUP
(``systemctl reload mosquitto``): it re-reads the password file and the ACL.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ganzhi.contracts.topics import MQTT_ROOT, Channel, is_valid_id

# What mosquitto_passwd 2.0 uses; every password here is 256 random bits, so the
# iteration count adds nothing against guessing and only costs CPU at each CONNECT.
DEFAULT_ITERATIONS = 101
_SALT_BYTES = 12  # Mosquitto 2.0 rejects entries whose salt is not 12 bytes
_HASH_BYTES = 64
PASSWORD_BYTES = 32

DEFAULT_INGEST_USER = "ganzhi-ingest"
DEFAULT_SHARE_GROUP = "ganzhi-ingest"  # a guessable name (the old default); services refuse it
DEFAULT_MONITOR_USER = "ganzhi-monitor"
DEFAULT_ADMIN_USER = "ganzhi-admin"  # the dynamic-security plugin's admin (provisioning)

# Service account names: no '/', so device patterns (%u) never reach the device tree;
# no '+', '#' (Mosquitto denies them) and no ':' (the password file separator).
_SERVICE_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class CredentialError(ValueError):
    """A provisioning request that cannot be carried out (the message says why)."""


# --- identities -------------------------------------------------------------------------


def device_username(site_id: str, device_id: str) -> str:
    """The MQTT username of a device: ``{site_id}/{device_id}``."""
    for value in (site_id, device_id):
        if not is_valid_id(value):
            raise CredentialError(f"invalid id {value!r}: must match the contract's id pattern")
    return f"{site_id}/{device_id}"


def parse_device_username(username: str) -> tuple[str, str] | None:
    """``(site_id, device_id)`` for a device username, ``None`` for anything else."""
    parts = username.split("/")
    if len(parts) == 2 and all(is_valid_id(p) for p in parts):
        return parts[0], parts[1]
    return None


def check_service_username(username: str) -> str:
    if not _SERVICE_RE.match(username):
        raise CredentialError(
            f"invalid service account name {username!r}: lower-case letters, digits, "
            "'_', '.', '-', starting with a letter (no '/')"
        )
    return username


def generate_share_group() -> str:
    """An unguessable MQTT v5 shared-subscription group name for ingest.

    Mosquitto 2.0's acl_file cannot refuse a SUBSCRIBE: any client that knows the group
    name can join ingest's group, receive its turn of the messages, have delivery denied
    by the read ACL, and so make those messages vanish. A secret name closes that (set
    it as ``GANZHI_MQTT__SHARE_GROUP`` for ingest; share names cannot hold wildcards).
    """
    return f"ingest-{secrets.token_hex(16)}"


# --- password hashes --------------------------------------------------------------------


def generate_password(nbytes: int = PASSWORD_BYTES) -> str:
    """A random password (URL-safe base64: no ':' and nothing a shell or YAML mangles)."""
    return secrets.token_urlsafe(nbytes)


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """The password-file hash Mosquitto 2.0 reads: ``$7$iter$b64(salt)$b64(pbkdf2)``."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    if len(salt) != _SALT_BYTES:
        raise ValueError(f"salt must be {_SALT_BYTES} bytes")
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Check a password against a ``$7$`` (PBKDF2) or ``$6$`` (salted SHA-512) hash."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations = int(parts[2])
            salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(want))
        elif len(parts) == 4 and parts[1] == "6":
            salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            got = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


# --- password file ----------------------------------------------------------------------


def read_password_file(path: Path) -> dict[str, str]:
    """``username -> hash`` in file order; a missing file is empty. Comments are dropped."""
    entries: dict[str, str] = {}
    if not path.exists():
        return entries
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#") or ":" not in line:
            continue
        user, _, hashed = line.partition(":")
        entries[user.strip()] = hashed.strip()
    return entries


def _atomic_write(path: Path, data: str, mode: int) -> None:
    """Write via a temporary file in the same folder, fsync, rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_password_file(path: Path, entries: dict[str, str]) -> None:
    """Replace the password file atomically, keeping the mode (and owner) it had.

    A new file gets 0600. Mosquitto reads it after dropping to its own user: give it
    ``root:mosquitto`` and 0640 in production (the mode then stays on every update).
    """
    for user in entries:
        if ":" in user or "\n" in user or not user:
            raise CredentialError(f"invalid username {user!r}")
    mode, owner = 0o600, None
    if path.exists():
        st = path.stat()
        mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
    text = "".join(f"{user}:{hashed}\n" for user, hashed in entries.items())
    _atomic_write(path, text, mode)
    if owner is not None and os.geteuid() == 0:
        os.chown(path, *owner)


@contextlib.contextmanager
def _locked(passwd_file: Path) -> Iterator[None]:
    """One provisioning run at a time per password file."""
    passwd_file.parent.mkdir(parents=True, exist_ok=True)
    lock = passwd_file.with_name(passwd_file.name + ".lock")
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- secrets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """What a provisioning run made. The password itself is only in ``secret_path``."""

    username: str
    secret_path: Path
    rotated: bool


def device_secret_path(secrets_dir: Path, site_id: str, device_id: str) -> Path:
    return secrets_dir / "devices" / site_id / f"{device_id}.password"


def service_secret_path(secrets_dir: Path, username: str) -> Path:
    return secrets_dir / "services" / f"{username}.password"


def _private_dirs(secrets_dir: Path, leaf_dir: Path) -> None:
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    current = secrets_dir
    for part in leaf_dir.relative_to(secrets_dir).parts:
        current = current / part
        current.mkdir(mode=0o700, exist_ok=True)


def _provision(
    passwd_file: Path,
    username: str,
    secret_path: Path,
    secrets_dir: Path,
    *,
    rotate: bool,
    iterations: int,
) -> Credential:
    with _locked(passwd_file):
        entries = read_password_file(passwd_file)
        exists = username in entries
        if exists and not rotate:
            raise CredentialError(f"{username} already has a password (use rotate to replace it)")
        password = generate_password()
        _private_dirs(secrets_dir, secret_path.parent)
        # The new secret waits beside its final name until the broker's file has the hash:
        # a failure on the way leaves the old (still valid) secret in place.
        fd, tmp = tempfile.mkstemp(prefix=f".{secret_path.name}.", dir=secret_path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(password + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            entries[username] = hash_password(password, iterations=iterations)
            write_password_file(passwd_file, entries)
            os.replace(tmp, secret_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return Credential(username, secret_path, rotated=exists)


def add_device(
    passwd_file: Path,
    secrets_dir: Path,
    site_id: str,
    device_id: str,
    *,
    rotate: bool = False,
    iterations: int = DEFAULT_ITERATIONS,
) -> Credential:
    """Give a device a new random password; its secret goes to a 0600 file."""
    username = device_username(site_id, device_id)
    path = device_secret_path(secrets_dir, site_id, device_id)
    return _provision(
        passwd_file, username, path, secrets_dir, rotate=rotate, iterations=iterations
    )


def add_service(
    passwd_file: Path,
    secrets_dir: Path,
    username: str,
    *,
    rotate: bool = False,
    iterations: int = DEFAULT_ITERATIONS,
) -> Credential:
    """Give a service account (ingest, monitoring) a new random password."""
    check_service_username(username)
    path = service_secret_path(secrets_dir, username)
    return _provision(
        passwd_file, username, path, secrets_dir, rotate=rotate, iterations=iterations
    )


def remove_user(passwd_file: Path, username: str) -> bool:
    """Drop a username from the password file; False when it was not there.

    The broker refuses the account at the next CONNECT after a reload; a connection
    already open stays up until it ends (restart the broker to cut it at once).
    """
    with _locked(passwd_file):
        entries = read_password_file(passwd_file)
        if entries.pop(username, None) is None:
            return False
        write_password_file(passwd_file, entries)
        return True


# --- ACL --------------------------------------------------------------------------------


def render_acl(
    *,
    ingest_user: str = DEFAULT_INGEST_USER,
    monitor_user: str | None = DEFAULT_MONITOR_USER,
    bridges: Mapping[str, Sequence[str] | None] | None = None,
) -> str:
    """The broker's ACL file. It holds no per-device line: the patterns cover every device.
    ``bridges``: regional brokers bridged in (:mod:`ganzhi.broker.bridge`), region ->
    its sites (None: any)."""
    check_service_username(ingest_user)
    lines = [
        "# ganzhi MQTT ACL for Mosquitto 2.0 (written by ganzhi.mqtt_auth; edit the template",
        "# there, not this file). Reload the broker (SIGHUP) after changing it.",
        "#",
        "# Devices log in as '{site_id}/{device_id}'. %u is replaced by the whole username, so",
        "# each line below allows exactly ganzhi/v1/<own site>/<own device>/<channel>.",
        "# Devices read nothing. The client id is chosen by the client: never use %c here.",
    ]
    lines += [f"pattern write {MQTT_ROOT}/%u/{channel.value}" for channel in Channel]
    lines += [
        "# A future command channel to the device would be:",
        f"# pattern read {MQTT_ROOT}/%u/command",
        "",
        "# Ingest reads every device topic and publishes nothing. Mosquitto checks reads",
        "# against each message's own topic, so this line is what lets the shared",
        f"# subscription $share/<group>/{MQTT_ROOT}/+/+/+ deliver (a '$share/...' line alone",
        "# delivers nothing). Mosquitto 2.0 cannot refuse a SUBSCRIBE from this file: any",
        "# client knowing <group> can join it and make messages vanish, so keep <group>",
        "# secret (GANZHI_MQTT__SHARE_GROUP; docs/edge-security-notes.md).",
        f"user {ingest_user}",
        f"topic read {MQTT_ROOT}/+/+/+",
    ]
    if monitor_user is not None:
        check_service_username(monitor_user)
        lines += [
            "",
            "# Monitoring: broker statistics and device online/offline status only.",
            f"user {monitor_user}",
            "topic read $SYS/#",
            f"topic read {MQTT_ROOT}/+/+/{Channel.STATUS.value}",
        ]
    if bridges:
        from ganzhi.broker.bridge import central_acl_lines

        lines += central_acl_lines(bridges)
    return "\n".join(lines) + "\n"


def write_acl(
    path: Path,
    *,
    ingest_user: str = DEFAULT_INGEST_USER,
    monitor_user: str | None = DEFAULT_MONITOR_USER,
    bridges: Mapping[str, Sequence[str] | None] | None = None,
) -> None:
    text = render_acl(ingest_user=ingest_user, monitor_user=monitor_user, bridges=bridges)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    _atomic_write(path, text, mode)


# --- command line -----------------------------------------------------------------------


def build_parser(prog: str = "ganzhi credentials") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="MQTT credentials for Mosquitto: per-device passwords and the ACL. "
        "Secrets go to 0600 files under --secrets-dir and are never printed.",
    )
    sub = parser.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--passwd-file", type=Path, required=True, help="Mosquitto password file")

    dev = sub.add_parser("add-device", help="new password for a device")
    common(dev)
    dev.add_argument("--site", required=True)
    dev.add_argument("--device", required=True)
    dev.add_argument("--secrets-dir", type=Path, required=True)
    dev.add_argument("--rotate", action="store_true", help="replace an existing password")

    svc = sub.add_parser("add-service", help="new password for a service account")
    common(svc)
    svc.add_argument("--user", required=True, help=f"e.g. {DEFAULT_INGEST_USER}")
    svc.add_argument("--secrets-dir", type=Path, required=True)
    svc.add_argument("--rotate", action="store_true", help="replace an existing password")

    rm = sub.add_parser("remove", help="remove a device or service account")
    common(rm)
    who = rm.add_mutually_exclusive_group(required=True)
    who.add_argument("--user")
    who.add_argument("--device", metavar="SITE/DEVICE")

    ls = sub.add_parser("list", help="usernames in the password file (no hashes)")
    common(ls)

    sub.add_parser("share-group", help="print a new random share group name for ingest")

    ds = sub.add_parser("dynsec-init", help="first file of the broker's dynamic-security "
                        "plugin: admin and service accounts, deny by default")
    ds.add_argument("--out", type=Path, required=True, help="plugin_opt_config_file")
    ds.add_argument("--secrets-dir", type=Path, required=True)
    ds.add_argument("--admin-user", default=DEFAULT_ADMIN_USER)
    ds.add_argument("--ingest-user", default=DEFAULT_INGEST_USER)
    ds.add_argument("--monitor-user", default=DEFAULT_MONITOR_USER)
    ds.add_argument("--no-monitor", action="store_true")

    acl = sub.add_parser("acl", help="write the ACL file")
    acl.add_argument("--out", type=Path, required=True)
    acl.add_argument("--ingest-user", default=DEFAULT_INGEST_USER)
    acl.add_argument("--monitor-user", default=DEFAULT_MONITOR_USER)
    acl.add_argument("--no-monitor", action="store_true")
    acl.add_argument("--bridge", action="append", default=[], metavar="REGION[=SITE,...]",
                     help="a regional broker bridged in (ganzhi.broker.bridge); its sites, "
                     "else any site")

    br = sub.add_parser("bridge", help="a regional broker's bridge into this (central) "
                        "broker: its account here and the regional broker's bridge section")
    common(br)
    br.add_argument("--region", required=True, help="e.g. district-a")
    br.add_argument("--remote", required=True, metavar="HOST:PORT",
                    help="the central broker's TLS listener, as the regional broker sees it")
    br.add_argument("--cafile", type=Path, required=True, help="CA of the central broker")
    br.add_argument("--secrets-dir", type=Path, required=True)
    br.add_argument("--out", type=Path, required=True,
                    help="the bridge section for the regional broker (written 0600)")
    br.add_argument("--rotate", action="store_true", help="replace an existing password")
    return parser


def _bridge(args: argparse.Namespace) -> int:
    from ganzhi.broker.bridge import Bridge, bridge_username, render_bridge

    host, _, port = args.remote.rpartition(":")
    if not host or not port.isdigit():
        raise CredentialError(f"--remote {args.remote!r}: expected HOST:PORT")
    cred = add_service(args.passwd_file, args.secrets_dir, bridge_username(args.region),
                       rotate=args.rotate)
    password = cred.secret_path.read_text().strip()
    text = render_bridge(Bridge(args.region, host, int(port), args.cafile, password))
    _atomic_write(args.out, text, 0o600)
    print(f"{'rotated' if cred.rotated else 'added'} {cred.username} here (reload this "
          f"broker); the regional broker's bridge section is in {args.out} (0600: it holds "
          f"the password); add the region to the ACL (acl --bridge {args.region}=...)")
    return 0


def _bridges(specs: Sequence[str]) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for spec in specs:
        region, _, sites = spec.partition("=")
        out[region] = [s for s in sites.split(",") if s] if sites else None
    return out


def _dynsec_init(args: argparse.Namespace) -> int:
    """Random passwords for the admin and service accounts (0600 files, never printed)
    and the plugin's first file holding their hashes."""
    from ganzhi.broker import dynsec

    users = [(args.admin_user, dynsec.ADMIN_ROLE), (args.ingest_user, dynsec.INGEST_ROLE)]
    if not args.no_monitor:
        users.append((args.monitor_user, dynsec.MONITOR_ROLE))
    if args.out.exists():
        raise CredentialError(f"{args.out} exists; the broker owns it now")
    accounts = []
    for user, role in users:
        password = generate_password()
        path = service_secret_path(args.secrets_dir, check_service_username(user))
        _private_dirs(args.secrets_dir, path.parent)
        _atomic_write(path, password + "\n", 0o600)
        accounts.append(dynsec.Account(user, password, role))
    dynsec.write_initial_config(args.out, accounts[0], accounts[1:])
    for account in accounts:
        print(f"{account.username}\t{account.role}\tpassword in "
              f"{service_secret_path(args.secrets_dir, account.username)}")
    print(f"wrote {args.out}; start Mosquitto with the plugin and this file")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``ganzhi credentials ...``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.action == "add-device":
            cred = add_device(
                args.passwd_file, args.secrets_dir, args.site, args.device, rotate=args.rotate
            )
        elif args.action == "add-service":
            cred = add_service(args.passwd_file, args.secrets_dir, args.user, rotate=args.rotate)
        elif args.action == "remove":
            user = args.user or args.device
            if not remove_user(args.passwd_file, user):
                print(f"{user}: not in {args.passwd_file}", file=sys.stderr)
                return 1
            print(f"removed {user}; reload the broker (SIGHUP)")
            return 0
        elif args.action == "share-group":
            print(generate_share_group())
            return 0
        elif args.action == "dynsec-init":
            return _dynsec_init(args)
        elif args.action == "bridge":
            return _bridge(args)
        elif args.action == "list":
            for user in read_password_file(args.passwd_file):
                kind = "device" if parse_device_username(user) else "service"
                print(f"{user}\t{kind}")
            return 0
        else:
            write_acl(
                args.out,
                ingest_user=args.ingest_user,
                monitor_user=None if args.no_monitor else args.monitor_user,
                bridges=_bridges(args.bridge),
            )
            print(f"wrote {args.out}")
            return 0
    except CredentialError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "rotated" if cred.rotated else "added"
    print(f"{verb} {cred.username}; password in {cred.secret_path} (mode 0600); "
          "reload the broker (SIGHUP)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
