"""Copying a whole archive into another (either backend, both ways), resumably, then proving it whole.

Why not re-sync the destination: the server may have forgotten what the archive holds. So every
table of the registry (storage/tables.py) is read from the source in keyset pages and written
into the destination page by page, each page with its progress row in one transaction: killed
at any moment, `copy` again resumes after the last committed page, and first-version-wins
inserts mean nothing is doubled. The cursors (the high-water mark, the states pass's) are set
last, so the destination's mark never claims an event it does not hold, and `sync` on the
copy continues where the source stopped.

At the end every table is compared: its keys in key order from both sides, merged as two sorted
streams (event_resources' whole rows, repeats counted), so a million rows are checked without
holding them. A table whose copy resumed or was finished before and now lacks rows (the source
got them after that part was copied) is copied again from its start, once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import chain
from typing import Any

from archiver.errors import ArchiveError, ArchiveIncompatible, ArchiveMissing, BadInput
from archiver.storage.base import Archive
from archiver.storage.migrations import shipped
from archiver.storage.rows import Column, Key, Progress, Row, TableSink, TableSource
from archiver.storage.tables import TABLES, TableSpec, children

# Keys fetched at a time from each side when verifying.
VERIFY_KEYS = 20_000
# At most one progress line this often (seconds).
PROGRESS_EVERY = 5.0


@dataclass
class TableResult:
    """One table after a copy: rows on each side, new in this run, and what differs."""

    table: str
    source_rows: int = 0
    destination_rows: int = 0
    copied: int = 0
    missing: int = 0  # source rows the destination lacks
    extra: int = 0  # destination rows the source does not have
    examples: list[str] = field(default_factory=list)  # a few missing keys, for the message

    @property
    def same(self) -> bool:
        return self.missing == 0 and self.extra == 0

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "source_rows": self.source_rows, "destination_rows": self.destination_rows,
                "copied": self.copied, "missing": self.missing, "extra": self.extra, "same": self.same}


@dataclass
class CopyReport:
    """What `copy` did and what it found: per table, in the registry's order."""

    source: str  # the source archive's name (no password)
    destination: str
    tables: list[TableResult]
    seconds: float
    resumed: bool  # an earlier copy from this source had committed pages

    @property
    def ok(self) -> bool:
        return all(t.same for t in self.tables)

    @property
    def copied(self) -> int:
        return sum(t.copied for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "ok": self.ok, "copied": self.copied,
                "resumed": self.resumed, "seconds": round(self.seconds, 1), "tables": [t.to_json() for t in self.tables]}


Say = Callable[[str], None]


class _Throttle:
    """Passes a progress line on at most every PROGRESS_EVERY seconds."""

    def __init__(self, say: Say | None) -> None:
        self.say = say
        self.last = time.monotonic()

    def due(self) -> bool:
        """True when a line may be said now (callers build the line only then)."""
        return self.say is not None and time.monotonic() - self.last >= PROGRESS_EVERY

    def __call__(self, line: str) -> None:
        if self.say is not None and self.due():
            self.last = time.monotonic()
            self.say(line)


def _backend(archive: Archive) -> str:
    from archiver.storage import backend_name

    return backend_name(archive.url)


def _check_schema(source: Archive, tables: TableSource) -> None:
    """The source must be at this version's newest schema: a copy moves tables, it does not upgrade them."""
    version = tables.schema_version()
    newest = shipped(_backend(source))[-1].version
    if version is None:
        raise ArchiveError(f"archive {source.name} has no tables yet: there is nothing to copy")
    if version > newest:
        raise ArchiveIncompatible(f"archive {source.name} has schema version {version}, newer than this "
                                  f"prefect-archiver knows ({newest}): upgrade prefect-archiver to copy it")
    if version < newest:
        raise ArchiveError(f"archive {source.name} has schema version {version}, older than this prefect-archiver's "
                           f"({newest}): run `prefect-archiver sync` on it once to upgrade it, then copy")


