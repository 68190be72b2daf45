"""Kafka topic set-up shared by the services (aiokafka admin)."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from ganzhi.contracts import KafkaTopic


async def ensure_topics(bootstrap: str, partitions: int, topics: list[str] | None = None) -> None:
    """Create the platform's topics if missing (brokers may also auto-create them)."""
    names = topics if topics is not None else [t.value for t in KafkaTopic]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another service won
                await admin.create_topics(missing)
    finally:
        await admin.close()


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as Java's)."""
    from aiokafka.partitioner import murmur2

    return int(murmur2(key) & 0x7FFFFFFF) % partitions
