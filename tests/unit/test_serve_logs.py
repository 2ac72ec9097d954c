"""serve's POST /logs/filter and POST /artifacts/filter over an archive: Prefect's bodies and shapes."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from archiver.config import Settings
from archiver.prefect.logs import parse_artifact
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.logs import LogMark
from archiver.web.api import create_app
from tests.unit.storage.shapes import T0
from tests.unit.storage.test_logs import artifact_json, log_json, make_log

RUN, TASK = uuid.uuid4(), uuid.uuid4()


@pytest.fixture
def client(tmp_path):
    archive = DuckDBArchive(tmp_path / "archive.duckdb")
    writer = archive.writer(timedelta(seconds=5))
    logs = [make_log(RUN, T0 + timedelta(seconds=i), f"line {i}", level=10 * (1 + i % 5)) for i in range(6)]
    logs.append(make_log(RUN, T0 + timedelta(seconds=9), "in a task", task_run=TASK))
    mark = LogMark("flow_run", str(RUN), None, T0, T0, T0, True)
    writer.save_logs(logs, mark)
    writer.save_artifacts([parse_artifact(artifact_json(RUN, "markdown", "# hi", key="report")),
                           parse_artifact(artifact_json(RUN, "table", "[]"))], mark)
    writer.close()
    with TestClient(create_app(Settings(db_path=archive.path), token="secret-token")) as http:
        http.headers["Authorization"] = "Bearer secret-token"
        yield http


def test_logs_filter_answers_prefects_shape_for_prefects_body(client):
    body = {"logs": {"flow_run_id": {"any_": [str(RUN)]}, "level": {"ge_": 30}}, "sort": "TIMESTAMP_DESC", "limit": 2}
    answer = client.post("/api/logs/filter", json=body)
    assert answer.status_code == 200
    assert [g["message"] for g in answer.json()] == ["line 4", "line 3"]
    first = client.post("/api/logs/filter", json={"logs": {"task_run_id": {"any_": [str(TASK)]}}}).json()
    assert first == [log_json(RUN, T0 + timedelta(seconds=9), "in a task", task_run=TASK, log_id=uuid.UUID(first[0]["id"]))]
    no_task = client.post("/api/logs/filter", json={"logs": {"task_run_id": {"is_null_": True},
                                                             "timestamp": {"after_": "2026-11-02T09:30:04Z"}},
                                                    "offset": 1}).json()
    assert [g["message"] for g in no_task] == ["line 5"]
    assert [g["message"] for g in client.post("/api/logs/filter", json={"logs": {"text": {"query": "TASK"}}}).json()] == [
        "in a task"]


def test_artifacts_filter_answers_prefects_shape(client):
    answer = client.post("/api/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [str(RUN)]},
                                                                      "key": {"any_": ["report"]}}})
    assert answer.status_code == 200 and [a["data"] for a in answer.json()] == ["# hi"]
    assert len(client.post("/api/artifacts/filter", json={}).json()) == 2


@pytest.mark.parametrize("body", [{"log": {}}, {"logs": {"flow_run": {}}}, {"logs": {"level": {"gt_": 1}}},
                                  {"limit": 100_000}, {"sort": "LEVEL"}, {"logs": {"flow_run_id": {"any_": ["x"]}}}])
def test_a_body_prefect_would_refuse_or_we_cannot_answer_is_a_422(client, body):
    assert client.post("/api/logs/filter", json=body).status_code == 422


def test_the_bearer_token_guards_them(client):
    del client.headers["Authorization"]
    assert client.post("/api/logs/filter", json={}).status_code == 401
    assert client.post("/api/artifacts/filter", json={}).status_code == 401
