"""The worker: claim loop, lease heartbeat and rescue, and running one job."""

from jobql.worker.worker import Worker

__all__ = ["Worker"]
