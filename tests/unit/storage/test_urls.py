"""The archive is named by one SQLAlchemy URL: what opens, what is refused, and what is shown."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from archiver.config import Settings
from archiver.errors import ConfigError
from archiver.storage import open_archive, redact


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"), min_size=1, max_size=40))
def test_any_file_name_round_trips_through_its_url(name: str) -> None:
    path = Path("/tmp/archives") / name
    url = Settings(db_path=path).archive_url
    assert open_archive(url).path == path  # type: ignore[attr-defined]
    # duckdb-engine is handed the same URL: SQLAlchemy must read the same file out of it.
    assert sa.engine.make_url(url).database == str(path)


def test_a_url_names_its_backend_or_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        open_archive("mysql://archiver:s3cret@db.example/archive")
    assert "s3cret" not in str(refused.value) and "duckdb:///" in str(refused.value)
    with pytest.raises(ConfigError, match="options after '\\?'"):
        open_archive("duckdb:///archive.duckdb?read_only=true")
    with pytest.raises(ConfigError):
        open_archive("duckdb:///")


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql+psycopg://user:p%40ss@host:5432/db") == "postgresql+psycopg://user:***@host:5432/db"
    assert redact("postgresql+psycopg://user@host/db") == "postgresql+psycopg://user@host/db"
    assert redact("duckdb:////data/archive.duckdb") == "duckdb:////data/archive.duckdb"
    # A password with an unencoded @ or /, or given as libpq's ?password= option, is hidden too.
    assert redact("postgresql://user:p@ss/w0rd@host/db") == "postgresql://user:***@host/db"
    assert redact("postgresql://user@/db?host=/run/pg&password=s3cret&sslmode=require") == (
        "postgresql://user@/db?host=/run/pg&password=***&sslmode=require")
    # A DuckDB file whose name has a colon and an @ has no credentials to hide.
    assert redact("duckdb:////data/a:b@c.duckdb") == "duckdb:////data/a:b@c.duckdb"


def test_a_postgresql_url_opens_the_postgresql_backend_and_shows_no_password() -> None:
    for url in ("postgresql+psycopg://archiver:s3cret@db.example:5432/archive",
                "postgresql://archiver:s3cret@db.example/archive"):
        archive = open_archive(url)
        assert archive.name.startswith("postgresql") and "s3cret" not in archive.name + repr(archive)
