"""The export directory's manifest: what was written, per table and partition, for the next run to compare.

`_prefect_archiver_export.json` in the directory (engines skip names starting with `_`): the file
format, the archive it came from (its redacted name), and per table per partition the rows, the
fingerprint they had and the files holding them. It is replaced atomically (a temporary file,
fsync, rename) after the files it lists are in place, so it never lists a file that is not whole:
after a SIGKILL the next run finds at worst partitions it must write again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archiver.errors import BadInput
from archiver.storage.export import FORMATS, Fingerprint

NAME = "_prefect_archiver_export.json"
LOCK = "_prefect_archiver_export.lock"
# What marks the file as ours, and the layout version it describes.
MAGIC, VERSION = "prefect-archiver export", 1


@dataclass
class Partition:
    rows: int
    digest: str
    files: list[str]  # relative to the table's folder: day=YYYY-MM-DD/part-0.parquet, or data.parquet

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.rows, self.digest)


@dataclass
class Manifest:
    file_format: str
    source: str
    tables: dict[str, dict[str, Partition]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest": MAGIC, "version": VERSION, "format": self.file_format, "source": self.source,
            "tables": {table: {key: {"rows": p.rows, "fingerprint": p.digest, "files": p.files}
                               for key, p in sorted(parts.items())}
                       for table, parts in sorted(self.tables.items())},
        }

    def save(self, directory: Path) -> None:
        """Replace the manifest in `directory` atomically."""
        path = directory / NAME
        temporary = directory / f".{NAME}.{os.getpid()}.tmp"
        with temporary.open("w", encoding="utf-8") as file:
            json.dump(self.to_json(), file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)


def load(directory: Path) -> Manifest | None:
    """The manifest in `directory`, None when it has none; BadInput when the file is not one of ours."""
    path = directory / NAME
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path} cannot be read as an export manifest ({exc}): export into another directory, "
                       "or move that one aside") from None
    if not isinstance(document, dict) or document.get("manifest") != MAGIC:
        raise BadInput(f"{path} is not a prefect-archiver export manifest: export into another directory")
    if document.get("version") != VERSION or document.get("format") not in FORMATS:
        raise BadInput(f"{path} describes an export layout this prefect-archiver does not know (version "
                       f"{document.get('version')!r}, format {document.get('format')!r}): export into a new directory")
    try:
        tables = {
            table: {key: Partition(int(p["rows"]), str(p["fingerprint"]), [str(f) for f in p["files"]])
                    for key, p in parts.items()}
            for table, parts in document.get("tables", {}).items()
        }
    except (AttributeError, KeyError, TypeError, ValueError):
        raise BadInput(f"{path} is damaged (a partition entry lacks rows, fingerprint or files): export into a "
                       "new directory") from None
    return Manifest(document["format"], str(document.get("source", "")), tables)
