"""Everything that can go wrong, sorted by what the caller does about it.

    ArchiverError
    ├── ConfigError            a setting is missing or malformed: fix the config (exit 2)
    ├── BadInput               an argument is not valid, e.g. an id that is no UUID (exit 2)
    ├── ApiError               the Prefect API did not give us what we asked for (exit 1)
    │   ├── ApiUnavailable     connection errors, timeouts, 5xx, 429 — retries ran out
    │   ├── ApiAuthError       401/403: the key or auth string was refused
    │   ├── ApiNotFound        404: usually the URL
    │   ├── ApiRejected        another 4xx: the server refused the request as sent
    │   ├── ApiBadResponse     a body that is not the JSON Prefect sends
    │   ├── ApiTlsError        the server's TLS certificate was not trusted: fix the CA bundle
    │   └── PageTokenRejected  403 on /events/filter/next: restart the window from its start
    ├── ArchiveError           the DuckDB archive file (exit 1)
    │   ├── ArchiveMissing     no archive file where the settings point
    │   ├── ArchiveBusy        another process holds the file or the sync lock
    │   ├── ArchiveDamaged     the file cannot be opened as an archive (or is no DuckDB file)
    │   ├── ArchiveIncompatible  written by a newer prefect-archiver or DuckDB
    │   └── QueryTimeout       a read ran past its time limit and was stopped (serve: HTTP 504)
    ├── ExportFailed           writing export files failed (disk full, permissions): nothing listed was lost
    ├── Stopped                a stop was asked for (SIGTERM, Ctrl-C) while waiting to retry
    ├── IncompleteWindow       a window never came back whole (distinct ids != total)
    ├── EventNotFound          also a LookupError: no event with that id where we looked
    ├── RunNotFound            also a LookupError: the archive knows no run with that id
    ├── NoTriggeringEvent      also a LookupError: no automation's event started this flow run
    └── ResultUnavailable      (results.py) a run's result cannot be read from this machine

Domain modules raise these; only the CLI turns them into exit codes and one-line messages.
"""

from __future__ import annotations

from pathlib import Path


class ArchiverError(Exception):
    """Base class: the message is meant for the user and says what to do."""


class ConfigError(ArchiverError):
    """A setting is missing or malformed."""


class BadInput(ArchiverError):
    """An argument given on the command line or to a function is not valid."""


class ApiError(ArchiverError):
    """The Prefect API failed the request."""


class ApiUnavailable(ApiError):
    """The API kept failing with retriable errors until the retry budget ran out."""


class ApiAuthError(ApiError):
    """The API refused our credentials (401/403)."""


class ApiNotFound(ApiError):
    """The API answered 404, which almost always means a wrong PREFECT_API_URL."""


class ApiRejected(ApiError):
    """The API refused the request as sent (4xx other than 401/403/404)."""


class ApiBadResponse(ApiError):
    """The API answered with a body that is not what Prefect sends."""


class ApiTlsError(ApiError):
    """The server's certificate failed verification; retrying cannot help."""


class PageTokenRejected(ApiError):
    """The server refused a page token (403): the window must be read again from its start."""


class ArchiveError(ArchiverError):
    """The archive file cannot be used."""


class ArchiveMissing(ArchiveError):
    """No archive where the settings point (a file, or a database without one); reading never creates one."""

    # Where archive.path (or archive.url) came from (Settings.sources), as the user would recognise it.
    _ORIGINS = {"flag": "given with --db", "env": "from ARCHIVER_DB", "config": "archive.path in the config file"}
    _URL_ORIGINS = {"flag": "given with --url", "env": "from ARCHIVER_URL", "config": "archive.url in the config file"}

    def __init__(self, path: Path | str, source: str | None = None, by_url: bool = False) -> None:
        self.path = path
        origin = (self._URL_ORIGINS if by_url else self._ORIGINS).get(source or "")
        if origin:  # the user chose this path: suggesting ARCHIVER_DB would not help
            message = (f"no archive at {path} ({origin}): check the path, or run `prefect-archiver sync` "
                       "to start an archive there")
        else:
            message = (f"no archive at {path}: run `prefect-archiver sync` first, or point --db / ARCHIVER_DB "
                       "at your archive")
        super().__init__(message)


class ArchiveBusy(ArchiveError):
    """Another process holds the archive (DuckDB allows one writer and then no readers)."""


class ArchiveDamaged(ArchiveError):
    """The archive file exists but cannot be opened as a DuckDB archive."""


class ArchiveIncompatible(ArchiveError):
    """The archive was written by a newer prefect-archiver or DuckDB than this one."""


class QueryTimeout(ArchiveError):
    """A read ran past the time limit its caller set (ArchiveReader.session) and was stopped."""


class ExportFailed(ArchiverError):
    """Writing an export's files failed; the manifest still lists only whole files."""


class Stopped(ArchiverError):
    """The process was asked to stop while waiting to retry a request; what was committed stays."""


class IncompleteWindow(ArchiverError):
    """A window's events never matched the server's total, even after re-reading it."""


class EventNotFound(ArchiverError, LookupError):
    """No event with that id in the archive or in the live API."""


class RunNotFound(ArchiverError, LookupError):
    """The archive holds no state of a flow run or task run with that id."""


class NoTriggeringEvent(ArchiverError, LookupError):
    """No automation's triggering event is recorded for that flow run (or not yet)."""
