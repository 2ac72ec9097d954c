"""Seed a real Prefect server with many events fast: written into its stopped SQLite database by Prefect's own writer.

    python bench/seed_events.py --home DIR --events 1000000 --days 30 [--start ISO]
    python bench/seed_events.py --check [--events 1000] [--days 1]

Posting through the API is paced (the server's in-memory queue drops a fast burst), about 300
events a second here, so 1M events would take an hour. Instead the server (PREFECT_HOME = --home,
kept across runs) is started once so its migrations create the database, stopped, and the events
are written by `prefect.server.events.storage.database.write_events` — the function the server's
own event persister calls — after `Event.receive()`, as `POST /events` does. So `events` and
`event_resources` rows have exactly the server's shape (columns, JSON, timestamps, related-resource
rows). The history is the same deterministic one whichever way it is seeded (`history`); a
`bench-seed.json` in the home records what it holds, so a second run reuses it in seconds.

`--check` seeds the same history both ways, into two fresh servers (one through the API, one
directly), and compares what the API answers: every event of /events/filter in order (all fields
but `received`, which is the time of seeding), the totals, /events/count-by/time, /events/count-by/event,
and filters on the related and the primary resource (answered from `event_resources`); then the
rows both databases store, raw (timestamps of writing aside). It prints each comparison and exits 1
if any differs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.prefect_server import (  # noqa: E402
    PrefectServer,
    make_event,
    post_events,
    server_count,
    wait_until_stored,
)

UTC = timezone.utc
MANIFEST = "bench-seed.json"
PARTIAL = "bench-seed.partial.json"  # what a seeding under way (or interrupted) is writing
CHUNK = 5_000  # events per write transaction when seeding directly


def default_start(days: int) -> datetime:
    """Midnight UTC `days + 2` days ago: the history ends two days before now, clear of `settle`."""
    return (datetime.now(UTC) - timedelta(days=days + 2)).replace(hour=0, minute=0, second=0, microsecond=0)


def history(events: int, days: int, since: datetime) -> Iterator[dict[str, Any]]:
    """The bench's N events over `days` days from `since`: deterministic (seeded), generated lazily.

    Three event names, 10,000 flow-run resources, two related resources (a flow of 50, a
    deployment of 20) and a payload of 50-2,000 bytes, at uniformly random instants.
    """
    rng = random.Random(1)
    for i in range(events):
        yield make_event(
            since + timedelta(seconds=rng.uniform(0, days * 86400 - 1)),
            event=rng.choice(["prefect.flow-run.Running", "prefect.flow-run.Completed", "prefect.task-run.Completed"]),
            resource_id=f"prefect.flow-run.{rng.randrange(10_000)}",
            related=[(f"prefect.flow.{rng.randrange(50)}", "flow"), (f"prefect.deployment.{rng.randrange(20)}", "deployment")],
            payload={"i": i, "note": "x" * rng.randrange(50, 2000)},
            id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        )


def post_history(api_url: str, events: int, days: int, since: datetime, per_second: float = 300) -> None:
    """Post the history through `POST /events`, paced, with back-pressure on the server's queue."""
    until = since + timedelta(days=days)
    chunk: list[dict[str, Any]] = []
    posted = 0
    for event in history(events, days, since):
        chunk.append(event)
        if len(chunk) == 1000:
            post_events(api_url, chunk, per_second=per_second)
            posted += len(chunk)
            chunk = []
            # The queue (10,000 messages) drops what overflows it: let storage nearly catch up.
            while server_count(api_url, since, until) < posted - 2000:
                time.sleep(0.5)
    post_events(api_url, chunk, per_second=per_second)
    wait_until_stored(api_url, since, until, events, timeout=300)


def _server_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def write_directly(home: Path, events: int, days: int, since: datetime) -> float:
    """Write the history into the (stopped) server's database at `home`; seconds taken.

    A child process, so Prefect's settings (PREFECT_HOME → the database URL) are read fresh.
    """
    started = time.monotonic()
    child = subprocess.run([sys.executable, __file__, "--write", "--home", str(home), "--events", str(events),
                            "--days", str(days), "--start", since.isoformat()], env=_server_env(home), check=False)
    if child.returncode:
        raise SystemExit(f"direct seeding into {home} failed (exit {child.returncode}, above): remove that "
                         "directory before seeding it again")
    return time.monotonic() - started


EVENT_COLUMNS = ("occurred", "event", "resource_id", "resource", "related_resource_ids", "related", "payload",
                 "received", "recorded", "follows", "id", "created", "updated")
RESOURCE_COLUMNS = ("occurred", "resource_id", "resource_role", "resource", "event_id", "id", "created", "updated")


