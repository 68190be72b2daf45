"""The ``ganzhi`` command: one subcommand per service, plus the demo stack."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganzhi.settings import InsecureSettingError, Settings, get_settings

if TYPE_CHECKING:
    from psycopg import AsyncConnection


def _ingest(s: Settings, a: argparse.Namespace) -> int:
    from ingest.main import run

    return run(s, leave=a.leave)


def _stream(s: Settings, _a: argparse.Namespace) -> int:
    from stream.main import run

    return run(s)


def _alerts(s: Settings, _a: argparse.Namespace) -> int:
    from alerts.main import run

    return run(s)


def _api(s: Settings, _a: argparse.Namespace) -> int:
    from api.main import run

    return run(s)


def _edge(s: Settings, a: argparse.Namespace) -> int:
    from pathlib import Path

    from edge.agent import run

    return run(Path(a.config), s.log_level, s.log_json)


def _migrate(s: Settings, _a: argparse.Namespace) -> int:
    from ganzhi.db.migrate import migrate_report
    from ganzhi.db.timescaledb import TimescaleError

    try:
        report = migrate_report(s.db.dsn.get_secret_value(), timescale=s.db.timescaledb)
    except TimescaleError as exc:
        print(f"ganzhi migrate: {exc}", file=sys.stderr)
        return 2
    for name in report.applied:
        print(f"applied {name}")
    print(f"flavour: {report.flavour}")
    if report.warning:
        print(f"warning: {report.warning}", file=sys.stderr)
    return 0


def _db_check(s: Settings, _a: argparse.Namespace) -> int:
    from ganzhi.db.check import check

    findings = check(s.db.dsn.get_secret_value(), s.db.retention_days)
    for f in findings:
        print(f"{'ok  ' if f.ok else 'FAIL'} {f.what}")
    return 0 if all(f.ok for f in findings) else 1


def _maintain(s: Settings, _a: argparse.Namespace) -> int:
    from ganzhi.db.maintenance import Retention, maintain

    retention = Retention(s.db.retention_days, s.db.alerts_retention_days,
                          s.db.deliveries_retention_days, s.db.evidence_grace_days)
    evidence = s.evidence.dir if s.evidence.backend == "fs" else None
    print(maintain(s.db.dsn.get_secret_value(), retention, evidence_dir=evidence))
    return 0


def _backup(s: Settings, a: argparse.Namespace) -> int:
    from ganzhi.db.backup import BackupError, backup

    try:
        r = backup(s.db.dsn.get_secret_value(), Path(a.out))
    except BackupError as exc:
        print(f"ganzhi backup: {exc}", file=sys.stderr)
        return 1
    print(f"backup {r.path}: {r.tables} tables, {r.bytes:,} bytes, {r.seconds:.1f} s")
    return 0


def _restore(s: Settings, a: argparse.Namespace) -> int:
    from ganzhi.db.backup import BackupError, restore

    try:
        r = restore(s.db.dsn.get_secret_value(), Path(a.file))
    except BackupError as exc:
        print(f"ganzhi restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored {r.tables} tables ({r.readings:,} readings) in {r.seconds:.1f} s; "
          f"migrations applied after it: {', '.join(r.migrations_applied) or 'none'}"
          f"{'; TimescaleDB' if r.timescaledb else ''}")
    return 0


def _receiver(s: Settings, a: argparse.Namespace) -> int:
    from alerts.receiver import run

    return run(s, a.port or s.demo.receiver_port)


def _faults(s: Settings, a: argparse.Namespace) -> int:
    from pathlib import Path

    from ganzhi.stack.faults import run

    return run(Path(a.data_dir), a.profile, Path(a.report) if a.report else None)


def _demo(s: Settings, a: argparse.Namespace) -> int:
    from ganzhi.stack.supervisor import run_demo

    return run_demo(s, data_dir=a.data_dir, duration_s=a.duration, keep_data=a.keep_data)


# --- administration: API keys, clue outbox, silences --------------------------------------


def _with_db(s: Settings, command: str,
             work: Callable[[AsyncConnection[Any]], Awaitable[int]]) -> int:
    """Run ``work`` on one autocommit connection; a refused action (bad input, unknown id,
    wrong state) prints why and exits 1 instead of a traceback."""
    from psycopg import AsyncConnection

    from alerts.repository import Conflict, NotFound

    async def go() -> int:
        dsn = s.db.dsn.get_secret_value()
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await work(conn)

    try:
        return asyncio.run(go())
    except (NotFound, Conflict, ValueError) as exc:
        print(f"ganzhi {command}: {exc}", file=sys.stderr)
        return 1


def _key_create(s: Settings, a: argparse.Namespace) -> int:
    from datetime import timedelta

    from ganzhi import apikeys
    from ganzhi.contracts import utcnow

    async def work(conn: AsyncConnection[Any]) -> int:
        if a.expires_in_days is not None and a.expires_in_days <= 0:
            raise ValueError("--expires-in-days must be positive")
        expires = (utcnow() + timedelta(days=a.expires_in_days)
                   if a.expires_in_days is not None else None)
        key, token = await apikeys.create(conn, a.name, a.scope, a.site, expires_at=expires,
                                          jurisdiction_id=a.jurisdiction,
                                          actor=_actor(a))
        print(f"created key {key.id} ({key.name}), scopes {','.join(sorted(key.scopes))},"
              f" sites {','.join(sorted(key.site_ids)) if key.site_ids else 'all'},"
              f" jurisdiction {key.jurisdiction_id or 'all'},"
              f" expires {key.expires_at.isoformat() if key.expires_at else 'never'}")
        print("token (shown only this once; keep it secret):", file=sys.stderr)
        print(token)
        return 0

    return _with_db(s, "api-keys create", work)


def _key_list(s: Settings, _a: argparse.Namespace) -> int:
    from ganzhi import apikeys

    async def work(conn: AsyncConnection[Any]) -> int:
        print("id\tname\tscopes\tsites\tcreated\trevoked\tjurisdiction\texpires")
        for k in await apikeys.list_keys(conn):
            sites = ",".join(sorted(k.site_ids)) if k.site_ids is not None else "all"
            revoked = k.revoked_at.isoformat() if k.revoked_at else "-"
            expires = k.expires_at.isoformat() if k.expires_at else "-"
            print(f"{k.id}\t{k.name}\t{','.join(sorted(k.scopes))}\t{sites}"
                  f"\t{k.created_at.isoformat()}\t{revoked}\t{k.jurisdiction_id or 'all'}"
                  f"\t{expires}")
        return 0

    return _with_db(s, "api-keys list", work)


def _key_revoke(s: Settings, a: argparse.Namespace) -> int:
    from ganzhi import apikeys

    async def work(conn: AsyncConnection[Any]) -> int:
        if not await apikeys.revoke(conn, a.id, actor=_actor(a)):
            print(f"ganzhi api-keys revoke: no live key {a.id}", file=sys.stderr)
            return 1
        print(f"revoked {a.id}")
        return 0

    return _with_db(s, "api-keys revoke", work)


def _actor(a: argparse.Namespace) -> str:
    by = getattr(a, "by", None)
    return str(by) if by else f"cli:{getpass.getuser()}"


def _read_password(a: argparse.Namespace) -> str:
    """From stdin (--password-stdin: the first line, for scripts) or asked twice on the
    terminal; never an argument (it would show in the process list and shell history)."""
    if a.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first


def _users_add(s: Settings, a: argparse.Namespace) -> int:
    from ganzhi import accounts

    async def work(conn: AsyncConnection[Any]) -> int:
        password = _read_password(a)
        if a.create_root and await accounts.ensure_root(conn, _actor(a), a.jurisdiction,
                                                        a.create_root):
            print(f"created root jurisdiction {a.jurisdiction} ({a.create_root})")
        user = await accounts.create_user(
            conn, _actor(a), username=a.username, password=password, role=a.role,
            jurisdiction_id=a.jurisdiction, display_name=a.display_name or "")
        print(f"created user {user.username} (id {user.id}), {user.role.value} at"
              f" {user.jurisdiction_path}")
        return 0

    return _with_db(s, "users add", work)


def _users_list(s: Settings, _a: argparse.Namespace) -> int:
    from ganzhi import accounts

    async def work(conn: AsyncConnection[Any]) -> int:
        print("id\tusername\trole\tjurisdiction\tdisplay_name\tcreated\tdisabled")
        for u in await accounts.list_users(conn):
            disabled = u.disabled_at.isoformat() if u.disabled_at else "-"
            print(f"{u.id}\t{u.username}\t{u.role.value}\t{u.jurisdiction_path}"
                  f"\t{u.display_name}\t{u.created_at.isoformat()}\t{disabled}")
        return 0

    return _with_db(s, "users list", work)


def _users_disable(s: Settings, a: argparse.Namespace) -> int:
    from ganzhi import accounts

    async def work(conn: AsyncConnection[Any]) -> int:
        user = await accounts.user_by_name(conn, a.username)
        await accounts.update_user(conn, _actor(a), user.id, disabled=True)
        print(f"disabled {user.username}; its sessions are ended")
        return 0

    return _with_db(s, "users disable", work)


def _users_parsers(sub: Any) -> None:
    """``users``: staff accounts, including the first administrator on an empty database."""
    from ganzhi.access import Role

    users = sub.add_parser("users", help="staff accounts (sign-in to the API)")
    usub = users.add_subparsers(dest="action", required=True)
    add = usub.add_parser("add", help="make an account (the first one: see --create-root)")
    add.add_argument("--username", required=True)
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--jurisdiction", required=True, help="the node it is bound to")
    add.add_argument("--display-name", default=None)
    add.add_argument("--create-root", metavar="NAME", default=None,
                     help="make --jurisdiction a root node named NAME if it does not exist"
                          " (bootstrap of an empty database)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin")
    add.set_defaults(fn=_users_add)
    usub.add_parser("list", help="every account").set_defaults(fn=_users_list)
    dis = usub.add_parser("disable", help="refuse the account's sign-in and tokens at once")
    dis.add_argument("username")
    dis.set_defaults(fn=_users_disable)


def _clues_drop(s: Settings, a: argparse.Namespace) -> int:
    from datetime import datetime

    from alerts import outbox

    async def work(conn: AsyncConnection[Any]) -> int:
        before = datetime.fromisoformat(a.before) if a.before else None
        if before is not None and before.tzinfo is None:
            raise ValueError("--before needs a time zone, e.g. 2025-01-01T08:00:00+08:00")
        rows = await outbox.drop(conn, a.receiver, _actor(a), ids=a.id, before=before)
        print(f"dropped {rows} clue events of {a.receiver}")
        return 0

    return _with_db(s, "clues drop", work)


def _clues_requeue(s: Settings, a: argparse.Namespace) -> int:
    from alerts import outbox

    async def work(conn: AsyncConnection[Any]) -> int:
        rows = await outbox.requeue(conn, a.receiver, _actor(a), ids=a.id)
        print(f"re-queued {rows} clue events of {a.receiver}")
        return 0

    return _with_db(s, "clues requeue", work)


def _review_fps(s: Settings, a: argparse.Namespace) -> int:
    from alerts.repository import false_positive_snapshots

    async def work(conn: AsyncConnection[Any]) -> int:
        for sha in await false_positive_snapshots(conn, site_id=a.site, device_id=a.camera,
                                                  days=a.days):
            print(sha)
        return 0

    return _with_db(s, "review false-positives", work)


def _clues_status(s: Settings, _a: argparse.Namespace) -> int:
    from alerts import outbox

    configured = ["task-system", *(r.name for r in s.alerts.receivers)]

    async def work(conn: AsyncConnection[Any]) -> int:
        print("receiver\tpending\theld\tdead\toldest_pending_s")
        figures = {f.receiver: f for f in await outbox.figures(conn)}
        for name in [*configured, *sorted(set(figures) - set(configured))]:
            f = figures.get(name) or outbox.ReceiverFigures(name, 0, 0, 0, 0.0)
            note = "" if name in configured else "\t(not configured: drop its clues)"
            print(f"{name}\t{f.pending}\t{f.held}\t{f.dead}\t{f.oldest_pending_s:.0f}{note}")
        return 0

    return _with_db(s, "clues status", work)


def _matchers(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--match {pair!r}: write KEY=GLOB, e.g. rule_id=elevator.*")
        out[key.strip()] = value.strip()
    return out


def _silences_add(s: Settings, a: argparse.Namespace) -> int:
    from datetime import timedelta

    from alerts import actions
    from ganzhi.contracts import utcnow

    async def work(conn: AsyncConnection[Any]) -> int:
        now = utcnow()
        silence_id = await actions.create_silence(
            conn, a.kind, _matchers(a.match), now, now + timedelta(hours=a.hours), a.by,
            a.reason, now)
        print(f"silence {silence_id} until {(now + timedelta(hours=a.hours)).isoformat()}")
        return 0

    return _with_db(s, "silences add", work)


def _silences_list(s: Settings, a: argparse.Namespace) -> int:
    import json

    from alerts import actions

    async def work(conn: AsyncConnection[Any]) -> int:
        print("id\tkind\tmatchers\tstarts\tends\tby\treason\tended")
        for x in await actions.list_silences(conn, active_only=not a.all):
            ended = f"{x.ended_at.isoformat()} by {x.ended_by}" if x.ended_at else "-"
            print(f"{x.id}\t{x.kind}\t{json.dumps(x.matchers, sort_keys=True)}"
                  f"\t{x.starts_at.isoformat()}\t{x.ends_at.isoformat()}\t{x.created_by}"
                  f"\t{x.reason}\t{ended}")
        return 0

    return _with_db(s, "silences list", work)


def _silences_end(s: Settings, a: argparse.Namespace) -> int:
    from alerts import actions

    async def work(conn: AsyncConnection[Any]) -> int:
        ended = await actions.end_silence(conn, a.id, a.by)
        print(f"silence {a.id} ended at {ended.isoformat()}")
        return 0

    return _with_db(s, "silences end", work)


def _admin_parsers(sub: Any) -> None:
    """``api-keys``, ``clues`` and ``silences``: what an operator does by hand."""
    from ganzhi.access import KEY_SCOPES  # (not ganzhi.apikeys: no psycopg on an edge box)

    SCOPES = frozenset(KEY_SCOPES)

    keys = sub.add_parser("api-keys", help="API keys of the task system and staff tools")
    ksub = keys.add_subparsers(dest="action", required=True)
    create = ksub.add_parser("create", help="make a key and print its token once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", required=True, action="extend", nargs="+",
                        choices=sorted(SCOPES))
    create.add_argument("--site", action="extend", nargs="+", default=None,
                        help="only these sites (default: every site)")
    create.add_argument("--jurisdiction", default=None,
                        help="only the sites under this node (default: every site)")
    create.add_argument("--expires-in-days", type=float, default=None,
                        help="refused after this many days (default: never)")
    create.set_defaults(fn=_key_create)
    ksub.add_parser("list", help="keys, never their secrets").set_defaults(fn=_key_list)
    revoke = ksub.add_parser("revoke", help="a revoked key is refused at once")
    revoke.add_argument("id")
    revoke.set_defaults(fn=_key_revoke)

    clues = sub.add_parser("clues", help="the clue outbox: status, drop, re-queue")
    csub = clues.add_subparsers(dest="action", required=True)
    for name, fn, text in (("drop", _clues_drop, "give up on pending or dead clue events"),
                           ("requeue", _clues_requeue, "send dead clue events again")):
        p = csub.add_parser(name, help=text)
        p.add_argument("--receiver", required=True)
        p.add_argument("--id", type=int, action="extend", nargs="+", default=None)
        p.add_argument("--by", default=None, help="who (default: cli:<user>)")
        if name == "drop":
            p.add_argument("--before", default=None, help="created before (ISO 8601)")
        p.set_defaults(fn=fn)
    csub.add_parser("status", help="per receiver").set_defaults(fn=_clues_status)

    sil = sub.add_parser("silences", help="hold the clues of matching alerts for a while")
    ssub = sil.add_subparsers(dest="action", required=True)
    add = ssub.add_parser("add", help="a silence from now on")
    add.add_argument("--match", required=True, action="extend", nargs="+",
                     help="KEY=GLOB (site_id, device_id, rule_id, severity)")
    add.add_argument("--hours", type=float, required=True)
    add.add_argument("--reason", required=True)
    add.add_argument("--by", required=True)
    add.add_argument("--kind", choices=["silence", "maintenance"], default="silence")
    add.set_defaults(fn=_silences_add)
    ls = ssub.add_parser("list", help="silences in force or scheduled")
    ls.add_argument("--all", action="store_true", help="ended and run-out ones too")
    ls.set_defaults(fn=_silences_list)
    end = ssub.add_parser("end", help="end a silence now")
    end.add_argument("id", type=int)
    end.add_argument("--by", required=True)
    end.set_defaults(fn=_silences_end)


# --- registry: spreadsheet imports --------------------------------------------------------


def _registry_import(s: Settings, a: argparse.Namespace) -> int:
    """Import a CSV or XLSX file of sites (or of one site's devices) with every site in
    scope; a refused file lists its problems by row and column and writes nothing."""
    from pathlib import Path

    from ganzhi.access import EVERYTHING
    from ganzhi.registry import RegistryError, bulk
    from ganzhi.registry.tabular import FileRefused, read_table

    command = f"registry {a.action}"
    try:
        table = read_table(Path(a.file).read_bytes(), a.file)
    except FileRefused as exc:
        return _refused(command, tuple(exc.errors))
    except OSError as exc:
        print(f"ganzhi {command}: {exc}", file=sys.stderr)
        return 1

    async def work(conn: AsyncConnection[Any]) -> int:
        try:
            if a.action == "import-sites":
                report = await bulk.import_sites(conn, EVERYTHING, _actor(a), table,
                                                 dry_run=a.dry_run)
            else:
                report = await bulk.import_devices(conn, EVERYTHING, _actor(a), a.site,
                                                   table, dry_run=a.dry_run)
        except FileRefused as exc:
            return _refused(command, tuple(exc.errors))
        except RegistryError as exc:
            print(f"ganzhi {command}: {exc}", file=sys.stderr)
            return 1
        what = "would be" if report.dry_run else "were"
        print(f"{report.rows} rows: {len(report.created)} {what} created,"
              f" {len(report.updated)} updated, {report.unchanged} unchanged")
        return 0

    return _with_db(s, command, work)


def _refused(command: str, errors: tuple[object, ...]) -> int:
    print(f"ganzhi {command}: the file was refused, nothing was written:", file=sys.stderr)
    for error in errors:
        print(f"  {error}", file=sys.stderr)
    return 1


def _registry_parsers(sub: Any) -> None:
    rev = sub.add_parser("review", help="the labelling loop's side on the platform")
    rsub_ = rev.add_subparsers(dest="review_command", required=True)
    fps = rsub_.add_parser("false-positives", help="evidence SHA-256s of camera findings "
                           "marked false positive, one per line (python -m vision.labelling "
                           "export --false-positives)")
    fps.add_argument("--site", default=None)
    fps.add_argument("--camera", default=None, help="a camera's device id")
    fps.add_argument("--days", type=int, default=90)
    fps.set_defaults(fn=_review_fps)
    reg = sub.add_parser("registry", help="import sites and devices from CSV or XLSX files")
    rsub = reg.add_subparsers(dest="action", required=True)
    sites = rsub.add_parser("import-sites", help="sites, all or nothing; again: no change")
    sites.add_argument("file", help="CSV or XLSX (see deploy/registry/sites.example.csv)")
    devices = rsub.add_parser("import-devices", help="one site's devices, all or nothing")
    devices.add_argument("site")
    devices.add_argument("file", help="CSV or XLSX: device_id, device_class, params...")
    for p in (sites, devices):
        p.add_argument("--dry-run", action="store_true", help="check the file, write nothing")
        p.add_argument("--by", default=None, help="who, in the audit log (default: cli:<user>)")
        p.set_defaults(fn=_registry_import)
    box = rsub.add_parser("import-box", help="an edge box file: its site and its devices with"
                          " the params their rules need")
    box.add_argument("file", help="the box's YAML (ganzhi edge --config)")
    box.add_argument("--jurisdiction", required=True, help="node of the site, if it is new")
    box.add_argument("--site-name", default=None)
    box.add_argument("--by", default=None, help="who, in the audit log (default: cli:<user>)")
    box.set_defaults(fn=_registry_import_box)


def _registry_import_box(s: Settings, a: argparse.Namespace) -> int:
    from pathlib import Path

    from edge.config import ConfigError, load_config
    from ganzhi.access import EVERYTHING
    from ganzhi.registry import RegistryError
    from ganzhi.registry.edge_box import register_box

    try:
        box = load_config(Path(a.file))
    except ConfigError as exc:
        print(f"ganzhi registry import-box: {exc}", file=sys.stderr)
        return 1

    async def work(conn: AsyncConnection[Any]) -> int:
        try:
            done = await register_box(conn, EVERYTHING, _actor(a), box.site_id,
                                      box.registry_entries(), jurisdiction_id=a.jurisdiction,
                                      site_name=a.site_name)
        except RegistryError as exc:
            print(f"ganzhi registry import-box: {exc}", file=sys.stderr)
            return 1
        print(f"site {box.site_id}: {'created' if done.site_created else 'exists'};"
              f" devices created {done.created or '-'}, updated {done.updated or '-'}")
        return 0

    return _with_db(s, "registry import-box", work)


def _bench(_s: Settings, a: argparse.Namespace) -> int:
    from pathlib import Path

    from ganzhi.bench import STAGES, main

    only = [x for x in a.only.split(",") if x] if a.only else None
    unknown = sorted(set(only or ()) - set(STAGES))
    if unknown:
        print(f"ganzhi bench: unknown stage(s) {', '.join(unknown)}; "
              f"choose from {','.join(STAGES)}", file=sys.stderr)
        return 2
    if a.soak_minutes is not None and not 0 < a.soak_minutes <= 24 * 60:
        print("ganzhi bench: --soak-minutes must be more than 0 and at most 1440",
              file=sys.stderr)
        return 2
    out = Path(a.out)
    try:  # before any stage runs: a summary that cannot be written is known now
        out.resolve().parent.mkdir(parents=True, exist_ok=True)
        with out.open("a"):
            pass
    except OSError as exc:
        print(f"ganzhi bench: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return main(a.profile, only, out, a.soak_minutes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganzhi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ing = sub.add_parser("ingest", help="MQTT -> Kafka bridge")
    ing.add_argument("--leave", action="store_true",
                     help="scale down: forward what the broker queued for this worker id "
                          "(GANZHI_INGEST__WORKER_ID, stopped first), end its session, exit")
    ing.set_defaults(fn=_ingest)
    sub.add_parser("stream", help="Faust stream worker").set_defaults(fn=_stream)
    sub.add_parser("alerts", help="alert lifecycle and clue webhooks").set_defaults(fn=_alerts)
    sub.add_parser("api", help="HTTP API").set_defaults(fn=_api)
    edge = sub.add_parser("edge", help="edge sensor agent of one box (store and forward)")
    edge.add_argument("--config", required=True, help="the box's YAML file")
    edge.set_defaults(fn=_edge)
    # Listed here for --help; its own parser (ganzhi.mqtt_auth) takes the arguments.
    sub.add_parser("credentials", help="per-device MQTT passwords and the broker ACL")
    sub.add_parser("rules", help="check, show and edit the stream rules model")
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=_migrate)
    db = sub.add_parser("db", help="the database: check what it is and that storage works")
    dsub = db.add_subparsers(dest="db_command", required=True)
    dsub.add_parser("check", help="flavour, migrations, partitions or hypertables, rollups,"
                    " TimescaleDB policies; exit 1 if anything is wrong"
                    ).set_defaults(fn=_db_check)
    sub.add_parser("maintain", help="partitions ahead, retention").set_defaults(fn=_maintain)
    bk = sub.add_parser("backup", help="dump the database (pg_dump, custom format) to a file")
    bk.add_argument("--out", required=True, help="the backup file to write")
    bk.set_defaults(fn=_backup)
    rs = sub.add_parser("restore", help="restore a backup into an empty database, migrate it")
    rs.add_argument("file", help="a file written by ganzhi backup")
    rs.set_defaults(fn=_restore)
    rcv = sub.add_parser("receiver", help="a stand-in task system that verifies clue webhooks")
    rcv.add_argument("--port", type=int, default=None)
    rcv.set_defaults(fn=_receiver)
    faults = sub.add_parser(
        "faults", help="kill and restart each part under load; count what was lost or doubled")
    faults.add_argument("--profile", choices=["short", "full"], default="full")
    faults.add_argument("--data-dir", default="var/faults", help="where the run keeps its data")
    faults.add_argument("--report", default=None, help="write the figures as JSON here")
    faults.set_defaults(fn=_faults)
    bench = sub.add_parser(
        "bench", help="the pipeline benchmarks in sequence (own servers on loopback): a table "
        "against the targets, and JSON")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="profile", action="store_const", const="quick",
                      help="small sizes, a few minutes on two cores (no scaling, no soak)")
    size.add_argument("--full", dest="profile", action="store_const", const="full",
                      help="the default: every stage but the soak, about 30 minutes on "
                      "two cores")
    bench.set_defaults(profile="full")
    bench.add_argument("--only", default=None, metavar="STAGES",
                       help="comma-separated subset of ingest,sink,rules,latency,scaling,"
                       "edge,soak (default: all but soak; quick also skips scaling)")
    bench.add_argument("--soak-minutes", type=float, default=None, metavar="MIN",
                       help="also run the memory soak for MIN minutes (at half the rate "
                       "the scaling stage stored)")
    bench.add_argument("--out", default="var/bench/summary.json",
                       help="the summary as JSON (each stage's log and JSON beside it)")
    bench.set_defaults(fn=_bench)
    demo = sub.add_parser("demo", help="start brokers, database, services and simulators")
    demo.add_argument("--data-dir", default="var", help="where the stack keeps its data")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument(
        "--keep-data", action="store_true",
        help="keep the demo database of the last run (it is emptied by default)",
    )
    demo.set_defaults(fn=_demo)
    _admin_parsers(sub)
    _registry_parsers(sub)
    _users_parsers(sub)
    from ganzhi.broker.cli import add_device_parsers

    add_device_parsers(sub)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["credentials"]:
        from ganzhi.mqtt_auth import main as credentials_main

        return credentials_main(argv[1:])
    if argv[:1] == ["rules"]:
        from stream.rules.admin import main as rules_main

        return rules_main(argv[1:], get_settings())
    args = parser.parse_args(argv)
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        settings = get_settings()
    except (ValidationError, SettingsError) as exc:  # a GANZHI_* variable or secret file
        if isinstance(exc, ValidationError):  # (without the input: it may hold secrets)
            what = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors(include_input=False, include_url=False))
        else:
            what = str(exc)
        print(f"ganzhi {args.command}: invalid settings: {what}", file=sys.stderr)
        return 2
    try:
        return int(args.fn(settings, args))
    except InsecureSettingError as exc:
        print(f"ganzhi {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _database_unreachable(exc):
            raise
        # psycopg's message names host and port, never the password.
        name = " ".join(str(getattr(args, k)) for k in ("command", "db_command", "action")
                        if getattr(args, k, None))
        print(f"ganzhi {name}: cannot reach the database: {exc}", file=sys.stderr)
        return 1


def _database_unreachable(exc: Exception) -> bool:
    try:
        import psycopg  # not on an [edge]-only install, where no command connects to it
    except ImportError:
        return False
    # No SQLSTATE: the client could not connect or lost the connection; class 08 alike.
    return isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith("08"))


if __name__ == "__main__":
    sys.exit(main())
