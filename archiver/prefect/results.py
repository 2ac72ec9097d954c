"""Where a run's persisted result lives, and reading a JSON result from a local file.

Prefect never stores results on the server: a final state's `data` only references them (a
storage key, the storage block, the serializer). Prefect's result store writes one of two file
layouts (prefect/results.py, prefect/_internal/result_records.py), both read here without
importing Prefect:

- a whole result record, `{"metadata": {...ResultRecordMetadata}, "result": "<serialized>"}`
  (task results, and any store without separate metadata storage; Prefect 2 wrote
  `{"serializer": {...}, "data": "<serialized>", "prefect_version": ...}`);
- the serialized value alone (flow results: their store keeps metadata in a NullFileSystem).

Like Prefect's `ResultRecord.deserialize`, a file is taken as a record when it has that shape and
as the bare serialized value otherwise. Only the JSON serializer is decoded here. Other
serializers (pickle is Prefect's default) are read through Prefect's own result store when
`prefect` is importable — it is the user's own result, read the way `State.result()` reads it;
without Prefect, and for remote storage blocks, the message says what reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.errors import ArchiverError
from archiver.prefect.profiles import prefect_home

# Prefect's default for PREFECT_RESULTS_LOCAL_STORAGE_PATH is $PREFECT_HOME/storage.
_STORAGE_PATH_VARIABLES = ("PREFECT_RESULTS_LOCAL_STORAGE_PATH", "PREFECT_LOCAL_STORAGE_PATH")


class ResultUnavailable(ArchiverError):
    """The result cannot be shown from this machine; the message says what can read it."""


@dataclass(frozen=True)
class StorageBlock:
    """A result storage block as archived (result_storage_blocks): what locates results in it."""

    id: str
    found: bool  # False: the server did not have the block when the archive asked
    name: str | None
    block_type_slug: str | None
    basepath: str | None  # LocalFileSystem blocks only

    def describe(self) -> str:
        if not self.found:
            return f"result storage block {self.id} (the server no longer had it when the archive asked)"
        return f"{self.block_type_slug or 'unknown'} block {self.name!r} (id {self.id})"


@dataclass(frozen=True)
class ResultReference:
    """A persisted result, as a state's `data` references it (Prefect's ResultRecordMetadata)."""

    storage_key: str
    storage_block_id: str | None
    serializer_type: str | None
    expiration: str | None
    prefect_version: str | None
    storage_block: StorageBlock | None = None
    # The serializer as the state recorded it ({"type": "pickle", "picklelib": "cloudpickle", …}).
    serializer: Mapping[str, Any] | None = None

    @property
    def is_local(self) -> bool:
        """Written to a local file system: Prefect's default storage, or a LocalFileSystem block."""
        return self.storage_block_id is None or (
            self.storage_block is not None and self.storage_block.block_type_slug == "local-file-system"
        )

    def where(self) -> str:
        """One line: where the result lives and how it was serialized."""
        if self.storage_block is not None and self.is_local:
            place = f"local file {local_result_path(self)} in {self.storage_block.describe()}, on the machine that ran it"
        elif self.storage_block is not None:
            place = f"key {self.storage_key} in {self.storage_block.describe()}"
        elif self.storage_block_id:
            place = f"key {self.storage_key} in result storage block {self.storage_block_id} (not archived yet)"
        elif Path(self.storage_key).is_absolute():
            place = f"local file {self.storage_key} (on the machine that ran it)"
        else:
            place = f"key {self.storage_key} under the local result storage path of the machine that ran it"
        how = f"serializer {self.serializer_type or 'unknown'}"
        if self.prefect_version:
            how += f", written by prefect {self.prefect_version}"
        if self.expiration:
            how += f", expires {self.expiration}"
        return f"{place}; {how}"

    def reader_hint(self) -> str:
        """How to read it with Prefect (prefect.results) when the archiver cannot."""
        block = self.storage_block
        if block is not None and block.found and block.name and block.block_type_slug:
            storage, imports = f"Block.load('{block.block_type_slug}/{block.name}')", "Block from prefect.blocks.core"
        elif self.storage_block_id:
            storage = f"resolve_result_storage(UUID('{self.storage_block_id}'), _sync=True)"
            imports = "resolve_result_storage from prefect.results"
        elif Path(self.storage_key).is_absolute():
            storage = f"LocalFileSystem(basepath='{Path(self.storage_key).parent}')"
            imports = "LocalFileSystem from prefect.filesystems"
        else:
            storage, imports = "", ""
        argument = f"result_storage={storage}, " if storage else ""
        return (
            "Prefect's result store reads it where that storage is reachable: "
            f"ResultStore({argument}serializer=resolve_serializer('{self.serializer_type or 'pickle'}'))"
            f".read('{self.storage_key}').result (ResultStore and resolve_serializer from prefect.results"
            f"{', ' + imports if imports else ''})"
        )


