"""The `prefect-archiver` command: parses arguments, runs one operation, maps errors to exit codes.

Exit codes: 0 ok; 1 failure or not found; 2 bad usage or bad input. Errors are one line on
stderr; the traceback only with -v.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NoReturn

from archiver import __version__, cli_logs
from archiver.config import Settings, load_settings
from archiver.errors import ArchiveMissing, ArchiverError, BadInput, ConfigError, EventNotFound
from archiver.prefect.events import format_timestamp, parse_when

if TYPE_CHECKING:  # imported by the commands that use them
    from archiver.ingest.prefetch import Prefetch
    from archiver.ingest.stop import StopToken
    from archiver.prefect.client import PrefectClient
    from archiver.storage.base import Archive

log = logging.getLogger("archiver")

# Prefect's terminal state types (prefect/client/schemas/objects.py, TERMINAL_STATES).
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
# httpx imports its own command-line client (click, rich, pygments) whenever those are installed,
# as they are beside Prefect (httpx/__init__.py: `try: from ._main import main`): about half of
# httpx's import time, spent before the first request. The archiver never runs it, so the CLI
# marks it absent before anything imports httpx; a process that already imported it is unchanged.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config file (default: $ARCHIVER_CONFIG)")
    common.add_argument("--db", help="archive file (default: $ARCHIVER_DB or $PREFECT_HOME/archive.duckdb)")
    common.add_argument("--url", help="the archive as a SQLAlchemy URL instead of --db, e.g. duckdb:///PATH "
                                      "(default: $ARCHIVER_URL)")
    common.add_argument("--api-url", help="Prefect API URL (default: $PREFECT_API_URL)")
    common.add_argument("-v", "--verbose", action="store_true", help="log more, and show tracebacks")
    common.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines on stderr as text or JSON")

    parser = argparse.ArgumentParser(
        prog="prefect-archiver",
        description="A permanent, queryable DuckDB archive of a Prefect workspace's events.",
    )
    parser.add_argument("--version", action="version", version=f"prefect-archiver {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = commands.add_parser("sync", parents=[common], help="archive every event not archived yet")
    sync.add_argument("--since", help="start here instead of the high-water mark (ISO time, or 3d for 3 days ago)")
    sync.add_argument("--until", help="stop here instead of now minus ingest.settle")
    sync.add_argument("--json", action="store_true", help="print the summary as JSON")

    run = commands.add_parser("run", parents=[common], help="keep the archive fresh: sync on a schedule until stopped")
    run.add_argument("--every", help="sync this often, e.g. 30s, 5m (default: schedule.every, 5m)")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (needs the metrics extra)")
    run.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (0.0.0.0 in a container)")

    get = commands.add_parser("get", parents=[common], help="print one event by id")
    get.add_argument("id", help="the event id (a UUID)")
    get.add_argument("--json", action="store_true", help="compact JSON on one line")
    get.add_argument("--archive-only", action="store_true", help="never ask the live API")

    states = commands.add_parser(
        "states", parents=[common], help="a flow run's or task run's states, messages and where its result lives"
    )
    states.add_argument("run_id", metavar="RUN_ID", help="a flow run id or a task run id")
    states.add_argument("--json", action="store_true", help="print the states as JSON")
    states.add_argument(
        "--show-result", action="store_true",
        help="also print the final result when it is JSON in a file readable from this machine",
    )

    events = commands.add_parser("events", parents=[common], help="search the archive: newest first")
    events.add_argument("--resource", action="append", metavar="ID",
                        help="events naming this resource, as their own or a related one "
                             "(e.g. prefect.flow-run.<uuid>, prefect.deployment.<uuid>); repeatable")
    events.add_argument("--flow-run", metavar="UUID", help="the events of this flow run (oldest first)")
    events.add_argument("--role", action="append", help="only where --resource plays this role (flow, deployment, tag…)")
    events.add_argument("--prefix", action="append", help="event names starting with this (prefect.flow-run.); repeatable")
    events.add_argument("--event", action="append", help="this exact event name; repeatable")
    events.add_argument("--since", help="occurred at or after (ISO time, or 3d for 3 days ago)")
    events.add_argument("--until", help="occurred at or before")
    events.add_argument("--limit", type=int, default=50, help="at most this many events (default 50)")
    events.add_argument("--oldest-first", action="store_true", help="oldest first instead of newest first")
    events.add_argument("--json", action="store_true", help="one event per line, as the API returns it")

    serve = commands.add_parser("serve", parents=[common], help="answer Prefect's event API over the archive (read-only)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=4300, help="port (default 4300)")
    serve.add_argument("--max-limit", type=int, default=1000,
                       help="largest page an archive client may ask for (Prefect's own maximum is 50)")

    ui = commands.add_parser("ui", parents=[common], help="open the web UI over the archive (serve on 127.0.0.1)")
    ui.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    ui.add_argument("--no-browser", action="store_true", help="print the URL without opening a browser")

    status = commands.add_parser("status", parents=[common], help="what the archive holds and how fresh it is")
    status.add_argument("--json", action="store_true")

    check = commands.add_parser("check", parents=[common], help="call the API once and explain what works and what does not")
    check.add_argument("--json", action="store_true")

    sql = commands.add_parser(
        "sql", parents=[common], help="run read-only SQL against the archive (tables, and views such as deployment_health)"
    )
    sql.add_argument("query", help="one SQL query, or - to read it from standard input")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output format (default: table)")

    verify = commands.add_parser("verify", parents=[common], help="compare the archive with the server, bucket by bucket")
    verify.add_argument("--since", help="from (default: the oldest event the server holds)")
    verify.add_argument("--until", help="to (default: the high-water mark)")
    verify.add_argument("--unit", choices=["day", "hour", "minute"], help="bucket size (default: by range)")
    verify.add_argument("--repair", action="store_true", help="read again the buckets where the archive lacks events")
    verify.add_argument("--json", action="store_true")

    copy = commands.add_parser("copy", parents=[common], help="copy the whole archive into another (DuckDB or PostgreSQL)")
    copy.add_argument("--to", required=True, metavar="URL",
                      help="the destination archive: postgresql+psycopg://USER:PASSWORD@HOST/DB, duckdb:///PATH, or a path")
    copy.add_argument("--json", action="store_true", help="print the per-table summary as JSON")

    export = commands.add_parser(
        "export", parents=[common], help="write the archive's tables as Hive-partitioned Parquet or JSON lines (incremental)"
    )
    export.add_argument("directory", metavar="DIR", help="the export directory (made if missing; a re-run adds what changed)")
    export.add_argument("--format", choices=["parquet", "jsonl"], default="parquet", help="file format (default: parquet)")
    export.add_argument("--table", action="append", metavar="TABLE",
                        help="only this table (events, event_resources, flow_runs, …); repeatable (default: every table)")
    export.add_argument("--json", action="store_true", help="print the summary as JSON")

    cli_logs.add_parsers(commands, common)  # logs, artifacts (issue 14)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {"archive.path": args.db, "archive.url": args.url, "api.url": args.api_url,
             "schedule.every": getattr(args, "every", None)}
    return load_settings(flags, config_path=args.config)


def _when(value: str | None, name: str) -> datetime | None:
    return parse_when(value, name=name) if value else None


def _range(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    """--since and --until; BadInput when --since is the later of the two (nothing could match)."""
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    if since is not None and until is not None and since > until:
        raise BadInput(f"--since {format_timestamp(since)} is later than --until {format_timestamp(until)}: "
                       "swap them, or leave one out")
    return since, until


class _ProgressLine:
    """A one-line progress display on a terminal; silent when stderr is not one."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def __call__(self, done: int, expected: int) -> None:
        if not self.enabled or expected <= 0:
            return
        share = min(done / expected, 1.0)
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\rarchiving [{bar:<30}] {done:,}/{expected:,} events")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.prefect.client import client_for
    from archiver.service.stop import StopSignals

    since, until = _range(args)
    progress = _ProgressLine()
    signals = StopSignals()
    now = datetime.now(timezone.utc)  # one `now` for the sync and the read it sends early
    with signals, client_for(settings, sleep=signals.stop.sleep, interactive=True) as client:
        # The token every POST needs is asked for first, so its round trip overlaps what the sync
        # does before it can ask anything else: import the ingest and storage code (SQLAlchemy,
        # DuckDB) and open and migrate the archive.
        client.fetch_csrf_token_early()
        from archiver.storage import open_archive

        archive = open_archive(settings.archive_url)
        with archive.writer_lock(settings.lock_timeout):
            # And the sync's first event read, once the mark is known: before the writer opens.
            _read_first_early(settings, client, archive, since, until, now)
            # Or, for a --since range, all of its reading: planned and fetched while the writer opens.
            prefetch = _prefetch_range(settings, client, since, until, now, signals.stop)
            try:
                from archiver.errors import Stopped
                from archiver.ingest.gaps import describe
                from archiver.ingest.report import partial_report
                from archiver.ingest.sync import sync

                writer = archive.writer(settings.read_timeout)
            except BaseException:
                if prefetch is not None:
                    prefetch.close()
                raise
            try:
                report = sync(settings, client, writer, since=since, until=until, progress=progress, stop=signals.stop,
                              now=now, prefetch=prefetch)
            except Stopped as exc:
                report = partial_report(exc)  # "interrupted"; committed batches are kept
            finally:
                progress.close()
    if report.outcome == "interrupted":
        mark = writer.high_water_mark()
        print(f"prefect-archiver: stopped on {signals.received}: what was committed is kept (high-water mark "
              f"{format_timestamp(mark) if mark else 'not set'}); run `prefect-archiver sync` again to continue",
              file=sys.stderr)
        return 130 if signals.received == "SIGINT" else 0
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        # fetched = inserted + already archived + quarantined, the reconcile's reads included.
        quarantined = f", {report.quarantined:,} quarantined" if report.quarantined else ""
        print(
            f"archived {report.inserted:,} new events ({report.fetched:,} fetched: {report.duplicates:,} "
            f"already archived{quarantined}) in {report.windows:,} window{'' if report.windows == 1 else 's'}, "
            f"{report.seconds:.1f}s; high-water mark {report.high_water_mark or 'not set'}"
        )
        if report.reconciled:
            print(f"reconciled {report.reconciled} buckets behind the mark: {report.repaired:,} of the new events "
                  "arrived late")
        if report.objects_refreshed:
            print(f"refreshed {report.objects_refreshed:,} flow runs, task runs, deployments, flows and work pools")
        if report.runs_states_read:
            print(f"archived {report.states_saved:,} state records of {report.runs_states_read:,} flow and task runs")
        if report.quarantined:
            print(f"quarantined {report.quarantined} malformed items (see the quarantine table)")
        if report.conflicts:
            print(f"{report.conflicts} events arrived again with different content; the first version was kept")
        if until is None or until > settings.settled_until():
            # Otherwise "archived 0 new events" right after emitting some reads as if they were lost.
            print(f"events of the last {settings.settle.total_seconds():g}s (ingest.settle: the server may still be "
                  "storing them) are left for the next run")
    for gap in report.gaps:
        print(f"GAP: {describe(format_timestamp(gap.since), format_timestamp(gap.until))} ({gap.why})", file=sys.stderr)
    return 0


