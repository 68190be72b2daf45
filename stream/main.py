"""Entry point of the stream worker: ``run(settings)`` or ``python -m stream.main``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
import warnings
from datetime import timedelta
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient

from ganzhi.contracts import KafkaTopic, kafka_key
from ganzhi.db.migrate import migrate
from ganzhi.kafka import client_options, ensure_topics, partition_for
from ganzhi.observability import OpsServer, configure_logging, get_logger
from ganzhi.settings import KafkaSettings, Settings
from stream import offset_gaps
from stream.agents import (
    dead_letter_sender,
    register_agents,
    transition_sender,
)
from stream.app import build_app
from stream.checkpoints import CheckpointedStates, Checkpointer, CheckpointRepository
from stream.engine import RuleEngine
from stream.processor import BatchProcessor
from stream.rules.sources import RulesProvider
from stream.sinks.readings import ReadingsSink

log = get_logger(__name__)


async def topic_partitions(k: KafkaSettings, topic: str) -> int:
    admin = AIOKafkaAdminClient(**client_options(k))
    await admin.start()
    try:
        (desc,) = await admin.describe_topics([topic])
        return len(desc["partitions"])
    finally:
        await admin.close()


class _Worker(faust.Worker):
    """Faust's worker, stopping promptly on SIGTERM/SIGINT whatever the batch in hand.

    Faust would wait for every event being processed to be acknowledged before it stops
    (``stream_wait_empty``), which a batch waiting on a database that is down never is.
    So a stop request first tells the processor (its retries end at once, leaving the
    batch unacknowledged) and turns that wait off: Faust commits what was acknowledged
    and the batch in hand comes again to the next worker, which absorbs any part of it
    already done (idempotent sinks, deterministic transition ids)."""

    def __init__(self, stop: asyncio.Event, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop_requested = stop

    def _schedule_shutdown(self, signal: Any) -> None:
        self._stop_requested.set()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "reconfiguring late": read at stop, on purpose
            self.app.conf.stream_wait_empty = False
        super()._schedule_shutdown(signal)


def run(settings: Settings) -> int:
    """Run one Faust worker until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(settings.log_level, settings.log_json)
    dsn = settings.db.dsn.get_secret_value()
    migrate(dsn)  # harmless when the CLI already did it (advisory lock, each file once)
    s = settings.stream
    provider = RulesProvider(s.rules_file, dsn if s.rules_from_db else None,
                             s.cold_chain, s.device_health)
    provider.load()  # an invalid rules model stops the worker here, with the reason

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings.kafka))
    actual = loop.run_until_complete(
        topic_partitions(settings.kafka, KafkaTopic.TELEMETRY.value))
    if actual != settings.kafka.partitions:
        # Rule state is checkpointed per partition of the device's messages, and the
        # offline timer finds a device's partition by hashing: the topic's count rules.
        log.warning("telemetry_partitions_differ_from_settings", using="the topic's",
                    topic_partitions=actual, settings_partitions=settings.kafka.partitions)
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"partitions": actual})})
    settings.stream.data_dir.mkdir(parents=True, exist_ok=True)

    offset_gaps.install()  # before Faust makes its consumer
    stream_app = build_app(settings)
    sink = ReadingsSink(dsn)
    partitions = settings.kafka.partitions
    engine = RuleEngine(
        lambda: provider.rules,
        lambda site, device: partition_for(kafka_key(site, device), partitions))
    stop = asyncio.Event()
    states = CheckpointedStates()
    processor = BatchProcessor(
        engine, sink, states,
        transition_sender(stream_app.transitions),
        dead_letter=dead_letter_sender(stream_app.dead_letters),
        stop=stop, max_ts_ahead=timedelta(seconds=settings.event_time.max_ahead_s),
        on_processed=states.processed,
    )
    checkpointer = Checkpointer(CheckpointRepository(dsn, s.app_id), states, processor.lock,
                                stop=stop)
    register_agents(stream_app, settings, processor, provider, checkpointer)
    started = time.time()

    @stream_app.app.on_before_shutdown.connect  # type: ignore[untyped-decorator]
    async def _close_sink(app: Any, **kwargs: Any) -> None:
        # The last checkpoint (the agents are done): whoever takes the partitions next
        # starts from this worker's last record.
        await checkpointer.checkpoint("stop")
        await checkpointer.close()
        await sink.close()

    def health() -> dict[str, Any]:
        last = processor.last_batch_at
        app = stream_app.app
        return {
            "ok": bool(app.started and not app.crashed and not app.should_stop),
            "faust_started": bool(app.started),
            "service": "stream",
            "uptime_s": round(time.time() - started, 1),
            "last_batch_age_s": None if last is None else round(time.time() - last, 1),
        }

    ops = OpsServer(settings.ops.stream, health, settings.ops.host).start()
    log.info("stream_worker_starting", bootstrap=settings.kafka.bootstrap,
             app_id=settings.stream.app_id, ops_port=ops.port)
    worker = _Worker(
        stop,
        stream_app.app, loop=loop, loglevel=settings.log_level, quiet=True,
        override_logging=False, redirect_stdouts=False,
    )
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        ops.stop()
    log.info("stream_worker_stopped", exit_code=code)
    _exit_without_teardown(code)
    return code  # not reached


def _exit_without_teardown(code: int, threads_wait_s: float = 5.0) -> None:
    """End the process now that Faust has stopped, committed and closed everything.

    The interpreter's own teardown frees the whole heap object by object (after a long
    run behind a backlog: buffered events, parsed rule state, objects ``gc.freeze`` kept
    out of the collections), which took longer than the stack's 20 s grace on SIGTERM.
    Nothing is left to do at that point, so skip it: wait (bounded) for any non-daemon
    thread still finishing, flush the output, and leave."""
    deadline = time.monotonic() + threads_wait_s
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon and t.is_alive():
            t.join(max(0.0, deadline - time.monotonic()))
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(run(Settings()))
