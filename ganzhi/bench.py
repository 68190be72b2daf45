"""``ganzhi bench``: the pipeline benchmarks in one run, with one table against the targets.

Runs ``benchmarks/<x>.py`` one after the other, each as a child process of this Python
(each starts and stops its own Mosquitto, Tansu or PostgreSQL on loopback), with sizes
from a profile (``quick`` about 3–5 minutes, ``full`` about 30 on two cores) and a
time bound per stage. Each script's figures come from its JSON output; a stage that
fails or runs out of time is a row of the table, not the end of the run. Ctrl-C or
SIGTERM interrupts the running child (SIGINT, so that its own clean-up stops its
servers), skips the rest and still writes the summary.

Stages: ingest, sink, rules, latency, scaling (the whole pipeline at 1x, 2x, 4x a
base rate with 1 and 2 ingest and stream workers; full profile only), edge (CPU per
camera; reported as not available where benchmarks/edge_camera.py is missing) and soak
(memory and lag over minutes; only with ``--only soak`` or ``--soak-minutes``).

The targets are those of issue 13; :func:`rows` turns figures into table rows and is
pure, so the target logic is tested without running a benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
STAGES = ("ingest", "sink", "rules", "latency", "scaling", "edge", "soak")
SCRIPTS = {"ingest": "ingest_throughput.py", "sink": "readings_sink.py",
           "rules": "rules_engine.py", "latency": "alert_latency.py",
           "scaling": "pipeline_scaling.py", "edge": "edge_camera.py", "soak": "soak.py"}
# What a profile runs without --only: the scaling curve does not fit in quick's ~3
# minutes (``--only scaling --quick`` runs its reduced form); the soak runs only when
# asked (``--only soak`` or ``--soak-minutes``).
DEFAULT_STAGES = {"quick": ("ingest", "sink", "rules", "latency", "edge"),
                  "full": ("ingest", "sink", "rules", "latency", "scaling", "edge")}
SOAK_MINUTES = 30.0  # --only soak without --soak-minutes

# Issue 13's targets.
INGEST_MIN_RATIO = 0.5  # ingest end to end / broker pass-through
SINK_MIN_RATIO = 0.5  # new sink (first write + rollups) / indexed COPY
RULES_MIN_MSG_S = 20_000.0  # rules without I/O, per worker
LATENCY_IDLE_P99_MS = 1_000.0
LATENCY_LOADED_P99_MS = 2_000.0
LOADED_READINGS_S = 10_000.0  # the load the loaded target is stated for
LOAD_TOLERANCE = 0.95  # the broker must have acknowledged this share of it
EDGE_MAX_CPU_PCT = 15.0  # % of one core per camera at 5 fps, recall not below before

# Arguments per stage and profile (the JSON output is added by the runner), and the
# stage's bound in seconds. Sizes: quick ~2-3 min, full ~10-15 min on two cores.
PROFILES: dict[str, dict[str, tuple[list[str], float]]] = {
    "quick": {
        "ingest": (["--messages", "30000", "--readings", "10"], 240),
        "sink": (["--rows", "200000", "--batch", "2000", "--devices", "500"], 240),
        "rules": (["--devices", "600", "--per-device", "40", "--warmup", "15"], 240),
        "latency": (["--trials", "15", "--warmup", "10", "--timeout", "20",
                     "--max-seconds", "240"], 330),
        "scaling": (["--quick"], 300),
        "edge": (["--quick"], 360),
        "soak": (["--minutes", "5"], 5 * 60 + 240),
    },
    "full": {
        "ingest": (["--messages", "50000", "--readings", "10", "--repeat", "3"], 420),
        "sink": (["--rows", "500000", "--batch", "2000", "--devices", "500"], 480),
        "rules": (["--devices", "1500", "--per-device", "40", "--warmup", "15"], 420),
        "latency": (["--trials", "30", "--warmup", "15", "--timeout", "30",
                     "--max-seconds", "780"], 900),
        "scaling": ([], 1200),  # ~9 min, plus rule-state recoveries after a group change
        "edge": ([], 900),
        "soak": (["--minutes", f"{SOAK_MINUTES:g}"], SOAK_MINUTES * 60 + 240),
    },
}


@dataclass
class Row:
    stage: str
    figure: str
    value: float | str | None
    unit: str = ""
    ceiling: float | str | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None  # None: no target for this row (or no figure to judge)


# --- figures -> rows (pure) ----------------------------------------------------------------


def rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    """One or more rows per stage from ``{stage: {"status", "error", "figures"}}``.

    A stage whose status is not ``ok`` gives one row with its error and ``met`` False
    (a target that could not be measured is not met)."""
    out: list[Row] = []
    for stage, res in results.items():
        if res.get("status") == "not available":  # a benchmark not (yet) in this tree
            out.append(Row(stage, "(not available)", str(res.get("error") or ""),
                           target=TARGETS.get(stage, "")))
            continue
        if res.get("status") != "ok":
            out.append(Row(stage, f"({res.get('status', 'failed')})",
                           str(res.get("error") or "no figures"),
                           target=TARGETS.get(stage, ""),
                           met=False if stage in TARGETS else None))
            continue
        try:
            out.extend(_ROWS[stage](res["figures"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            out.append(Row(stage, "(unreadable figures)", f"{type(exc).__name__}: {exc}",
                           target=TARGETS.get(stage, ""), met=False))
    return out


TARGETS = {
    "ingest": f"≥ {INGEST_MIN_RATIO}× broker pass-through",
    "sink": f"≥ {SINK_MIN_RATIO}× indexed COPY",
    "rules": f"≥ {RULES_MIN_MSG_S:,.0f} msg/s",
    "latency": f"p99 ≤ {LATENCY_IDLE_P99_MS:,.0f} ms idle, "
               f"≤ {LATENCY_LOADED_P99_MS:,.0f} ms under {LOADED_READINGS_S:,.0f} readings/s",
    "edge": f"≤ {EDGE_MAX_CPU_PCT:g}% of a core per camera, recall not below before",
    "soak": "flat memory, no growing lag",
}


def _ingest_rows(f: dict[str, Any]) -> list[Row]:
    by = {r["path"]: r for r in f["rows"]}
    pt = next(r for name, r in by.items() if name.startswith("broker pass-through"))
    ing = by["ingest (this tree)"]
    out = [Row("ingest", "broker pass-through (ceiling)", pt["msg_s"], "msg/s")]
    ratio = float(ing["ratio_to_pass_through"])
    out.append(Row("ingest", "ingest end to end", ing["msg_s"], "msg/s", pt["msg_s"],
                   ratio, TARGETS["ingest"], ratio >= INGEST_MIN_RATIO))
    for name, r in by.items():
        if name.startswith("Kafka produce"):
            out.append(Row("ingest", name, r["msg_s"], "msg/s", pt["msg_s"],
                           float(r["ratio_to_pass_through"])))
    return out


def _sink_rows(f: dict[str, Any]) -> list[Row]:
    fig = f["figures"]
    ceiling = fig["indexed_copy"]["rows_s"]
    out = [Row("sink", "indexed COPY (ceiling)", ceiling, "rows/s"),
           Row("sink", "unindexed COPY", fig["plain_copy"]["rows_s"], "rows/s", ceiling,
               fig["plain_copy"]["x_indexed_copy"])]
    new = fig["sink_first_write"]
    ratio = float(new["x_indexed_copy"])
    out.append(Row("sink", "sink: first write + rollups", new["rows_s"], "rows/s", ceiling,
                   ratio, TARGETS["sink"], ratio >= SINK_MIN_RATIO))
    for key, name in (("sink_replay", "sink: replay (duplicates)"),
                      ("old_sink", "old sink (ON CONFLICT)")):
        if key in fig:
            out.append(Row("sink", name, fig[key]["rows_s"], "rows/s", ceiling,
                           fig[key]["x_indexed_copy"]))
    return out


def _rules_rows(f: dict[str, Any]) -> list[Row]:
    return [Row("rules", f"rules without I/O: {mix}{_rules_split(r)}", r["msg_s"], "msg/s",
                None, float(r["msg_s"]) / RULES_MIN_MSG_S, TARGETS["rules"],
                float(r["msg_s"]) >= RULES_MIN_MSG_S)
            for mix, r in f.items()]


def _rules_split(r: dict[str, Any]) -> str:
    """Where a message's time went (when the benchmark timed its parts), against the
    target's budget per message: which part holds a missed target back."""
    if "batch_us" not in r or "checkpoint_us" not in r:
        return ""
    return (f" (µs per message: batch path {float(r['batch_us']):.0f}, checkpoint JSON "
            f"{float(r['checkpoint_us']):.0f}; the target allows "
            f"{1e6 / RULES_MIN_MSG_S:.0f} in all)")


