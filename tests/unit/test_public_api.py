"""The public API a flow imports: the same names from `archiver` and `archiver.query`, and a light import."""

from __future__ import annotations

import subprocess
import sys

import archiver
import archiver.query

# What a lookup inside a flow must not pay for at import: the database driver (loaded on the
# first read), the writer's SQLAlchemy, the ingest machinery, the HTTP client (loaded when the
# live API is asked), the web stack.
HEAVY = ("duckdb", "sqlalchemy", "httpx", "archiver.ingest", "archiver.prefect.client", "fastapi", "asyncio")


def test_every_public_name_is_exported_from_archiver_and_the_documented_ones_from_query() -> None:
    assert sorted(archiver.__all__) == sorted(archiver._PUBLIC)
    for name in archiver.__all__:
        assert getattr(archiver, name) is not None
    for name in archiver.query.__all__:
        assert getattr(archiver, name) is getattr(archiver.query, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        archiver.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("archiver.no_such_thing resolved")


def test_importing_a_lookup_loads_no_driver_http_client_or_ingest() -> None:
    code = ("import sys\nfrom archiver.query import get_event\nimport archiver\narchiver.RunNotFound\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_importing_archiver_imports_no_lookup() -> None:
    code = "import sys, archiver\nprint([m for m in sys.modules if m.startswith('archiver.')])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
