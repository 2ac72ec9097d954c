"""Stopping cleanly on SIGTERM or Ctrl-C: the signal sets the StopToken the passes check between units.

A sync asked to stop commits the batch in hand (data and mark in one transaction) and returns;
a retry wait is cut short (StopToken.sleep). A second signal stops at once (KeyboardInterrupt),
which is still safe: an uncommitted transaction is simply not there after a restart.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType, TracebackType
from typing import Any

from archiver.ingest.stop import StopToken


class StopSignals:
    """While entered (in the main thread), SIGTERM and SIGINT set `stop` instead of killing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, stop: StopToken | None = None, exit_at_once: bool = False) -> None:
        self.stop = stop or StopToken()
        # A service's job runs in a worker thread that a KeyboardInterrupt in the main thread
        # would not stop (and the interpreter waits for it): a second signal exits the process.
        self.exit_at_once = exit_at_once
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.stopped:  # asked twice: stop now
            if self.exit_at_once:
                sys.stderr.write("prefect-archiver: stopping at once (second signal); committed batches are kept\n")
                sys.stderr.flush()
                os._exit(130)
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        self.stop.set()

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
