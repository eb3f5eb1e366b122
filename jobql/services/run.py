"""Run a job in one stream: submit it, then follow its events to the end.

By default the job belongs to the stream that created it: when the stream's consumer goes
away before the terminal event (it closed the stream, or its task was cancelled because the
client unsubscribed or disconnected), the job is cancelled with the reason
``client_disconnected``, which stops its inference. A detached run, and a run that re-attached
to an existing job through its idempotency key, only follow the job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from jobql.errors import (
    InvalidInput,
    LimitExceeded,
    NotFound,
    PromptInjectionDetected,
    ServiceUnavailable,
)
from jobql.events.types import StoredEvent
from jobql.models import Job
from jobql.services.auth import Caller
from jobql.services.jobs import (
    IdempotencyKeyReused,
    JobService,
    SubmitOutcomeType,
    SubmitRequest,
    Submitted,
)
from jobql.services.streams import StreamAnswer, StreamService

log = logging.getLogger(__name__)

CLIENT_DISCONNECTED = "client_disconnected"
# How long cancelling an abandoned job may take (retries of an outage included).
RELEASE_TIMEOUT_SECONDS = 5.0
_RETRY_FIRST_SECONDS = 0.05
_RETRY_MAX_SECONDS = 1.0


@dataclass(frozen=True)
class RunAccepted:
    """A run's first item: the job it follows. ``owned``: the run created the job and is not
    detached, so leaving before the terminal event cancels the job."""

    job: Job
    deduplicated: bool
    owned: bool


SubmitRefused = (
    InvalidInput
    | IdempotencyKeyReused
    | LimitExceeded
    | PromptInjectionDetected
    | ServiceUnavailable
)
RunItem = RunAccepted | SubmitRefused | NotFound | StreamAnswer


def owns(outcome: Submitted, *, detach: bool) -> bool:
    """Only the run that created the job owns it: re-attaching through an idempotency key
    never makes a job harder (or easier) to stop than its creator's run did."""
    return not detach and not outcome.deduplicated


class RunService:
    def __init__(
        self,
        *,
        jobs: JobService,
        streams: StreamService,
        release_timeout_seconds: float = RELEASE_TIMEOUT_SECONDS,
    ) -> None:
        self.jobs = jobs
        self.streams = streams
        self.release_timeout_seconds = release_timeout_seconds
        # Cancels of abandoned jobs in flight: each is bounded by the timeout, and
        # aclose() waits for what is left when the process stops.
        self._releases: set[asyncio.Task[None]] = set()

    async def run(
        self, caller: Caller, req: SubmitRequest, *, detach: bool = False
    ) -> AsyncGenerator[RunItem, None]:
        """The submit's refusal as the only item; or RunAccepted, then the job's stream (which
        ends with the terminal event, or with a ServiceUnavailable if an outage cut it)."""
        # The stream is the wait: holding the submit's answer would only delay the first item.
        submitting = asyncio.ensure_future(
            self.jobs.submit(caller, replace(req, wait_seconds=None))
        )
        try:
            outcome = await asyncio.shield(submitting)
        except asyncio.CancelledError:
            # The client left while the job was being stored: it may have been created.
            self._track(self._release_submitted(caller, submitting, detach=detach))
            raise
        if not isinstance(outcome, Submitted):
            yield outcome
            return

        job = outcome.job
        owned = owns(outcome, detach=detach)
        # Set once the run reaches its end: the terminal event, or an outage that cut the
        # stream (the server ended it, not the client; the job goes on, to be followed with
        # the client's next subscription).
        ended = False
        try:
            yield RunAccepted(job=job, deduplicated=outcome.deduplicated, owned=owned)
            stream = await self.streams.open(caller, job.id, after=None)
            if isinstance(stream, NotFound | ServiceUnavailable):
                ended = True
                yield stream
                return
            async with aclosing(stream):
                async for item in stream:
                    if isinstance(item, ServiceUnavailable) or (
                        isinstance(item, StoredEvent) and item.is_terminal
                    ):
                        ended = True
                    yield item
            ended = True
        except (GeneratorExit, asyncio.CancelledError):
            if owned and not ended:
                await self._release(caller, job.id)
            raise

    async def aclose(self) -> None:
        """Wait for the cancels still in flight (each bounded by its timeout)."""
        while self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    # -- releasing an abandoned job --------------------------------------------------------

    async def _release(self, caller: Caller, job_id: str) -> None:
        """Cancel the job and wait for it, even from a task that is being cancelled: the
        cancel runs in a task of its own, shielded, so a second cancellation of the caller
        stops the wait and not the cancel."""
        await asyncio.shield(self._track(self._cancel(caller, job_id)))

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name="jobql-run-release")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        return task

    async def _release_submitted(
        self, caller: Caller, submitting: asyncio.Future[SubmitOutcomeType], *, detach: bool
    ) -> None:
        """The client left during the submit: cancel the job if the submit created it (and
        the run was not detached)."""
        try:
            async with asyncio.timeout(self.release_timeout_seconds):
                outcome = await submitting
        except Exception as exc:  # the submit failed: no job was created
            log.info(
                "run: submit abandoned by its client failed", extra={"error": type(exc).__name__}
            )
            return
        if isinstance(outcome, Submitted) and owns(outcome, detach=detach):
            await self._cancel(caller, outcome.job.id)

    async def _cancel(self, caller: Caller, job_id: str) -> None:
        """Cancel as ``client_disconnected``, retrying outages until the timeout. Logs the
        job id and what happened, never content."""
        delay = _RETRY_FIRST_SECONDS
        try:
            async with asyncio.timeout(self.release_timeout_seconds):
                while True:
                    outcome = await self.jobs.cancel(caller, job_id, CLIENT_DISCONNECTED)
                    if not isinstance(outcome, ServiceUnavailable):
                        break
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX_SECONDS)
        except TimeoutError:
            log.warning(
                "run: the client left, but its job could not be cancelled in time",
                extra={"job_id": job_id, "timeout_seconds": self.release_timeout_seconds},
            )
            return
        except Exception as exc:
            log.warning(
                "run: the client left, but cancelling its job failed",
                extra={"job_id": job_id, "error": type(exc).__name__},
            )
            return
        log.info(
            "run: job cancelled, its client left",
            extra={"job_id": job_id, "outcome": type(outcome).__name__},
        )
