"""Retrying through outages: capped exponential backoff, and one log line per outage (or
per streak of failures of a bug).

An outage (jobql.outages.is_outage) is a database or bus that cannot be reached right now;
the worker waits it out instead of failing jobs. Many runners and loops see the same outage
at once, so it is logged when it starts and when it ends, not once per failed statement.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError

from jobql.outages import is_outage

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Delays of first, first * 2, ... up to cap, each with up to ``jitter`` of itself
    added at random, so that many waiters do not retry in step."""

    first: float = 0.05
    cap: float = 1.0
    jitter: float = 0.2
    _next: float = 0.0

    def delay(self) -> float:
        base = self._next or self.first
        self._next = min(base * 2, self.cap)
        return base * (1 + random.uniform(0, self.jitter))

    def reset(self) -> None:
        self._next = 0.0


class OutageLog:
    """Says once that ``what`` became unreachable (WARNING, no traceback), and once that
    it is back (with how long it was gone), however many callers fail in between."""

    def __init__(self, what: str = "the database", logger: logging.Logger = log) -> None:
        self.what = what
        self.logger = logger
        self.since: float | None = None
        self.outages = 0  # how many have started, for tests and metrics
        self._bug_told = False

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, doing: str, exc: BaseException) -> None:
        if not is_outage(exc):
            self._bug(doing, exc)
            return
        if self.since is not None:
            return
        self.since = time.monotonic()
        self.outages += 1
        self.logger.warning(
            "%s is unreachable (%s while %s); retrying", self.what, describe(exc), doing
        )

    def _bug(self, doing: str, exc: BaseException) -> None:
        """Not an outage: a bug, told with its traceback, once until something works again
        (a loop that retries it every second would flood the log)."""
        if self._bug_told:
            self.logger.debug("failed again while %s", doing, exc_info=exc)
            return
        self._bug_told = True
        self.logger.error("failed while %s; retrying", doing, exc_info=exc)

    def recovered(self) -> None:
        self._bug_told = False
        if self.since is None:
            return
        seconds = time.monotonic() - self.since
        self.since = None
        self.logger.warning("%s is reachable again after %.1f s", self.what, seconds)


def describe(exc: BaseException) -> str:
    """The driver's error in one short line that quotes no data: its type, and the
    SQLSTATE or the errno and address of a refused connection. A database's own message
    may quote a row (PostgreSQL's "Failing row contains ..."), and SQLAlchemy's adds the
    statement and its parameters; neither belongs in a log line about an outage."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    name = type(cause).__name__
    if isinstance(cause, OSError):
        return f"{name}: {cause}"[:200]  # e.g. [Errno 111] Connect call failed ('host', port)
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return f"{name} (SQLSTATE {sqlstate})" if isinstance(sqlstate, str) else name
