"""Services refuse to start without real secrets, and say which setting is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import SecretStr

from ganzhi.settings import (
    InsecureSettingError,
    MqttSettings,
    WebhookSettings,
    share_group,
    webhook_secret,
)


@pytest.mark.parametrize(("value", "says"), [
    (None, "is not set"), ("", "is not set"), ("   ", "is not set"),
    ("change-me", "well-known default"), ("short-secret", "has 12 characters"),
])
def test_webhook_secret_refused(value: str | None, says: str) -> None:
    s = WebhookSettings(secret=SecretStr(value) if value is not None else None)
    with pytest.raises(InsecureSettingError, match="GANZHI_WEBHOOK__SECRET") as err:
        webhook_secret(s)
    assert says in str(err.value)


def test_share_group_refused_when_default_or_short() -> None:
    for value in (None, "ganzhi-ingest", "ingest-1"):
        with pytest.raises(InsecureSettingError, match="GANZHI_MQTT__SHARE_GROUP"):
            share_group(MqttSettings(share_group=SecretStr(value) if value else None))
    assert share_group(MqttSettings(share_group=SecretStr("ingest-" + "a" * 32)))


def test_secret_values_never_print() -> None:
    s = WebhookSettings(secret=SecretStr("x" * 40))
    assert "x" * 40 not in repr(s) and "x" * 40 not in str(s.model_dump())


@pytest.mark.parametrize(("service", "variable"), [
    ("ingest", "GANZHI_MQTT__SHARE_GROUP"), ("alerts", "GANZHI_WEBHOOK__SECRET"),
    ("receiver", "GANZHI_WEBHOOK__SECRET"),
])
def test_a_service_without_its_secret_exits_2_naming_it(service: str, variable: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANZHI_")}
    env["GANZHI_WEBHOOK__SECRET"] = "change-me"
    out = subprocess.run([sys.executable, "-m", "ganzhi.cli", service], env=env,
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 2
    assert variable in out.stderr and "change-me" not in out.stderr
