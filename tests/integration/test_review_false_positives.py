"""The platform's side of the labelling loop: the evidence of camera findings marked
false positive, listed for the export (``ganzhi review false-positives``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alerts.repository import apply_transition

from alerting import FIRING, policy, tr

pytestmark = pytest.mark.integration


CASES = [("vision.no_mask", "cam-1", "a" * 64, True), ("vision.smoking", "cam-2", "b" * 64,
                                                       False),
         ("cold_chain.chilled", "room-1", "c" * 64, True)]


async def seed(pg_dsn: str, cases: list[tuple[str, str, str, bool]]) -> None:
    """Each case's alert and incident, and the false-positive marks."""
    start = datetime.now(UTC) - timedelta(hours=1)
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        for rule, device, sha, _fp in cases:
            await apply_transition(conn, tr(FIRING, rule, device=device, start=start,
                                            values={"snapshot_sha256": sha}), policy())
        for rule, device, _sha, fp in cases:
            if fp:
                await conn.execute(
                    "UPDATE incidents SET false_positive = true WHERE id = (SELECT incident_id"
                    " FROM alerts WHERE rule_id = %s AND device_id = %s)", (rule, device))


def test_false_positive_findings_are_listed_by_their_snapshots(pg_dsn: str) -> None:
    asyncio.run(seed(pg_dsn, CASES))
    env = {**os.environ, "GANZHI_DB__DSN": pg_dsn}
    run = subprocess.run([sys.executable, "-m", "ganzhi.cli", "review", "false-positives"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["a" * 64]  # a camera's, marked; not the cold room's
    run = subprocess.run([sys.executable, "-m", "ganzhi.cli", "review", "false-positives",
                          "--camera", "cam-9"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stdout == ""
