"""Task contracts: prompt, model and schemas pinned together per API version."""

from jobql.tasks.contracts import ModelRef, Pricing, TaskContract, TaskRegistry, Tier
from jobql.tasks.loader import TaskConfigError, load_tasks

__all__ = [
    "ModelRef",
    "Pricing",
    "TaskConfigError",
    "TaskContract",
    "TaskRegistry",
    "Tier",
    "load_tasks",
]