def _columns(source: TableSource, sink: TableSink, name: str) -> list[Column]:
    ours, theirs = source.columns(name), sink.columns(name)
    if ours is None or theirs is None:
        raise ArchiveError(f"table {name} is missing from the {'source' if ours is None else 'destination'}: both "
                           "archives must be at this prefect-archiver's schema")
    if {c.name for c in ours} != {c.name for c in theirs}:
        raise ArchiveError(f"table {name} has other columns in the destination than in the source: both archives "
                           "must be at this prefect-archiver's schema")
    return ours


def copy_archive(source: Archive, destination: Archive, lock_timeout: timedelta = timedelta(0),
                 read_timeout: timedelta = timedelta(seconds=15), say: Say | None = None) -> CopyReport:
    """Copy every table of `source` into `destination`, resuming an earlier copy from the same source.

    The destination is created or migrated as any writer does and its writer lock held throughout;
    the source is only read. ArchiveError (saying what to do) when the destination holds another
    archive's rows, BadInput when both name the same archive.
    """
    started = time.monotonic()
    if source.identity == destination.identity:
        raise BadInput(f"the source and the destination are the same archive ({source.name}): name another with --to")
    if not source.exists():
        raise ArchiveMissing(source.name)
    with destination.writer_lock(lock_timeout, holder="copy"):
        destination.writer(read_timeout).close()  # creates or migrates it, as a sync would
        reading = source.table_source(read_timeout)
        try:
            sink = destination.table_sink(read_timeout)
            try:
                return _copy(source, destination, reading, sink, started, _Throttle(say))
            finally:
                sink.close()
        finally:
            reading.close()


def _copy(source: Archive, destination: Archive, reading: TableSource, sink: TableSink, started: float,
          say: _Throttle) -> CopyReport:
    identity = source.identity
    _check_schema(source, reading)
    progress = sink.progress(identity)
    if not progress and sink.holds_rows():
        others = sink.sources()
        origin = f"copied from {', '.join(others)}" if others else "not copied from it"
        raise ArchiveError(
            f"the destination {destination.name} already holds an archive ({origin}); copying {source.name} into it "
            "would mix two archives. Copy into an empty database or a new DuckDB file (a copy started there from "
            "this same source is resumed)")
    columns = {spec.name: _columns(reading, sink, spec.name) for spec in TABLES}
    results = {spec.name: TableResult(spec.name) for spec in TABLES}
    rescanned: set[str] = set()
    copied_tables = [s for s in TABLES if s.parent is None and s.cursor is None and not s.derived]
    for spec in copied_tables:
        if _copy_table(reading, sink, identity, spec, columns, progress.get(spec.name), results, say):
            rescanned.add(spec.name)
    _verify(reading, sink, copied_tables, results, say)
    # Rows the source gained in a stretch an earlier run had copied already: copy that table again whole.
    again = [s for s in copied_tables if s.name not in rescanned and
             any(results[t.name].missing for t in (s, *children(s.name)))]
    for spec in again:
        _copy_table(reading, sink, identity, spec, columns, None, results, say)
    _verify(reading, sink, again, results, say)
    # Derived tables from the destination's own copied rows: whatever a resumed copy wrote, they agree.
    derived = [s for s in TABLES if s.derived]
    for spec in derived:
        sink.rebuild(spec)
    _verify(reading, sink, derived, results, say)
    # The cursors last: the mark may claim the events only once they are all there.
    cursors = [s for s in TABLES if s.cursor is not None]
    for spec in cursors:
        sink.advance_cursor(spec, reading.cursor_value(spec))
    _verify(reading, sink, cursors, results, say)
    return CopyReport(source.name, destination.name, [results[s.name] for s in TABLES], time.monotonic() - started,
                      resumed=bool(progress))


