"""The memory soak's pure summaries (benchmarks/soak.py): the verdict and the CPU per
quarter of the run that says which process the others lost the cores to."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_benchmark", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def _sample(t: float, stream: float | None, pg: float, busy: float | None,
            lag: int = 100) -> dict[str, Any]:
    cpu = {} if stream is None else {"stream": stream, "postgres": pg}
    return {"t": t, "cpu_pct": cpu, "machine_busy_pct": busy, "lag_msgs": lag,
            "mem_mb": {"stream": 1000.0}}


def test_cpu_is_averaged_per_quarter_of_the_run(soak: ModuleType) -> None:
    # The first sample has no CPU (nothing to compare with); PostgreSQL takes more in
    # the last quarter, the stream less.
    samples = [_sample(0, None, 0, None)] + [
        _sample(t, 50.0 if t < 300 else 30.0, 20.0 if t < 300 else 60.0, 90.0)
        for t in range(30, 390, 30)]
    q = soak.cpu_by_quarter(samples)
    assert list(q) == ["postgres", "stream", "machine"]
    assert q["stream"][0] == 50.0 and q["stream"][3] == 30.0
    assert q["postgres"][0] == 20.0 and q["postgres"][3] == 60.0
    assert q["machine"] == [90.0, 90.0, 90.0, 90.0]


def test_no_cpu_figures_give_no_quarters(soak: ModuleType) -> None:
    assert soak.cpu_by_quarter([_sample(0, None, 0, None)]) == {}


def test_a_growing_lag_fails_the_verdict_even_with_flat_memory(soak: ModuleType) -> None:
    flat = [_sample(t, 50, 20, 90, lag=100) for t in range(0, 600, 30)]
    growing = [_sample(t, 50, 20, 90, lag=100 + 200 * t) for t in range(0, 600, 30)]
    assert soak.verdict(flat, 1000, 3.0)["ok"] is True
    v = soak.verdict(growing, 1000, 3.0)
    assert v["memory_flat"] is True and v["lag"]["growing"] is True and v["ok"] is False
