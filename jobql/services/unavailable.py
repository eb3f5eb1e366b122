"""Outages as answers: the ServiceUnavailable a client gets when a server its request needed
(the database, the event bus, the rate limiter's Redis) cannot be reached, and warnings that
say so without one log line per failed request."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from jobql.errors import ServiceUnavailable
from jobql.outages import RETRY_AFTER_SECONDS, ServiceUnavailableError, is_outage


def unavailable(exc: BaseException, *, last_seq: int | None = None) -> ServiceUnavailable | None:
    """The answer for ``exc`` when it is an outage; None when it is a bug (let it raise)."""
    if isinstance(exc, ServiceUnavailableError):
        return ServiceUnavailable(exc.retry_after_seconds, last_seq=last_seq)
    if is_outage(exc):
        return ServiceUnavailable(RETRY_AFTER_SECONDS, last_seq=last_seq)
    return None


def root_cause_name(exc: BaseException) -> str:
    """The type name of what started ``exc`` (``ConnectionRefusedError`` rather than
    SQLAlchemy's ``OperationalError`` around it)."""
    seen: set[int] = set()
    current = exc
    while id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "orig", None)
        if not isinstance(inner, BaseException):
            # Only the explicit chain: an implicit context can be unrelated (a cancelled
            # wait behind a timeout, say).
            inner = current.__cause__
        if inner is None:
            break
        current = inner
    return type(current).__name__


class ThrottledWarning:
    """A warning logged at most once per ``interval`` seconds: an outage fails every request
    at once, and one line per request would flood the logs. The next line says how many
    were held back."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.message = message
        self.interval = interval
        self.clock = clock
        self._next_at = float("-inf")
        self._held_back = 0

    def __call__(self, exc: BaseException) -> bool:
        """Log the warning for ``exc`` (its type only: a driver's message may quote SQL)
        unless one was logged less than ``interval`` ago; whether it was logged."""
        now = self.clock()
        if now < self._next_at:
            self._held_back += 1
            return False
        self.logger.warning(
            "%s (%s; %d more since the last warning)",
            self.message,
            root_cause_name(exc),
            self._held_back,
        )
        self._next_at = now + self.interval
        self._held_back = 0
        return True
