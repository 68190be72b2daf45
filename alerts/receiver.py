"""A reference clue receiver: what a task system does with our webhooks.

``ganzhi receiver`` runs it for the demo; the e2e tests use :class:`ClueReceiver` as the
"task system". It verifies every delivery's signature over the raw body, accepts each
``Idempotency-Key`` once (a retry of an event already taken answers 200 again), and
lists what it took at ``GET /clues``: the events in arrival order (``clues``, their keys in
``keys``, delivery ``counts``) and one
task per clue (``tasks``): ``clue.created`` opens the task, ``clue.updated`` and
``clue.escalated`` refresh it (members, severity), ``clue.reopened`` opens it again and
``clue.resolved`` attaches the rectification (its ``resolution`` and ``links.evidence``)
and closes it. With a :class:`~alerts.feedback_reporter.FeedbackReporter` it reports
back on each clue like a task system (``ganzhi receiver`` does when
``GANZHI_DEMO__FEEDBACK_TOKEN`` is set). ``answer_with`` makes it answer every delivery
with one status (503, 401...) before looking at it, to play a receiver in trouble.

An event it does not know (a later platform version) is answered 200 and ignored, so it
is not retried until it dies; a body whose ``event`` or ``clue_id`` contradicts the
headers is refused with 400.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alerts.feedback_reporter import FeedbackReporter
from alerts.signing import (
    EVENT_HEADER,
    EVENT_NAMES,
    IDEMPOTENCY_HEADER,
    idempotency_key,
    verify_headers,
)
from ganzhi.observability import configure_logging, get_logger
from ganzhi.settings import Settings, webhook_secret

log = get_logger("receiver")


class ClueReceiver:
    def __init__(self, secret: bytes, port: int = 0, host: str = "127.0.0.1",
                 feedback: FeedbackReporter | None = None) -> None:
        self.secret = secret
        self.feedback = feedback
        self.accepted: dict[str, dict[str, Any]] = {}  # Idempotency-Key -> body
        self.tasks: dict[str, dict[str, Any]] = {}  # clue_id -> task
        self.ignored = 0  # deliveries of events this receiver does not know
        self.deliveries = 0
        self.rejected = 0
        self.fail_next = 0  # answer 503 to this many deliveries (to exercise retries)
        self.answer_with: int | None = None  # answer every delivery with this status
        self.last_request: tuple[dict[str, str], bytes] = ({}, b"")
        self.reply_delay_s = 0.0  # take a delivery, then wait this long before answering
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = outer.handle(dict(self.headers.items()), body)
                if outer.reply_delay_s:
                    time.sleep(outer.reply_delay_s)
                self._reply(status, answer)

            def do_GET(self) -> None:
                with outer._lock:
                    items = list(outer.accepted.values())
                    tasks = [dict(t) for t in outer.tasks.values()]
                    counts = {"deliveries": outer.deliveries, "accepted": len(outer.accepted),
                              "rejected": outer.rejected, "ignored": outer.ignored}
                self._reply(200, {"clues": items, "tasks": tasks, "counts": counts,
                                  "keys": list(outer.accepted)})

            def _reply(self, status: int, answer: dict[str, Any]) -> None:
                data = json.dumps(answer, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/clues"

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.deliveries += 1
            self.last_request = (headers, body)
            if self.answer_with is not None:
                return self.answer_with, {"error": "answer_with"}
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, {"error": "try again later"}
            if not verify_headers(self.secret, headers, body):
                self.rejected += 1
                log.warning("clue_signature_invalid")
                return 401, {"error": "bad signature"}
            lowered = {k.lower(): v for k, v in headers.items()}
            key = lowered.get(IDEMPOTENCY_HEADER.lower(), "")
            event_name = lowered.get(EVENT_HEADER.lower(), "")
            events = {name: event for event, name in EVENT_NAMES.items()}
            if event_name not in events:
                self.ignored += 1
                log.info("clue_event_ignored", clue_event=event_name, key=key)
                return 200, {"accepted": False, "ignored": True}
            if key in self.accepted:
                return 200, {"accepted": True, "duplicate": True}
            try:
                clue = json.loads(body)
                event = clue.get("event", "created")
                clue_id = str(clue["clue_id"])
                expected = {idempotency_key(clue_id, event, int(clue.get("seq", 0)))}
                if event == "resolved":
                    expected.add(f"{clue_id}:resolved")  # clues made before incidents
                consistent = events[event_name] == event and key in expected
            except (ValueError, AttributeError, KeyError, TypeError):
                consistent = False
            if not consistent:
                self.rejected += 1
                log.warning("clue_inconsistent", clue_event=event_name, key=key)
                return 400, {"error": "body does not match X-Ganzhi-Event / Idempotency-Key"}
            self.accepted[key] = clue
            self._apply(event, clue)
            if self.feedback is not None:
                self.feedback.on_event(event, clue_id)
            log.info(
                "clue_received", key=key, clue_event=event, alert_id=clue.get("alert_id"),
                site=clue.get("site_id"), device=clue.get("device_id"),
                summary=clue.get("summary"),
                evidence=(clue.get("links") or {}).get("evidence"),
            )
            return 200, {"accepted": True, "duplicate": False}

    def _apply(self, event: str, clue: dict[str, Any]) -> None:
        """What a task system does with each event (called under the lock)."""
        task = self.tasks.setdefault(
            str(clue["clue_id"]),
            {"clue_id": clue["clue_id"], "status": "open", "clue": None, "resolution": None},
        )
        task.setdefault("events", []).append(event)
        if event in ("created", "updated", "escalated", "reopened"):
            task["clue"] = clue
            if event == "reopened":
                task["status"] = "open"
        else:  # resolved: attach the rectification and its evidence, close the task
            task["resolution"] = {
                "ended_at": clue.get("ended_at"),
                "resolution": clue.get("resolution"),
                "evidence": (clue.get("links") or {}).get("evidence"),
            }
            task["status"] = "closed"

    def start(self) -> ClueReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run(settings: Settings, port: int) -> int:
    configure_logging(settings.log_level, settings.log_json)
    token = settings.demo.feedback_token
    feedback = None
    if token is not None:
        api = f"http://{settings.api.host}:{settings.api.port}"
        feedback = FeedbackReporter(api, token.get_secret_value()).start()
    receiver = ClueReceiver(webhook_secret(settings.webhook), port, feedback=feedback).start()
    log.info("receiver_started", url=receiver.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    receiver.stop()
    if feedback is not None:
        feedback.stop()
    log.info("receiver_stopped", accepted=len(receiver.accepted))
    return 0
