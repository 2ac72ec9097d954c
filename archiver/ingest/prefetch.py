"""Reading a range ahead of writing it: a planning thread and a fetch pool, results in plan order.

The planning thread counts and submits windows to the pool in plan order (count-by requests never
hold up fetching), and whoever writes takes the results in that same order. Up to WINDOWS_AHEAD
windows are in flight, enough to keep the pool busy while a batch is written, and no more, so a
writer that is slow (or not open yet) holds a bounded number of events in memory.

Kept light (no storage imports): `sync --since` starts reading before the archive is opened and
migrated (0.6 s for a new DuckDB file), so the server is never idle while the archiver starts.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

from archiver.ingest.fetch import Planner, WindowResult, fetch_window
from archiver.ingest.stop import NEVER, StopToken
from archiver.ingest.windows import Window
from archiver.prefect.client import PrefectClient, RequestCounts

# Windows submitted but not yet written: ~3,200 events at most (~12 MB as JSON), enough for the
# fetch pool to keep going while a batch of ingest.commit_every events is written.
WINDOWS_AHEAD = 64


class Unread:
    """How many events the server says are still to read in a range; progress shows read/read+this.

    Planner.expected is the count taken before the first window, but dense windows are counted
    again when refined and events keep arriving while a range is read (late arrivals, a client's
    buffer flushed), so a fixed total is soon passed ("308/268"). Kept running instead: windows
    planned and not read yet at their own count, plus what the first count has not planned yet.
    It ends at 0, so the total ends equal to what was read, and what was read never passes it.
    """

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.planned = 0
        self.unread = 0
        self.planning = True
        # windows() runs in the planning thread, read() and the total in the writer's.
        self._lock = threading.Lock()

    def windows(self) -> Iterator[Window]:
        for window in self.planner.windows():
            with self._lock:
                self.planned += window.expected
                self.unread += window.expected
            yield window
        with self._lock:
            self.planning = False

    def read(self, window: Window) -> None:
        with self._lock:
            self.unread -= window.expected

    def __call__(self) -> int:
        with self._lock:
            unplanned = max(self.planner.expected - self.planned, 0) if self.planning else 0
            return max(self.unread, 0) + unplanned


class Prefetch:
    """Every window of [since, end), fetched ahead and handed out in plan order by results().

    Starts reading at once. close() (always, however the reading ended) cancels what was
    submitted and not taken, and waits for the threads. `requests_before` is the client's count
    when it started, so a sync counts these requests as its own even if they began before it.
    """

    def __init__(self, client: PrefectClient, since: datetime, end: datetime, *, concurrency: int = 4,
                 stop: StopToken = NEVER) -> None:
        self.since = since
        self.end = end
        self.stop = stop
        self.requests_before: RequestCounts = client.requests()
        self.unread = Unread(Planner(client, since, end))
        self._client = client
        self._pending: queue.Queue[Future[WindowResult] | BaseException | None] = queue.Queue(maxsize=WINDOWS_AHEAD)
        self._closing = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fetch")
        self._planning = threading.Thread(target=self._plan, name="plan", daemon=True)
        self._planning.start()

    def covers(self, since: datetime, end: datetime) -> bool:
        """Whether this reads exactly [since, end)."""
        return (self.since, self.end) == (since, end)

    def results(self) -> Iterator[WindowResult]:
        """The windows' results in plan order; raises what planning or a window ran into, in order."""
        while not self.stop.stopped:
            item = self._pending.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item.result()

    def abandon(self) -> None:
        """Stop submitting and cancel what has not started (on a failure, before writing what was read)."""
        self._closing.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Cancel what was submitted but not taken and wait for the threads; safe to call again."""
        self._closing.set()
        while True:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Future):
                item.cancel()
        self._planning.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _offer(self, item: Future[WindowResult] | BaseException | None) -> bool:
        while not self._closing.is_set():
            try:
                self._pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _plan(self) -> None:
        try:
            for window in self.unread.windows():
                if self._closing.is_set() or self.stop.stopped:
                    break
                if not self._offer(self._pool.submit(fetch_window, self._client, window)):
                    return
            self._offer(None)
        except BaseException as exc:  # handed to the writer, which raises it in order
            self._offer(exc)
