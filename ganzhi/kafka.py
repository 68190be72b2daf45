"""Kafka clients' connection settings and the topic set-up shared by the services.

Every Kafka client of the platform takes its connection from :func:`client_options`
(aiokafka) or :func:`faust_credentials` (the stream worker's Faust app), so TLS and SASL
apply to all of them alike (``GANZHI_KAFKA__SECURITY_PROTOCOL`` and the ``SSL_*`` /
``SASL_*`` settings, docs/operations.md).
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from ganzhi.contracts import KafkaTopic
from ganzhi.settings import InsecureSettingError, KafkaSettings, require_secret

SASL_PASSWORD_MIN = 8


def sasl_user(k: KafkaSettings) -> tuple[str, str]:
    """The SASL user and password, or :class:`InsecureSettingError` naming what to set."""
    if not k.sasl_username:
        raise InsecureSettingError(
            f"GANZHI_KAFKA__SECURITY_PROTOCOL is {k.security_protocol}: set "
            "GANZHI_KAFKA__SASL_USERNAME (and GANZHI_KAFKA__SASL_PASSWORD), this "
            "service's Kafka user")
    return k.sasl_username, require_secret("GANZHI_KAFKA__SASL_PASSWORD", k.sasl_password,
                                           SASL_PASSWORD_MIN)


def ssl_context(k: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of ``k`` (None without TLS): brokers' certificates verified against
    ``ssl_cafile`` (the system's CAs if unset) and their host names checked; the client
    certificate loaded when one is set."""
    if not k.security_protocol.endswith("SSL"):
        return None
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = k.ssl_check_hostname
    if k.ssl_certfile is not None and k.ssl_keyfile is not None:
        ctx.load_cert_chain(
            str(k.ssl_certfile), str(k.ssl_keyfile),
            k.ssl_keyfile_password.get_secret_value() if k.ssl_keyfile_password else None)
    return ctx


def client_options(k: KafkaSettings) -> dict[str, Any]:
    """``bootstrap_servers`` and the security arguments of an aiokafka producer, consumer
    or admin client."""
    opts: dict[str, Any] = {"bootstrap_servers": k.bootstrap,
                            "security_protocol": k.security_protocol}
    ctx = ssl_context(k)
    if ctx is not None:
        opts["ssl_context"] = ctx
    if k.security_protocol.startswith("SASL"):
        user, password = sasl_user(k)
        opts["sasl_mechanism"] = k.sasl_mechanism
        opts["sasl_plain_username"] = user
        opts["sasl_plain_password"] = password
    return opts


def faust_credentials(k: KafkaSettings) -> Any:
    """Faust's ``broker_credentials`` for ``k`` (None for PLAINTEXT)."""
    import faust

    ctx = ssl_context(k)
    if k.security_protocol.startswith("SASL"):
        user, password = sasl_user(k)
        return faust.SASLCredentials(username=user, password=password, ssl_context=ctx,
                                     mechanism=k.sasl_mechanism)
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def topic_configs(k: KafkaSettings) -> dict[str, str]:
    """The topic-level configs the services create topics with."""
    out: dict[str, str] = {}
    if k.min_insync_replicas is not None:
        out["min.insync.replicas"] = str(k.min_insync_replicas)
    return out


async def ensure_topics(k: KafkaSettings, topics: list[str] | None = None) -> None:
    """Create the platform's topics if missing (``k.partitions`` partitions,
    ``k.replication_factor`` replicas, :func:`topic_configs`). Existing topics are left
    as they are: changing partitions or replicas is an operator's decision."""
    names = topics if topics is not None else [t.value for t in KafkaTopic]
    admin = AIOKafkaAdminClient(**client_options(k))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, k.partitions, k.replication_factor,
                            topic_configs=topic_configs(k) or None)
                   for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another service won
                await admin.create_topics(missing)
    finally:
        await admin.close()


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as Java's)."""
    from aiokafka.partitioner import murmur2

    return int(murmur2(key) & 0x7FFFFFFF) % partitions
