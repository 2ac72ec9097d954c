"""The service's heartbeat: a small JSON file beside the archive, replaced atomically.

Not a table in the archive: while the service commits, no other process can open the DuckDB file
at all (see shared stack notes), and `status` must still say whether the service is alive. A
sidecar file is readable at any moment, costs the archive no write per heartbeat, and is replaced
with os.replace, so a reader sees the old or the new state, never half of one.
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

# A heartbeat older than this many intervals means the service is gone (killed, machine down).
STALE_AFTER_BEATS = 3


def state_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".service.json")


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically (write a temporary file beside it, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(state, out, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_state(path: Path) -> dict[str, Any] | None:
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


def service_status(db_path: Path, now: datetime | None = None) -> dict[str, Any] | None:
    """The last state the service wrote, with `running` and, when not running, `why`; None if none ever ran."""
    state = read_state(state_path(db_path))
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
    elif age > every * STALE_AFTER_BEATS and same_host and isinstance(pid, int) and _holds_archive(db_path, pid):
        # Alive and still holding the archive, but not beating: usually a disk it cannot write to.
        state["running"], state["why"] = True, None
        state["heartbeat_problem"] = _why_no_heartbeat(db_path)
    elif age > every * STALE_AFTER_BEATS:
        state["running"], state["why"] = False, f"no heartbeat since {state['heartbeat']}"
    else:
        state["running"], state["why"] = True, None
    return state


def _holds_archive(db_path: Path, pid: int) -> bool:
    """The sync lock's file names this live pid as the service ("PID run"), as the service wrote it."""
    from archiver.storage.duckdb.lock import lock_holder, read_lock

    holder_pid, holder = lock_holder(read_lock(db_path))
    return holder_pid == pid and holder == "run" and _pid_alive(pid)


def _why_no_heartbeat(db_path: Path) -> str:
    """The reason the service noted in the lock file, else what this process sees of the disk."""
    from archiver.storage.duckdb.lock import lock_note, read_lock

    noted = lock_note(read_lock(db_path))
    if noted:
        return noted
    folder = state_path(db_path).parent
    try:
        free = os.statvfs(folder).f_bavail
    except OSError:
        free = None
    if free == 0:
        return f"the disk holding {folder} is full"
    return f"it has not said why; check that {folder} is writable and has space, and the service's log"
