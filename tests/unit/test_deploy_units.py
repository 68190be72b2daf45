"""The systemd units of deploy/systemd (checked by ``systemd-analyze verify``: hardened,
each service given only its own secrets) and the secret files the settings read."""

from __future__ import annotations

import re
import shutil
import subprocess
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from ganzhi.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
             "ProtectHome": "yes", "CapabilityBoundingSet": "", "WorkingDirectory": None,
             "User": "ganzhi", "Restart": "always"}


def secret_variables(model: type[BaseModel] = Settings, prefix: str = "GANZHI_") -> set[str]:
    """The environment names of every secret setting."""
    out = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        args = typing.get_args(ann) if isinstance(ann, types.UnionType) else (ann,)
        if SecretStr in args:
            out.add(f"{prefix}{name.upper()}")
        for a in args:
            if isinstance(a, type) and issubclass(a, BaseModel):
                out |= secret_variables(a, f"{prefix}{name.upper()}__")
    return out


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^#?([A-Z][A-Za-z]+)=(.*)$", line)
        if m and not line.startswith("# "):
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def test_there_is_a_unit_per_service() -> None:
    assert [u.stem for u in UNITS] == ["ganzhi-alerts", "ganzhi-api", "ganzhi-ingest",
                                       "ganzhi-stream"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.stem)
def test_the_unit_verifies_cleanly(unit: Path, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze not found (Debian's systemd package; ./dev test)")
    # The install's venv is not on this machine: point ExecStart at a binary that is.
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/ganzhi/.venv/bin/ganzhi", "/bin/true"))
    res = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), \
        res.stdout + res.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.stem)
def test_hardened_and_given_only_secret_settings(unit: Path) -> None:
    d = directives(unit.read_text())
    for key, value in HARDENING.items():
        assert key in d, f"{unit.name}: no {key}="
        if value is not None:
            assert d[key][-1] == value, f"{unit.name}: {key}={d[key][-1]}"
    assert d["EnvironmentFile"] == ["/etc/ganzhi/ganzhi.env"]
    known = secret_variables()
    creds = [c.split(":", 1) for c in d.get("LoadCredential", [])]
    assert creds, f"{unit.name}: no LoadCredential="
    service = unit.stem.removeprefix("ganzhi-")
    for name, path in creds:
        assert name in known, f"{unit.name}: {name} is not a secret setting"
        assert path == f"/etc/ganzhi/credentials/{service}/{name}"


def test_the_shared_environment_file_holds_no_secret() -> None:
    example = (ROOT / "deploy" / "ganzhi.env.example").read_text()
    set_there = {line.split("=", 1)[0] for line in example.splitlines()
                 if re.match(r"^GANZHI_[A-Z_]+=", line)}
    assert len(set_there) > 10
    assert not set_there & secret_variables(), \
        "secrets belong in each service's credentials, not in the shared file"


def test_secret_files_are_read_and_the_environment_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("GANZHI_SECRETS_DIR", "CREDENTIALS_DIRECTORY", "GANZHI_DB__DSN"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "GANZHI_DB__DSN").write_text("postgresql://stream:pw@db/ganzhi\n")
    (tmp_path / "GANZHI_KAFKA__SASL_PASSWORD").write_text("kafka-pw")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))  # as systemd sets it
    monkeypatch.setenv("GANZHI_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GANZHI_KAFKA__SASL_USERNAME", "stream")
    s = Settings()
    assert s.db.dsn.get_secret_value() == "postgresql://stream:pw@db/ganzhi"
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "kafka-pw"
    assert s.kafka.sasl_username == "stream"  # the same section from the environment
    monkeypatch.setenv("GANZHI_DB__DSN", "postgresql://from-env/ganzhi")
    assert Settings().db.dsn.get_secret_value() == "postgresql://from-env/ganzhi"
    # GANZHI_SECRETS_DIR wins over systemd's directory; one that is missing is an error.
    monkeypatch.setenv("GANZHI_SECRETS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises((ValidationError, Exception), match="nowhere"):
        Settings()