def _latency_rows(f: dict[str, Any]) -> list[Row]:
    out = []
    for phase, data in f["phases"].items():
        s = data["summary"]
        loaded = phase != "idle"
        limit = LATENCY_LOADED_P99_MS if loaded else LATENCY_IDLE_P99_MS
        p99 = s.get("p99_ms")
        all_delivered = s.get("delivered") == s.get("trials") and bool(s.get("trials"))
        met = p99 is not None and all_delivered and float(p99) <= limit
        ceiling: str | None = None
        target = f"p99 ≤ {limit:,.0f} ms"
        if loaded:
            ld = s.get("load") or {}
            acked = float(ld.get("acked_readings_s") or 0)
            ceiling = (f"load {acked:,.0f} rd/s acked, "
                       f"{float(ld.get('stored_readings_s') or 0):,.0f} stored")
            target += f" at {LOADED_READINGS_S:,.0f} rd/s"
            met = met and acked >= LOAD_TOLERANCE * LOADED_READINGS_S
        figure = f"alert latency p99, {phase} (p50 {s.get('p50_ms')}, " \
                 f"{s.get('delivered')}/{s.get('trials')} delivered)"
        out.append(Row("latency", figure, p99, "ms", ceiling,
                       float(p99) / limit if p99 is not None else None, target, met))
    return out


