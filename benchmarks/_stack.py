"""Shared pieces of the benchmarks that run the whole stack (alert_latency, pipeline_scaling,
soak): the background publisher, the services' metrics, the Kafka offsets of a consumer
group, and CPU and memory of each process from ``/proc``.

The publisher runs as its own process (``python benchmarks/_stack.py publisher HOST PORT
RATE READINGS DEVICES STATS``), so its CPU is its own and not the measuring process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BG_SITE = "bench-load"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def uptime() -> str:
    """The load averages (1, 5, 15 min)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def tidy(root: Path, code: int) -> None:
    """The stack's directory (its databases and broker data: gigabytes after a long run)
    removed after a run that went well; kept, and named, after one that did not."""
    if code == 0:
        shutil.rmtree(root, ignore_errors=True)
    else:
        say(f"kept {root} (the services' logs are in its logs/)")


def metric(port: int, name: str) -> float | None:
    """Sum of a Prometheus metric's samples at a service's ops port (None: no answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))


# --- the background load ------------------------------------------------------------------


def publisher(host: str, port: int, rate: float, readings: int, devices: int,
              stats_path: Path, site: str = BG_SITE) -> int:
    """Publish cold-store telemetry at ``rate`` msg/s (QoS 1, in-flight window 1,000)
    until SIGTERM; every second append ``time acked sent`` to ``stats_path``."""
    from ganzhi.contracts import Channel, DeviceClass, Reading, Telemetry, mqtt_topic
    from ganzhi.mqtt import make_client
    from ganzhi.settings import MqttSettings

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    mq = MqttSettings(host=host, port=port)
    client = make_client(mq, f"bench-load-{uuid.uuid4().hex[:8]}")
    window = threading.BoundedSemaphore(1000)
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        window.release()

    client.on_publish = on_publish
    client.connect(host, port)
    client.loop_start()
    placeholder_id = "00000000-0000-4000-8000-000000000000"
    placeholder_ts = datetime(2000, 1, 1, tzinfo=UTC)
    templates = []
    for d in range(devices):
        dev = f"load-{d:05d}"
        msg = Telemetry(
            msg_id=placeholder_id, site_id=site, device_id=dev, ts=placeholder_ts,
            device_class=DeviceClass.COLD_STORE,
            readings=[Reading(metric="temperature", value=3.0, unit="celsius"),
                      *(Reading(metric=f"probe_{k}", value=3.0 + k, unit="celsius")
                        for k in range(1, readings))],
        )
        templates.append((mqtt_topic(site, dev, Channel.TELEMETRY), msg.model_dump_json()))
    ts_text = json.loads(templates[0][1])["ts"]
    sent = 0
    start = time.monotonic()
    next_stat = start + 1.0
    with stats_path.open("a") as stats:
        stats.write(f"{time.time():.3f} 0 0\n")
        while not stop.is_set():
            now = time.monotonic()
            due = int((now - start) * rate) - sent
            if due <= 0:
                time.sleep(0.002)
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            for _ in range(max(0, min(due, 1000))):
                if not window.acquire(timeout=1.0):
                    break
                topic, tmpl = templates[sent % devices]
                payload = tmpl.replace(placeholder_id, str(uuid.uuid4())).replace(ts_text, stamp)
                client.publish(topic, payload.encode(), qos=1)
                sent += 1
            if now >= next_stat:
                stats.write(f"{time.time():.3f} {acked} {sent}\n")
                stats.flush()
                next_stat += 1.0
        stats.write(f"{time.time():.3f} {acked} {sent}\n")
    client.disconnect()
    client.loop_stop()
    return 0


def start_publisher(mqtt_port: int, rate: float, readings: int, devices: int,
                    stats_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "publisher", "127.0.0.1", str(mqtt_port), str(rate),
         str(readings), str(devices), str(stats_path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def publisher_stats(stats_path: Path) -> tuple[float, int, int] | None:
    """The publisher's last ``(time, acked, sent)`` line."""
    try:
        lines = stats_path.read_text().split("\n")
    except OSError:
        return None
    for line in reversed(lines):
        parts = line.split()
        if len(parts) == 3:
            return float(parts[0]), int(parts[1]), int(parts[2])
    return None


# --- Kafka offsets --------------------------------------------------------------------------


async def _offsets(bootstrap: str, topic: str, group: str | None) -> tuple[int, int | None]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = [TopicPartition(topic, p)
                 for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(parts) if parts else {}
    finally:
        await consumer.stop()
    end = sum(ends.values())
    if group is None:
        return end, None
    committed: int | None = None
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(group, partitions=parts)
        committed = sum(max(0, meta.offset) for tp, meta in got.items()
                        if meta is not None and tp.topic == topic)
    except Exception as exc:  # a broker without OffsetFetch: no lag figure
        say(f"  committed offsets of {group}: {exc!r}")
    finally:
        await admin.close()
    return end, committed


def kafka_offsets(bootstrap: str, topic: str, group: str | None = None,
                  ) -> tuple[int | None, int | None]:
    """(sum of the topic's end offsets, sum of ``group``'s committed offsets)."""
    try:
        return asyncio.run(asyncio.wait_for(_offsets(bootstrap, topic, group), 20))
    except Exception as exc:
        say(f"  Kafka offsets: {exc!r}")
        return None, None


# --- processes ------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    kids = kids if kids is not None else _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB; PSS shares each shared page among its users (PostgreSQL's
    backends all map the shared buffers)."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pss = rss
    return rss, pss


