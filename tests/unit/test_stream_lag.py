"""The stream worker's lag per telemetry partition (``ganzhi_stream_lag_records``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from stream.agents import backlogged, lag, report_lag


class FakeConsumer:
    def __init__(self, highwater: dict[int, int | None]) -> None:
        self._hw = highwater

    def highwater(self, tp: Any) -> int | None:
        if tp.partition not in self._hw:
            raise KeyError(tp)  # not assigned (any more)
        return self._hw[tp.partition]


class FakeApp:
    def __init__(self, highwater: dict[int, int | None]) -> None:
        self.consumer = FakeConsumer(highwater)


class Progress:
    def __init__(self, done: dict[int, int]) -> None:
        self._done = done

    def read_up_to(self, partition: int) -> int | None:
        return self._done.get(partition)


def gauge(partition: int) -> float | None:
    return REGISTRY.get_sample_value("ganzhi_stream_lag_records", {"partition": str(partition)})


def test_lag_is_the_highwater_beyond_what_was_processed() -> None:
    app = FakeApp({0: 120, 1: 10, 2: None, 3: 5})
    got = lag(app, Progress({0: 99, 1: 9}), [0, 1, 2, 3, 4])  # type: ignore[arg-type]
    # 0: records 100..119 wait; 1: caught up; 2: no fetch yet; 3: nothing processed yet;
    # 4: not assigned.
    assert got == {0: 20, 1: 0, 2: None, 3: 5, 4: None}
    assert backlogged(got) == {0, 2, 3, 4}


def test_reported_partitions_follow_the_assignment() -> None:
    reported = report_lag({0: 20, 1: 0, 2: None}, set())
    assert reported == {0, 1} and (gauge(0), gauge(1)) == (20, 0)  # 2: not known
    reported = report_lag({1: 7}, reported)  # partition 0 went to another worker
    assert reported == {1} and (gauge(0), gauge(1)) == (None, 7)


async def test_the_alerts_consumer_reports_what_waits() -> None:
    from aiokafka import TopicPartition

    from alerts.consumer import _report_lag

    class Consumer:
        def __init__(self, assigned: dict[int, tuple[int | None, int]]) -> None:
            self.parts = assigned

        def assignment(self) -> set[TopicPartition]:
            return {TopicPartition("t", p) for p in self.parts}

        def highwater(self, tp: TopicPartition) -> int | None:
            return self.parts[tp.partition][0]

        async def position(self, tp: TopicPartition) -> int:
            return self.parts[tp.partition][1]

    def alerts_gauge(p: int) -> float | None:
        return REGISTRY.get_sample_value("ganzhi_alerts_lag_records", {"partition": str(p)})

    # (Partition 1: no fetch yet, so not reported.)
    reported = await _report_lag(Consumer({0: (10, 4), 1: (None, 0)}), set())  # type: ignore[arg-type]
    assert reported == {0} and alerts_gauge(0) == 6
    reported = await _report_lag(Consumer({1: (3, 3)}), reported)  # type: ignore[arg-type]
    assert reported == {1} and (alerts_gauge(0), alerts_gauge(1)) == (None, 0)