def _scaling_rows(f: dict[str, Any]) -> list[Row]:
    """Per point: stored msg/s against the offered rate, and the stage that saturates;
    then each process's memory at the end of the run. No target: the curve is a figure."""
    out = []
    cpus = f.get("cpus")
    for p in f["points"]:
        offered = float(p["offered_msg_s"])
        stored = p.get("stored_msg_s")
        sat = p.get("saturates") or "none"
        rb = p.get("stream_rebalance")
        join = (f"; stream group changed: {float(rb['seconds']):,.0f} s to rebalance and "
                f"recover{'' if rb.get('complete') else ', unfinished'}" if rb else "")
        out.append(Row("scaling", f"{p['label']}: stored (saturates: {sat}; "
                                  f"{cpus} cores for all{join})",
                       stored, "msg/s", offered,
                       float(stored) / offered if stored is not None and offered else None))
    if f["points"]:
        last = f["points"][-1]
        mem = ", ".join(f"{k} {float(v):,.0f}" for k, v in last.get("rss_mb", {}).items())
        out.append(Row("scaling", "RSS at the end of the run, MB", mem))
    return out


def _soak_rows(f: dict[str, Any]) -> list[Row]:
    v = f["verdict"]
    limit = float(v["flat_mb_per_10min"])
    minutes = f["samples"][-1]["t"] / 60 if f.get("samples") else 0.0
    out = []
    for name, m in v["memory"].items():
        judged = m.get("flat") is not None and name.split("-")[0] != "tansu"  # memory only
        figure = f"memory slope {name} ({minutes:.0f} min at {float(f['rate_msg_s']):,.0f} " \
                 f"msg/s{'; ' + m['note'] if m.get('note') else ''})"
        slope = m.get("mb_per_10min")
        last = m.get("last_mb")
        out.append(Row("soak", figure, slope, "MB/10 min",
                       f"{float(last):,.0f} MB at the end" if last is not None else None,
                       None, f"rising < {limit:g} MB/10 min" if judged else "",
                       bool(m["flat"]) if judged else None))
    lag = v["lag"]
    growing = lag.get("growing")
    last_lag = lag.get("last_msgs")
    shown = f"{float(last_lag):,.0f}" if last_lag is not None else "?"
    out.append(Row("soak", f"consumer lag trend (last {shown} msgs)",
                   lag.get("msgs_per_10min"), "msgs/10 min", None, None, "not growing",
                   None if growing is None else not growing))
    return out