class _Stream:
    """A child table's rows in parent-key order, handed out page by page as the parent's pages pass."""

    def __init__(self, pages: Iterator[list[Row]], at: int) -> None:
        self.rows = chain.from_iterable(pages)
        self.at = at  # where the parent key sits in a row
        self.held: Row | None = None

    def through(self, last: Any) -> list[Row]:
        """The rows whose parent key is at most `last` (the last key of the parent's page)."""
        taken = []
        row = self.held if self.held is not None else next(self.rows, None)
        while row is not None and row[self.at] <= last:
            taken.append(row)
            row = next(self.rows, None)
        self.held = row
        return taken


def _copy_table(reading: TableSource, sink: TableSink, identity: str, spec: TableSpec,
                columns: dict[str, list[Column]], done: Progress | None, results: dict[str, TableResult],
                say: _Throttle) -> bool:
    """Copy one table (and its children) from where `done` left it; True when it was read from its start."""
    if done is not None and done.done:
        return False
    after = done.after if done is not None else None
    copied = done.rows_copied if done is not None else 0
    total = reading.count(spec.name)
    key_at = [[c.name for c in columns[spec.name]].index(k) for k in spec.key]
    kids = [(kid, _Stream(reading.pages(kid, columns[kid.name], after, kid.page_rows),
                          [c.name for c in columns[kid.name]].index(kid.parent_key or "")))
            for kid in children(spec.name)]
    for rows in reading.pages(spec, columns[spec.name], after, spec.page_rows):
        last: Key = tuple(rows[-1][i] for i in key_at)
        page_children = [(kid, columns[kid.name], stream.through(last[0])) for kid, stream in kids]
        new = sink.write_page(identity, spec, columns[spec.name], rows, page_children,
                              Progress(spec.name, last, copied + len(rows), False))
        for name, count in new.items():
            results[name].copied += count
        copied += len(rows)
        after = last
        say(f"copying {spec.name}: {copied:,} of {total:,} rows")
    sink.save_progress(identity, Progress(spec.name, after, copied, True))
    return done is None or done.after is None


def _verify(reading: TableSource, sink: TableSink, specs: list[TableSpec], results: dict[str, TableResult],
            say: _Throttle) -> None:
    """Compare these tables' keys (and their children's) on both sides as two sorted streams; fill in results."""
    for spec in [s for parent in specs for s in (parent, *children(parent.name))]:
        result = results[spec.name]
        result.source_rows = result.destination_rows = result.missing = result.extra = 0
        result.examples = []
        if spec.cursor is not None:
            _verify_cursor(reading, sink, spec, result)
            continue
        key = [Column(k, "") for k in spec.key]
        ours = chain.from_iterable(reading.pages(spec, key, None, VERIFY_KEYS))
        theirs = chain.from_iterable(sink.pages(spec, key, None, VERIFY_KEYS))
        a, b = next(ours, None), next(theirs, None)  # a key is a tuple: None only at the end
        while a is not None or b is not None:
            if a is not None and (b is None or a < b):
                result.missing += 1
                result.source_rows += 1
                if len(result.examples) < 3:
                    result.examples.append(", ".join(str(v) for v in a))
                a = next(ours, None)
            elif b is not None and (a is None or b < a):
                result.extra += 1
                result.destination_rows += 1
                b = next(theirs, None)
            else:
                result.source_rows += 1
                result.destination_rows += 1
                a, b = next(ours, None), next(theirs, None)
            if say.due():
                say(f"verifying {spec.name}: {result.source_rows:,} rows compared")


def _verify_cursor(reading: TableSource, sink: TableSink, spec: TableSpec, result: TableResult) -> None:
    ours, theirs = reading.cursor_value(spec), sink.cursor_value(spec)
    result.source_rows = result.destination_rows = 1
    if ours is not None and (theirs is None or theirs < ours):
        result.missing = 1  # the destination's cursor is behind the source's
        result.examples.append(f"{spec.cursor} {theirs} < {ours}")
