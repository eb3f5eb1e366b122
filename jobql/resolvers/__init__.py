"""Thin resolvers: authenticate, call a service, map the answer to schema types."""
