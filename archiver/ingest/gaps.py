"""Gaps: stretches of time the archive may have lost because the server trimmed them first.

Two ways to notice one, both checked by every sync that continues from the mark:

- **The server's own evidence** (server_gap). The archive holds every event before its mark, so
  when the mark was set the server held those events. Prefect trims by `occurred`, oldest first
  (server/services/db_vacuum.py: `occurred < now − retention`). So if the server no longer holds
  the newest archived event E before the mark, it has trimmed everything up to at least E, and
  anything that occurred in [mark, oldest event it still holds) may have been trimmed before it
  was archived. This needs no setting: it holds for a Cloud plan's retention, a self-hosted
  override, or an operator's DELETE alike. It costs one request when nothing was trimmed — the
  probe `occurred [E, min(mark, E + 14 days)]`, limit 1, which contains E and stays within
  Prefect Cloud's 14-day cap — and a search for the oldest event only when the probe comes back
  empty. An archive with no event before its mark has nothing to probe with: only the setting
  below speaks for it. (Per-event-type retention overrides trim some types sooner; E being of
  another type, the probe cannot see those.)
- **The setting** (retention_gap): a mark older than now − ingest.retention, for a stretch the
  server is about to trim or has trimmed while the archive was down.

Either way the stretch is recorded in `gaps` and logged as an ERROR: "may have been lost" is the
honest wording — the server may simply have held nothing there.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from archiver.ingest.fetch import first_event_time
from archiver.ingest.first_read import gap_probe
from archiver.prefect.client import PrefectClient
from archiver.storage.base import ArchiveCounts
from archiver.storage.writer import Gap


def server_gap(client: PrefectClient, archive: ArchiveCounts, mark: datetime, end: datetime, retention: timedelta) -> Gap | None:
    """[mark, oldest event the server holds) when the server has trimmed past the archive's newest event.

    `end` bounds the search for the oldest event (the sync's end); `retention` bounds its 14-day
    walk where the server refuses wide queries (Cloud). None when there is no sign of trimming.
    """
    newest = archive.newest_occurred_before(mark)
    if newest is None:
        return None  # nothing archived to look for: no evidence either way
    if client.read_events(gap_probe(newest, mark), limit=1)["events"]:
        return None  # the server still holds events at or before the mark: it has trimmed nothing past it
    oldest = first_event_time(client, end, retention)
    if oldest is not None and oldest <= mark:
        # E is gone, yet the server holds something before the mark: a back-dated event that arrived
        # after the trim. It says the mark's side is not trimmed bare; claim nothing.
        return None
    return mark, oldest if oldest is not None else end


def retention_gap(start: datetime, now: datetime, retention: timedelta) -> Gap | None:
    """[start, now − retention) when the range still to archive begins before the declared retention."""
    horizon = now - retention
    return (start, horizon) if start < horizon else None


def find_gap(client: PrefectClient, archive: ArchiveCounts, start: datetime | None, mark: datetime | None, now: datetime,
             end: datetime, retention: timedelta, explicit_start: bool) -> tuple[Gap, str] | None:
    """The stretch a sync from `start` may have lost, and why; None when there is no sign of one.

    The server's evidence whenever there is a mark, whatever the settings say; the declared
    retention too, except on a first sync from the oldest event held (it has nothing to miss).
    `explicit_start`: ingest.start set, so a first sync may begin behind the retention.
    """
    found: list[tuple[Gap, str]] = []
    if mark is not None:
        gap = server_gap(client, archive, mark, end, retention)
        if gap is not None:
            found.append((gap, "the server no longer holds the newest archived event"))
    if start is not None and (mark is not None or explicit_start):
        gap = retention_gap(start, now, retention)
        if gap is not None:
            found.append((gap, f"the server keeps events for {retention} (ingest.retention)"))
    if not found:
        return None
    # Both start where the sync does: one stretch, as long as the longer says, with every reason.
    return (found[0][0][0], max(gap[1] for gap, _ in found)), "; ".join(why for _, why in found)


def describe(since: str, until: str) -> str:
    """The words every command uses for a gap (sync's log and summary, status, verify)."""
    return (f"events that occurred between {since} and {until} may have been lost: the server no longer "
            "holds them and the archive had not reached them")

