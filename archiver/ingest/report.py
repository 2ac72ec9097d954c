"""What a run did: the frozen results its passes return, and the one report a run adds them up to.

SyncReport is the one definition of the report's fields and of where each goes: every field is a
key of `sync --json`, in field order; `log=True` puts it in the service's log line; `ledger=`
names the `syncs` column that stores it (archiver.storage.writer.LEDGER_COUNTERS). A run that raises still has its
counts: the report as it stood is attached to the exception (partial_report), so the ledger row,
the service's log line and its metrics read the same frozen value a normal return gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from archiver.errors import Stopped
from archiver.ingest.stop import NEVER, StopToken
from archiver.prefect.events import format_timestamp
from archiver.storage.writer import WriteCounts


@dataclass(frozen=True)
class Reads:
    """Items read from the server and what writing them did: fetched = inserted + duplicates + quarantined."""

    fetched: int = 0
    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0  # of `duplicates`, those that came back with other content (the first is kept)
    quarantined: int = 0

    @classmethod
    def written(cls, fetched: int, counts: WriteCounts) -> Reads:
        """`fetched` items read and what writing them did."""
        return cls(fetched, counts.inserted, counts.duplicates, counts.conflicts, counts.quarantined)

    def __add__(self, other: Reads) -> Reads:
        return Reads(self.fetched + other.fetched, self.inserted + other.inserted, self.duplicates + other.duplicates,
                     self.conflicts + other.conflicts, self.quarantined + other.quarantined)


@dataclass(frozen=True)
class FetchResult:
    """What reading a range did: the windows read and written in plan order, and their events."""

    windows: int = 0
    reads: Reads = Reads()

    def __add__(self, other: FetchResult) -> FetchResult:
        return FetchResult(self.windows + other.windows, self.reads + other.reads)


@dataclass(frozen=True)
class TrailingReconcile:
    """The reconcile behind the mark that ends a sync, or runs on its own (schedule.reconcile_every)."""

    since: datetime
    until: datetime
    differing: int  # buckets where the server and the archive differed
    reads: Reads  # what reading them again did: reads.inserted are the late events
    requests: int  # API requests, count-by and pages
    seconds: float


@dataclass(frozen=True)
class GapFound:
    """A stretch the server may have trimmed before the archive reached it (see gaps.py)."""

    since: datetime
    until: datetime
    why: str

    def as_json(self) -> dict[str, str]:
        return {"since": format_timestamp(self.since), "until": format_timestamp(self.until), "why": self.why}


def _shown(default: Any = 0, *, log: bool = False, ledger: str | None = None) -> Any:
    """A report field: in `sync --json` always, in the service's log line if `log`, stored in `ledger`."""
    return field(default=default, metadata={"log": log, "ledger": ledger})


@dataclass(frozen=True)
class SyncReport:
    """What one run (sync, reconcile, verify) did; `sync --json` prints every field, in this order."""

    windows: int = _shown(log=True, ledger="windows")
    fetched: int = _shown(log=True, ledger="fetched")  # the reconcile's reads included
    inserted: int = _shown(log=True, ledger="inserted")
    duplicates: int = _shown(ledger="duplicates")
    conflicts: int = _shown(ledger="conflicts")
    quarantined: int = _shown(ledger="quarantined")
    reconciled: int = _shown(log=True, ledger="reconciled_buckets")  # buckets behind the mark that differed
    repaired: int = _shown(log=True)  # of `inserted`, the late events the reconcile added
    reconcile_requests: int = _shown(log=True)  # API requests of the trailing reconcile (count-by and pages)
    reconcile_seconds: float = _shown(0.0, log=True)
    objects_refreshed: int = _shown(log=True)  # flow runs, task runs, deployments, flows, work pools read again
    runs_states_read: int = _shown(log=True)  # runs whose state records were read
    states_saved: int = _shown(log=True)  # state records written (new, or replaced by the server's current version)
    pages: int = _shown()  # event pages read (/events/filter and /events/filter/next), retries included
    counts: int = _shown()  # /events/count-by requests
    high_water_mark: str | None = _shown(None, log=True)
    since: str | None = _shown(None)
    until: str | None = _shown(None)
    gaps: tuple[GapFound, ...] = _shown((), log=True)
    seconds: float = _shown(0.0)
    outcome: str = _shown("running", log=True)  # "ok", "interrupted" by a stop, "failed" by an error
    run_id: str = _shown("")  # the run's row in the `syncs` ledger
    # Run logs and artifacts (ingest/logs.py), after the keys sync --json has always printed.
    log_runs_read: int = _shown(log=True)  # flow runs and task runs whose logs and artifacts were read
    logs_inserted: int = _shown(log=True, ledger="logs_inserted")  # log lines new to the archive
    artifacts_saved: int = _shown(log=True, ledger="artifacts_saved")  # artifacts new, or replaced by a newer version

    def as_json(self) -> dict[str, Any]:
        """What `sync --json` prints (and the Prefect flow returns): every field, in order."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def log_fields(self) -> dict[str, Any]:
        """The fields the service's log line carries, beside its own (lag, error, …)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.metadata["log"]}

    def ledger_counters(self) -> dict[str, int]:
        """The counters the `syncs` ledger stores, by column (archiver.storage.writer.LEDGER_COUNTERS)."""
        return {f.metadata["ledger"]: getattr(self, f.name) for f in fields(self) if f.metadata["ledger"]}



def _plain(value: Any) -> Any:
    return [gap.as_json() for gap in value] if isinstance(value, tuple) else value


def outcome(stop: StopToken, failure: BaseException | None = None) -> str:
    """How a run ended, decided here only: "failed" by an error, "interrupted" by a stop (or a
    second Ctrl-C), else "ok"."""
    if failure is not None:
        return "interrupted" if isinstance(failure, (KeyboardInterrupt, Stopped)) else "failed"
    return "interrupted" if stop.stopped else "ok"


# The attribute under which a run leaves its report on the exception that ended it.
_REPORT = "archiver_sync_report"


def attach_report(failure: BaseException, report: SyncReport) -> None:
    """Leave the report of the run `failure` ended on it, for the caller (partial_report)."""
    setattr(failure, _REPORT, report)


def partial_report(failure: BaseException) -> SyncReport:
    """The report of the run an exception ended, as far as it got: what was committed is counted.

    A failure before the run began (the archive would not open) has an empty one, with the outcome
    the failure means.
    """
    report = getattr(failure, _REPORT, None)
    if isinstance(report, SyncReport):
        return report
    return SyncReport(outcome=outcome(NEVER, failure))
