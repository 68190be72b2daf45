"""``ganzhi bench``'s summary: figures in -> rows against issue 13's targets (no run)."""

from __future__ import annotations

from typing import Any

import pytest

from ganzhi.bench import DEFAULT_STAGES, PROFILES, STAGES, Row, rows, table


def _ingest(ratio: float) -> dict[str, Any]:
    return {"rows": [
        {"path": "broker pass-through (null subscriber)", "msg_s": 10_000.0,
         "ratio_to_pass_through": 1.0},
        {"path": "ingest (this tree)", "msg_s": 10_000.0 * ratio,
         "ratio_to_pass_through": ratio},
        {"path": "Kafka produce (aiokafka, acks=all, linger 0 as ingest)", "msg_s": 80_000.0,
         "ratio_to_pass_through": 8.0},
    ]}


def _sink(ratio: float) -> dict[str, Any]:
    f = {"plain_copy": 2.0, "indexed_copy": 1.0, "old_sink": 0.2,
         "sink_first_write": ratio, "sink_replay": 1.5}
    return {"figures": {k: {"rows_s": 300_000.0 * x, "x_indexed_copy": x}
                        for k, x in f.items()}}


def _latency(idle_p99: float, loaded_p99: float, acked: float = 10_000,
             delivered: int = 5) -> dict[str, Any]:
    return {"phases": {
        "idle": {"summary": {"trials": 5, "delivered": 5, "p50_ms": 500.0,
                             "p99_ms": idle_p99}},
        "loaded": {"summary": {"trials": 5, "delivered": delivered, "p50_ms": 800.0,
                               "p99_ms": loaded_p99,
                               "load": {"acked_readings_s": acked,
                                        "stored_readings_s": acked}}},
    }}


def _ok(figures: Any) -> dict[str, Any]:
    return {"status": "ok", "error": None, "figures": figures}


def _judged(rs: list[Row]) -> dict[str, bool | None]:
    return {r.figure: r.met for r in rs if r.target}


def test_ingest_half_of_pass_through_is_met_below_is_not() -> None:
    met = rows({"ingest": _ok(_ingest(0.5))})
    row = next(r for r in met if r.figure == "ingest end to end")
    assert (row.met, row.ratio, row.ceiling) == (True, 0.5, 10_000.0)
    assert rows({"ingest": _ok(_ingest(0.49))})[1].met is False
    # the ceiling and the Kafka figure are shown, not judged
    assert [r.met for r in met if r.figure != "ingest end to end"] == [None, None]


def test_sink_against_indexed_copy() -> None:
    rs = rows({"sink": _ok(_sink(0.23))})
    assert _judged(rs) == {"sink: first write + rollups": False}
    row = next(r for r in rs if r.target)
    assert row.ceiling == 300_000.0 and row.ratio == 0.23
    assert _judged(rows({"sink": _ok(_sink(0.6))})) == {"sink: first write + rollups": True}


def test_rules_rows_say_where_a_message_s_time_went() -> None:
    rs = rows({"rules": _ok({"cold6": {"msg_s": 8_000.0, "batch_us": 90.4,
                                        "checkpoint_us": 30.6}})})
    assert [(r.figure, r.met) for r in rs] == [
        ("rules without I/O: cold6 (µs per message: batch path 90, checkpoint JSON 31;"
         " the target allows 50 in all)", False)]


def test_rules_each_mix_against_20k() -> None:
    rs = rows({"rules": _ok({"cold6": {"msg_s": 5_000.0}, "elevator": {"msg_s": 20_000.0}})})
    assert [(r.figure, r.met) for r in rs] == [("rules without I/O: cold6", False),
                                               ("rules without I/O: elevator", True)]
    assert rs[0].ratio == 0.25


