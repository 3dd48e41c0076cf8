"""Credentials never appear in what the tool prints: errors, logs, status."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dmu_migrate.cli import app
from dmu_migrate.stores.base import redact

runner = CliRunner()


@pytest.mark.parametrize(
    "uri",
    [
        "http://root:s3cret@127.0.0.1:9",  # Milvus server, nothing listening
        "qdrant://reader:s3cret@127.0.0.1:9?api_key=s3cret",
        "ftp://user:s3cret@example",
    ],
)
def test_errors_do_not_show_credentials(uri: str) -> None:
    result = runner.invoke(
        app,
        ["-vv", "status", "--uri", uri, "--token", "t0ken-s3cret"],
        env={"DMU_TOKEN": "t0ken-s3cret"},
    )
    assert result.exit_code in (2, 4), result.output
    assert "error:" in result.output
    assert "s3cret" not in result.output


def test_redact() -> None:
    assert redact("http://u:p@h:1/x") == "http://***@h:1/x"
    assert redact("qdrants://h:6333?api_key=abc&x=1") == "qdrants://h:6333?api_key=***&x=1"
    assert redact("no secrets in 'faces.db'") == "no secrets in 'faces.db'"


@pytest.mark.parametrize("password", ["ab'cd", 'ab"cd', "a@b", "p:q"])
def test_redact_passwords_with_quotes_or_at_signs(password: str) -> None:
    masked = redact(f"cannot open 'http://user:{password}@host:19530' (refused)")
    assert password not in masked and "host:19530" in masked
