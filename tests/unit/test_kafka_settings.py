"""Kafka connection settings: what each client gets, and the combinations refused."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from ganzhi.kafka import client_options, faust_credentials, topic_configs
from ganzhi.settings import InsecureSettingError, KafkaSettings, Settings


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("ganzhi-ingest")
    paths = {"ca": tmp_path / "ca.crt", "cert": tmp_path / "c.crt", "key": tmp_path / "c.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def test_plaintext_by_default() -> None:
    k = KafkaSettings(bootstrap="b1:9092,b2:9092")
    assert client_options(k) == {"bootstrap_servers": "b1:9092,b2:9092",
                                 "security_protocol": "PLAINTEXT"}
    assert faust_credentials(k) is None
    assert topic_configs(k) == {}


def test_sasl_over_tls_with_a_client_certificate(pki: dict[str, Path]) -> None:
    k = KafkaSettings(security_protocol="SASL_SSL", sasl_username="ingest",
                      sasl_password="s3cret-pw", ssl_cafile=pki["ca"],
                      ssl_certfile=pki["cert"], ssl_keyfile=pki["key"])
    opts = client_options(k)
    ctx = opts.pop("ssl_context")
    assert opts == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "ingest",
                    "sasl_plain_password": "s3cret-pw"}
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    creds = faust_credentials(k)
    assert (creds.username, creds.password, creds.mechanism.value, creds.protocol.value) == (
        "ingest", "s3cret-pw", "SCRAM-SHA-512", "SASL_SSL")
    # The password never shows in what gets logged or printed.
    assert "s3cret-pw" not in repr(k) and "s3cret-pw" not in str(k.model_dump())


def test_tls_without_sasl(pki: dict[str, Path]) -> None:
    k = KafkaSettings(security_protocol="SSL", ssl_cafile=pki["ca"])
    opts = client_options(k)
    assert opts["security_protocol"] == "SSL" and "sasl_mechanism" not in opts
    assert faust_credentials(k).protocol.value == "SSL"


def test_replication_and_min_insync_for_new_topics() -> None:
    k = KafkaSettings(replication_factor=3, min_insync_replicas=2)
    assert topic_configs(k) == {"min.insync.replicas": "2"}


@pytest.mark.parametrize(("fields", "message"), [
    ({"sasl_username": "u", "sasl_password": "p"}, "would not be used"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
      "sasl_username": "u", "sasl_password": "p"}, "password in clear"),
    ({"security_protocol": "SSL", "ssl_certfile": "c.crt"}, "go together"),
    ({"ssl_cafile": "ca.crt"}, "would not be used"),
    ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.crt"}, "no such file"),
    ({"replication_factor": 2, "min_insync_replicas": 3}, "nothing could be written"),
    ({"replication_factor": 0}, "greater than or equal to 1"),
    ({"security_protocol": "TLS"}, "PLAINTEXT"),
    ({"sasl_mechanism": "GSSAPI"}, "SCRAM-SHA-512"),
])
def test_incomplete_or_contradictory_settings_are_refused(
        fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSettings.model_validate(fields)


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "set GANZHI_KAFKA__SASL_USERNAME"),
    ({"sasl_username": "u"}, "GANZHI_KAFKA__SASL_PASSWORD is not set"),
    ({"sasl_username": "u", "sasl_password": "short"}, "has 5 characters"),
])
def test_a_kafka_client_needs_its_user(fields: dict[str, object], message: str) -> None:
    """Checked where a client is made (the API shares the settings but has no Kafka
    client): the service exits saying what to set."""
    k = KafkaSettings.model_validate({"security_protocol": "SASL_SSL", **fields})
    with pytest.raises(InsecureSettingError, match=message):
        client_options(k)
    with pytest.raises(InsecureSettingError, match=message):
        faust_credentials(k)


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]) -> None:
    monkeypatch.setenv("GANZHI_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GANZHI_KAFKA__SASL_USERNAME", "stream")
    monkeypatch.setenv("GANZHI_KAFKA__SASL_PASSWORD", "pw-from-secret-store")
    monkeypatch.setenv("GANZHI_KAFKA__SSL_CAFILE", str(pki["ca"]))
    monkeypatch.setenv("GANZHI_KAFKA__REPLICATION_FACTOR", "3")
    k = Settings().kafka
    assert k.security_protocol == "SASL_SSL" and k.replication_factor == 3
    assert client_options(k)["sasl_plain_password"] == "pw-from-secret-store"


def test_the_command_refuses_bad_settings_without_echoing_secrets(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ganzhi import cli
    from ganzhi.settings import get_settings

    monkeypatch.setenv("GANZHI_KAFKA__SASL_PASSWORD", "s3cret-value-xyz")  # PLAINTEXT: unused
    get_settings.cache_clear()
    try:
        assert cli.main(["migrate"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "ganzhi migrate: invalid settings: kafka: Value error" in err
    assert "would not be used" in err and "s3cret-value-xyz" not in err