def test_latency_idle_1s_loaded_2s_at_10k_readings() -> None:
    assert [r.met for r in rows({"latency": _ok(_latency(1000, 2000))})] == [True, True]
    assert [r.met for r in rows({"latency": _ok(_latency(1001, 2001))})] == [False, False]
    # under 2 s but the load asked for was not reached: not met
    assert [r.met for r in rows({"latency": _ok(_latency(900, 1500, acked=6_000))})] == [
        True, False]
    # a webhook that never came: the p99 of the rest does not count
    assert [r.met for r in rows({"latency": _ok(_latency(900, 1500, delivered=4))})] == [
        True, False]


def test_failed_and_unreadable_stages_are_rows_not_met() -> None:
    rs = rows({"ingest": {"status": "timed out", "error": "no result within 180 s"},
               "sink": {"status": "failed", "error": "exit 1: boom"},
               "rules": _ok({"cold6": {}}),  # no msg_s
               "latency": {"status": "skipped", "error": "interrupted"}})
    assert [(r.stage, r.met) for r in rs] == [("ingest", False), ("sink", False),
                                              ("rules", False), ("latency", False)]
    assert rs[0].figure == "(timed out)" and rs[0].value == "no result within 180 s"
    text = table(rs)
    assert text.count("\n") == len(rs) + 1 and "**no**" in text


def test_profiles_cover_every_stage() -> None:
    for profile in PROFILES.values():
        assert set(profile) == set(STAGES)
        assert all(bound > 0 for _args, bound in profile.values())


def _scaling() -> dict[str, Any]:
    return {"cpus": 2, "points": [
        {"label": "1 ingest, 1 stream, 1× (500 msg/s)", "offered_msg_s": 500.0,
         "stored_msg_s": 500.0, "saturates": None},
        {"label": "1 ingest, 1 stream, 4× (2,000 msg/s)", "offered_msg_s": 2000.0,
         "stored_msg_s": 1200.0, "saturates": "stream",
         "rss_mb": {"ingest": 80.0, "stream": 150.5},
         "stream_rebalance": {"seconds": 95.2, "complete": False}},
    ]}


def test_scaling_rows_are_figures_with_the_saturating_stage() -> None:
    rs = rows({"scaling": _ok(_scaling())})
    assert [r.met for r in rs] == [None, None, None]
    assert rs[1].ratio == 0.6 and rs[1].ceiling == 2000.0 and "saturates: stream" in rs[1].figure
    assert "saturates: none" in rs[0].figure and "group" not in rs[0].figure
    assert "95 s to rebalance and recover, unfinished" in rs[1].figure
    assert rs[2].value == "ingest 80, stream 150"


def _soak(slopes: dict[str, float], lag_growing: bool | None) -> dict[str, Any]:
    memory = {name: {"first_mb": 100.0, "last_mb": 100.0 + s, "mb_per_10min": s,
                     "flat": s < 3.0, "note": "memory-only" if name == "tansu" else ""}
              for name, s in slopes.items()}
    return {"rate_msg_s": 600.0, "samples": [{"t": 0.0}, {"t": 300.0}],
            "verdict": {"flat_mb_per_10min": 3.0, "memory": memory,
                        "lag": {"msgs_per_10min": 10.0, "last_msgs": 5,
                                "growing": lag_growing}}}


def test_soak_judges_each_service_but_not_tansus_memory_storage() -> None:
    rs = rows({"soak": _ok(_soak({"stream": 1.0, "ingest": 4.0, "tansu": 50.0}, False))})
    assert _judged(rs) == {"memory slope stream (5 min at 600 msg/s)": True,
                           "memory slope ingest (5 min at 600 msg/s)": False,
                           "consumer lag trend (last 5 msgs)": True}
    assert next(r for r in rs if "tansu" in r.figure).met is None
    assert rows({"soak": _ok(_soak({"stream": 0.0}, True))})[-1].met is False


