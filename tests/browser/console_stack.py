"""What the console's browser tests share: the stack's handle, the seeded names, where
Chromium and the artifacts are."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from alerts.receiver import ClueReceiver
from ganzhi.settings import MqttSettings

from access_fixtures import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "api" / "console" / "dist"
CHROMIUM = Path(os.environ.get("GANZHI_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("GANZHI_TEST_ARTIFACTS",
                                ROOT / "var" / "test-artifacts" / "console"))
LIMIT_C = 8.0
DURATION_S = 60
ACCESS_TTL_S = 60  # the browser-test stack's access tokens (the minimum allowed)
SITE, FRIDGE, CAMERA = "site-a1", "fridge-01", "cam-01"


@dataclass
class ConsoleStack:
    api_url: str
    dsn: str
    mqtt: MqttSettings
    receiver: ClueReceiver
    procs: dict[str, subprocess.Popen[bytes]]

    @property
    def console(self) -> str:
        return f"{self.api_url}/console/"

    def token(self, username: str) -> str:
        r = httpx.post(f"{self.api_url}/api/v1/auth/login",
                       json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        token: str = r.json()["access_token"]
        return token

    def get(self, who: str, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.api_url}{path}", params=params,
                         headers={"Authorization": f"Bearer {self.token(who)}"})

    def post(self, who: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.api_url}{path}", json=body,
                          headers={"Authorization": f"Bearer {self.token(who)}"})