# How long the early look at the mark waits for a reader in another process to let go of the
# file: past that the sync starts without it (the writer waits up to archive.read_timeout).
EARLY_READ_WAIT = timedelta(milliseconds=200)


def _read_first_early(settings: Settings, client: PrefectClient, archive: Archive, since: datetime | None,
                      until: datetime | None, now: datetime) -> None:
    """Send the sync's first event read now (ingest.first_read), from the mark a reader sees.

    The writer lock is held, so the mark cannot move before the writer reads it. A reader needs
    neither SQLAlchemy nor a migration: on DuckDB, the plain driver and one read-only open. When
    the archive cannot be read that way (being created, an older schema, damaged, busy), nothing
    is asked early: the writer then says what is wrong, as it always has.
    """
    from archiver.ingest.first_read import first_read

    if since is not None:  # first_read's first rule: the range is planned first, nothing to ask early
        return
    try:
        if not archive.exists():
            mark = newest = None
        else:
            with archive.reader(EARLY_READ_WAIT).session() as reader:
                mark = reader.high_water_mark()
                newest = reader.newest_occurred_before(mark) if mark is not None else None
    except Exception as exc:  # the writer meets it too, and reports it in its own words
        # Named by its type only: a driver's message may quote a connection string.
        log.debug("the sync's first read waits for the writer: the archive could not be read first (%s)",
                  type(exc).__name__)
        return
    probe = first_read(settings, mark, newest, since=since, until=until, now=now)
    if probe is not None:
        client.read_events_early(probe, limit=1)