def _timestamp(moment: datetime) -> str:
    """A timestamp as Prefect's `Timestamp` column stores it in SQLite: naive UTC, microseconds always."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _rows(raw: dict[str, Any], received: datetime) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The `events` row and `event_resources` rows of `raw` as SQLite stores them, built by hand.

    The values Prefect's writer stores for `Event.model_validate(raw).receive()` (its
    `as_database_row()` and `as_database_resource_rows()` bound through the ORM tables' types;
    _check_rows compares them every 1,000 events), in the columns' order, at a fraction of the
    cost: pydantic and SQLAlchemy's bind processing take ~1 ms an event, 1M events 20 minutes on
    a loaded machine. `received` also stands for `recorded`, `created` and `updated` (all "now").
    """
    occurred = _timestamp(datetime.fromisoformat(raw["occurred"]))
    now = _timestamp(received)
    event_id = str(uuid.UUID(raw["id"]))
    resource, related = raw["resource"], raw["related"]
    row = (occurred, raw["event"], resource["prefect.resource.id"], json.dumps(resource),
           json.dumps([r["prefect.resource.id"] for r in related]), json.dumps(related), json.dumps(raw["payload"]),
           now, now, None, event_id, now, now)
    labels = {"prefect.resource.id", "prefect.resource.role"}
    resources = [(occurred, r["prefect.resource.id"], r.get("prefect.resource.role", "") if r is not resource else "",
                  json.dumps({k: v for k, v in r.items() if k not in labels}), event_id,
                  str(uuid.uuid4()), now, now)
                 for r in (resource, *related)]
    return row, resources


