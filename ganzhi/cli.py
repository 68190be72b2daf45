"""The ``ganzhi`` command: one subcommand per service, plus the demo stack."""

from __future__ import annotations

import argparse
import sys

from ganzhi.settings import InsecureSettingError, Settings, get_settings


def _ingest(s: Settings, _a: argparse.Namespace) -> int:
    from ingest.main import run

    return run(s)


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
    from ganzhi.db.migrate import migrate

    for name in migrate(s.db.dsn.get_secret_value()):
        print(f"applied {name}")
    return 0


def _maintain(s: Settings, _a: argparse.Namespace) -> int:
    from ganzhi.db.maintenance import maintain

    print(maintain(s.db.dsn.get_secret_value(), s.db.retention_days))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganzhi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ingest", help="MQTT -> Kafka bridge").set_defaults(fn=_ingest)
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
    sub.add_parser("maintain", help="partitions ahead, retention").set_defaults(fn=_maintain)
    rcv = sub.add_parser("receiver", help="a stand-in task system that verifies clue webhooks")
    rcv.add_argument("--port", type=int, default=None)
    rcv.set_defaults(fn=_receiver)
    faults = sub.add_parser(
        "faults", help="kill and restart each part under load; count what was lost or doubled")
    faults.add_argument("--profile", choices=["short", "full"], default="full")
    faults.add_argument("--data-dir", default="var/faults", help="where the run keeps its data")
    faults.add_argument("--report", default=None, help="write the figures as JSON here")
    faults.set_defaults(fn=_faults)
    demo = sub.add_parser("demo", help="start brokers, database, services and simulators")
    demo.add_argument("--data-dir", default="var", help="where the stack keeps its data")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument(
        "--keep-data", action="store_true",
        help="keep the demo database of the last run (it is emptied by default)",
    )
    demo.set_defaults(fn=_demo)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["credentials"]:
        from ganzhi.mqtt_auth import main as credentials_main

        return credentials_main(argv[1:])
    if argv[:1] == ["rules"]:
        from stream.rules.admin import main as rules_main

        return rules_main(argv[1:], get_settings())
    args = parser.parse_args(argv)
    try:
        return int(args.fn(get_settings(), args))
    except InsecureSettingError as exc:
        print(f"ganzhi {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
