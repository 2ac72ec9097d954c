"""Asking a pass to stop: a token it checks between units of work, and NEVER for callers that don't stop.

A pass asked to stop ends after the unit in hand is committed (a batch with its mark, a repaired
window, a batch of run states) and returns; a retry wait is cut short (StopToken.sleep raises
Stopped). Who sets the token — SIGTERM in the service, Ctrl-C at a terminal — is the caller's
business (archiver.service.stop): ingest only reads it.
"""

from __future__ import annotations

import threading

from archiver.errors import Stopped


class StopToken:
    """Set once, from any thread (a signal handler, a scheduler); passes check `stopped`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask every pass holding this token to stop after the unit in hand."""
        self._event.set()

    @property
    def stopped(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds`, returning early (True) as soon as a stop is asked for."""
        return self._event.wait(seconds)

    def sleep(self, seconds: float) -> None:
        """A sleep for the client's retry waits: raises Stopped as soon as a stop is asked for."""
        if self.wait(seconds):
            raise Stopped("stopping: the failed request was not retried")


class _Never(StopToken):
    """The token of a caller that never stops a pass (a test, a flow, a one-off command)."""

    def set(self) -> None:
        # Shared by every such caller: setting it would stop passes it was never handed for.
        raise TypeError("NEVER cannot be set: give the pass a StopToken() of its own")


NEVER: StopToken = _Never()
