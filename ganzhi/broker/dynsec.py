"""Mosquitto's dynamic-security plugin: its first configuration and its control topic.

The plugin keeps clients (username, salted PBKDF2-SHA512 password hash, optional forced
client id), roles (ACL lists) and default access in one JSON file that it rewrites on
every change, and takes changes as JSON commands published to
``$CONTROL/dynamic-security/v1`` by a client whose role allows it. Measured on Mosquitto
2.0.11 (tests/integration/test_provisioning_broker.py):

* ``disableClient``, ``deleteClient``, ``setClientPassword`` and ``modifyClient`` (roles)
  disconnect every session of that username at once (DISCONNECT reason 0x98
  "Administrative action", within ~10 ms); the next CONNECT is refused (CONNACK 135).
* With ``subscribe`` denied by default, a SUBSCRIBE with no allowing ``subscribe*`` ACL is
  answered SUBACK 135 "Not authorized" and creates no subscription, shared ones included:
  unlike an ``acl_file``, the plugin keeps a device out of ingest's share group.
* ACL topics are matched literally here: ``%u`` in a role's topic did not match a
  username holding ``/``, so each device has a role of its own with literal topics.

Commands are answered on ``$CONTROL/dynamic-security/v1/response``, to the asking client
only. Passwords travel inside the command: use TLS or the loopback listener for it.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from ganzhi.contracts.topics import MQTT_ROOT, Channel, mqtt_topic
from ganzhi.mqtt import make_client
from ganzhi.mqtt_auth import check_service_username, device_username, hash_password
from ganzhi.settings import MqttSettings

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
PLUGIN_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
ADMIN_ROLE = "ganzhi-admin"
INGEST_ROLE = "ganzhi-ingest"
MONITOR_ROLE = "ganzhi-monitor"
DEVICE_ROLE_PREFIX = "device:"

Command = dict[str, Any]
Acl = dict[str, Any]


class DynsecError(RuntimeError):
    """The broker could not be reached or refused the admin, or a command failed."""


class DynsecCommandError(DynsecError):
    """One command was answered with an error (``error`` is the plugin's text)."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"broker refused {command}: {error}")
        self.command, self.error = command, error


def plugin_path() -> Path:
    """Where this machine's Mosquitto keeps the plugin (Debian: package ``mosquitto``)."""
    for candidate in PLUGIN_CANDIDATES:
        if Path(candidate).exists():
            return Path(candidate)
    raise DynsecError("mosquitto_dynamic_security.so not found (apt-get install mosquitto)")


# --- roles and clients ------------------------------------------------------------------


def _acl(acltype: str, topic: str) -> Acl:
    return {"acltype": acltype, "topic": topic, "allow": True}


def admin_acls() -> list[Acl]:
    """The admin account manages the plugin and does nothing else."""
    topic = "$CONTROL/dynamic-security/#"
    return [_acl("publishClientSend", topic), _acl("publishClientReceive", topic),
            _acl("subscribePattern", topic)]


def ingest_acls() -> list[Acl]:
    """Ingest reads every device topic, only through a shared subscription, and
    publishes nothing."""
    every = f"{MQTT_ROOT}/+/+/+"
    return [_acl("subscribePattern", f"$share/+/{every}"), _acl("publishClientReceive", every)]


def monitor_acls() -> list[Acl]:
    """Monitoring: broker statistics and the devices' online/offline status."""
    status = f"{MQTT_ROOT}/+/+/{Channel.STATUS.value}"
    return [_acl("subscribePattern", "$SYS/#"), _acl("publishClientReceive", "$SYS/#"),
            _acl("subscribePattern", status), _acl("publishClientReceive", status)]


def device_role(site_id: str, device_id: str) -> str:
    return DEVICE_ROLE_PREFIX + device_username(site_id, device_id)


def device_acls(site_id: str, device_id: str) -> list[Acl]:
    """Publish on its own channels (its will and retained status included); nothing else:
    no subscription at all, which the edge agent does not need."""
    return [_acl("publishClientSend", mqtt_topic(site_id, device_id, ch)) for ch in Channel]


def default_access() -> list[Acl]:
    """Deny what no role allows: publishing, receiving and subscribing."""
    return [{"acltype": kind, "allow": kind == "unsubscribe"}
            for kind in ("publishClientSend", "publishClientReceive", "subscribe",
                         "unsubscribe")]


def _hashed(password: str) -> dict[str, Any]:
    """The plugin's stored form: the same PBKDF2-SHA512 as ``$7$`` password-file hashes."""
    _, _, iterations, salt, digest = hash_password(password).split("$")
    return {"password": digest, "salt": salt, "iterations": int(iterations)}


@dataclass(frozen=True)
class Account:
    """A service account of the initial configuration."""

    username: str
    password: str
    role: str


def initial_config(admin: Account, services: Sequence[Account] = ()) -> dict[str, Any]:
    """The plugin's JSON file before its first start: the admin, the service accounts,
    their roles, and deny-by-default."""
    roles = {ADMIN_ROLE: admin_acls(), INGEST_ROLE: ingest_acls(), MONITOR_ROLE: monitor_acls()}
    clients = []
    for account in (admin, *services):
        check_service_username(account.username)
        if account.role not in roles:
            raise ValueError(f"unknown role {account.role!r}; one of {sorted(roles)}")
        clients.append({"username": account.username, **_hashed(account.password),
                        "roles": [{"rolename": account.role}]})
    return {
        "clients": clients,
        "roles": [{"rolename": name, "acls": acls} for name, acls in roles.items()],
        "groups": [],
        "defaultACLAccess": {a["acltype"]: a["allow"] for a in default_access()},
    }


def write_initial_config(path: Path, admin: Account, services: Sequence[Account] = ()) -> None:
    """Write the plugin's file (mode 0600) for a broker's first start; never overwrite
    one: the running broker owns it from then on."""
    data = json.dumps(initial_config(admin, services), indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DynsecError(f"{path} exists; the broker owns it now (change it with "
                          "commands, or remove it to start over)") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(data)


# --- commands ---------------------------------------------------------------------------


def create_role(name: str, acls: list[Acl]) -> Command:
    return {"command": "createRole", "rolename": name, "acls": acls}


def modify_role(name: str, acls: list[Acl]) -> Command:
    return {"command": "modifyRole", "rolename": name, "acls": acls}


def create_client(username: str, password: str, role: str, *, clientid: str = "") -> Command:
    return {"command": "createClient", "username": username, "password": password,
            "clientid": clientid, "roles": [{"rolename": role}]}


def reset_client(username: str, password: str, role: str, *, clientid: str = "") -> list[Command]:
    """An existing client: a new password (this disconnects its sessions), its client id
    and role as they should be, and enabled."""
    return [
        {"command": "setClientPassword", "username": username, "password": password},
        {"command": "modifyClient", "username": username, "clientid": clientid,
         "roles": [{"rolename": role}]},
        {"command": "enableClient", "username": username},
    ]


def delete_client(username: str) -> Command:
    return {"command": "deleteClient", "username": username}


def delete_role(name: str) -> Command:
    return {"command": "deleteRole", "rolename": name}


# --- the control topic ------------------------------------------------------------------


class DynsecAdmin:
    """A short admin session on the broker's control topic (a context manager).

    ``run`` sends commands in one message and returns the plugin's answers in order;
    ``check`` raises :class:`DynsecCommandError` for the first failed one. One request
    at a time per session. The admin's password comes from settings and is never logged.
    """

    def __init__(self, settings: MqttSettings, *, timeout_s: float = 5.0) -> None:
        if not settings.admin_username or settings.admin_password is None:
            raise DynsecError("the broker admin account is not configured "
                              "(GANZHI_MQTT__ADMIN_USERNAME, GANZHI_MQTT__ADMIN_PASSWORD)")
        self._settings, self._timeout = settings, timeout_s
        self._client = make_client(
            settings, f"ganzhi-admin-{uuid.uuid4().hex[:12]}",
            username=settings.admin_username,
            password=settings.admin_password.get_secret_value())
        self._cond = threading.Condition()
        self._connack: ReasonCode | None = None
        self._suback: list[ReasonCode] | None = None
        self._answers: dict[str, Command] = {}
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def __enter__(self) -> DynsecAdmin:
        try:
            self._client.connect(self._settings.host, self._settings.port, keepalive=30)
        except OSError as exc:
            raise DynsecError(f"broker {self._settings.host}:{self._settings.port} "
                              f"unreachable: {exc.strerror or exc}") from None
        self._client.loop_start()
        try:
            self._login()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._close()

    def _close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _wait(self, ready: Any, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(ready, self._timeout):
                raise DynsecError(f"broker did not answer the admin's {what} in "
                                  f"{self._timeout:g}s")

    def _login(self) -> None:
        self._wait(lambda: self._connack is not None, "CONNECT")
        assert self._connack is not None
        if self._connack.is_failure:
            raise DynsecError(f"broker refused the admin account: {self._connack}")
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        self._wait(lambda: self._suback is not None, "SUBSCRIBE")
        assert self._suback is not None
        if any(rc.is_failure for rc in self._suback):
            raise DynsecError("the admin account may not use the dynamic-security control "
                              "topic (is the plugin loaded, and the account its admin?)")

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode,
                    _p: Any = None) -> None:
        with self._cond:
            self._connack = rc
            self._cond.notify_all()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, rcs: list[ReasonCode],
                      _p: Any = None) -> None:
        with self._cond:
            self._suback = rcs
            self._cond.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self._cond:
            for answer in responses:
                if isinstance(answer, dict) and "correlationData" in answer:
                    self._answers[str(answer["correlationData"])] = answer
            self._cond.notify_all()

    def run(self, commands: Iterable[Command]) -> list[Command]:
        """Send ``commands`` in one message; the plugin's answer to each, in order."""
        tagged = [{**cmd, "correlationData": uuid.uuid4().hex} for cmd in commands]
        ids = [cmd["correlationData"] for cmd in tagged]
        info = self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise DynsecError(f"could not send to the broker: {mqtt.error_string(info.rc)}")
        self._wait(lambda: all(i in self._answers for i in ids), "commands")
        with self._cond:
            return [self._answers.pop(i) for i in ids]

    def check(self, commands: Iterable[Command]) -> list[Command]:
        """:meth:`run`, raising for the first command that failed."""
        answers = self.run(commands)
        for answer in answers:
            if "error" in answer:
                raise DynsecCommandError(str(answer.get("command")), str(answer["error"]))
        return answers


def failed(answer: Command) -> str | None:
    """The plugin's error text for one answer, or None when it succeeded."""
    error = answer.get("error")
    return None if error is None else str(error)
