"""API keys against real PostgreSQL: the ``ganzhi api-keys`` commands and lookups."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from ganzhi import apikeys
from ganzhi.cli import main
from ganzhi.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_dsn(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI reads its settings from the environment (cached: cleared around)."""
    monkeypatch.setenv("GANZHI_DB__DSN", pg_dsn)
    get_settings.cache_clear()
    yield pg_dsn
    get_settings.cache_clear()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def lookup(dsn: str, token: str) -> apikeys.ApiKey | None:
    async def go() -> apikeys.ApiKey | None:
        async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await apikeys.lookup(conn, token)

    return asyncio.run(go())


# Plain (not async) tests: the CLI runs its own event loop.


def test_cli_create_list_revoke(cli_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "api-keys", "create", "--name", "task-system",
                         "--scope", "feedback")
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    assert "shown only this once" in err
    key = lookup(cli_dsn, token)
    assert key is not None and key.name == "task-system"
    assert key.scopes == {"feedback"} and key.site_ids is None and key.actor == "key:task-system"

    code, out, _ = run(capsys, "api-keys", "create", "--name", "futian desk",
                       "--scope", "staff", "silences", "--site", "sz-ft-1", "--site", "sz-ft-2")
    assert code == 0
    desk = lookup(cli_dsn, out.strip().splitlines()[-1])
    assert desk is not None and desk.scopes == {"staff", "silences"}
    assert desk.site_ids == frozenset({"sz-ft-1", "sz-ft-2"})

    code, listing, _ = run(capsys, "api-keys", "list")
    assert code == 0
    lines = listing.strip().splitlines()
    assert lines[0].split("\t") == ["id", "name", "scopes", "sites", "created", "revoked",
                                    "jurisdiction", "expires"]
    assert [line.split("\t")[1:4] for line in lines[1:]] == [
        ["task-system", "feedback", "all"], ["futian desk", "silences,staff", "sz-ft-1,sz-ft-2"]]
    with psycopg.connect(cli_dsn) as conn:
        hashes = [r[0] for r in conn.execute("SELECT secret_hash FROM api_keys")]
    _, secret = apikeys.parse_token(token) or ("", "")
    assert secret
    assert secret not in listing and token not in listing
    assert all(h not in listing for h in hashes)
    assert all(secret not in h for h in hashes)

    code, out, _ = run(capsys, "api-keys", "revoke", key.id)
    assert code == 0 and key.id in out
    assert lookup(cli_dsn, token) is None
    code, _, err = run(capsys, "api-keys", "revoke", key.id)
    assert code == 1 and "no live key" in err
    code, listing, _ = run(capsys, "api-keys", "list")
    revoked = [line.split("\t") for line in listing.splitlines() if line.startswith(key.id)]
    assert revoked[0][5] != "-"


def test_cli_refuses_bad_keys(cli_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["api-keys", "create", "--name", "x", "--scope", "admin"])
    assert exit_.value.code == 2
    code, _, err = run(capsys, "api-keys", "create", "--name", " ", "--scope", "staff")
    assert code == 1 and "name must have" in err
    with psycopg.connect(cli_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)


async def test_lookup_refuses_what_it_should(pg_dsn: str) -> None:
    async with await AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        key, token = await apikeys.create(conn, "k", ["operator"])
        other, other_token = await apikeys.create(conn, "k2", ["operator"])
        key_id, secret = apikeys.parse_token(token) or ("", "")
        swapped = f"gzk_{key_id}_{apikeys.parse_token(other_token)[1]}"  # type: ignore[index]
        refused: list[Any] = [
            await apikeys.lookup(conn, t)
            for t in ("", token + "x", token.upper(), swapped, f"gzk_{'a' * 12}_{secret}")
        ]
        assert refused == [None] * 5
        found = await apikeys.lookup(conn, token)
        assert found is not None and found.id == key.id
        assert await apikeys.revoke(conn, key.id)
        assert await apikeys.lookup(conn, token) is None
        assert await apikeys.lookup(conn, other_token) == other
        assert not await apikeys.revoke(conn, "nonexistent1")
