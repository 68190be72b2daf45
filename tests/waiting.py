"""Waiting on conditions with a deadline, never on fixed sleeps (a loaded CI machine is
slow, an idle one fast)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; that value, or an
    AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def healthz(port: int) -> dict[str, Any]:
    """A service's health document, or {} while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            body: dict[str, Any] = json.load(r)
            return body
    except OSError as exc:  # HTTPError (503) carries the body too
        read = getattr(exc, "read", None)
        if read is not None:
            try:
                body = json.loads(read())
                return body
            except ValueError:
                return {}
        return {}