@dataclass
class ProcSample:
    t: float
    ticks: dict[str, int] = field(default_factory=dict)  # part -> CPU ticks (its tree)
    busiest: dict[str, dict[int, int]] = field(default_factory=dict)  # part -> pid -> ticks
    rss_kb: dict[str, int] = field(default_factory=dict)
    pss_kb: dict[str, int] = field(default_factory=dict)
    machine: tuple[int, int] = (0, 0)  # (busy, total) jiffies of all CPUs


def _machine() -> tuple[int, int]:
    try:
        nums = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = nums[3] + (nums[4] if len(nums) > 4 else 0)
    return sum(nums) - idle, sum(nums)


def sample_processes(parts: dict[str, int]) -> ProcSample:
    """CPU ticks and memory of each part (a name -> its main pid, with its children)."""
    kids = _children()
    s = ProcSample(time.monotonic(), machine=_machine())
    for name, pid in parts.items():
        total = rss = pss = 0
        per: dict[int, int] = {}
        for p in tree(pid, kids):
            t = cpu_ticks(p)
            if t is None:
                continue
            per[p] = t
            total += t
            r, q = memory_kb(p)
            rss += r
            pss += q
        s.ticks[name], s.busiest[name] = total, per
        s.rss_kb[name], s.pss_kb[name] = rss, pss
    return s


def cpu_between(a: ProcSample, b: ProcSample) -> dict[str, dict[str, float]]:
    """Per part: CPU % of one core over the interval (all its processes), and that of its
    busiest single process."""
    dt = max(1e-6, b.t - a.t)
    out = {}
    for name, ticks in b.ticks.items():
        if name not in a.ticks:
            continue
        total = (ticks - a.ticks[name]) / CLK_TCK / dt * 100
        single = max((t - a.busiest[name].get(p, t) for p, t in b.busiest[name].items()),
                     default=0) / CLK_TCK / dt * 100
        out[name] = {"cpu_pct": round(total, 1), "max_process_cpu_pct": round(single, 1)}
    return out


def machine_busy_pct(a: ProcSample, b: ProcSample) -> float | None:
    busy, total = b.machine[0] - a.machine[0], b.machine[1] - a.machine[1]
    return round(100 * busy / total, 1) if total > 0 else None


def stack_parts(stack: Any) -> dict[str, int]:
    """Name -> pid of each running part of a :class:`ganzhi.stack.system.Stack`."""
    parts: dict[str, int] = {}
    for name in ("mosquitto", "tansu", "postgres"):
        m = getattr(stack, name, None)
        if m is not None and m.proc is not None and m.proc.poll() is None:
            parts[name] = m.proc.pid
    for name, svc in stack.services.items():
        if svc.alive():
            parts[name] = svc.proc.pid
    return parts


def add_worker(stack: Any, kind: str, n: int) -> Any:
    """Start a further ``ingest`` or ``stream`` worker (own ops port, worker id, data
    directory) as stack service ``<kind>-<n>``; ``stack.stop()`` stops it too."""
    from ganzhi.stack.infra import free_port
    from ganzhi.stack.system import Service

    name = f"{kind}-{n}"
    port = free_port()
    svc = Service(name, [sys.executable, "-m", "ganzhi.cli", kind], port)
    env = stack.env()
    if kind == "ingest":
        env.update({"GANZHI_OPS__INGEST": str(port), "GANZHI_INGEST__WORKER_ID": name})
    elif kind == "stream":
        env.update({"GANZHI_OPS__STREAM": str(port),
                    "GANZHI_STREAM__WEB_PORT": str(free_port()),
                    "GANZHI_STREAM__DATA_DIR": str(stack.root / name)})
    else:
        raise ValueError(kind)
    stack.services[name] = svc
    svc.start(env, stack.logs)
    svc.wait_healthy()
    return svc


def leave_ingest(stack: Any, name: str) -> float:
    """``ganzhi ingest --leave`` as the stopped ingest worker ``name``: it takes its broker
    session over, forwards what was queued there and ends it, so the broker stops giving
    it a share of the subscription (what an operator does when scaling ingest down).
    Returns the seconds it took."""
    from ganzhi.stack.infra import free_port

    env = {**stack.env(), "GANZHI_OPS__INGEST": str(free_port()),
           "GANZHI_INGEST__WORKER_ID": name}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "ganzhi.cli", "ingest", "--leave"], env=env,
                   check=True, capture_output=True, timeout=120)
    took = time.monotonic() - t0
    say(f"  {name} left the subscription (ganzhi ingest --leave, {took:.1f} s)")
    return took


def ops_port(stack: Any, name: str) -> int | None:
    svc = stack.services.get(name)
    return svc.health_port if svc is not None else None


def main(argv: list[str]) -> int:
    if len(argv) == 7 and argv[0] == "publisher":
        host, port, rate, readings, devices, stats = argv[1:]
        return publisher(host, int(port), float(rate), int(readings), int(devices),
                         Path(stats))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
