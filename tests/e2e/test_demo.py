"""`ganzhi demo` as its user starts it: the stack comes up, its broker takes no anonymous
client and holds each device to its own topics, the simulated compressor failure opens an
alert and its repair resolves it, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from dynsec_broker import Probe, accepted

from ganzhi.contracts.topics import Channel, mqtt_topic

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


class Output:
    """The demo's stdout, read as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait(self, pattern: str, timeout: float) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if m := rx.search(line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} in:\n{''.join(self.lines[-40:])}")
                self.cond.wait(left)


def test_the_demo_runs_with_an_account_per_device(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANZHI_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganzhi.cli", "demo", "--data-dir", str(tmp_path),
         "--duration", "400"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = Output(proc)
    try:
        port = int(out.wait(r"MQTT: +127\.0\.0\.1:(\d+) \(its own broker: an account per"
                            r" device", 180).group(1))

        anonymous = Probe(port, "", "")
        anonymous.client.username_pw_set(None, None)
        assert anonymous.connect().is_failure  # CONNACK: not authorized
        wrong = Probe(port, "demo-site/cold-room-01", "not-its-password",
                      client_id="demo-site/cold-room-01")
        assert wrong.connect().is_failure

        # Each device's password is in its own 0600 file, named in the box file; the
        # devices' readings arriving (the alert below) shows they connect with them.
        # (What an account may publish is tests/integration/test_provisioning_broker.py's.)
        secret = tmp_path / "edge" / "secrets" / "cold-room-01"
        assert secret.stat().st_mode & 0o777 == 0o600
        box = (tmp_path / "edge" / "demo-box.yaml").read_text()
        assert f"password_file: {secret}" in box and secret.read_text().strip() not in box

        # The administrator provisions a new device from the API (the demo gives the API
        # the broker's admin account): its credential connects, on its own topics only.
        api = int(out.wait(r"console: +http://127\.0\.0\.1:(\d+)/console/", 5).group(1))
        keys = dict(line.split("=", 1) for line in
                    (tmp_path / "demo-keys.env").read_text().split() if "=" in line)
        base = f"http://127.0.0.1:{api}/api/v1"
        signed = httpx.post(f"{base}/auth/login", json={
            "username": keys["GANZHI_DEMO_ADMIN_USER"],
            "password": keys["GANZHI_DEMO_ADMIN_PASSWORD"]}, timeout=10)
        assert signed.status_code == 200, signed.text
        auth = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        added = httpx.post(f"{base}/sites/demo-site/devices", headers=auth, timeout=10, json={
            "device_id": "cold-room-09", "device_class": "cold_store",
            "params": {"variant": "chilled"}})
        assert added.status_code == 201, added.text
        issued = httpx.post(f"{base}/sites/demo-site/devices/cold-room-09/provision",
                            headers=auth, timeout=10)
        assert issued.status_code == 201, issued.text
        again = httpx.post(f"{base}/sites/demo-site/devices/cold-room-09/provision",
                           headers=auth, timeout=10)
        assert again.status_code == 409, again.text
        new = Probe(port, issued.json()["username"], issued.json()["password"],
                    client_id=issued.json()["username"])
        assert not new.connect().is_failure
        own = mqtt_topic("demo-site", "cold-room-09", Channel.STATUS)
        other = mqtt_topic("demo-site", "cold-room-01", Channel.TELEMETRY)
        assert accepted(new.publish(own, b'{"x": 1}'))
        assert not accepted(new.publish(other, b'{"x": 1}'))
        new.close()

        # The same from a shell, with the demo's two files (demo-keys.env holds the
        # broker's administrator).
        added = httpx.post(f"{base}/sites/demo-site/devices", headers=auth, timeout=10, json={
            "device_id": "cold-room-10", "device_class": "cold_store",
            "params": {"variant": "chilled"}})
        assert added.status_code == 201, added.text
        shell = {**env, **dict(line.split("=", 1) for line in
                               (tmp_path / "demo.env").read_text().split() if "=" in line),
                 **keys}
        password = tmp_path / "cold-room-10.password"
        cli = subprocess.run(
            [sys.executable, "-m", "ganzhi.cli", "devices", "provision", "demo-site",
             "cold-room-10", "--password-file", str(password)],
            cwd=ROOT, env=shell, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert password.read_text().strip() not in cli.stdout + cli.stderr
        ten = Probe(port, "demo-site/cold-room-10", password.read_text().strip(),
                    client_id="demo-site/cold-room-10")
        assert not ten.connect().is_failure
        ten.close()

        out.wait(r"\[alert #\d+ open\] demo-site/cold-room-03 cold_chain\.", 240)
        out.wait(r"\[alert #\d+ resolved\] demo-site/cold-room-03 cold_chain\.", 240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        code = proc.wait(60)
    assert code == 0, "".join(out.lines[-40:])
    stopped = "".join(out.lines)
    for service in ("edge", "ingest", "stream", "alerts", "api", "receiver"):
        assert f"exit=0 service={service}" in stopped, service
