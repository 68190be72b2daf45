"""The evidence store: snapshots by SHA-256, on a filesystem or an S3-compatible bucket.

Content-addressed (``ab/cd/<sha256>.jpg``), so writes are idempotent and a stored file is
its own integrity check: whatever is read back must hash to its name. Ingest writes,
the API reads; neither needs the other.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

from ganzhi.settings import EvidenceSettings

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class EvidenceError(ValueError):
    pass


def storage_key(sha256: str) -> str:
    if not SHA256.match(sha256):
        raise EvidenceError(f"not a sha256: {sha256!r}")
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.jpg"


def check(data: bytes, sha256: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise EvidenceError(f"content hashes to {actual}, not {sha256}")


class EvidenceStore(Protocol):
    def put(self, sha256: str, data: bytes) -> str: ...

    def get(self, sha256: str) -> bytes | None: ...


class FileEvidenceStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, sha256: str, data: bytes) -> str:
        check(data, sha256)
        key = storage_key(sha256)
        path = self.root / key
        if path.exists():
            return key  # same name, same content
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, sha256: str) -> bytes | None:
        path = self.root / storage_key(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        check(data, sha256)
        return data


class S3EvidenceStore:
    """Any S3-compatible service (AWS, MinIO, Ceph) through boto3 (extra ``s3``)."""

    def __init__(self, s: EvidenceSettings) -> None:
        import boto3

        self.bucket = s.s3_bucket
        self._s3: Any = boto3.client(
            "s3", endpoint_url=s.s3_endpoint, region_name=s.s3_region,
            aws_access_key_id=s.s3_access_key.get_secret_value() if s.s3_access_key else None,
            aws_secret_access_key=(s.s3_secret_key.get_secret_value()
                                   if s.s3_secret_key else None))

    def put(self, sha256: str, data: bytes) -> str:
        check(data, sha256)
        key = storage_key(sha256)
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="image/jpeg")
        return key

    def get(self, sha256: str) -> bytes | None:
        key = storage_key(sha256)
        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=key)
        except self._s3.exceptions.NoSuchKey:
            return None
        data: bytes = obj["Body"].read()
        check(data, sha256)
        return data


def make_store(s: EvidenceSettings) -> EvidenceStore:
    return S3EvidenceStore(s) if s.backend == "s3" else FileEvidenceStore(s.dir)
