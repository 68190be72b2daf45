"""The edge agent speaks systemd's notify protocol: ready once started, watchdog pings
while it samples, stopping on SIGTERM (a datagram socket stands in for systemd)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_edge_agent import _config

from edge.watchdog import Notifier
from ganzhi.stack.infra import Managed

pytestmark = pytest.mark.integration


def test_ready_pings_and_stopping(mqtt_broker: Managed, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(0.2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANZHI_")}
    env.update({"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})  # 0.4 s
    cfg = _config(tmp_path, mqtt_broker.port)
    proc = subprocess.Popen([sys.executable, "-m", "ganzhi.cli", "edge", "--config", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    got: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and got.count("WATCHDOG=1") < 5:
            assert proc.poll() is None
            try:
                got.append(server.recv(4096).decode())
            except TimeoutError:
                continue
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        while True:
            try:
                got.append(server.recv(4096).decode())
            except TimeoutError:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
    assert got[0].startswith("READY=1\nSTATUS=2 devices, 0 cameras")
    assert got.count("WATCHDOG=1") >= 5  # every 0.2 s, half the watchdog period
    assert got[-1] == "STOPPING=1"


def test_without_systemd_nothing_is_sent() -> None:
    n = Notifier.from_env({})
    assert n.address is None and n.watchdog_s is None and not n.ready() and not n.ping()
    # A watchdog meant for another process (WATCHDOG_PID) is not ours to ping.
    other = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000",
                               "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_s is None
    mine = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000",
                              "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_s == 0.5