def local_result_path(reference: ResultReference, environ: dict[str, str] | None = None) -> Path:
    """The file a local-filesystem reference points at on this machine.

    Prefect's default local storage records an absolute path as the key; a LocalFileSystem block
    records a key relative to its basepath; any other relative key is under
    PREFECT_RESULTS_LOCAL_STORAGE_PATH (default $PREFECT_HOME/storage).
    """
    key = Path(reference.storage_key).expanduser()
    if key.is_absolute():
        return key
    block = reference.storage_block
    if block is not None and block.block_type_slug == "local-file-system":
        return Path(block.basepath or ".").expanduser() / key
    env = os.environ if environ is None else environ
    for name in _STORAGE_PATH_VARIABLES:
        if env.get(name):
            return Path(env[name]).expanduser() / key
    return prefect_home(env) / "storage" / key


def read_result(reference: ResultReference, environ: dict[str, str] | None = None) -> Any:
    """The result's value: JSON here, other serializers of local results through Prefect if installed."""
    if reference.serializer_type == "json" or not reference.is_local:
        return read_json_result(reference, environ)
    try:
        from prefect.filesystems import LocalFileSystem
        from prefect.results import ResultStore, resolve_serializer
        from prefect.serializers import Serializer
    except ImportError:  # no Prefect here: say what reads it
        return read_json_result(reference, environ)
    path = local_result_path(reference, environ)
    if not path.is_file():
        raise _unreadable(path, "no such file", reference)
    config = dict(reference.serializer or {})
    try:
        serializer = Serializer(**config) if config.get("type") else resolve_serializer(reference.serializer_type or "pickle")
        # As prefect.results.ResultStore._from_metadata does for a local result, with the file this
        # machine resolves the key to (a block's basepath, PREFECT_RESULTS_LOCAL_STORAGE_PATH, …).
        store = ResultStore(result_storage=LocalFileSystem(basepath=str(path.parent)), serializer=serializer)
        return store.read(path.name).result
    except Exception as exc:  # unpickling runs the user's code: anything can fail (a missing module…)
        raise ResultUnavailable(
            f"Prefect's result store could not read the result at {path} ({type(exc).__name__}: {exc}); it "
            f"was serialized with {reference.serializer_type or 'an unknown serializer'}, and its value may "
            "need the code (modules, classes) of the flow that wrote it"
        ) from None


def _unreadable(path: Path, why: str, reference: ResultReference) -> ResultUnavailable:
    return ResultUnavailable(
        f"the result file {path} is not readable from this machine ({why}); it was written "
        f"where the run ran, and {reference.reader_hint()}"
    )


def read_json_result(reference: ResultReference, environ: dict[str, str] | None = None) -> Any:
    """The value of a JSON-serialized result in a local file; ResultUnavailable saying why not."""
    if not reference.is_local:
        block = reference.storage_block.describe() if reference.storage_block else (
            f"result storage block {reference.storage_block_id}, which the archive has not read yet")
        raise ResultUnavailable(
            f"the result is stored in {block}, not on a local file system; {reference.reader_hint()}"
        )
    path = local_result_path(reference, environ)
    if reference.serializer_type != "json":
        raise ResultUnavailable(
            f"the result at {path} was serialized with {reference.serializer_type or 'an unknown serializer'}, "
            f"which prefect-archiver does not decode (only json); {reference.reader_hint()}"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, str(exc.strerror or exc), reference) from None
    try:
        document = json.loads(raw)
    except ValueError:
        raise ResultUnavailable(f"the result file {path} does not hold JSON; {reference.reader_hint()}") from None
    if _is_record(document):
        serialized = document.get("result", document.get("data"))
        metadata = document.get("metadata", document)
        serializer = metadata.get("serializer") or {}
        if isinstance(serializer, dict) and serializer.get("type") not in (None, "json"):
            raise ResultUnavailable(
                f"the result record {path} says it was serialized with {serializer.get('type')}; {reference.reader_hint()}"
            )
        if not isinstance(serialized, str):
            return serialized
        try:
            return json.loads(serialized)
        except ValueError:
            raise ResultUnavailable(f"the result in record {path} is not JSON; {reference.reader_hint()}") from None
    return document


def _is_record(document: Any) -> bool:
    """A ResultRecord as Prefect 3 serializes it, or a Prefect 2 result blob (serializer and data at the top)."""
    if not isinstance(document, dict):
        return False
    if isinstance(document.get("metadata"), dict):
        return ("result" in document or "data" in document) and set(document) <= {"metadata", "result", "data"}
    return (isinstance(document.get("serializer"), dict) and "data" in document
            and set(document) <= {"serializer", "data", "prefect_version", "expiration"})
