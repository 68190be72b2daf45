"""The console benchmark (benchmarks/console_api.py) works: its SQL seeding fits the
schema, both accounts sign in through the real API, and every console call it times
answers 200 for the city account and the district account. Timing is not checked here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "console_api.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("console_api_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_seed_and_one_pass_of_the_console_calls(pg_dsn: str, tmp_path: Path) -> None:
    bench = _bench()
    sizes = bench.Sizes(alerts=300, readings=2_000, sites=40)
    counts, results = bench.run(pg_dsn, sizes, n=1, warmup=0, work=tmp_path,
                                log=lambda _msg: None)
    assert counts["alerts"] == 300
    assert counts["incidents"] == sizes.incidents
    assert counts["readings"] >= 1_990 and counts["rollups_1h"] > 0
    assert counts["incident_history"] > counts["incidents"]
    assert {r.user for r in results} == {bench.ROOT_USER, bench.DISTRICT_USER}
    failed = [(r.user, r.name, r.statuses, r.note) for r in results if not r.ok]
    assert not failed, failed