def _edge_rows(f: dict[str, Any]) -> list[Row]:
    """Per configuration: CPU per camera (judged for the chosen one) against 15 % of a
    core, recall against the baseline's (config ``before``, else the row marked
    ``baseline``, else the first)."""
    rs = f["rows"]
    base = next((r for r in rs if r.get("config") == "before"),
                next((r for r in rs if r.get("baseline")), rs[0]))
    base_recall = base.get("recall")
    chosen = f.get("chosen")
    out = []
    for r in rs:
        cpu, recall = r.get("cpu_pct_per_camera"), r.get("recall")
        met = None
        if cpu is not None and recall is not None and base_recall is not None:
            met = float(cpu) <= EDGE_MAX_CPU_PCT and float(recall) >= float(base_recall)
        is_chosen = chosen is not None and r.get("config") == chosen
        judged = chosen is None or is_chosen  # the target is the chosen configuration's
        out.append(Row("edge", f"camera: {r.get('config')}{' (chosen)' if is_chosen else ''}",
                       cpu, "% of a core", f"recall {recall} (before {base_recall})",
                       float(cpu) / EDGE_MAX_CPU_PCT if cpu is not None else None,
                       TARGETS["edge"] if judged else "", met if judged else None))
    if f.get("cameras_per_2core_box") is not None:
        out.append(Row("edge", "cameras per 2-core box", f["cameras_per_2core_box"]))
    return out


_ROWS = {"ingest": _ingest_rows, "sink": _sink_rows, "rules": _rules_rows,
         "latency": _latency_rows, "scaling": _scaling_rows, "soak": _soak_rows,
         "edge": _edge_rows}


def _fmt(v: float | str | None) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"


def table(rs: list[Row]) -> str:
    lines = ["| stage | figure | value | ceiling | ratio | target | met? |",
             "|---|---|---|---|---|---|---|"]
    for r in rs:
        value = _fmt(r.value) + (f" {r.unit}" if r.unit and not isinstance(r.value, str)
                                 and r.value is not None else "")
        met = "–" if r.met is None else ("yes" if r.met else "**no**")
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "–"
        lines.append(f"| {r.stage} | {r.figure} | {value} | {_fmt(r.ceiling)} | {ratio} "
                     f"| {r.target or '–'} | {met} |")
    return "\n".join(lines)


# --- running the stages --------------------------------------------------------------------


