"""Export's planning, without an archive: which partitions a re-run writes, and the chunks it reads them in."""

from __future__ import annotations

from archiver.export.manifest import Partition
from archiver.export.plan import chunks, plan_table
from archiver.storage.export import Fingerprint
from archiver.storage.tables import table

EVENTS, FLOWS = table("events"), table("flows")


def test_only_new_changed_or_missing_partitions_are_written_and_empty_ones_removed():
    archive = {"2026-11-01": Fingerprint(3, "7"), "2026-11-02": Fingerprint(3, "9"), "2026-11-03": Fingerprint(1, "1"),
               "2026-11-04": Fingerprint(2, "2")}
    written = {"2026-11-01": Partition(3, "7", ["a"]), "2026-11-02": Partition(3, "8", ["b"]),
               "2026-11-04": Partition(2, "2", ["gone"]), "2026-10-31": Partition(5, "5", ["c"])}
    plan = plan_table(archive, written, files_present=lambda p: p.files != ["gone"])
    assert plan.write == ["2026-11-02", "2026-11-03", "2026-11-04"]  # changed, new, its file deleted by someone
    assert plan.unchanged == ["2026-11-01"]
    assert plan.remove == ["2026-10-31"]


def test_chunks_hold_at_most_the_limit_and_a_big_partition_alone():
    items = [(EVENTS, "2026-11-01", 40), (EVENTS, "2026-11-02", 70), (EVENTS, "2026-11-03", 250),
             (EVENTS, "2026-11-04", 10), (FLOWS, "", 5)]
    work = chunks(items, limit=100)
    assert [[(job.table.name, job.partitions) for job in jobs] for jobs in work] == [
        [("events", ("2026-11-01",))],
        [("events", ("2026-11-02",))],
        [("events", ("2026-11-03",))],
        [("events", ("2026-11-04",)), ("flows", ("",))],
    ]
