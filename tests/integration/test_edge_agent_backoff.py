"""An uplink the broker keeps refusing backs off instead of hammering it."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest

from edge import metrics
from edge.spool import Spool
from edge.uplink import BrokerEndpoint, DeviceUplink
from ganzhi.failures import RetryPolicy
from ganzhi.stack.infra import start_mosquitto

pytestmark = pytest.mark.integration


def test_refused_login_backs_off_exponentially(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "bk-1", "right"], check=True)
    broker = start_mosquitto(tmp_path / "mosquitto", password_file=passwd)
    spool = Spool(tmp_path / "spool.db")
    random.seed(7)
    before = metrics.RECONNECTS.labels(device="bk-1")._value.get()
    uplink = DeviceUplink(
        spool, BrokerEndpoint(broker.host, broker.port), "site-t", "bk-1", "bk-1", "wrong",
        backoff=RetryPolicy(base_s=0.1, max_s=2.0),
    ).start()
    try:
        time.sleep(3.0)
    finally:
        uplink.stop()
        spool.close()
        broker.stop()
    attempts = metrics.RECONNECTS.labels(device="bk-1")._value.get() - before
    # Exponential backoff with full jitter from 0.1 s capped at 2 s: about 7 tries in 3 s.
    # A backoff stuck at its base makes about 60.
    assert not uplink.connected.is_set()
    # It did try (an uplink that never connects would pass the bound below), and the
    # broker refused it each time.
    assert attempts >= 3, f"only {attempts} connection attempts in 3 s"
    assert attempts <= 15, f"{attempts} connection attempts in 3 s"
    assert "not authorised" in (tmp_path / "mosquitto" / "mosquitto.log").read_text()
