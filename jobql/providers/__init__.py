"""Model providers behind one protocol: simulated (built in); real ones plug in the same way."""

from jobql.providers.base import (
    Progress,
    Provider,
    ProviderError,
    ProviderRequest,
    TextDelta,
    Usage,
)
from jobql.providers.registry import ProviderRegistry

__all__ = [
    "Progress",
    "Provider",
    "ProviderError",
    "ProviderRegistry",
    "ProviderRequest",
    "TextDelta",
    "Usage",
]
