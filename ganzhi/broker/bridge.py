"""Regional Mosquitto brokers bridged into the central one.

A city's devices need not all connect to one broker: each region (a district, a large
chain's estate) runs its own Mosquitto with its devices' passwords and the device ACL
(:mod:`ganzhi.mqtt_auth`), and bridges the device topics over TLS into the central broker
that ingest subscribes to. The bridge is one MQTT client of the central broker with its
own service account; the central ACL lets it write device topics (of its sites only, if
given) and read nothing.

Nothing is lost when the link or the central broker is down: the bridge publishes with
QoS 1 from a persistent session (``cleansession false``), so the regional broker queues
what its devices send (up to ``max_queued_messages``) and forwards it on reconnection;
a redelivery is a duplicate with the same message id, dropped downstream like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ganzhi.contracts.topics import MQTT_ROOT, is_valid_id
from ganzhi.mqtt_auth import CredentialError, check_service_username

BRIDGE_PREFIX = "ganzhi-bridge-"


def bridge_username(name: str) -> str:
    """The central broker's account of region ``name``'s bridge."""
    return check_service_username(BRIDGE_PREFIX + name)


@dataclass(frozen=True)
class Bridge:
    """The regional side of one bridge."""

    name: str  # the region, e.g. "district-a"
    remote_host: str
    remote_port: int
    cafile: Path  # the CA of the central broker's TLS certificate
    password: str  # of bridge_username(name) on the central broker
    # Reconnect after a lost link: first after `restart_min_s`, backing off to `max`.
    restart_min_s: int = 2
    restart_max_s: int = 30

    @property
    def username(self) -> str:
        return bridge_username(self.name)


def render_bridge(b: Bridge) -> str:
    """The regional broker's bridge section (append to its mosquitto.conf, or put in its
    include_dir). It holds the bridge's password: keep the file 0600, owned by
    mosquitto."""
    if any(c.isspace() for c in b.password) or not b.password:
        raise CredentialError("the bridge password must be a non-empty word")
    return "\n".join([
        f"connection {b.username}",
        f"address {b.remote_host}:{b.remote_port}",
        "bridge_protocol_version mqttv311",
        f"remote_clientid {b.username}",
        f"remote_username {b.username}",
        f"remote_password {b.password}",
        f"local_clientid {b.username}-local",
        f"bridge_cafile {b.cafile}",
        "bridge_tls_version tlsv1.2",
        "bridge_insecure false",
        # A persistent session on both sides, QoS 1: queued while the link is down.
        "cleansession false",
        "try_private false",
        # No $SYS/broker/connection/... notifications: the bridge writes device topics only.
        "notifications false",
        f"restart_timeout {b.restart_min_s} {b.restart_max_s}",
        f"topic {MQTT_ROOT}/+/+/+ out 1",
    ]) + "\n"


def central_acl_lines(bridges: Mapping[str, Sequence[str] | None]) -> list[str]:
    """The central ACL's lines for the bridges: region -> its sites (None: any site)."""
    lines: list[str] = []
    for name, sites in sorted(bridges.items()):
        user = bridge_username(name)
        lines += ["", f"# Region {name}'s bridge writes device topics and reads nothing.",
                  f"user {user}"]
        if sites is None:
            lines.append(f"topic write {MQTT_ROOT}/+/+/+")
            continue
        for site in sites:
            if not is_valid_id(site):
                raise CredentialError(f"not a site id: {site!r}")
            lines.append(f"topic write {MQTT_ROOT}/{site}/+/+")
    return lines
