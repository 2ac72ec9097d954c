"""The service's heartbeat: a small JSON file where the archive's backend says (Archive.heartbeat_path).

Not a table in the archive: while the service commits, a backend may keep every other process
out of the archive (DuckDB's file is), and `status` must still say whether the service is alive. A
sidecar file is readable at any moment, costs the archive no write per heartbeat, and is replaced
with os.replace, so a reader sees the old or the new heartbeat, never half of one.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from archiver.prefect.events import parse_timestamp
from archiver.storage.base import Archive

# A heartbeat older than this many intervals means the service is gone (killed, machine down).
STALE_AFTER_BEATS = 3


def write_heartbeat(path: Path, heartbeat: dict[str, Any]) -> None:
    """Replace the heartbeat file atomically (write a temporary file beside it, then rename)."""
    # A PostgreSQL archive beats under $PREFECT_HOME, which a fresh machine may not have yet.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(heartbeat, out, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_heartbeat(path: Path) -> dict[str, Any] | None:
    """The heartbeat last written at `path`; None when there is none (or it cannot be read)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def service_status(archive: Archive, now: datetime | None = None) -> dict[str, Any] | None:
    """The last heartbeat the archive's service wrote, with `running` and, when not running, `why`;
    None if no service ever ran on it."""
    state = read_heartbeat(archive.heartbeat_path)
    if state is None:
        return None
    now = now or datetime.now(timezone.utc)
    beat = parse_timestamp(state.get("heartbeat"))
    every = timedelta(seconds=float(state.get("heartbeat_every", 30)))
    age = now - beat
    state["heartbeat_age_seconds"] = round(age.total_seconds(), 1)
    pid = state.get("pid")
    same_host = state.get("host") == socket.gethostname()
    if state.get("stopped"):
        state["running"], state["why"] = False, f"stopped at {state['stopped']}"
    elif same_host and isinstance(pid, int) and not _pid_alive(pid):
        state["running"], state["why"] = False, f"its process (pid {pid}) is gone; last heartbeat {state['heartbeat']}"
    elif age > every * STALE_AFTER_BEATS and same_host and isinstance(pid, int) and _holds_archive(archive, pid):
        # Alive and still holding the archive, but not beating: usually a disk it cannot write to.
        state["running"], state["why"] = True, None
        state["heartbeat_problem"] = _why_no_heartbeat(archive)
    elif age > every * STALE_AFTER_BEATS:
        state["running"], state["why"] = False, f"no heartbeat since {state['heartbeat']}"
    else:
        state["running"], state["why"] = True, None
    return state


def _holds_archive(archive: Archive, pid: int) -> bool:
    """The writer lock names this live pid as the service (holder "run"), as the service wrote it."""
    holder = archive.writer_holder()
    return holder.pid == pid and holder.holder == "run" and _pid_alive(pid)


def _why_no_heartbeat(archive: Archive) -> str:
    """The reason the service noted with its writer lock, else what this process sees of the disk."""
    noted = archive.writer_holder().note
    if noted:
        return noted
    folder = archive.heartbeat_path.parent
    try:
        free = os.statvfs(folder).f_bavail
    except OSError:
        free = None
    if free == 0:
        return f"the disk holding {folder} is full"
    return f"it has not said why; check that {folder} is writable and has space, and the service's log"
