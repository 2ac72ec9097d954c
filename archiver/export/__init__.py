"""Export: the archive's tables as Hive-partitioned Parquet or JSON lines for a lake's engines (run.py)."""

from __future__ import annotations

from archiver.export.run import ExportReport, TableReport, export_archive

__all__ = ["ExportReport", "TableReport", "export_archive"]
