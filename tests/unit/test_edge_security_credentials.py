"""Credential provisioning without a broker: hashes, files, modes, the ACL, the CLI."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ganzhi.contracts.topics import Channel
from ganzhi.mqtt_auth import (
    CredentialError,
    add_device,
    add_service,
    device_username,
    generate_password,
    generate_share_group,
    hash_password,
    main,
    parse_device_username,
    read_password_file,
    remove_user,
    render_acl,
    verify_password,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_device_username_joins_site_and_device() -> None:
    assert device_username("site-1", "fridge.2") == "site-1/fridge.2"
    assert parse_device_username("site-1/fridge.2") == ("site-1", "fridge.2")
    assert parse_device_username("ganzhi-ingest") is None
    assert parse_device_username("a/b/c") is None


@pytest.mark.parametrize("bad", ["", "A", "s/x", "s+", "s#", "-x", "x:y", "x" * 65])
def test_device_username_rejects_bad_ids(bad: str) -> None:
    with pytest.raises(CredentialError):
        device_username(bad, "d1")
    with pytest.raises(CredentialError):
        device_username("s1", bad)


def test_password_is_long_and_safe() -> None:
    pw = generate_password()
    assert len(pw) >= 43 and ":" not in pw and pw != generate_password()


def test_hash_format_is_mosquitto_pbkdf2() -> None:
    hashed = hash_password("secret", salt=b"0123456789ab")
    kind, iterations, salt, digest = hashed.split("$")[1:]
    assert (kind, iterations) == ("7", "101")
    assert len(salt) == 16 and len(digest) == 88  # base64 of 12 and 64 bytes
    assert verify_password("secret", hashed)
    assert not verify_password("Secret", hashed)
    assert not verify_password("secret", "garbage")


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "u", "test-only"], check=True)
    theirs = read_password_file(passwd)["u"]
    salt_b64 = theirs.split("$")[3]
    import base64

    ours = hash_password("test-only", salt=base64.b64decode(salt_b64))
    assert ours == theirs
    assert verify_password("test-only", theirs)


def test_add_device_writes_private_secret_and_hash(tmp_path: Path) -> None:
    passwd, secrets = tmp_path / "etc" / "passwd", tmp_path / "secrets"
    cred = add_device(passwd, secrets, "s1", "d1")
    assert cred.username == "s1/d1" and not cred.rotated
    assert cred.secret_path == secrets / "devices" / "s1" / "d1.password"
    assert mode(cred.secret_path) == 0o600
    for folder in (secrets, secrets / "devices", secrets / "devices" / "s1"):
        assert mode(folder) == 0o700
    assert mode(passwd) == 0o600
    secret = cred.secret_path.read_text().strip()
    assert verify_password(secret, read_password_file(passwd)["s1/d1"])
    assert secret not in passwd.read_text()
    assert not list(cred.secret_path.parent.glob(".*"))  # no temporary files left


def test_add_refuses_existing_unless_rotated(tmp_path: Path) -> None:
    passwd, secrets = tmp_path / "passwd", tmp_path / "secrets"
    first = add_device(passwd, secrets, "s1", "d1")
    old = first.secret_path.read_text()
    add_device(passwd, secrets, "s1", "d2")
    with pytest.raises(CredentialError, match="already"):
        add_device(passwd, secrets, "s1", "d1")
    assert first.secret_path.read_text() == old
    again = add_device(passwd, secrets, "s1", "d1", rotate=True)
    assert again.rotated
    new = again.secret_path.read_text().strip()
    assert new != old.strip()
    entries = read_password_file(passwd)
    assert list(entries) == ["s1/d1", "s1/d2"]
    assert verify_password(new, entries["s1/d1"])


def test_update_keeps_file_mode(tmp_path: Path) -> None:
    passwd, secrets = tmp_path / "passwd", tmp_path / "secrets"
    add_device(passwd, secrets, "s1", "d1")
    passwd.chmod(0o640)
    add_device(passwd, secrets, "s1", "d2")
    assert mode(passwd) == 0o640


def test_service_accounts_and_removal(tmp_path: Path) -> None:
    passwd, secrets = tmp_path / "passwd", tmp_path / "secrets"
    cred = add_service(passwd, secrets, "ganzhi-ingest")
    assert cred.secret_path == secrets / "services" / "ganzhi-ingest.password"
    with pytest.raises(CredentialError):
        add_service(passwd, secrets, "s1/d1")  # a service name must not look like a device
    assert remove_user(passwd, "ganzhi-ingest")
    assert not remove_user(passwd, "ganzhi-ingest")
    assert read_password_file(passwd) == {}


def test_acl_confines_devices_and_names_services() -> None:
    acl = render_acl(ingest_user="ing", monitor_user="mon")
    lines = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert [f"pattern write ganzhi/v1/%u/{c.value}" for c in Channel] == lines[: len(Channel)]
    assert "%c" not in "\n".join(lines)
    assert not any(line.startswith("pattern read") for line in lines)
    assert lines[len(Channel):] == [
        "user ing", "topic read ganzhi/v1/+/+/+",
        "user mon", "topic read $SYS/#", "topic read ganzhi/v1/+/+/status",
    ]
    assert "user mon" not in render_acl(monitor_user=None)


def test_acl_in_deploy_matches_the_template() -> None:
    deployed = Path(__file__).parents[2] / "deploy" / "mosquitto" / "ganzhi.acl"
    assert deployed.read_text() == render_acl()


def test_share_group_is_random_and_valid() -> None:
    a, b = generate_share_group(), generate_share_group()
    assert a != b
    assert not set(a) & set("/+#")


def test_cli_never_prints_the_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    passwd, secrets = tmp_path / "passwd", tmp_path / "secrets"
    argv = ["add-device", "--site", "s1", "--device", "d1", "--passwd-file", str(passwd),
            "--secrets-dir", str(secrets)]
    assert main(argv) == 0
    out = capsys.readouterr()
    secret = (secrets / "devices" / "s1" / "d1.password").read_text().strip()
    assert "s1/d1" in out.out
    assert secret not in out.out + out.err
    assert main(argv) == 2
    assert "already" in capsys.readouterr().err
    assert main([*argv, "--rotate"]) == 0
    assert main(["list", "--passwd-file", str(passwd)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "s1/d1\tdevice"
    acl = tmp_path / "acl"
    assert main(["acl", "--out", str(acl)]) == 0
    assert acl.read_text() == render_acl()
    assert main(["remove", "--device", "s1/d1", "--passwd-file", str(passwd)]) == 0
    assert main(["remove", "--device", "s1/d1", "--passwd-file", str(passwd)]) == 1
