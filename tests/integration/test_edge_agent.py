"""The edge agent against a real Mosquitto: outages and kill -9 lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from ganzhi.mqtt import session_properties
from ganzhi.stack.infra import Managed, free_port, start_mosquitto

from waiting import wait_for

pytestmark = pytest.mark.integration

SITE = "site-t"
DEVICES = ("counter-a", "counter-b")


class Collector:
    """A persistent-session subscriber that keeps every device message it receives."""

    def __init__(self, host: str, port: int) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="collector",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe("ganzhi/v1/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(host, port, clean_start=False,
                            properties=session_properties(3600))
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def telemetry(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m for t, m in self.messages if t.endswith("/telemetry")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _config(tmp: Path, port: int, when_full: str = "drop_oldest", max_messages: int = 100000,
            interval: float = 0.02) -> Path:
    cfg = {
        "site_id": SITE,
        "broker": {"host": "127.0.0.1", "port": port, "keepalive_s": 5},
        "spool": {"path": str(tmp / "spool.db"), "max_messages": max_messages,
                  "when_full": when_full},
        "metrics_port": free_port(),
        "devices": [
            {"device_id": d, "device_class": "cold_store", "sample_interval_s": interval,
             "source": {"type": "simulator", "kind": "counter",
                        "state_file": str(tmp / f"{d}.counter")}}
            for d in DEVICES
        ],
    }
    path = tmp / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ganzhi.cli", "edge", "--config",
                                 str(config)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "GANZHI_LOG_LEVEL": "INFO"})


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Managed]:
    part = start_mosquitto(tmp_path / "mosquitto")
    yield part
    part.stop()


def _values_by_device(msgs: list[dict[str, Any]]) -> dict[str, list[int]]:
    """First arrival of each msg_id, in arrival order: the sample_seq values per device."""
    seen: set[str] = set()
    out: dict[str, list[int]] = {d: [] for d in DEVICES}
    for m in msgs:
        if m["msg_id"] in seen:
            continue
        seen.add(m["msg_id"])
        out[m["device_id"]].append(int(m["readings"][0]["value"]))
    return out


def _metric(config: Path, name: str) -> float:
    port = yaml.safe_load(config.read_text())["metrics_port"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return -1.0
    values = [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
              if ln.startswith((name + " ", name + "{"))]
    return sum(values) if values else -1.0


def _counted(tmp: Path) -> dict[str, int]:
    """The counters the devices have sampled so far (their own state files)."""
    out = {}
    for d in DEVICES:
        try:
            out[d] = int((tmp / f"{d}.counter").read_text() or 0)
        except (FileNotFoundError, ValueError):
            out[d] = 0
    return out


def test_broker_outage_and_agent_kill_lose_nothing(broker: Managed, tmp_path: Path) -> None:
    config = _config(tmp_path, broker.port)
    log = tmp_path / "agent.log"
    collector = Collector(broker.host, broker.port)
    agent = _agent(config, log)
    try:
        wait_for(lambda: all(len(v) >= 20 for v in _values_by_device(
            collector.telemetry()).values()), 30, "both devices delivering")
        # The broker goes away for a while: the agent keeps sampling into its spool.
        broker.stop()
        wait_for(lambda: _metric(config, "ganzhi_edge_spool_depth") >= 40, 30,
                 "messages piling up in the spool")
        restarted = start_mosquitto(tmp_path / "mosquitto", broker.host, broker.port)
        broker.proc = restarted.proc
        # Sampling goes on (every 20 ms), so the depth comes back to a few, not to zero.
        wait_for(lambda: 0 <= _metric(config, "ganzhi_edge_spool_depth") <= 5, 30,
                 "the spool drained after the outage")
        # The agent dies hard mid-run and comes back on the same spool.
        agent.send_signal(signal.SIGKILL)
        agent.wait(5)
        before = _counted(tmp_path)
        agent = _agent(config, log)
        wait_for(lambda: all(_counted(tmp_path)[d] >= before[d] + 60 for d in DEVICES), 30,
                 "sampling again after the restart")
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0, log.read_text()[-3000:]
    last = {d: int((tmp_path / f"{d}.counter").read_text()) for d in DEVICES}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = _values_by_device(collector.telemetry())
        if all(got[d] and got[d][-1] >= last[d] for d in DEVICES):
            break
        time.sleep(0.2)
    collector.close()

    got = _values_by_device(collector.telemetry())
    for d in DEVICES:
        values = got[d]
        assert last[d] > 120, f"{d} sampled too little: {last[d]}"
        # Nothing lost: every value produced arrived.
        assert set(values) == set(range(1, last[d] + 1)), (
            f"{d}: missing {sorted(set(range(1, last[d] + 1)) - set(values))[:20]}")
        # In order per device (a value may repeat once after the kill: sampled again
        # because the crash came between spooling it and recording it).
        assert values == sorted(values)
        assert len(values) - len(set(values)) <= 1
    statuses = [m for t, m in collector.messages if t.endswith("/status")]
    assert {m["state"] for m in statuses} >= {"online", "offline"}
    # The birth tells the platform how often the device reports (its offline limit).
    assert all(m["report_period_s"] > 0 for m in statuses if m["state"] == "online")


def test_full_spool_drops_oldest_and_counts_it(broker: Managed, tmp_path: Path) -> None:
    broker.stop()  # no broker: everything piles up in the spool
    config = _config(tmp_path, broker.port, max_messages=50, interval=0.01)
    log = tmp_path / "agent.log"
    agent = _agent(config, log)
    cfg = yaml.safe_load(config.read_text())
    wait_for(lambda: _metric(config, "ganzhi_edge_spool_dropped_total") > 100, 30,
             "the full spool dropping its oldest")
    body = urllib.request.urlopen(f"http://127.0.0.1:{cfg['metrics_port']}/metrics").read()
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(20) == 0
    text = body.decode()
    depth = [ln for ln in text.splitlines() if ln.startswith("ganzhi_edge_spool_depth")]
    dropped = [ln for ln in text.splitlines()
               if ln.startswith('ganzhi_edge_spool_dropped_total{policy="drop_oldest"}')]
    assert depth and float(depth[0].split()[-1]) == 50
    assert dropped and float(dropped[0].split()[-1]) > 100


def test_unrouted_messages_stay_spooled_until_someone_subscribes(
        mqtt_broker: Managed, tmp_path: Path) -> None:
    """A PUBACK "no matching subscribers" (the platform's subscription missing, as after a
    Mosquitto restart) is not a delivery: the message stays and goes again later."""
    from edge.spool import Spool
    from edge.uplink import BrokerEndpoint, DeviceUplink
    from ganzhi.contracts import Channel, mqtt_topic
    from ganzhi.failures import RetryPolicy

    spool = Spool(tmp_path / "spool.db")
    topic = mqtt_topic(SITE, "dev-u", Channel.TELEMETRY)
    for i in range(5):
        spool.append("dev-u", topic, json.dumps({"n": i}).encode())
    uplink = DeviceUplink(spool, BrokerEndpoint("127.0.0.1", mqtt_broker.port), SITE, "dev-u",
                          None, None, backoff=RetryPolicy(base_s=0.2, max_s=0.5)).start()
    try:
        wait_for(lambda: uplink.connected.is_set(), 10, "the uplink to connect")
        # Answered, but nobody subscribed: all five stay in the spool.
        wait_for(lambda: uplink._unrouted >= 1, 10, "a 'no matching subscribers' answer")
        assert spool.depth() == 5
        collector = Collector("127.0.0.1", mqtt_broker.port)
        try:
            wait_for(lambda: spool.depth() == 0, 20, "the spool to drain once subscribed")

            def got() -> list[int]:
                with collector._lock:
                    return [m["n"] for t, m in collector.messages if t == topic]

            # The PUBACK (spool drained) says the broker routed them; the subscriber
            # gets them a moment later, more so on a loaded machine.
            wait_for(lambda: len(got()) >= 5, 10, "the subscriber to get all five")
            assert got() == [0, 1, 2, 3, 4]
        finally:
            collector.close()
    finally:
        uplink.stop()
        spool.close()
