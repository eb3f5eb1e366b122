"""jobql: a GraphQL API for long-running AI work."""

__version__ = "0.1.0"
