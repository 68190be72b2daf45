"""Evidence: ingest's checks (pure) and the filesystem store."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from ganzhi.contracts import Channel, Evidence, mqtt_topic, new_id, utcnow
from ganzhi.evidence import EvidenceError, FileEvidenceStore, storage_key
from ingest.validate import Accepted, Rejected, route

JPEG = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))[1].tobytes()
SHA = hashlib.sha256(JPEG).hexdigest()
TOPIC = mqtt_topic("site-k", "cam-1", Channel.EVIDENCE)


def evidence(data: bytes, sha: str) -> bytes:
    return Evidence(msg_id=new_id(), site_id="site-k", device_id="cam-1", ts=utcnow(),
                    sha256=sha, data_b64=base64.b64encode(data).decode()
                    ).model_dump_json().encode()


def test_valid_evidence_is_accepted_with_its_bytes() -> None:
    d = route(TOPIC, evidence(JPEG, SHA))
    assert isinstance(d, Accepted) and d.blob == JPEG


@pytest.mark.parametrize(("data", "sha", "reason"), [
    (JPEG, "0" * 64, "evidence_hash_mismatch"),
    (b"GIF89a....", hashlib.sha256(b"GIF89a....").hexdigest(), "invalid_evidence"),
])
def test_bad_evidence_is_dead_lettered(data: bytes, sha: str, reason: str) -> None:
    d = route(TOPIC, evidence(data, sha))
    assert isinstance(d, Rejected) and d.reason == reason


def test_big_rejected_payload_is_truncated_to_fit_a_kafka_record() -> None:
    big = JPEG + b"\0" * 2_000_000
    d = route(TOPIC, evidence(big, "0" * 64))
    assert isinstance(d, Rejected)
    assert len(base64.b64decode(d.dead_letter.payload_b64)) == 512 * 1024
    assert "truncated" in d.dead_letter.error


def test_file_store_is_content_addressed_idempotent_and_checks_reads(tmp_path: Path) -> None:
    store = FileEvidenceStore(tmp_path)
    key = store.put(SHA, JPEG)
    assert key == storage_key(SHA) == f"{SHA[:2]}/{SHA[2:4]}/{SHA}.jpg"
    assert store.put(SHA, JPEG) == key and store.get(SHA) == JPEG
    assert store.get("1" * 64) is None
    with pytest.raises(EvidenceError):
        store.put("2" * 64, JPEG)  # content must hash to its name
    (tmp_path / key).write_bytes(JPEG + b"tampered")
    with pytest.raises(EvidenceError):
        store.get(SHA)
    with pytest.raises(EvidenceError):
        storage_key("../../etc/passwd")
    assert not list(tmp_path.rglob(".tmp-*"))
