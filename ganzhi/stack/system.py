"""The whole system as processes on this machine, and the means to kill and restart them.

Used by ``ganzhi demo``, the fault-injection run (``ganzhi faults``) and the end-to-end
tests. The stack runs its *own* infrastructure - Mosquitto with the project's broker
settings, Tansu, a PostgreSQL cluster in its data directory - and never reuses a server
it finds listening: a broker it did not configure may drop queued messages (Debian's
Mosquitto keeps 1,000 per client), and a database it did not create may hold anything.
A configured port that is taken is replaced by a free one, and the log says so.

Services run as ``python -m ganzhi.cli <service>`` subprocesses with an environment
built from the stack's ports and secrets (:meth:`Stack.env`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from ganzhi.observability import get_logger
from ganzhi.settings import MqttSettings
from ganzhi.stack.infra import (
    DynsecPlugin,
    InfraError,
    Managed,
    create_database,
    drop_database,
    free_port,
    port_open,
    start_mosquitto,
    start_postgres,
    start_tansu,
    terminate,
)

log = get_logger("stack")
HOST = "127.0.0.1"

# The services and the port their health endpoint answers on (a Ports field).
SERVICE_HEALTH = {
    "receiver": "receiver", "api": "api", "alerts": "ops_alerts", "stream": "ops_stream",
    "ingest": "ops_ingest", "edge": "ops_edge",
}


@dataclass(frozen=True)
class Ports:
    mqtt: int
    kafka: int
    postgres: int
    api: int
    receiver: int
    ops_ingest: int
    ops_stream: int
    ops_alerts: int
    ops_edge: int
    stream_web: int

    @classmethod
    def choose(cls, wanted: dict[str, int] | None = None) -> Ports:
        """``wanted`` ports where free, free ones otherwise (all free when None)."""
        chosen: dict[str, int] = {}
        for name in cls.__dataclass_fields__:
            port = (wanted or {}).get(name)
            if port is not None and not port_open(HOST, port) and port not in chosen.values():
                chosen[name] = port
                continue
            if port is not None:
                log.warning("port_taken", part=name, port=port,
                            detail="something this stack did not start listens there")
            new = free_port(HOST)
            while new in chosen.values():
                new = free_port(HOST)
            chosen[name] = new
        return cls(**chosen)


@dataclass(frozen=True)
class Secrets:
    """The secrets every deployment must set: the ingest share group, the webhook key and
    the API's access-token signing key."""

    share_group: str
    webhook_secret: str
    jwt_secret: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(f"ingest-{secrets.token_hex(16)}", secrets.token_urlsafe(32),
                   secrets.token_urlsafe(32))

    @classmethod
    def load_or_create(cls, path: Path) -> Secrets:
        """Kept in ``path`` (mode 0600), so a restarted stack keeps its ingest session."""
        if path.exists():
            values = dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)
            if "GANZHI_AUTH__JWT_SECRET" in values:
                return cls(values["GANZHI_MQTT__SHARE_GROUP"],
                           values["GANZHI_WEBHOOK__SECRET"], values["GANZHI_AUTH__JWT_SECRET"])
            # Written before the API had sign-in: keep the others, add the new key.
            made = cls(values["GANZHI_MQTT__SHARE_GROUP"], values["GANZHI_WEBHOOK__SECRET"],
                       secrets.token_urlsafe(32))
        else:
            made = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"GANZHI_MQTT__SHARE_GROUP={made.share_group}\n"
                    f"GANZHI_WEBHOOK__SECRET={made.webhook_secret}\n"
                    f"GANZHI_AUTH__JWT_SECRET={made.jwt_secret}\n")
        return made


@dataclass(frozen=True)
class BrokerAccounts:
    """The service accounts of a broker with per-device credentials (Mosquitto's
    dynamic-security plugin): the administrator that provisions devices (the API's), the
    ingest bridge's and the monitoring one. Devices get theirs by provisioning."""

    admin: str
    ingest: str
    monitor: str

    ADMIN_USER = "ganzhi-admin"
    INGEST_USER = "svc-ingest"
    MONITOR_USER = "ganzhi-monitor"

    @classmethod
    def load_or_create(cls, path: Path) -> BrokerAccounts:
        """Kept in ``path`` (mode 0600) beside the broker's own file of hashes."""
        from ganzhi.mqtt_auth import generate_password

        if path.exists():
            v = dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)
            return cls(v["ADMIN"], v["INGEST"], v["MONITOR"])
        made = cls(generate_password(), generate_password(), generate_password())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"ADMIN={made.admin}\nINGEST={made.ingest}\nMONITOR={made.monitor}\n")
        return made


