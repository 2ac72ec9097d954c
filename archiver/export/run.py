"""`prefect-archiver export DIR`: the archive's tables as Hive-partitioned files, rewriting only what changed.

DIR/<table>/day=YYYY-MM-DD/part-N.<ext> for a partitioned table (TableSpec.time), DIR/<table>/data.<ext>
for a small one. Each run asks the archive for every partition's fingerprint, compares it with the
manifest, and writes only partitions that are new or changed (or whose files went missing);
partitions whose rows are gone are removed; the rest is not touched (same inode, same mtime).

Crash safety: files are staged in DIR/.staging-<pid> (on the same file system) and renamed into
place, so a reader sees a partition's old file or its new one, never half of one; the manifest is
replaced atomically after the files it lists. A killed run leaves at worst partitions whose file
is newer than the manifest says: the next run finds their fingerprints differ, writes them again,
and deletes staging folders and stray files of ours. Only files named as export names them are
ever deleted, and only in a directory whose manifest says it is an export.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from archiver.errors import ArchiveMissing, BadInput, ExportFailed
from archiver.export.manifest import LOCK, NAME, Manifest, Partition, load
from archiver.export.plan import CHUNK_ROWS, chunks, plan_table
from archiver.storage.base import Archive
from archiver.storage.export import FORMATS, PARTITION_COLUMN, WHOLE, ExportSource, Job, export_source
from archiver.storage.tables import EXPORTED, TableSpec

_OURS = re.compile(r"^part-\d+\.(parquet|jsonl)$")
_STAGING = ".staging-"


@dataclass(frozen=True)
class TableReport:
    """What one table's export did."""

    table: str
    partitioned_by: str | None  # the row's time column(s), None for a table written whole
    written: int  # partitions written this run
    unchanged: int
    removed: int
    rows: int  # rows the export now holds for the table
    rows_written: int

    def to_json(self) -> dict[str, Any]:
        return {"partitioned_by": self.partitioned_by, "partitions_written": self.written,
                "partitions_unchanged": self.unchanged, "partitions_removed": self.removed,
                "rows": self.rows, "rows_written": self.rows_written}


@dataclass
class ExportReport:
    directory: str
    file_format: str
    source: str
    tables: list[TableReport] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)  # tables this archive predates
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "format": self.file_format, "source": self.source,
                "tables": {t.table: t.to_json() for t in self.tables}, "absent_tables": self.absent,
                "seconds": round(self.seconds, 3)}


def exported_table(name: str) -> TableSpec:
    """The exported table called `name`; BadInput naming the ones there are."""
    for spec in EXPORTED:
        if spec.name == name:
            return spec
    raise BadInput(f"--table {name!r} is not a table export writes; choose from {', '.join(t.name for t in EXPORTED)}")


def export_archive(archive: Archive, directory: Path, file_format: str = "parquet", tables: Sequence[str] | None = None,
                   read_timeout: timedelta = timedelta(seconds=15), chunk_rows: int = CHUNK_ROWS,
                   on_table: Callable[[TableReport], None] | None = None) -> ExportReport:
    """Export `archive` (only read: never locked for writing, never migrated) into `directory`."""
    started = time.monotonic()
    if file_format not in FORMATS:
        raise BadInput(f"--format {file_format!r} is not one export writes; choose {' or '.join(FORMATS)}")
    specs = [exported_table(name) for name in dict.fromkeys(tables)] if tables else list(EXPORTED)
    if not archive.exists():
        raise ArchiveMissing(archive.name)
    source = export_source(archive, read_timeout)
    source.fingerprints([])  # before the directory is made: an unreadable archive leaves nothing behind
    _prepare(directory, file_format, archive.name)
    report = ExportReport(str(directory), file_format, archive.name)
    with _locked(directory):
        manifest = load(directory) or Manifest(file_format, archive.name)  # read again under the lock
        manifest.source = archive.name
        _remove_staging(directory)
        fingerprints = source.fingerprints(specs)
        report.absent = [spec.name for spec in specs if spec.name not in fingerprints]
        live = [spec for spec in specs if spec.name in fingerprints]
        plans = {spec.name: plan_table(fingerprints[spec.name], manifest.tables.get(spec.name, {}),
                                       _files_present(directory / spec.name)) for spec in live}
        items = [(spec, key, fingerprints[spec.name][key].rows) for spec in live for key in plans[spec.name].write]
        rows_written = _write(source, chunks(items, chunk_rows), directory, manifest)
        for spec in live:
            written = manifest.tables.setdefault(spec.name, {})
            plan = plans[spec.name]
            for key in plan.remove:
                _remove_files(directory / spec.name, written.pop(key, None), keep=[])
            _remove_strays(directory / spec.name, written, file_format)
            done = TableReport(spec.name, ", ".join(spec.time) or None, len(plan.write), len(plan.unchanged),
                               len(plan.remove), sum(p.rows for p in written.values()), rows_written.get(spec.name, 0))
            report.tables.append(done)
            if on_table is not None:
                on_table(done)
        manifest.save(directory)
    report.seconds = time.monotonic() - started
    return report


