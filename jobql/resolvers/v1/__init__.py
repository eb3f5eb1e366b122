"""Resolvers of API version 1."""
