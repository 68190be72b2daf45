"""What the reference task system reports back on the clues it takes (demo loop).

A real task system turns a clue into an inspection and reports each step with
``POST /api/v1/clues/{clue_id}/feedback`` (API key of scope ``feedback``). The reference
receiver does the same, quickly: ``accepted`` and ``dispatched`` when it takes a clue,
``rectified`` and ``closed`` when the clue is resolved. Reports go from a background
thread, in order, retried while the API is unreachable or answers 5xx; a 4xx is logged
and dropped (it will not get better).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request

from ganzhi.observability import get_logger

log = get_logger("receiver.feedback")
ON_EVENT = {"created": ("accepted", "dispatched"), "resolved": ("rectified", "closed")}


class FeedbackReporter:
    def __init__(self, api_base: str, token: str, *, attempts: int = 20,
                 backoff_s: float = 0.5) -> None:
        self._base = api_base.rstrip("/")
        self._token = token
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)
        self.sent = 0
        self.failed = 0

    def start(self) -> FeedbackReporter:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)

    def on_event(self, event: str, clue_id: str) -> None:
        for status in ON_EVENT.get(event, ()):
            self._queue.put((clue_id, status))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._send(*item)

    def _send(self, clue_id: str, status: str) -> None:
        body = json.dumps({"status": status}).encode()
        request = urllib.request.Request(
            f"{self._base}/api/v1/clues/{clue_id}/feedback", data=body, method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self._token}"})
        for attempt in range(1, self._attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=5):
                    self.sent += 1
                    log.info("feedback_sent", clue_id=clue_id, status=status)
                    return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    self.failed += 1
                    log.warning("feedback_refused", clue_id=clue_id, status=status,
                                http_status=exc.code)
                    return
            except OSError:
                pass
            time.sleep(min(self._backoff_s * attempt, 5.0))
        self.failed += 1
        log.warning("feedback_gave_up", clue_id=clue_id, status=status)
