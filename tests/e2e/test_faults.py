"""Fault injection, short profile: the whole system under load while ingest, the stream
worker, the alerts service and the API are killed with SIGKILL and PostgreSQL and
Mosquitto restarted; then every reading, alert and clue is counted
(``ganzhi faults --profile full`` is the long run, docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganzhi.stack.faults import RESUME_LIMIT_S, FaultRun

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_kills_and_restarts_lose_and_double_nothing(tmp_path: Path) -> None:
    report = FaultRun(tmp_path / "faults", "short").run()
    print("\n" + report.table())
    assert report.readings_rows == report.readings_expected and report.readings_lost == 0
    assert report.alerts_expected > 50  # the workload really exercises the rules
    assert (report.alerts_missing, report.alerts_extra) == (0, 0)
    assert report.clue_events_undelivered == 0
    assert report.receiver_keys == report.clue_events and report.receiver_keys_not_in_outbox == 0
    assert report.unplanned_exits == []
    assert [f.fault for f in report.faults] == [
        "ingest", "stream", "alerts", "api", "postgres", "mosquitto"]
    slow = [f for f in report.faults if f.resumed_s is None or f.resumed_s > RESUME_LIMIT_S]
    assert not slow, slow
    assert report.ok
