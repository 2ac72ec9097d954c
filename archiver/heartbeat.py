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
    beat = datetime.fromisoformat(str(state.get("heartbeat")).replace("Z", "+00:00"))
    every = timedelta(seconds=float(state.get("heartbeat_every", 30)))
    age = now - beat
    state["heartbeat_age_seconds"] = round(age.total_seconds(), 1)
    pid = state.get("pid")
    same_host = state.get("host") == socket.gethostname()
    if state.get("stopped"):
        state["running"], state["why"] = False, f"stopped at {state['stopped']}"
    elif same_host and isinstance(pid, int) and not _pid_alive(pid):
        state["running"], state["why"] = False, f"its process (pid {pid}) is gone; last heartbeat {state['heartbeat']}"
    elif age > every * STALE_AFTER_BEATS:
        state["running"], state["why"] = False, f"no heartbeat since {state['heartbeat']}"
    else:
        state["running"], state["why"] = True, None
    return state