class _Stop:
    signum: int | None = None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 2000))
            tail: deque[str] = deque(
                (x for x in fh.read().decode(errors="replace").replace("\r", "\n").split("\n")
                 if x.strip()), maxlen=1)
        return tail[0].strip()[:100] if tail else ""
    except OSError:
        return ""


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (the script's clean-up runs), then SIGTERM, then SIGKILL of its group."""
    for sig, wait in ((signal.SIGINT, 60.0), (signal.SIGTERM, 20.0)):
        if proc.poll() is not None:
            return
        try:
            proc.send_signal(sig)
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # its own session: only what it started
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_stage(stage: str, args: list[str], bound: float, work: Path,
              stop: type[_Stop]) -> dict[str, Any]:
    script = BENCHMARKS / SCRIPTS[stage]
    out_json = work / f"{stage}.json"
    out_json.unlink(missing_ok=True)
    if stage == "rules":  # its --json prints the figures on stdout
        extra = ["--json"]
    elif stage == "latency":
        extra = ["--out", str(out_json)]
    else:
        extra = ["--json", str(out_json)]
    cmd = [sys.executable, str(script), *args, *extra]
    res: dict[str, Any] = {"command": " ".join([Path(sys.executable).name,
                                                 str(script.relative_to(ROOT)),
                                                 *args, *extra]),
                           "bound_s": bound, "log": str(work / f"{stage}.log")}
    if not script.exists():
        return {**res, "status": "not available",
                "error": f"{script.relative_to(ROOT)} not in this tree"}
    log = work / f"{stage}.log"
    stdout = work / f"{stage}.out"
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    with log.open("wb") as err, stdout.open("wb") as outf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=outf, stderr=err, env=env,
                                start_new_session=True)  # Ctrl-C reaches it only via us
        status, error = "ok", None
        next_note = t0 + 15
        while proc.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            if stop.signum is not None:
                _say(f"  {stage}: interrupted, stopping it (its clean-up runs) ...")
                _interrupt(proc)
                status, error = "interrupted", "interrupted"
                break
            if now - t0 > bound:
                _say(f"  {stage}: over its bound of {bound:.0f} s, stopping it ...")
                _interrupt(proc)
                status, error = "timed out", f"no result within {bound:.0f} s"
                break
            if now >= next_note:
                next_note = now + 15
                _say(f"  {stage} {now - t0:4.0f} s: {_last_line(log)}")
    res["seconds"] = round(time.monotonic() - t0, 1)
    res["rc"] = proc.returncode
    if status == "ok" and proc.returncode != 0:
        status, error = "failed", f"exit {proc.returncode}: {_last_line(log)}"
    if status == "ok":
        try:
            src = stdout if stage == "rules" else out_json
            text = src.read_text()
            if stage == "rules":  # the JSON is the last line of stdout
                text = [x for x in text.splitlines() if x.strip()][-1]
            res["figures"] = json.loads(text)
            if stage == "latency":
                for phase in res["figures"].get("phases", {}).values():
                    phase.pop("trials", None)  # per trial: in the script's own file
        except (OSError, ValueError, IndexError) as exc:
            status, error = "failed", f"no figures: {exc}"
    res["status"], res["error"] = status, error
    return res


def main(profile: str = "full", only: list[str] | None = None,
         out: Path = Path("var/bench/summary.json"), soak_minutes: float | None = None) -> int:
    stages = [s for s in STAGES if (s in only if only else s in DEFAULT_STAGES[profile])]
    if soak_minutes and "soak" not in stages:
        stages.append("soak")
    out = out.resolve()
    work = out.parent
    work.mkdir(parents=True, exist_ok=True)
    stop = _Stop

    def on_signal(signum: int, _frame: object) -> None:
        stop.signum = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = datetime.now(UTC)
    summary: dict[str, Any] = {"profile": profile, "started": started.isoformat(),
                               "cpus": os.cpu_count(), "load_before": _load(), "stages": {}}
    t_all = time.monotonic()
    try:
        for i, stage in enumerate(stages, 1):
            args, bound = PROFILES[profile][stage]
            if stage == "soak":  # half the rate the scaling stage stored, if it ran
                minutes = soak_minutes or float(args[args.index("--minutes") + 1])
                args = ["--minutes", f"{minutes:g}", "--scaling-json",
                        str(work / "scaling.json")]
                bound = minutes * 60 + 240
            if stop.signum is not None:
                summary["stages"][stage] = {"status": "skipped", "error": "interrupted"}
                continue
            _say(f"[{i}/{len(stages)}] {stage} ({SCRIPTS[stage]}, bound {bound:.0f} s; "
                 f"{time.monotonic() - t_all:.0f} s so far; load {_load()})")
            res = run_stage(stage, args, bound, work, stop)
            _say(f"[{i}/{len(stages)}] {stage}: {res['status']} in "
                 f"{res.get('seconds', 0):.0f} s")
            summary["stages"][stage] = res
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    summary["finished"] = datetime.now(UTC).isoformat()
    summary["seconds"] = round(time.monotonic() - t_all, 1)
    summary["load_after"] = _load()
    rs = rows(summary["stages"])
    summary["rows"] = [asdict(r) for r in rs]
    out.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(f"\nganzhi bench, {profile} profile, {started:%Y-%m-%d %H:%M} UTC, "
          f"{summary['seconds']:.0f} s; load average {summary['load_before']} before, "
          f"{summary['load_after']} after ({os.cpu_count()} CPUs)\n")
    print(table(rs))
    _say(f"\nwrote {out} (each stage's output: {work}/<stage>.log)")
    if stop.signum is not None:
        return 128 + stop.signum
    return 0 if all(r["status"] == "ok" for r in summary["stages"].values()) else 1
