"""The reference receiver: both clue events, each key once, a task per clue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from alerts.receiver import ClueReceiver
from alerts.signing import EVENT_HEADER, EVENT_NAMES, idempotency_key, signature_headers

SECRET = b"s3cret"


@pytest.fixture
def receiver() -> Iterator[ClueReceiver]:
    r = ClueReceiver(SECRET)
    yield r
    r.server.server_close()


def deliver(r: ClueReceiver, clue: dict[str, Any], event: str | None = None,
            **headers: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps(clue).encode()
    event = event or clue.get("event", "created")
    key = (idempotency_key(clue["clue_id"], event, clue.get("seq", 0))
           if event in EVENT_NAMES else f"{clue['clue_id']}:{event}")
    sent = signature_headers(SECRET, int(time.time()), body, key,
                             event if event in EVENT_NAMES else "created")
    sent.update(headers)
    return r.handle(sent, body)


CREATED = {"clue_id": "c-1", "event": "created", "summary": "no mask",
           "links": {"evidence": "http://x/api/v1/evidence/aa"}}
RESOLVED = {**CREATED, "event": "resolved", "seq": 1, "ended_at": "2026-01-01T08:30:00Z",
            "resolution": {"summary": "rectified"},
            "links": {"evidence": "http://x/api/v1/evidence/bb"}}


def test_created_opens_a_task_and_resolved_closes_it_with_its_evidence(
    receiver: ClueReceiver,
) -> None:
    assert deliver(receiver, CREATED) == (200, {"accepted": True, "duplicate": False})
    assert receiver.tasks["c-1"]["status"] == "open"
    assert deliver(receiver, CREATED)[1]["duplicate"] is True  # a retry
    assert deliver(receiver, RESOLVED) == (200, {"accepted": True, "duplicate": False})
    assert deliver(receiver, RESOLVED)[1]["duplicate"] is True
    assert list(receiver.accepted) == ["c-1", "c-1:resolved:1"]
    task = receiver.tasks["c-1"]
    assert task["status"] == "closed" and task["clue"] == CREATED
    assert task["resolution"] == {"ended_at": "2026-01-01T08:30:00Z",
                                  "resolution": {"summary": "rectified"},
                                  "evidence": "http://x/api/v1/evidence/bb"}
    assert receiver.rejected == 0


def test_a_body_without_event_is_a_created_one(receiver: ClueReceiver) -> None:
    legacy = {"clue_id": "c-2", "summary": "too warm"}
    assert deliver(receiver, legacy)[0] == 200
    assert receiver.tasks["c-2"]["status"] == "open"


def test_headers_contradicting_the_body_are_refused(receiver: ClueReceiver) -> None:
    assert deliver(receiver, RESOLVED, event="created")[0] == 400  # key and event: created
    assert deliver(receiver, CREATED, **{EVENT_HEADER: "clue.resolved"})[0] == 400
    assert deliver(receiver, {**CREATED, "event": "closed"}, event="created")[0] == 400
    assert receiver.accepted == {} and receiver.rejected == 3


def test_unknown_events_are_acknowledged_and_ignored(receiver: ClueReceiver) -> None:
    status, answer = deliver(receiver, CREATED, **{EVENT_HEADER: "clue.acknowledged"})
    assert (status, answer["ignored"]) == (200, True)
    assert receiver.accepted == {} and receiver.ignored == 1
