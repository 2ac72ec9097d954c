"""The `logs` and `artifacts` commands: a run's archived logs and artifacts, from the archive alone.

Kept apart from cli.py, which registers them (add_parsers) beside its own commands.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

from archiver.config import Settings
from archiver.errors import BadInput, RunNotFound
from archiver.prefect.events import parse_prefect_id, parse_when
from archiver.prefect.runs import run_kind as kind_of
from archiver.storage.reader import ArchiveReader


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """The two subcommands, on cli.py's subparsers with its common options."""
    logs = commands.add_parser("logs", parents=[common], help="a run's archived logs, as `prefect flow-run logs` shows them")
    logs.add_argument("run_id", metavar="RUN_ID", help="a flow run id (its task runs' logs included) or a task run id")
    logs.add_argument("--level", help="this level and above: DEBUG, INFO, WARNING, ERROR, CRITICAL (or a number)")
    logs.add_argument("--since", help="logged at or after (ISO time, or 3d for 3 days ago)")
    logs.add_argument("--until", help="logged at or before")
    logs.add_argument("--grep", metavar="TEXT", help="only messages holding this text (any case)")
    logs.add_argument("--reverse", action="store_true", help="newest first")
    logs.add_argument("--json", action="store_true", help="a JSON list of the logs as the API returns them")
    artifacts = commands.add_parser("artifacts", parents=[common], help="the artifacts a run published (tables, markdown, links)")
    artifacts.add_argument("run_id", metavar="RUN_ID", help="a flow run id (its task runs' artifacts included) or a task run id")
    artifacts.add_argument("--json", action="store_true", help="a JSON list of the artifacts as the API returns them")


def _reader(settings: Settings) -> ArchiveReader:
    from archiver.storage import open_archive

    return open_archive(settings.archive_url).reader(settings.read_timeout)


def _run_label(reader: ArchiveReader, run_id: uuid.UUID) -> str:
    """How log lines name the run ("Flow run 'calm-otter'"); RunNotFound when the archive has
    neither logs, artifacts nor states of it (as `prefect flow-run logs` says of an unknown run)."""
    try:
        history = reader.run_history(run_id)
    except RunNotFound:
        counts = reader.run_log_counts(run_id)
        if counts.logs or counts.artifacts:
            return f"Run {str(run_id)!r}"
        raise
    words = kind_of(history.run_kind).words
    return f"{words[0].upper()}{words[1:]} {history.run_name or str(run_id)!r}"


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    """Print the run's logs page by page as they are read, never the whole run at once: the first line
    comes after one small page, and this process holds one page of lines at a time."""
    from archiver.lookup.logs import iter_run_log_lines, iter_run_logs, log_level
    from archiver.render_logs import LogLines

    run_id = parse_prefect_id(args.run_id, "run")
    since = parse_when(args.since, name="--since") if args.since else None
    until = parse_when(args.until, name="--until") if args.until else None
    if since and until and since > until:
        raise BadInput("--since is later than --until")
    reader = _reader(settings)
    label = _run_label(reader, run_id)
    wanted = {"level": log_level(args.level), "since": since, "until": until, "grep": args.grep,
              "newest_first": args.reverse}
    out = sys.stdout
    if args.json:  # the bytes json.dumps(list) would print, one log at a time
        out.write("[")
        for i, log in enumerate(iter_run_logs(reader, run_id, **wanted)):
            out.write((", " if i else "") + json.dumps(log, ensure_ascii=False))
        out.write("]\n")
        return 0
    lines = LogLines(label)
    shown = 0
    for page in iter_run_log_lines(reader, run_id, **wanted):
        out.write(lines.text(page))
        out.flush()
        shown += len(page)
    if shown == 0:
        print(f"no archived logs of {label} match", file=sys.stderr)
    return 0


def cmd_artifacts(args: argparse.Namespace, settings: Settings) -> int:
    from archiver.lookup.logs import get_run_artifacts
    from archiver.render_logs import artifact_lines

    run_id = parse_prefect_id(args.run_id, "run")
    label = _run_label(_reader(settings), run_id)
    found = get_run_artifacts(run_id, settings=settings)
    if args.json:
        print(json.dumps(found, ensure_ascii=False))
        return 0
    for i, artifact in enumerate(found):
        if i:
            print()
        print("\n".join(artifact_lines(artifact)))
    if not found:
        print(f"no archived artifacts of {label}", file=sys.stderr)
    return 0


COMMANDS = {"logs": cmd_logs, "artifacts": cmd_artifacts}
