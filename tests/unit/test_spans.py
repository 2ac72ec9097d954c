"""Looking back under Prefect Cloud's 14-day cap: the oldest event's walk and the by-id lookup's windows."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from archiver.lookup.events import lookup_windows
from archiver.prefect.spans import MAX_QUERY_SPAN, walk_back

UTC = timezone.utc
moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
horizons = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400))


@given(moments, horizons)
def test_walk_back_tiles_the_horizon_newest_first_within_the_cap(upper, horizon):
    floor = upper - horizon
    spans = list(walk_back(upper, floor))
    if horizon == timedelta(0):
        assert spans == []
        return
    assert spans[0][1] == upper and spans[-1][0] == floor
    for lower, top in spans:
        assert lower < top and top - lower <= MAX_QUERY_SPAN
    for newer, older in zip(spans, spans[1:], strict=False):
        assert older[1] == newer[0], "each span ends where the newer one began: no hole, no overlap"


@given(moments, st.timedeltas(min_value=timedelta(days=7, seconds=1), max_value=timedelta(days=400)))
def test_lookup_windows_cover_now_back_to_the_horizon_each_within_the_cap(now, horizon):
    windows = list(lookup_windows(str(uuid.uuid4()), now, horizon))  # a v4 id carries no time
    assert all(until - since <= MAX_QUERY_SPAN for since, until in windows)
    assert max(until for _, until in windows) >= now
    assert min(since for since, _ in windows) == now - horizon
    covered = now - horizon
    for since, until in sorted(windows):
        assert since <= covered, f"nothing asked between {covered} and {since}"
        covered = max(covered, until)
    assert covered >= now
