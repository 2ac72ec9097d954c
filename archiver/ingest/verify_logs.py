"""`verify` for run logs and artifacts: per run, the ids the server returns against the archive's.

For each run whose harvest is settled and that ended in the verified range, the server's log ids
(at logs.level and above, every page by the same keyset walk the harvest uses) and artifact ids
are compared with the archive's. A run the server no longer has answers nothing and is not a
difference. With repair, a run that lacks logs is read again from its first log (the archive
keeps what it has: ids are primary keys, and its mark never moves back).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from archiver.ingest.logs import Harvest, harvest_run, read_artifacts
from archiver.prefect.client import PrefectClient
from archiver.prefect.logs import walk_logs
from archiver.storage.logs import LogRun
from archiver.storage.reader import ArchiveReader
from archiver.storage.writer import ArchiveWriter


@dataclass(frozen=True)
class RunLogDiff:
    """One run whose archived logs or artifacts differ from what the server holds."""

    run_kind: str
    run_id: str
    missing_logs: int  # the server holds them, the archive does not
    missing_artifacts: int
    extra_logs: int  # the archive holds them, the server no longer does (trimmed, or a lower logs.level then)

    @property
    def missing(self) -> bool:
        return bool(self.missing_logs or self.missing_artifacts)

    def describe(self) -> str:
        """What the archive lacks or holds more of, e.g. "lacks 3 logs, lacks 1 artifacts"."""
        what = [f"lacks {self.missing_logs} logs" if self.missing_logs else "",
                f"lacks {self.missing_artifacts} artifacts" if self.missing_artifacts else "",
                f"holds {self.extra_logs} logs the server no longer has" if self.extra_logs else ""]
        return ", ".join(w for w in what if w)

    def as_json(self) -> dict[str, object]:
        return {"run_kind": self.run_kind, "run_id": self.run_id, "missing_logs": self.missing_logs,
                "missing_artifacts": self.missing_artifacts, "extra_logs": self.extra_logs}


@dataclass(frozen=True)
class LogVerification:
    runs: int  # runs compared
    diffs: tuple[RunLogDiff, ...]
    repaired_logs: int = 0

    @property
    def missing(self) -> list[RunLogDiff]:
        return [d for d in self.diffs if d.missing]


def compare_run(client: PrefectClient, reader: ArchiveReader, run_kind: str, run_id: str, what: Harvest) -> RunLogDiff:
    """The differences of one run's logs and artifacts between the server and the archive."""
    run = LogRun(run_kind, run_id, "COMPLETED", None, None, None, True)
    server_logs: set[str] = set()
    if what.level is not None:
        for page in walk_logs(client.read_logs, run_kind, run_id, None, what.level_ge, client.log_page_size()):
            server_logs |= {str(g.id) for g in page.logs}
    server_artifacts = {str(a.id) for a in read_artifacts(client, run)} if what.artifacts else set()
    archived_logs, archived_artifacts = reader.run_log_ids(uuid.UUID(run_id), what.level_ge)
    return RunLogDiff(run_kind, run_id, len(server_logs - archived_logs), len(server_artifacts - archived_artifacts),
                      len(archived_logs - server_logs) if what.level is not None else 0)


def verify_logs(client: PrefectClient, reader: ArchiveReader, what: Harvest, since: datetime, until: datetime, *,
                writer: ArchiveWriter | None = None) -> LogVerification:
    """Compare every settled run that ended in [since, until]; with a `writer`, read the lacking ones again."""
    if not what.enabled:
        return LogVerification(0, ())
    runs = reader.harvested_runs(since, until)
    diffs = [d for d in (compare_run(client, reader, kind, run_id, what) for kind, run_id in runs)
             if d.missing or d.extra_logs]
    repaired = 0
    if writer is not None:
        now = datetime.now(timezone.utc)
        for diff in (d for d in diffs if d.missing):
            # Read again from its first log; settled as it was (its mark keeps its place).
            run = LogRun(diff.run_kind, diff.run_id, "COMPLETED", now, now, None, True)
            repaired += harvest_run(client, writer, run, what).logs_inserted
    return LogVerification(len(runs), tuple(diffs), repaired)
