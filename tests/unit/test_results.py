"""Reading persisted results from files in Prefect's layouts, without Prefect (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archiver.prefect.results import ResultReference, ResultUnavailable, StorageBlock, local_result_path, read_json_result

VALUE = {"rows": [1, 2.5, None, "é"], "ok": True}
JSON_SERIALIZER = {"type": "json", "jsonlib": "json", "object_encoder": "prefect.serializers.prefect_json_object_encoder",
                   "object_decoder": "prefect.serializers.prefect_json_object_decoder", "dumps_kwargs": {}, "loads_kwargs": {}}


def reference(key: str | Path, serializer: str | None = "json", block: StorageBlock | None = None) -> ResultReference:
    return ResultReference(str(key), block.id if block else None, serializer, None, "3.8.8", block)


@pytest.mark.parametrize("layout", ["record", "bare", "prefect2"])
def test_a_json_result_is_read_from_each_file_layout_prefect_writes(tmp_path, layout):
    path = tmp_path / "a1b2"
    serialized = json.dumps(VALUE)
    document = {
        "record": {"metadata": {"storage_key": str(path), "expiration": None, "serializer": JSON_SERIALIZER,
                                "prefect_version": "3.8.8", "storage_block_id": None}, "result": serialized},
        "bare": VALUE,
        "prefect2": {"serializer": {"type": "json"}, "data": serialized, "prefect_version": "2.20.0"},
    }[layout]
    path.write_text(json.dumps(document))
    assert read_json_result(reference(path)) == VALUE


def test_a_relative_key_is_found_where_prefect_keeps_local_results(tmp_path):
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "k1").write_text("[1]")
    (tmp_path / "home" / "storage").mkdir(parents=True)
    (tmp_path / "home" / "storage" / "k1").write_text("[2]")
    assert read_json_result(reference("k1"), {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "custom")}) == [1]
    assert read_json_result(reference("k1"), {"PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "custom")}) == [1]
    assert read_json_result(reference("k1"), {"PREFECT_HOME": str(tmp_path / "home")}) == [2]
    block = StorageBlock("6b5e8f0e-0000-4000-8000-000000000001", True, "results", "local-file-system", str(tmp_path / "custom"))
    assert local_result_path(reference("k1", block=block), {}) == tmp_path / "custom" / "k1"


def test_what_cannot_be_read_here_says_what_can(tmp_path):
    pickled = tmp_path / "p1"
    pickled.write_text("gAWVCQAAAAAAAACPlChLAUsCkC4=\n")
    with pytest.raises(ResultUnavailable, match=r"serialized with pickle.*LocalFileSystem\(basepath="):
        read_json_result(reference(pickled, "pickle"))
    with pytest.raises(ResultUnavailable, match=r"result file .*missing.* is not readable from this machine"):
        read_json_result(reference(tmp_path / "missing"))
    s3 = StorageBlock("6b5e8f0e-0000-4000-8000-000000000002", True, "lake", "s3-bucket", None)
    with pytest.raises(ResultUnavailable, match=r"s3-bucket block 'lake'.*Block.load\('s3-bucket/lake'\)"):
        read_json_result(reference("k2", block=s3))
    unknown = ResultReference("k3", "6b5e8f0e-0000-4000-8000-000000000003", "json", None, None, None)
    with pytest.raises(ResultUnavailable, match=r"has not read yet.*resolve_result_storage\(UUID"):
        read_json_result(unknown)
    (tmp_path / "bad").write_text("not json")
    with pytest.raises(ResultUnavailable, match="does not hold JSON"):
        read_json_result(reference(tmp_path / "bad"))