@dataclass
class Service:
    name: str
    argv: list[str]
    health_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_path: Path = field(default_factory=Path)

    def start(self, env: dict[str, str], logs: Path) -> None:
        self.log_path = logs / f"{self.name}.log"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None: killed)."""
        if terminate(self.proc, timeout):
            log.warning("service_killed", service=self.name, after_s=timeout)
            return None
        return self.proc.returncode if self.proc is not None else None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until its health port answers (or it exits: an error naming its log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise InfraError(f"{self.name} exited ({self.proc.returncode}); "
                                 f"see {self.log_path}")
            if self.health_port is None or port_open(HOST, self.health_port):
                return
            time.sleep(0.1)
        raise InfraError(f"{self.name} did not come up in {timeout:.0f}s; see {self.log_path}")


class Stack:
    def __init__(self, root: Path, ports: Ports, secrets_: Secrets, *,
                 extra_env: dict[str, str] | None = None, fast_unsafe: bool = False,
                 database: str = "ganzhi", mqtt_auth: bool = False) -> None:
        self.root = root.resolve()
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ports = ports
        self.secrets = secrets_
        self.extra_env = dict(extra_env or {})
        self.fast_unsafe = fast_unsafe
        self.database = database
        self.mosquitto: Managed | None = None
        self.tansu: Managed | None = None
        self.postgres: Managed | None = None
        self.services: dict[str, Service] = {}
        # Per service, settings over env(): the API's least-privilege database roles,
        # each service's own broker account.
        self.service_env: dict[str, dict[str, str]] = {}
        # mqtt_auth: the broker refuses anonymous clients; every device connects with the
        # account provisioning issued it (ganzhi.provisioning), the services with theirs.
        self.broker_accounts = (BrokerAccounts.load_or_create(self.root / "mqtt-accounts.env")
                                if mqtt_auth else None)
        if self.broker_accounts is not None:
            a = self.broker_accounts
            self.service_env["ingest"] = {"GANZHI_MQTT__USERNAME": a.INGEST_USER,
                                          "GANZHI_MQTT__PASSWORD": a.ingest}
            self.service_env["api"] = {"GANZHI_MQTT__ADMIN_USERNAME": a.ADMIN_USER,
                                       "GANZHI_MQTT__ADMIN_PASSWORD": a.admin}

    # --- infrastructure -------------------------------------------------------------

    @property
    def dsn(self) -> str:
        return f"postgresql://ganzhi@{HOST}:{self.ports.postgres}/{self.database}"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.ports.kafka}"

    def start_mosquitto(self) -> Managed:
        data = self.root / "mosquitto"
        dynsec = None
        if self.broker_accounts is not None:
            from ganzhi.broker.dynsec import (
                ADMIN_ROLE,
                INGEST_ROLE,
                MONITOR_ROLE,
                Account,
                plugin_path,
                write_initial_config,
            )

            a = self.broker_accounts
            config = data / "dynamic-security.json"
            if not config.exists():  # later the plugin keeps it (devices added since)
                write_initial_config(config, Account(a.ADMIN_USER, a.admin, ADMIN_ROLE), [
                    Account(a.INGEST_USER, a.ingest, INGEST_ROLE),
                    Account(a.MONITOR_USER, a.monitor, MONITOR_ROLE)])
            dynsec = DynsecPlugin(config, plugin_path())
        self.mosquitto = start_mosquitto(data, HOST, self.ports.mqtt, dynsec=dynsec)
        return self.mosquitto

    def broker_admin(self) -> MqttSettings:
        """Settings that provision devices on this stack's broker (``mqtt_auth`` only)."""
        assert self.broker_accounts is not None, "the broker takes anonymous clients"
        return MqttSettings(host=HOST, port=self.ports.mqtt,
                            admin_username=self.broker_accounts.ADMIN_USER,
                            admin_password=SecretStr(self.broker_accounts.admin))

    def start_postgres(self) -> Managed:
        self.postgres = start_postgres(self.root / "postgres", HOST, self.ports.postgres,
                                       database=self.database, fast_unsafe=self.fast_unsafe)
        return self.postgres

    def start_infrastructure(self, fresh_database: bool = True) -> None:
        """Mosquitto, Tansu and PostgreSQL, each started here on its own port."""
        self.start_mosquitto()
        self.tansu = start_tansu(self.logs, HOST, self.ports.kafka)
        pg = self.start_postgres()
        if fresh_database:
            # Tansu starts empty (memory only), so rule state and offsets are gone: the
            # database starts empty too, or old open alerts would absorb the new run's.
            drop_database(pg.extra["admin_dsn"], self.database)
            create_database(pg.extra["admin_dsn"], self.database)
        for part in (self.mosquitto, self.tansu, self.postgres):
            assert part is not None
            log.info("started", part=part.name, address=f"{part.host}:{part.port}",
                     log=str(part.log_path))

    def restart_mosquitto(self) -> float:
        """A clean restart (it saves its persistence file first); seconds it was down."""
        assert self.mosquitto is not None
        down = time.monotonic()
        self.mosquitto.stop()
        self.start_mosquitto()
        return time.monotonic() - down

    def restart_postgres(self) -> float:
        assert self.postgres is not None
        down = time.monotonic()
        self.postgres.stop()
        self.start_postgres()
        return time.monotonic() - down

    # --- services ---------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        p, s = self.ports, self.secrets
        env = {k: v for k, v in os.environ.items() if not k.startswith("GANZHI_")}
        env.update(self.extra_env)  # the stack's own addresses and secrets win below
        env.update({
            "GANZHI_LOG_JSON": "true",
            "GANZHI_MQTT__HOST": HOST,
            "GANZHI_MQTT__PORT": str(p.mqtt),
            "GANZHI_MQTT__SHARE_GROUP": s.share_group,
            "GANZHI_KAFKA__BOOTSTRAP": self.bootstrap,
            "GANZHI_DB__DSN": self.dsn,
            "GANZHI_WEBHOOK__URL": f"http://{HOST}:{p.receiver}/clues",
            "GANZHI_WEBHOOK__SECRET": s.webhook_secret,
            "GANZHI_AUTH__JWT_SECRET": s.jwt_secret,
            "GANZHI_WEBHOOK__PUBLIC_BASE_URL": f"http://{HOST}:{p.api}",
            "GANZHI_API__PORT": str(p.api),
            "GANZHI_DEMO__RECEIVER_PORT": str(p.receiver),
            "GANZHI_OPS__INGEST": str(p.ops_ingest),
            "GANZHI_OPS__STREAM": str(p.ops_stream),
            "GANZHI_OPS__ALERTS": str(p.ops_alerts),
            "GANZHI_OPS__EDGE": str(p.ops_edge),
            "GANZHI_STREAM__WEB_PORT": str(p.stream_web),
            "GANZHI_STREAM__DATA_DIR": str(self.root / "stream"),
            "GANZHI_EVIDENCE__DIR": str(self.extra_env.get("GANZHI_EVIDENCE__DIR")
                                        or self.root / "evidence"),
        })
        return env

    def env_for(self, name: str) -> dict[str, str]:
        return {**self.env(), **self.service_env.get(name, {})}

    def use_api_roles(self) -> None:
        """Run the API as production does: a login role in ``ganzhi_api`` (what its routes
        change, nothing else), its heavy reads as one in ``ganzhi_reader`` (read-only;
        production points that at a replica). Call after migrate (it grants the groups)."""
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import make_conninfo

        logins = {"ganzhi_demo_api": "ganzhi_api", "ganzhi_demo_reader": "ganzhi_reader"}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for login, group in logins.items():
                if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                    (login,)).fetchone():
                    conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                        sql.Identifier(login), sql.Identifier(group)))
        self.service_env.setdefault("api", {}).update({
            "GANZHI_DB__DSN": make_conninfo(self.dsn, user="ganzhi_demo_api"),
            "GANZHI_DB__READ_DSN": make_conninfo(self.dsn, user="ganzhi_demo_reader"),
        })

    def add_service(self, name: str, *args: str) -> Service:
        argv = [sys.executable, "-m", "ganzhi.cli", name, *args]
        port_field = SERVICE_HEALTH.get(name)
        port = getattr(self.ports, port_field) if port_field else None
        svc = Service(name, argv, port)
        self.services[name] = svc
        return svc

    def start_service(self, name: str, *args: str, wait: bool = True) -> Service:
        svc = self.services.get(name) or self.add_service(name, *args)
        svc.start(self.env_for(name), self.logs)
        if wait:
            svc.wait_healthy()
        log.info("service_up", service=name, log=str(svc.log_path))
        return svc

    def kill(self, name: str) -> None:
        """``kill -9``: what a crash or the OOM killer does."""
        self.services[name].kill()

    def restart(self, name: str, wait: bool = True) -> Service:
        svc = self.services[name]
        if svc.alive():
            svc.stop()
        svc.restarts += 1
        svc.start(self.env_for(name), self.logs)
        if wait:
            svc.wait_healthy()
        return svc

    def stop(self) -> dict[str, int | None]:
        """Services in reverse order of start (SIGTERM), then the infrastructure."""
        codes: dict[str, int | None] = {}
        for name, svc in reversed(list(self.services.items())):
            if svc.proc is not None:
                codes[name] = svc.stop()
                log.info("service_stopped", service=name, exit=codes[name])
        for part in (self.postgres, self.tansu, self.mosquitto):
            if part is not None:
                part.stop()
                log.info("stopped", part=part.name)
        return codes

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""
