"""The numbered SQL files each backend ships in migrations/<backend>/, read in order.

How a file is applied is the backend's (duckdb/migrate.py, postgresql/migrate.py); which files
there are, and in what order, is the same for every backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def _migrations_dir(backend: str) -> Traversable:
    # Installed, migrations/ ships as the package archiver.migrations; in a source checkout
    # (tests run from the repository) it is the top-level folder beside archiver/. Each backend
    # numbers its own migrations in a folder of its name.
    try:
        return resources.files("archiver.migrations") / backend
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "migrations" / backend


def shipped(backend: str) -> list[Migration]:
    """The migrations this version ships for `backend` ("duckdb", "postgresql"), in order."""
    found = []
    for entry in _migrations_dir(backend).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)