def _files_present(folder: Path) -> Callable[[Partition], bool]:
    return lambda partition: all((folder / name).is_file() for name in partition.files)


def _write(source: ExportSource, work: list[list[Job]], directory: Path, manifest: Manifest) -> dict[str, int]:
    """Each chunk staged, renamed into place and recorded in the manifest; rows written per table."""
    rows_written: dict[str, int] = {}
    extension = manifest.file_format
    for number, jobs in enumerate(work):
        staging = directory / f"{_STAGING}{os.getpid()}-{number}"
        try:
            found = source.write(jobs, manifest.file_format, staging)
            for job in jobs:
                name = job.table.name
                written = manifest.tables.setdefault(name, {})
                for key, fingerprint in found[name].items():
                    files = _place(staging / name, directory / name, key, extension)
                    _remove_files(directory / name, written.get(key), keep=files)
                    if fingerprint.rows or key == WHOLE:  # a table written whole keeps its (maybe empty) file
                        written[key] = Partition(fingerprint.rows, fingerprint.digest, files)
                        rows_written[name] = rows_written.get(name, 0) + fingerprint.rows
                    else:
                        written.pop(key, None)
        except OSError as exc:
            raise ExportFailed(f"writing the export into {directory} failed ({exc.strerror or exc}); the files in place "
                               "are whole: free the space or fix the permissions and run export again") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        manifest.save(directory)
    return rows_written


def _prepare(directory: Path, file_format: str, source: str) -> None:
    """Make sure `directory` is ours to write: an export of this format, or new, or empty."""
    if directory.exists() and not directory.is_dir():
        raise BadInput(f"{directory} is a file, not a directory: name a directory to export into (it is made if missing)")
    manifest = load(directory) if directory.is_dir() else None
    if manifest is None:
        try:
            if directory.is_dir() and any(directory.iterdir()):
                raise BadInput(f"{directory} is not empty and holds no export ({NAME} is missing): export into a new or "
                               "empty directory (export never deletes files it did not write)")
            directory.mkdir(parents=True, exist_ok=True)
            Manifest(file_format, source).save(directory)
        except OSError as exc:
            raise BadInput(f"cannot export into {directory}: {exc.strerror or exc}") from None
    elif manifest.file_format != file_format:
        raise BadInput(f"{directory} holds a {manifest.file_format} export: export --format {file_format} into another "
                       f"directory, or --format {manifest.file_format} into this one")


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One export at a time into a directory (an OS lock: released when the process dies)."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise ExportFailed(f"another export into {directory} is running (pid {holder}); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _remove_staging(directory: Path) -> None:
    """Staging folders a killed run left behind (ours by name; no export is running: we hold the lock)."""
    for entry in directory.iterdir():
        if entry.name.startswith(_STAGING) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _place(staging: Path, folder: Path, key: str, extension: str) -> list[str]:
    """Rename a partition's staged files into place; their names relative to the table's folder."""
    if key == WHOLE:
        staged = [staging / f"data.{extension}"]
        names = [f"data.{extension}"]
    else:
        staged = sorted((staging / f"{PARTITION_COLUMN}={key}").glob(f"*.{extension}"))
        names = [f"{PARTITION_COLUMN}={key}/part-{i}.{extension}" for i in range(len(staged))]
    for path, name in zip(staged, names, strict=True):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    return names


def _remove_files(folder: Path, partition: Partition | None, keep: list[str]) -> None:
    """The files an older version of a partition had that its new version does not."""
    if partition is None:
        return
    for name in set(partition.files) - set(keep):
        path = folder / name
        path.unlink(missing_ok=True)
        if path.parent != folder and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()


def _remove_strays(folder: Path, written: dict[str, Partition], extension: str) -> None:
    """Files of ours the manifest does not list: renamed into place by a run killed before its manifest."""
    if not folder.is_dir():
        return
    listed = {name for partition in written.values() for name in partition.files}
    for day in folder.glob(f"{PARTITION_COLUMN}=*"):
        if not day.is_dir():
            continue
        for path in day.iterdir():
            if _OURS.match(path.name) and path.name.endswith(extension) and f"{day.name}/{path.name}" not in listed:
                path.unlink()
        if not any(day.iterdir()):
            day.rmdir()
