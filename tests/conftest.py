"""Shared fixtures: one real Prefect server per test session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make the repo root importable so `tests.prefect_server` and `archiver` resolve
# however pytest is invoked (rootdir, IDE, or a subdirectory).
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.prefect_server import PrefectServer  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[PrefectServer]:
    """A real `prefect server start` (10-30 s to boot), shared by the whole session."""
    with PrefectServer() as server:
        yield server


@pytest.fixture(scope="session")
def history(prefect_server: PrefectServer):
    """Three days of events on the shared server, with ties, a big payload, unicode, wide related."""
    from tests.datasets import seed_history

    return seed_history(prefect_server.api_url)
