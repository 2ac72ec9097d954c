"""Storage: the archive behind one interface, a writer for ingest and a reader for everything else.

An archive is named by a SQLAlchemy URL (`duckdb:///path/archive.duckdb`,
`postgresql+psycopg://user:password@host:5432/db`) and
opened with open_archive(); ingest, the service, the CLI, `serve` and the in-flow lookups receive
the Archive it returns, never a path. Each backend lives in a subpackage (duckdb/ first); only a
backend imports its database driver or holds SQL.

What every backend guarantees (tests/unit/storage, the contract suite, holds each to it):
- a batch's events and the high-water mark it carries commit in one transaction, so after a
  crash at any moment the mark never claims an event that is not stored;
- every write is idempotent (the first version of an event id wins), and a batch's counts say
  exactly what was new: inserted + duplicates + quarantined = what was handed in;
- one writer at a time across processes (Archive.writer_lock), released when its process dies;
- readers never see half a batch, and never stop the writer for longer than one read.
"""

from __future__ import annotations

from archiver.errors import ConfigError
from archiver.storage.base import Archive

__all__ = ["Archive", "open_archive"]

# Backends by URL scheme (the part before "+driver"), imported only when an archive of theirs is opened.
BACKENDS = {"duckdb": "archiver.storage.duckdb", "postgresql": "archiver.storage.postgresql"}


def backend_name(url: str) -> str:
    """The backend a URL names ("duckdb" for duckdb:///…); ConfigError for one we have none for."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""
    if scheme not in BACKENDS:
        known = ", ".join(f"{name}:///…" for name in BACKENDS)
        raise ConfigError(f"archive URL {redact(url)!r} names no backend prefect-archiver has (known: {known})")
    return scheme


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages and `status`.

    The password may hold an unencoded @ or / (the credentials end at the last @ before any
    query), or come as a query option (libpq's ?password=…): both are hidden.
    """
    import re

    head, sep, rest = url.partition("://")
    if not sep:
        return url
    path, qmark, query = rest.partition("?")
    if qmark:
        query = re.sub(r"(?i)(^|&)(password)=[^&]*", r"\1\2=***", query)
    at = path.rfind("@")
    if at >= 0 and not path.startswith("/"):  # duckdb:///PATH has no credentials, whatever the file is called
        credentials, host = path[:at], path[at + 1:]
        user = credentials.split(":", 1)[0]
        path = f"{user}:***@{host}" if ":" in credentials else path
    return f"{head}://{path}{qmark}{query}"


def open_archive(url: str) -> Archive:
    """The archive a URL names. Opening touches nothing: the writer and readers open the store."""
    from importlib import import_module

    module = import_module(BACKENDS[backend_name(url)])
    archive: Archive = module.open_archive(url)
    return archive
