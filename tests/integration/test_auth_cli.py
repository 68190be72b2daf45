"""``ganzhi users`` and ``ganzhi api-keys`` against real PostgreSQL: the first
administrator of an empty database, listing, disabling; keys with a node and an expiry."""

from __future__ import annotations

import io
from collections.abc import Iterator

import psycopg
import pytest

from ganzhi.cli import main
from ganzhi.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_dsn(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("GANZHI_DB__DSN", pg_dsn)
    get_settings.cache_clear()
    yield pg_dsn
    get_settings.cache_clear()


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str,
        stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_bootstrap_list_disable_and_keys(cli_dsn: str, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    add = ("users", "add", "--username", "admin", "--role", "administrator",
           "--jurisdiction", "shenzhen", "--password-stdin")
    code, _, err = cli(capsys, monkeypatch, *add, stdin="a long enough password\n")
    assert code == 1 and "jurisdiction shenzhen not found" in err  # no tree yet
    code, out, err = cli(capsys, monkeypatch, *add, "--create-root", "Shenzhen",
                         stdin="a long enough password\n")
    assert code == 0, err
    assert "created root jurisdiction shenzhen" in out
    assert "created user admin (id 1), administrator at /shenzhen/" in out
    code, _, err = cli(capsys, monkeypatch, *add, stdin="a long enough password\n")
    assert code == 1 and "exists already" in err
    code, _, err = cli(capsys, monkeypatch, "users", "add", "--username", "li",
                       "--role", "staff", "--jurisdiction", "shenzhen", "--password-stdin",
                       stdin="short\n")
    assert code == 1 and "password must have" in err

    code, out, _ = cli(capsys, monkeypatch, "users", "list")
    (row,) = [line.split("\t") for line in out.strip().splitlines()[1:]]
    assert row[1:4] == ["admin", "administrator", "/shenzhen/"] and row[-1] == "-"
    code, out, _ = cli(capsys, monkeypatch, "users", "disable", "admin")
    assert code == 0 and "disabled admin" in out
    code, _, err = cli(capsys, monkeypatch, "users", "disable", "nobody")
    assert code == 1 and "not found" in err

    code, out, err = cli(capsys, monkeypatch, "api-keys", "create", "--name", "exporter",
                         "--scope", "export", "--jurisdiction", "shenzhen",
                         "--expires-in-days", "30")
    assert code == 0, err
    assert "jurisdiction shenzhen" in out and "expires 20" in out
    assert out.strip().splitlines()[-1].startswith("gzk_")
    code, _, err = cli(capsys, monkeypatch, "api-keys", "create", "--name", "x", "--scope",
                       "export", "--jurisdiction", "atlantis")
    assert code == 1 and "no jurisdiction atlantis" in err
    with psycopg.connect(cli_dsn) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY id")]
        (hash_,) = conn.execute("SELECT password_hash FROM users").fetchone() or ("",)
    assert actions == ["jurisdiction.create", "user.create", "user.update", "api_key.create"]
    assert hash_.startswith("$argon2id$")
