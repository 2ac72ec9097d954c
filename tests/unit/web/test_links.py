"""Where the UI links: its own pages by resource id, and Prefect's UI from the API URL (never its credentials)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from archiver.config import Settings
from archiver.web.ui.charts import chart
from archiver.web.ui.links import PrefectRuns, prefect_ui_base, resource_url

RUN = "0b9a6c5e-1d2f-4a3b-8c4d-5e6f7a8b9c0d"


@pytest.mark.parametrize("api_url, ui", [
    ("http://127.0.0.1:4200/api", "http://127.0.0.1:4200"),
    ("https://prefect.example.com/prefect/api/", "https://prefect.example.com/prefect"),
    ("https://admin:hunter2@prefect.example.com/api", "https://prefect.example.com"),
    ("https://api.prefect.cloud/api/accounts/a1/workspaces/w2", "https://app.prefect.cloud/account/a1/workspace/w2"),
    (None, None), ("not a url", None),
])
def test_prefect_ui_is_the_api_url_without_api_and_credentials(api_url, ui):
    assert prefect_ui_base(api_url) == ui


def test_resources_link_to_their_pages_or_their_events():
    assert resource_url(f"prefect.flow-run.{RUN}") == f"/runs/{RUN}"
    assert resource_url(f"prefect.deployment.{RUN}") == f"/deployments/{RUN}"
    assert resource_url("prefect.tag.nightly") == "/events?related=prefect.tag.nightly"
    assert resource_url('javascript:alert(1)//"').startswith("/events?related=javascript%3Aalert")


def test_without_an_api_url_a_run_is_not_linked_and_the_page_says_why():
    link = PrefectRuns(Settings(db_path=Path("unused.duckdb"))).link(uuid.UUID(RUN))
    assert link.url is None and "no Prefect API URL" in link.note


def test_a_chart_places_a_point_per_value_and_leaves_gaps_out():
    c = chart("t", "s", ["a", "b", "c"], [("p50", "s-p50", [1.0, None, 3.0], False)])
    assert [p.value for p in c.series[0].points] == [1.0, 3.0]
    assert c.series[0].points[0].y > c.series[0].points[1].y  # higher values draw higher (smaller y)
    assert chart("t", "runs", [], [("runs", "s-runs", [], True)]).empty
