"""SQLAlchemy models: principals and API keys, jobs (also the queue), job events, usage."""

from jobql.models.base import Base
from jobql.models.events import JobEvent
from jobql.models.jobs import Job, JobStatus
from jobql.models.principals import ApiKey, Principal
from jobql.models.usage import UsageDay

__all__ = ["ApiKey", "Base", "Job", "JobEvent", "JobStatus", "Principal", "UsageDay"]