def _check_rows(raw: dict[str, Any], received: datetime, mine: tuple[tuple[Any, ...], list[tuple[Any, ...]]]) -> None:
    """Fail unless `mine` is what Prefect's own path stores for `raw` (ids of resource rows aside).

    Prefect's path: `Event.model_validate(raw).receive()`, `as_database_row()` and
    `as_database_resource_rows()`, inserted with SQLAlchemy Core into the ORM's own tables
    (created in memory), whose column types encode them; then both are read back raw.
    """
    import sqlalchemy as sa
    from prefect.server.database import provide_database_interface
    from prefect.server.events.schemas.events import Event

    db = provide_database_interface()
    engine = sa.create_engine("sqlite://")
    events, resources = db.Event.__table__, db.EventResource.__table__
    events.create(engine)
    resources.create(engine)
    event = Event.model_validate(raw).receive(received)
    stamps = {"created": received, "updated": received}
    with engine.begin() as conn:
        conn.execute(sa.insert(events), [{**event.as_database_row(), "recorded": received, **stamps}])
        conn.execute(sa.insert(resources), [{**r, **stamps, "id": uuid.UUID(mine[1][n][5])}
                                            for n, r in enumerate(event.as_database_resource_rows())])
        theirs_event = tuple(conn.exec_driver_sql(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events").one())
        theirs_resources = [tuple(r) for r in conn.exec_driver_sql(
            f"SELECT {', '.join(RESOURCE_COLUMNS)} FROM event_resources ORDER BY rowid").all()]
    engine.dispose()
    if theirs_event != mine[0] or theirs_resources != mine[1]:
        raise SystemExit(f"direct seeding no longer writes Prefect's rows:\n  Prefect: {theirs_event} {theirs_resources}"
                         f"\n  here:    {mine[0]} {mine[1]}")


def _chunk_rows(chunk: list[dict[str, Any]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A worker's share: the rows of a chunk of the history, its first event checked against Prefect's path."""
    event_rows: list[tuple[Any, ...]] = []
    resource_rows: list[tuple[Any, ...]] = []
    for n, raw in enumerate(chunk):
        received = datetime.now(UTC)
        row, resources = _rows(raw, received)
        if n % 1000 == 0:
            _check_rows(raw, received, (row, resources))
        event_rows.append(row)
        resource_rows += resources
    return event_rows, resource_rows


def _chunks(events: int, days: int, since: datetime, skip: int) -> Iterator[list[dict[str, Any]]]:
    pending = history(events, days, since)
    for _ in range(skip):  # written by an earlier, interrupted run: whole chunks, one transaction each
        next(pending)
    while chunk := list(itertools.islice(pending, CHUNK)):
        yield chunk


def _write(events: int, days: int, since: datetime) -> None:
    """The child of write_directly: Prefect's rows into the server's tables, 5,000 events a transaction.

    Two worker processes build the rows (the Python side is ~3/4 of the cost) while this one
    inserts; an interrupted run resumes after the chunks it committed. The connection's page
    cache is raised to 512 MB (the server's own is 80 MB): inserts into 11 indexes of a growing
    database slow down once they no longer fit. Neither changes what is stored.
    """
    import multiprocessing
    import sqlite3

    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = PREFECT_API_DATABASE_CONNECTION_URL.value()
    if not url.startswith("sqlite+aiosqlite:///"):
        raise SystemExit(f"direct seeding writes a SQLite server's database, not {url.split(':', 1)[0]}")
    started = time.monotonic()
    conn = sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")  # as the server's own connections
    conn.execute("PRAGMA cache_size = -524288")
    # The history's events only: a server started on the home in between may have stored its own.
    written = skip = conn.execute("SELECT count(*) FROM events WHERE occurred >= ? AND occurred < ?",
                                  (_timestamp(since), _timestamp(since + timedelta(days=days)))).fetchone()[0]
    if skip:
        print(f"  resuming after {skip:,} events", flush=True)
    insert_event = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
    insert_resource = (f"INSERT INTO event_resources ({', '.join(RESOURCE_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(RESOURCE_COLUMNS))})")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for event_rows, resource_rows in pool.imap(_chunk_rows, _chunks(events, days, since, skip)):
            conn.execute("BEGIN")
            conn.executemany(insert_event, event_rows)
            conn.executemany(insert_resource, resource_rows)
            conn.execute("COMMIT")
            written += len(event_rows)
            if written % 100_000 == 0 or written == events:
                print(f"  {written:,} events written ({time.monotonic() - started:.0f}s)", flush=True)
    conn.close()


def seeded_server(home: Path, events: int, days: int, start: datetime | None = None) -> tuple[PrefectServer, datetime, datetime]:
    """A started server at `home` holding the bench history of `events` over `days` (seeded here if new).

    The home's manifest says what it holds; a home seeded with another history is refused
    rather than mixed (choose another directory or remove it).
    """
    manifest = home / MANIFEST
    wanted = {"events": events, "days": days}
    if manifest.exists():
        held = json.loads(manifest.read_text())
        if {k: held[k] for k in wanted} != wanted or (start and datetime.fromisoformat(held["since"]) != start):
            raise SystemExit(f"{home} already holds {held['events']:,} events over {held['days']} days from "
                             f"{held['since']}: pass another --home, or remove that directory to seed it again")
        since = datetime.fromisoformat(held["since"])
    else:
        partial = home / PARTIAL
        if partial.exists():  # an interrupted seeding: resumed after its last committed chunk
            held = json.loads(partial.read_text())
            if held != {**wanted, "since": held["since"]}:
                raise SystemExit(f"{home} holds part of another history ({held}): pass another --home, or remove it")
            since = datetime.fromisoformat(held["since"])
        elif home.exists() and any(home.iterdir()):
            raise SystemExit(f"{home} is not empty and holds no {MANIFEST}: pass an empty or new directory as --home")
        else:
            since = start or default_start(days)
            server = PrefectServer(home=home).start()  # its migrations create the database
            server.stop()
            partial.write_text(json.dumps({**wanted, "since": since.isoformat()}))
        print(f"seeding {events:,} events over {days} days from {since.isoformat()} into {home} directly", flush=True)
        seconds = write_directly(home, events, days, since)
        manifest.write_text(json.dumps({**wanted, "since": since.isoformat(), "seconds": round(seconds, 1)}))
        partial.unlink()
        print(f"seeded {events:,} events in {seconds:.1f}s", flush=True)
    until = since + timedelta(days=days)
    server = PrefectServer(home=home).start()
    held_count = server_count(server.api_url, since, until)
    if held_count != events:
        server.stop()
        raise SystemExit(f"the server at {home} holds {held_count:,} events in [{since}, {until}], not {events:,}: "
                         "remove that directory to seed it again")
    return server, since, until


# --------------------------------------------------------------------------- --check


def _answers(api_url: str, since: datetime, until: datetime) -> dict[str, Any]:
    """What the API says about the history: everything a reader of /events could compare."""
    import httpx

    occurred = {"since": since.isoformat(), "until": until.isoformat()}
    out: dict[str, Any] = {}
    with httpx.Client(base_url=api_url + "/", timeout=60) as http:
        def page_all(body: dict[str, Any]) -> list[dict[str, Any]]:
            page = http.post("events/filter", json=body).raise_for_status().json()
            rows = list(page["events"])
            while page.get("next_page"):
                token = page["next_page"].split("page-token=", 1)[1]
                page = http.get("events/filter/next", params={"page-token": token}).raise_for_status().json()
                rows += page["events"]
            out.setdefault("totals", []).append(page["total"])
            return [{k: v for k, v in e.items() if k != "received"} for e in rows]

        out["events ASC"] = page_all({"filter": {"occurred": occurred, "order": "ASC"}, "limit": 50})
        out["events DESC"] = page_all({"filter": {"occurred": occurred, "order": "DESC"}, "limit": 50})
        out["related flow.7"] = page_all({"filter": {"occurred": occurred, "related": {"id": ["prefect.flow.7"]}}, "limit": 50})
        out["related role deployment"] = page_all(
            {"filter": {"occurred": occurred, "related": {"role": ["deployment"], "id": ["prefect.deployment.3"]}}, "limit": 50})
        out["any resource deployment.5"] = page_all(
            {"filter": {"occurred": occurred, "any_resource": {"id": ["prefect.deployment.5"]}}, "limit": 50})
        out["resource flow-run.42*"] = page_all(
            {"filter": {"occurred": occurred, "resource": {"id_prefix": ["prefect.flow-run.42"]}}, "limit": 50})
        for unit, interval in (("hour", 1), ("minute", 15), ("second", 600)):
            body = {"filter": {"occurred": occurred}, "time_unit": unit, "time_interval": interval}
            out[f"count-by time {interval} {unit}"] = http.post("events/count-by/time", json=body).raise_for_status().json()
        body = {"filter": {"occurred": occurred}}
        out["count-by event"] = http.post("events/count-by/event", json=body).raise_for_status().json()
    return out


def _stored(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The server's own `events` and `event_resources` rows, raw, without the columns that say when
    they were written (received, recorded, created, updated) or a resource row's own random id."""
    import sqlite3

    with sqlite3.connect(f"file:{home / 'prefect.db'}?mode=ro", uri=True) as conn:
        kept = [c for c in EVENT_COLUMNS if c not in ("received", "recorded", "created", "updated")]
        kept_resources = [c for c in RESOURCE_COLUMNS if c not in ("id", "created", "updated")]
        return {
            "stored events": conn.execute(f"SELECT {', '.join(kept)} FROM events ORDER BY id").fetchall(),
            "stored event_resources": conn.execute(
                f"SELECT {', '.join(kept_resources)} FROM event_resources ORDER BY event_id, resource_role").fetchall(),
            "stored column types": conn.execute(
                "SELECT DISTINCT " + ", ".join(f"typeof({c})" for c in EVENT_COLUMNS) + " FROM events").fetchall(),
        }


def check(events: int, days: int) -> int:
    """Seed the history both ways into two fresh servers; 0 if the API and the stored rows agree."""
    since = default_start(days)
    until = since + timedelta(days=days)
    answers, stored = {}, {}
    for way in ("api", "direct"):
        with tempfile.TemporaryDirectory(prefix=f"bench-seed-check-{way}-") as home_name:
            server = PrefectServer(home=Path(home_name)).start()
            try:
                started = time.monotonic()
                if way == "api":
                    post_history(server.api_url, events, days, since)
                else:
                    server.stop()
                    write_directly(Path(home_name), events, days, since)
                    server.start()
                print(f"seeded {events:,} events {'through the API' if way == 'api' else 'directly'} "
                      f"in {time.monotonic() - started:.1f}s", flush=True)
                answers[way] = _answers(server.api_url, since, until)
            finally:
                server.stop()
            stored[way] = _stored(Path(home_name))
    failed = 0
    for key, expected in [*answers["api"].items(), *stored["api"].items()]:
        got = answers["direct"].get(key, stored["direct"].get(key))
        same = got == expected
        shown = f"totals {expected} / {got}" if key == "totals" else f"{key} ({len(expected)} rows)"
        print(f"{'same' if same else 'DIFFERENT'}: {shown}")
        failed += not same
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="the server's PREFECT_HOME, kept (e.g. /tmp/bench-prefect-1m)")
    parser.add_argument("--events", type=int, default=None, help="events to seed (default 1,000 with --check)")
    parser.add_argument("--days", type=int, default=None, help="days the history spans (default 30; 1 with --check)")
    parser.add_argument("--start", type=datetime.fromisoformat, help="when the history begins (ISO 8601, UTC)")
    parser.add_argument("--check", action="store_true", help="compare API seeding with direct seeding on 1,000 events")
    parser.add_argument("--write", action="store_true", help=argparse.SUPPRESS)  # the child of write_directly
    args = parser.parse_args()
    start = args.start.replace(tzinfo=UTC) if args.start and args.start.tzinfo is None else args.start
    if args.check:
        raise SystemExit(check(args.events or 1000, args.days or 1))
    if args.home is None:
        parser.error("--home DIR is required (the kept PREFECT_HOME of the seeded server), or use --check")
    if args.write:
        _write(args.events, args.days, start)
        return
    server, since, until = seeded_server(args.home.resolve(), args.events or 1_000_000, args.days or 30, start)
    print(f"{args.home}: {args.events or 1_000_000:,} events in [{since.isoformat()}, {until.isoformat()}) "
          f"at {server.api_url}", flush=True)
    server.stop()


if __name__ == "__main__":
    main()