def test_edge_per_camera_cpu_and_recall_against_the_baseline() -> None:
    f = {"chosen": "crops", "cameras_per_2core_box": 13, "rows": [
        {"config": "rect", "cpu_pct_per_camera": 30.0, "recall": 0.95},
        {"config": "before", "cpu_pct_per_camera": 38.0, "recall": 0.9},
        {"config": "crops", "cpu_pct_per_camera": 14.0, "recall": 0.92},
        {"config": "int8", "cpu_pct_per_camera": 9.0, "recall": 0.85},
    ]}
    rs = rows({"edge": _ok(f)})
    assert _judged(rs) == {"camera: crops (chosen)": True}
    assert rs[-1].figure == "cameras per 2-core box" and rs[-1].value == 13
    assert "| 13 |" in table(rs)
    # without a chosen configuration every one is judged
    f.pop("chosen")
    assert _judged(rows({"edge": _ok(f)})) == {
        "camera: rect": False, "camera: before": False, "camera: crops": True,
        "camera: int8": False}


def test_a_missing_benchmark_is_not_available_not_a_failure() -> None:
    rs = rows({"edge": {"status": "not available", "error": "benchmarks/edge_camera.py"}})
    assert [(r.figure, r.met) for r in rs] == [("(not available)", None)]


def test_default_stages_leave_the_soak_out() -> None:
    assert "soak" not in DEFAULT_STAGES["full"] and "soak" not in DEFAULT_STAGES["quick"]
    assert "scaling" in DEFAULT_STAGES["full"]
    assert set(DEFAULT_STAGES["full"]) | {"soak"} == set(STAGES)


def _script(name: str) -> Any:
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def test_scaling_plan_and_the_first_stage_that_saturates() -> None:
    sc = _script("pipeline_scaling")
    assert sc.plan([1, 2, 4], [(1, 1), (2, 2)]) == [(1, 1, 1), (1, 1, 2), (1, 1, 4),
                                                    (2, 2, 4)]
    assert len(sc.plan([1, 2, 4], [(1, 1), (2, 2)], full_grid=True, points=5)) == 5
    cool = {"ingest": {"cpu_pct": 40.0, "max_process_cpu_pct": 40.0}}
    point = {"offered_msg_s": 2000.0, "sent_msg_s": 1990.0, "acked_msg_s": 1990.0,
             "ingested_msg_s": 1980.0, "stored_msg_s": 1200.0, "cpu": cool}
    assert sc.saturation(point)[0] == "stream"
    hot = {**cool, "ingest-2": {"cpu_pct": 95.0, "max_process_cpu_pct": 95.0}}
    assert sc.saturation({**point, "cpu": hot})[0] == "ingest"
    assert sc.saturation({**point, "stored_msg_s": 1950.0})[0] is None


def test_soak_slope_and_verdict() -> None:
    soak = _script("soak")
    assert soak.slope([(0, 1.0), (600, 3.0)]) == 2.0 / 600
    samples = [{"t": t * 60.0, "mem_mb": {"stream": 100.0 + 0.01 * t, "ingest": 50.0 + t},
                "lag_msgs": 10} for t in range(10)]
    v = soak.verdict(samples, rate=500.0, flat_mb=3.0)
    assert v["memory"]["stream"]["flat"] is True and v["memory"]["ingest"]["flat"] is False
    assert v["memory"]["ingest"]["mb_per_10min"] == 10.0
    assert v["lag"]["growing"] is False and v["memory_flat"] is False and v["ok"] is False
    falling = [{"t": t * 60.0, "mem_mb": {"stream": 700.0 - 2 * t}, "lag_msgs": 10}
               for t in range(10)]
    v = soak.verdict(falling, rate=500.0, flat_mb=3.0)  # memory handed back: no leak
    assert v["memory"]["stream"]["flat"] is True and v["ok"] is True


@pytest.mark.parametrize(("args", "message"), [
    (["--only", "bogus"], "unknown stage(s) bogus"),
    (["--soak-minutes", "-1"], "--soak-minutes must be more than 0"),
    (["--soak-minutes", "0"], "--soak-minutes must be more than 0"),
    (["--out", "/proc/nope/summary.json", "--only", "rules"], "cannot write /proc/nope"),
])
def test_bad_arguments_are_refused_before_any_stage_runs(
        args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from ganzhi.cli import main as cli_main

    assert cli_main(["bench", *args]) == 2
    assert message in capsys.readouterr().err