def _prefetch_range(settings: Settings, client: PrefectClient, since: datetime | None, until: datetime | None,
                    now: datetime, stop: StopToken) -> Prefetch | None:
    """Start reading a --since range now (ingest.prefetch), so the server answers while the writer
    imports SQLAlchemy and DuckDB and opens and migrates the archive (0.6 s for a new file).

    Only a --since range: it is read as given, whatever the archive holds. Without one the range
    starts at the mark, known once the writer reads it (its first read goes early instead).
    """
    if since is None:
        return None
    from archiver.ingest.first_read import range_end
    from archiver.ingest.prefetch import Prefetch

    end = range_end(settings, until, now)
    return Prefetch(client, since, end, concurrency=settings.concurrency, stop=stop) if since < end else None


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.service.scheduler import Service

    if not settings.every:
        raise ConfigError("schedule.every (--every) must be longer than 0s")
    settings.require_api()
    metrics_at = (args.metrics_host, args.metrics_port) if args.metrics_port is not None else None
    return Service(settings, metrics_at, verbose=args.verbose).run()


def cmd_get(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.lookup.events import find_event
    from archiver.storage import open_archive

    event, source = find_event(args.id, settings=settings, archive_only=args.archive_only, interactive=True)
    print(json.dumps(event, ensure_ascii=False) if args.json else json.dumps(event, indent=2, ensure_ascii=False))
    where = f"archive {open_archive(settings.archive_url).name}" if source == "archive" else "live Prefect API"
    print(f"source: {where}", file=sys.stderr)
    return 0


def cmd_states(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.lookup.runs import final_result, get_run_states
    from archiver.prefect.results import ResultUnavailable, read_result

    history = get_run_states(args.run_id, settings=settings)
    value: Any = None
    problem: ResultUnavailable | None = None
    if args.show_result:
        try:
            value = read_result(final_result(history))
        except ResultUnavailable as exc:
            problem = exc
    shown, as_repr = "", False
    if args.show_result and problem is None:
        # A pickled result can be any Python object: shown as its repr when JSON cannot hold it.
        try:
            shown = json.dumps(value, indent=2, ensure_ascii=False)
        except (TypeError, ValueError):
            shown, as_repr = repr(value), True
    counts = _log_counts(history, settings)
    if args.json:
        document = {**_history_json(history), "logs": counts.logs, "artifacts": counts.artifacts}
        if args.show_result and problem is None:
            document["result_value"] = repr(value) if as_repr else value
            document["result_value_is_repr"] = as_repr
        print(json.dumps(document, ensure_ascii=False))
    else:
        _print_history(history)
        if problem is None:  # on stderr, as `events` says its count (an error stays the one line there)
            print(f"{counts.logs} logs and {counts.artifacts} artifacts archived (prefect-archiver logs / artifacts "
                  f"{history.run_id})", file=sys.stderr)
        if args.show_result and problem is None:
            print("result value (Python repr: JSON cannot hold it):" if as_repr else "result value:")
            print(shown)
    if problem is not None:
        raise problem
    return 0


def _log_counts(history: Any, settings: Settings) -> Any:
    """How many logs and artifacts the archive holds of the run (storage.logs.RunLogCounts)."""
    import uuid

    from archiver.storage import open_archive

    return open_archive(settings.archive_url).reader(settings.read_timeout).run_log_counts(uuid.UUID(history.run_id))


def _history_json(history: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "run_kind": history.run_kind,
        "run_id": history.run_id,
        "run_name": history.run_name,
        "states": [dict(asdict(s), timestamp=format_timestamp(s.timestamp)) for s in history.states],
        "archived_until": format_timestamp(history.archived_until) if history.archived_until else None,
    }


def _print_history(history: Any) -> None:
    from archiver.prefect.runs import run_kind

    kind = run_kind(history.run_kind).words
    print(f"{kind} {history.run_name or '(name not archived)'} {history.run_id}")
    if not history.states:
        print("  no states archived")
    for state in history.states:
        note = "" if state.source == "state" else "  [from its event only]"
        print(f"  {format_timestamp(state.timestamp)}  {state.type:<10} {state.name or '':<12}{note}".rstrip())
        for line in (state.message or "").splitlines():
            print(f"      {line}")
    final = history.final
    if history.archived_until and (final is None or final.type not in TERMINAL_STATES):
        print(f"  (the archive ends at its high-water mark {format_timestamp(history.archived_until)}: "
              "later states come with the next sync)")
    if final is not None:
        if final.result is not None:
            print(f"result: {final.result.where()}")
        elif final.data_kind == "unknown":
            print("result: unknown (only the final state's event was archived)")
        else:
            print("result: not persisted" if final.data_kind == "none" else "result: inline data (see run_states.state)")


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.lookup.search import flow_run_resource, search_events

    if args.limit < 1:
        raise BadInput("--limit must be at least 1")
    since, until = _range(args)
    resources = list(args.resource or [])
    if args.flow_run:
        resources.append(flow_run_resource(args.flow_run))
    events = search_events(
        resource=resources or None, role=args.role, prefix=args.prefix, event=args.event,
        since=since, until=until, limit=args.limit,
        oldest_first=args.oldest_first or bool(args.flow_run), settings=settings,
    )
    for event in events:
        if args.json:
            print(json.dumps(event, ensure_ascii=False))
        else:
            resource = event["resource"].get("prefect.resource.id", "")
            print(f"{event['occurred']:<28} {event['event']:<40} {resource}  {event['id']}")
    if not args.json:
        more = " (--limit reached; narrow the search or raise --limit)" if len(events) == args.limit else ""
        print(f"{len(events)} event{'' if len(events) == 1 else 's'}{more}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from archiver.web.api import serve_api
        from archiver.web.ui import routes  # noqa: F401 - the web UI's templating (jinja2) comes with the extra too
    except ImportError as exc:
        raise ConfigError(
            f'serve needs the serve extra ({exc.name} is not installed): pip install "prefect-archiver[serve]"'
        ) from None
    serve_api(settings, host=args.host, port=args.port, max_limit=args.max_limit)
    return 0


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from archiver.web.api import serve_ui
        from archiver.web.ui import routes  # noqa: F401 - the web UI's templating (jinja2)
    except ImportError as exc:
        raise ConfigError(
            f'ui needs the serve extra ({exc.name} is not installed): pip install "prefect-archiver[serve]"'
        ) from None
    serve_ui(settings, port=args.port, open_browser=not args.no_browser)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.check import describe_source
    from archiver.ingest.gaps import describe
    from archiver.prefect.client import redact_url
    from archiver.service.heartbeat import service_status
    from archiver.storage import open_archive

    archive = open_archive(settings.archive_url)
    status = archive.reader(settings.read_timeout).status()
    service = service_status(archive)
    api_url = redact_url(settings.api_url) if settings.api_url else None
    api_url_source = describe_source(settings, "api.url")
    if args.json:
        print(json.dumps({**status.to_json(), "service": service, "api_url": api_url, "api_url_source": api_url_source}))
        return 0
    mark, last = status.high_water_mark, status.last_sync
    print(f"api url:          {api_url or 'not set'} (from {api_url_source})")
    print(f"archive:          {status.archive}")
    print(f"events:           {status.events:,}")
    print(f"high-water mark:  {format_timestamp(mark) if mark else 'not set (no sync yet)'}")
    if status.lag_seconds is not None:
        print(f"lag:              {status.lag_seconds:,.0f}s behind now")
    if last:
        print(f"last sync:        {format_timestamp(last.started)} — {last.outcome}" + (f": {last.error}" if last.error else ""))
    print(f"last success:     {format_timestamp(status.last_success) if status.last_success else 'never'}")
    if status.quarantined or status.quarantine_resolved:
        print(f"quarantined:      {status.quarantined} malformed items"
              + (f" ({status.quarantine_resolved} more resolved: their real event arrived later)"
                 if status.quarantine_resolved else ""))
    if service is None:
        print("service:          none has run on this archive (`prefect-archiver run`)")
    elif service["running"] and service.get("heartbeat_problem"):
        print(f"service:          running (pid {service['pid']}) but its heartbeat could not be written since "
              f"{service['heartbeat']}: {service['heartbeat_problem']}")
    elif service["running"]:
        print(f"service:          running, pid {service['pid']} on {service['host']}; last heartbeat "
              f"{service['heartbeat']} ({service['heartbeat_age_seconds']:.0f}s ago)"
              + (f"; {service['job']} in progress since {service['job_started']}" if service.get("job") else ""))
        print(f"next sync:        {service.get('next_sync') or 'not scheduled'}")
    else:
        print(f"service:          not running ({service['why']})")
    for since, until in status.gaps:
        print(f"GAP:              {describe(format_timestamp(since), format_timestamp(until))}")
    return 0


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.output import print_result
    from archiver.storage import open_archive

    query = sys.stdin.read() if args.query == "-" else args.query
    if not query.strip():
        raise BadInput("the query is empty")
    with open_archive(settings.archive_url).reader(settings.read_timeout).sql(query) as result:
        printed = print_result(result, args.format)
    if args.format == "table":
        print(f"({printed.rows:,} row{'' if printed.rows == 1 else 's'})", file=sys.stderr)
    if printed.cut:
        print(f"{printed.cut:,} cell{' was' if printed.cut == 1 else 's were'} cut to fit (…); "
              "--format csv or --format json prints every value whole", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.check import check

    findings = check(settings)
    if args.json:
        print(json.dumps([{"topic": f.topic, "ok": f.ok, "detail": f.detail} for f in findings]))
    else:
        for finding in findings:
            print(f"{finding.topic + ':':<11} {'ok ' if finding.ok else 'NO '} {finding.detail}")
    return 0 if all(f.ok for f in findings) else 1


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.ingest.gaps import describe
    from archiver.ingest.verify import gaps_seen, verify
    from archiver.prefect.client import client_for
    from archiver.storage import open_archive

    since, until = _range(args)
    archive = open_archive(settings.archive_url)
    if not archive.exists():
        raise ArchiveMissing(archive.name)
    # Comparing only reads (no migration, no write, no lock: a service may be syncing meanwhile);
    # --repair writes, under the writer lock like a sync.
    if args.repair:
        with archive.writer_lock(settings.lock_timeout):
            writer = archive.writer(settings.read_timeout)  # before the client: a damaged archive is said first
            try:
                with client_for(settings, interactive=True) as client:
                    found = verify(settings, client, writer, since=since, until=until, unit=args.unit, repair=True)
                    seen = gaps_seen(settings, client, writer)
                    logs = _verify_logs(settings, client, archive.reader(settings.read_timeout), since, until, writer)
            finally:
                writer.close()
    else:
        reader = archive.reader(settings.read_timeout)
        reader.high_water_mark()  # before the client: a damaged or unreadable archive is said first
        with client_for(settings, interactive=True) as client:
            found = verify(settings, client, reader, since=since, until=until, unit=args.unit)
            seen = gaps_seen(settings, client, reader)
            logs = _verify_logs(settings, client, reader, since, until, None)
    gaps = [(format_timestamp(s), format_timestamp(u)) for s, u in seen]
    # Told whatever the comparison finds: what the server trimmed first cannot be compared or repaired.
    gap_lines = [f"GAP: {describe(s, u)}" for s, u in gaps]
    gap_json = [{"since": s, "until": u} for s, u in gaps]
    logs_json = {"runs": logs.runs, "differences": [d.as_json() for d in logs.diffs],
                 "repaired": logs.repaired_logs if args.repair else None, "remaining": len(logs.missing)}
    logs_missing = bool(logs.missing) and not args.repair
    if found is None:
        if args.json:
            print(json.dumps({"differences": [], "remaining": 0, "gaps": gap_json, "logs": logs_json}))
        else:
            print("\n".join(["the server holds no events in that range; nothing to verify", *gap_lines]))
            _print_log_verification(logs, args.repair)
        return 1 if logs_missing else 0
    since, until, result, missing = found.since, found.until, found.result, found.missing
    if args.json:
        print(json.dumps({
            "since": format_timestamp(since), "until": format_timestamp(until), "unit": result.unit,
            "buckets": result.buckets,
            "differences": [
                {"since": format_timestamp(d.since), "until": format_timestamp(d.until), "server": d.server, "archive": d.archive}
                for d in result.diffs
            ],
            "repaired": result.inserted if args.repair else None,
            "remaining": len(missing),
            "gaps": gap_json,
            "logs": logs_json,
        }))
    else:
        print(f"compared {result.buckets} {result.unit} buckets from {format_timestamp(since)} to {format_timestamp(until)}")
        for d in result.diffs:
            note = "archive lacks events" if d.missing else "archive holds more (the server trimmed them?)"
            span = f"{format_timestamp(d.since)} .. {format_timestamp(d.until)}"
            print(f"  {span}  server {d.server:>7,}  archive {d.archive:>7,}  {note}")
        if args.repair:
            print(f"repaired: {result.inserted} events added; {len(missing)} buckets still lack events")
        elif not result.diffs:
            print("the archive holds every event the server holds in this range")
        for line in gap_lines:
            print(line)
        _print_log_verification(logs, args.repair)
    return 1 if missing or logs_missing else 0


def _verify_logs(settings: Settings, client: Any, reader: Any, since: datetime | None, until: datetime | None,
                 writer: Any) -> Any:
    """Per run, the server's log and artifact ids against the archive's (ingest/verify_logs.py), for
    the runs that ended in [--since, --until] (default: any time)."""
    from datetime import timezone

    from archiver.ingest.logs import Harvest
    from archiver.ingest.verify_logs import verify_logs

    earliest = datetime.min.replace(tzinfo=timezone.utc)
    return verify_logs(client, reader, Harvest.of(settings), since or earliest, until or datetime.now(timezone.utc),
                       writer=writer)


def _print_log_verification(logs: Any, repair: bool) -> None:
    for d in logs.diffs:
        print(f"  {d.run_kind.replace('_', ' ')} {d.run_id}: archive {d.describe()}")
    if repair:
        print(f"logs: compared {logs.runs} runs; repaired: {logs.repaired_logs} logs added")
    elif not logs.missing:
        print(f"logs: compared {logs.runs} runs; the archive holds every log and artifact the server holds of them")
    else:
        print(f"logs: compared {logs.runs} runs; {len(logs.missing)} lack logs or artifacts the server holds "
              "(verify --repair reads them again)")


def cmd_copy(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from archiver.storage import open_archive
    from archiver.storage.copy import copy_archive
    from archiver.storage.duckdb import archive_url

    target = args.to if "://" in args.to else archive_url(Path(args.to).expanduser())
    source, destination = open_archive(settings.archive_url), open_archive(target)
    report = copy_archive(source, destination, lock_timeout=settings.lock_timeout, read_timeout=settings.read_timeout,
                          say=lambda line: print(f"prefect-archiver: {line}", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(f"copied {report.source} -> {report.destination} in {report.seconds:.1f}s")
        print(f"  {'table':<24}{'source':>12}{'destination':>13}{'copied now':>12}")
        for t in report.tables:
            note = "" if t.same else f"  DIFFERS: {t.missing:,} missing, {t.extra:,} only in the destination"
            print(f"  {t.table:<24}{t.source_rows:>12,}{t.destination_rows:>13,}{t.copied:>12,}{note}")
        if report.ok and not report.copied:
            print("nothing new to copy: the destination already holds every row of the source (verified)")
        elif report.ok:
            print("verified: every table holds the same rows (counts and keys) on both sides")
    if not report.ok:
        differing = [t for t in report.tables if not t.same]
        detail = "; ".join(
            f"{t.table}: {t.missing:,} rows missing" + (f" (e.g. {' / '.join(t.examples)})" if t.examples else "")
            + (f", {t.extra:,} only in the destination" if t.extra else "") for t in differing)
        print(f"prefect-archiver: error: the copy differs from its source in {', '.join(t.table for t in differing)} "
              f"({detail}). Rows only in the destination were written there after an earlier copy (a sync on it); "
              "rows missing: run `prefect-archiver copy` again", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from archiver.export import TableReport, export_archive
    from archiver.storage import open_archive

    def told(table: TableReport) -> None:
        if args.json:
            return
        rows = f"{table.rows:,} row{'' if table.rows == 1 else 's'}"
        if table.partitioned_by is None:  # written whole, one file
            print(f"{table.table + ':':<22} {'written' if table.written else 'unchanged'}; {rows}", flush=True)
            return
        removed = f", {table.removed:,} removed" if table.removed else ""
        print(f"{table.table + ':':<22} {table.written:,} day{'' if table.written == 1 else 's'} written, "
              f"{table.unchanged:,} unchanged{removed}; {rows} ({table.rows_written:,} written)", flush=True)

    report = export_archive(open_archive(settings.archive_url), Path(args.directory), args.format, args.table,
                            read_timeout=settings.read_timeout, on_table=told)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        absent = f" ({', '.join(report.absent)}: not in this archive yet)" if report.absent else ""
        print(f"exported {report.source} to {report.directory} as {report.file_format} in {report.seconds:.1f}s{absent}")
    return 0


COMMANDS = {
    "sync": cmd_sync, "run": cmd_run, "get": cmd_get, "events": cmd_events, "states": cmd_states, "serve": cmd_serve,
    "ui": cmd_ui, "status": cmd_status, "verify": cmd_verify, "check": cmd_check, "sql": cmd_sql, "copy": cmd_copy,
    "export": cmd_export,
}

COMMANDS.update(cli_logs.COMMANDS)  # logs, artifacts (issue 14)


def console_main() -> NoReturn:
    """The console script and `python -m archiver`: main(), then an exit without the interpreter's teardown.

    Python's finalization frees every module's objects one by one, 0.15-0.2 s after a sync
    (SQLAlchemy, DuckDB, httpx, the event pages), longer than `get` takes. The exit handlers run
    all the same (logging's flush, DuckDB's own cleanup, weakref finalizers such as temporary
    folders), and the output is flushed first. Left to the normal exit while a thread that is
    not a daemon still runs, or where CPython offers no way to run the handlers.
    """
    code = main()
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if run_exit_handlers is None or others:
        sys.exit(code)
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader left (main said so already), or it is closed
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    from archiver.stderr import configure

    args = _parser().parse_args(argv)
    # The service says what it does (one line per run) without -v; commands only warn.
    service = args.command == "run"
    configure(logging.INFO if args.verbose or service else logging.WARNING, args.log_format,
              tracebacks=args.verbose, quiet_retries=service and not args.verbose)
    settings: Settings | None = None
    try:
        settings = _settings(args)
        code = COMMANDS[args.command](args, settings)
        sys.stdout.flush()  # inside the try: a reader that left is noticed here, not at exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except ArchiveMissing as exc:  # say where the path came from: --db, ARCHIVER_DB, the config, the default
        if not hasattr(exc, "path"):  # a backend's own words (a PostgreSQL database that is not there)
            _fail(args, exc)
            return 1
        source = (settings.sources.get("archive.url") if settings and settings.url else
                  settings.sources.get("archive.path") if settings else None)
        _fail(args, ArchiveMissing(exc.path, source, by_url=bool(settings and settings.url)))
        return 1
    except (ConfigError, BadInput) as exc:
        _fail(args, exc)
        return 2
    except (ArchiverError, EventNotFound) as exc:
        _fail(args, exc)
        return 1
    except KeyboardInterrupt:
        print("prefect-archiver: interrupted; what was committed is kept, run the command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # an error we did not foresee: still one line, traceback with -v
        _fail(args, exc, unexpected=True)
        return 1


def _stdout_closed() -> int:
    """The reader of our output went away (`… | head`): stop quietly, as a SIGPIPE would.

    Python turns SIGPIPE into BrokenPipeError; pointing stdout at devnull keeps the interpreter's
    final flush from raising again (the Python docs' "Note on SIGPIPE", library/signal.html).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + 13  # what a shell reports for a process ended by SIGPIPE (13)


def _fail(args: argparse.Namespace, exc: BaseException, unexpected: bool = False) -> None:
    if args.verbose:
        log.exception("details")
    prefix = f"unexpected {type(exc).__name__}: " if unexpected else ""
    hint = "" if args.verbose or not unexpected else " (run with -v for details)"
    print(f"prefect-archiver: error: {prefix}{exc}{hint}", file=sys.stderr)
