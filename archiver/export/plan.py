"""Which partitions an export writes, removes or leaves alone, and in what chunks: pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from archiver.export.manifest import Partition
from archiver.storage.export import Fingerprint, Job
from archiver.storage.tables import TableSpec

# Rows read under one opening of the archive (a DuckDB file is closed to writers meanwhile) and
# staged on disk at once; a partition larger than this is a chunk of its own.
CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class TablePlan:
    write: list[str]  # partitions whose rows changed, or that are new, or whose files are missing
    remove: list[str]  # partitions written before that have no rows now
    unchanged: list[str]


def plan_table(archive: Mapping[str, Fingerprint], written: Mapping[str, Partition],
               files_present: Callable[[Partition], bool]) -> TablePlan:
    """Compare the archive's fingerprints with what the manifest says was written."""
    write, unchanged = [], []
    for key in sorted(archive):
        before = written.get(key)
        if before is not None and before.fingerprint == archive[key] and files_present(before):
            unchanged.append(key)
        else:
            write.append(key)
    remove = sorted(set(written) - set(archive))
    return TablePlan(write, remove, unchanged)


def chunks(items: Sequence[tuple[TableSpec, str, int]], limit: int = CHUNK_ROWS) -> list[list[Job]]:
    """(table, partition, rows) in order, cut into chunks of at most `limit` rows (a bigger partition
    alone), each chunk as one job per table: what one opening of the archive reads."""
    out: list[list[tuple[TableSpec, str]]] = []
    current: list[tuple[TableSpec, str]] = []
    total = 0
    for table, key, rows in items:
        if current and total + rows > limit:
            out.append(current)
            current, total = [], 0
        current.append((table, key))
        total += rows
    if current:
        out.append(current)
    return [_jobs(chunk) for chunk in out]


def _jobs(chunk: list[tuple[TableSpec, str]]) -> list[Job]:
    by_table: dict[str, list[str]] = {}
    specs: dict[str, TableSpec] = {}
    for table, key in chunk:
        by_table.setdefault(table.name, []).append(key)
        specs[table.name] = table
    return [Job(specs[name], tuple(keys)) for name, keys in by_table.items()]
