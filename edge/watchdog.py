"""systemd's notify protocol for the edge agent: ready, watchdog pings, stopping.

Under a ``Type=notify`` unit with ``WatchdogSec=`` (deploy/edge/ganzhi-edge@.service),
systemd sets ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``. The agent says ``READY=1`` once its
spool is open and its uplinks started, then ``WATCHDOG=1`` every half watchdog period from
its event loop while every sampler task is alive: a hung loop or a dead sampler stops the
pings, and systemd restarts the agent (the spool keeps what was not sent). Without
systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass
class Notifier:
    address: str | None  # NOTIFY_SOCKET ('@' first: the abstract namespace)
    watchdog_s: float | None  # ping at least this often (half of WATCHDOG_USEC)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Notifier:
        e = os.environ if env is None else env
        address = e.get("NOTIFY_SOCKET") or None
        usec = e.get("WATCHDOG_USEC")
        pid = e.get("WATCHDOG_PID")
        watchdog = None
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec) / 1_000_000 / 2
        return cls(address, watchdog)

    def send(self, state: str) -> bool:
        """Send ``state`` (``READY=1``, ``WATCHDOG=1``, ...); False without systemd."""
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(target)
            s.sendall(state.encode())
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
